"""Combinators and branching: ``serial``, ``parallel``, ``FanOut``, ``FanInSum``, ``FanInConcat``.

Branches are lists of kernel states; ``FanOut`` makes them, ``parallel`` maps layers over them,
and the fan-in layers join them (independent Gaussian branches add). Layout as in
:mod:`kjax.ntk.stax`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kjax._src.errors import KjaxError, check_int, fail
from kjax.ntk.stax._core import STAX, KernelFn, Layer, make_layer, single_branch
from kjax.ntk.stax._kernel import State


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence (NT's / ``jax.example_libraries.stax``'s ``serial``).

    Args:
      *layers: ``(init_fn, apply_fn, kernel_fn)`` triples.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; the params are a list with one entry per layer.

    Raises:
      KjaxError: a layer that is not a triple.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(1))
      >>> out_shape, params = init_fn(jax.random.key(0), (3, 5))
      >>> out_shape, apply_fn(params, jnp.ones((3, 5))).shape
      ((3, 1), (3, 1))

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    _check_layers(f"{STAX}.serial", layers)
    init_fns, apply_fns, kernel_fns = zip(*layers, strict=True) if layers else ((), (), ())

    def init_fn(rng, input_shape):
        params = []
        for init in init_fns:
            rng, layer_rng = jax.random.split(rng)
            input_shape, param = init(layer_rng, input_shape)
            params.append(param)
        return input_shape, params

    def apply_fn(params, inputs, **kwargs):
        for f, p in zip(apply_fns, params, strict=True):
            inputs = f(p, inputs, **kwargs)
        return inputs

    def transform(st):
        for kf in kernel_fns:
            st = kf.transform(st)
        return st

    return make_layer(init_fn, apply_fn, transform, "serial",
                  needs_full=any(kf.needs_full for kf in kernel_fns))


def parallel(*layers: Layer) -> Layer:
    """Apply layers to the branches of a list input, one each (NT's ``parallel``).

    Args:
      *layers: one ``(init_fn, apply_fn, kernel_fn)`` triple per branch.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; inputs and outputs are lists of branches.

    Raises:
      KjaxError: a layer that is not a triple, or a number of branches that differs from the
        number of layers.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> block = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(8), stax.Identity()),
      ...                     stax.FanInSum())
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), block)
      >>> kernel_fn(jnp.ones((2, 3)), get="ntk").shape
      (2, 2)

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{STAX}.parallel"
    _check_layers(fn, layers)
    init_fns, apply_fns, kernel_fns = zip(*layers, strict=True)

    def check_n(x):
        if len(x) != len(layers):
            fail(fn, "inputs", f"be a list of {len(layers)} branches", f"{len(x)} branches")

    def init_fn(rng, input_shape):
        check_n(input_shape)
        rngs = jax.random.split(rng, len(layers))
        shapes, params = zip(*[f(r, sh) for f, r, sh in zip(init_fns, rngs, input_shape, strict=True)],
                             strict=True)
        return list(shapes), list(params)

    def apply_fn(params, inputs, **kwargs):
        check_n(inputs)
        return [f(p, x, **kwargs) for f, p, x in zip(apply_fns, params, inputs, strict=True)]

    def transform(sts):
        if isinstance(sts, State):
            fail(fn, "input", f"be a list of {len(layers)} branches (use FanOut first)", "one branch")
        check_n(sts)
        return [kf.transform(s) for kf, s in zip(kernel_fns, sts, strict=True)]

    return make_layer(init_fn, apply_fn, transform, "parallel",
                  needs_full=any(kf.needs_full for kf in kernel_fns))


def _check_layers(fn, layers):
    for i, lay in enumerate(layers):
        if not (isinstance(lay, tuple) and len(lay) == 3 and isinstance(lay[2], KernelFn)):
            fail(fn, f"layers[{i}]", "be an (init_fn, apply_fn, kernel_fn) triple from kjax.ntk.stax",
                 type(lay).__name__)


def FanOut(num: int) -> Layer:
    """Copy the input into ``num`` branches.

    Args:
      num: number of branches (>= 1).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)`` producing lists of ``num`` branches.

    Raises:
      KjaxError: ``num`` not a positive int.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.FanOut(3)
      >>> len(apply_fn((), jnp.ones(2)))
      3

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    num = check_int(f"{STAX}.FanOut", "num", num, minimum=1)

    def init_fn(rng, input_shape):
        return [input_shape] * num, ()

    def apply_fn(params, inputs, **kwargs):
        return [inputs] * num

    def transform(st):
        st = single_branch(f"{STAX}.FanOut", st)
        return [st] * num

    return make_layer(init_fn, apply_fn, transform, f"FanOut({num})")


def _check_branches(fn, sts):
    if isinstance(sts, State):
        fail(fn, "input", "be a list of branches (from FanOut / parallel)", "one branch")
    for s in sts[1:]:
        if s.shape1 != sts[0].shape1 or s.shape2 != sts[0].shape2:
            fail(fn, "branches", "have equal shapes", f"shapes {[t.shape1 for t in sts]}")


def FanInSum() -> Layer:
    """Sum the branches (residual connections): kernels of independent Gaussian branches add.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: branches of different shapes, or (``kernel_fn``) a branch that is not Gaussian
        (each branch needs its own ``Dense`` / ``Conv``, or is an ``Identity`` of a Gaussian).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.FanInSum()
      >>> apply_fn((), [jnp.ones(2), jnp.ones(2)]).tolist()
      [2.0, 2.0]

    References:
      He et al. Deep Residual Learning for Image Recognition. CVPR 2016.
    """
    fn = f"{STAX}.FanInSum"

    def init_fn(rng, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if any(s != shapes[0] for s in shapes):
            fail(fn, "input_shape", "list equal shapes", shapes)
        return shapes[0], ()

    def apply_fn(params, inputs, **kwargs):
        if any(x.shape != inputs[0].shape for x in inputs):
            fail(fn, "inputs", "have equal shapes", [x.shape for x in inputs])
        return sum(inputs[1:], inputs[0])

    def transform(sts):
        _check_branches(fn, sts)
        if not all(s.is_gaussian for s in sts):
            raise KjaxError(f"{fn}: every branch must be Gaussian (end in a Dense / Conv layer); "
                            f"got is_gaussian={[s.is_gaussian for s in sts]}.")
        return sts[0].replace(nngp=sum(s.nngp for s in sts), ntk=sum(s.ntk for s in sts),
                              is_gaussian=True)

    return make_layer(init_fn, apply_fn, transform, "FanInSum")


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenate the branches along the channel axis (the only axis supported here).

    Kernels average over the branches weighted by their channel widths,
    ``K' = sum_b C_b K_b / sum_b C_b``.

    Args:
      axis: ``-1`` (the channel axis).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: ``axis`` other than the channel axis, or branches whose non-channel shapes
        differ.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.FanInConcat()
      >>> apply_fn((), [jnp.ones((2, 3)), jnp.ones((2, 1))]).shape
      (2, 4)

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{STAX}.FanInConcat"
    if axis != -1:
        fail(fn, "axis", "be -1 (concatenation along the channel axis; other axes are not "
             "implemented in kjax)", repr(axis))

    def init_fn(rng, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if any(s[:-1] != shapes[0][:-1] for s in shapes):
            fail(fn, "input_shape", "list shapes equal except in the channel axis", shapes)
        return shapes[0][:-1] + (sum(s[-1] for s in shapes),), ()

    def apply_fn(params, inputs, **kwargs):
        if any(x.shape[:-1] != inputs[0].shape[:-1] for x in inputs):
            fail(fn, "inputs", "have shapes equal except in the channel axis", [x.shape for x in inputs])
        return jnp.concatenate(inputs, axis=-1)

    def transform(sts):
        if isinstance(sts, State):
            fail(fn, "input", "be a list of branches (from FanOut / parallel)", "one branch")
        if any(s.shape1[:-1] != sts[0].shape1[:-1] for s in sts):
            fail(fn, "branches", "have shapes equal except in the channel axis",
                 f"shapes {[s.shape1 for s in sts]}")
        widths = [s.shape1[-1] for s in sts]
        if all(w == widths[0] for w in widths):
            widths = [1] * len(widths)
        tot = sum(widths)
        nngp = sum(w * s.nngp for w, s in zip(widths, sts, strict=True)) / tot
        ntk = sum(w * s.ntk for w, s in zip(widths, sts, strict=True)) / tot
        c = sum(s.shape1[-1] for s in sts)
        return sts[0].replace(nngp=nngp, ntk=ntk, is_gaussian=False,
                              shape1=sts[0].shape1[:-1] + (c,), shape2=sts[0].shape2[:-1] + (c,))

    return make_layer(init_fn, apply_fn, transform, "FanInConcat")

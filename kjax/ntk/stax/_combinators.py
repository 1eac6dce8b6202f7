"""Combinators and branching: ``serial``, ``repeat``, ``parallel``, ``FanOut``, ``FanInSum``,
``FanInProd``, ``FanInConcat``.

Branches are lists of kernel states; ``FanOut`` makes them, ``parallel`` maps layers over them,
and the fan-in layers join them (independent Gaussian branches add). Layout as in
:mod:`kjax.ntk.stax`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kjax._src.errors import KjaxError, check_int, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import (
    STAX,
    KernelFn,
    Layer,
    MaskedArray,
    make_layer,
    merge_reqs,
    single_branch,
)
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
                      needs_full=any(kf.needs_full for kf in kernel_fns), reqs=merge_reqs(kernel_fns),
                      masking=False)


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
                      needs_full=any(kf.needs_full for kf in kernel_fns), reqs=merge_reqs(kernel_fns),
                      masking=False)


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

    return make_layer(init_fn, apply_fn, transform, f"FanOut({num})", masking=False)


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

    return make_layer(init_fn, apply_fn, transform, "FanInSum", mask_fn=_and_masks)


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenate the branches along ``axis`` of the activations.

    Along the channel axis the kernels average over the branches weighted by their channel widths,
    ``K' = sum_b C_b K_b / sum_b C_b``. Along a spatial axis the positions of the branches are
    stacked: each branch keeps its own covariance block and, as in neural-tangents, positions of
    different branches are uncorrelated (zero blocks; exact when the branches end in independent
    affine layers). Along the batch axis the examples of the branches are stacked, ``[x1 of
    branch 0; x1 of branch 1; ...]`` (likewise ``x2``), uncorrelated across branches: the
    kernels are block-diagonal over the branches (neural-tangents' values; Gaussian branches
    only).

    Args:
      axis: the channel axis (``-1``, the default), a spatial axis or the batch axis of the
        activations.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: a non-int or out-of-range ``axis``; (``kernel_fn``) branches whose shapes
        differ off ``axis``; the batch axis when a branch is not Gaussian.

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
    if not isinstance(axis, int) or isinstance(axis, bool):
        fail(fn, "axis", "be an int", repr(axis))

    def ax_of(nd, where):
        if not -nd <= axis < nd:
            fail(f"{fn} {where}", "axis", f"be in [-{nd}, {nd}) for inputs of rank {nd}", repr(axis))
        return axis % nd

    def check_shapes(shapes, a, where, arg):
        if any(s[:a] + s[a + 1:] != shapes[0][:a] + shapes[0][a + 1:] for s in shapes):
            fail(f"{fn} {where}", arg, f"have shapes equal except in axis {a}", shapes)

    def init_fn(rng, input_shape):
        shapes = [tuple(s) for s in input_shape]
        a = ax_of(len(shapes[0]), "init_fn")
        check_shapes(shapes, a, "init_fn", "input_shape")
        out = list(shapes[0])
        out[a] = sum(s[a] for s in shapes)
        return tuple(out), ()

    def apply_fn(params, inputs, **kwargs):
        a = ax_of(inputs[0].ndim, "apply_fn")
        check_shapes([x.shape for x in inputs], a, "apply_fn", "inputs")
        return jnp.concatenate(inputs, axis=a)

    def transform(sts):
        if isinstance(sts, State):
            fail(fn, "input", "be a list of branches (from FanOut / parallel)", "one branch")
        nd = len(sts[0].shape1)
        a = ax_of(nd, "kernel_fn")
        b, c = sts[0].axes()
        if a == b:
            return _concat_batch(fn, sts, axis, b)
        return _with_mask(transform_other(sts, nd, a, b, c), sts)

    def _with_mask(out, sts):
        """The mask of the concatenation (``kernel_mask=False``: set here, since along the batch
        axis the joint ``[x1; x2]`` rows are reordered)."""
        if all(s.mask is None for s in sts):
            return out.replace(mask=None)
        masks = [None if s.mask is None else K.from_canonical(s.mask, *s.axes()) for s in sts]
        shapes = [K.logical_shape((s.nngp.shape[0],) + tuple(s.shape1[1:]), *s.axes()) for s in sts]
        m = jnp.asarray(_concat_masks(masks, shapes, axis), bool)
        return out.replace(mask=K.to_canonical(m, *out.axes()))

    def transform_other(sts, nd, a, b, c):
        if a == c:
            if any(s.shape1[:-1] != sts[0].shape1[:-1] for s in sts):
                fail(fn, "branches", "have shapes equal except in the channel axis",
                     f"shapes {[s.shape1 for s in sts]}")
            widths = [s.shape1[-1] for s in sts]
            if all(w == widths[0] for w in widths):
                widths = [1] * len(widths)
            tot = sum(widths)
            nngp = sum(w * s.nngp for w, s in zip(widths, sts, strict=True)) / tot
            ntk = sum(w * s.ntk for w, s in zip(widths, sts, strict=True)) / tot
            cw = sum(s.shape1[-1] for s in sts)
            return sts[0].replace(nngp=nngp, ntk=ntk, is_gaussian=False,
                                  shape1=sts[0].shape1[:-1] + (cw,),
                                  shape2=sts[0].shape2[:-1] + (cw,))
        d = [i for i in range(nd) if i not in (b, c)].index(a)  # spatial axis number
        if any(s.shape1[:1 + d] + s.shape1[2 + d:] != sts[0].shape1[:1 + d] + sts[0].shape1[2 + d:]
               for s in sts) or any(s.diag != sts[0].diag for s in sts):
            fail(fn, "branches", f"have shapes equal except in spatial axis {a}",
                 f"shapes {[s.shape1 for s in sts]}")

        def stack(mats):
            if sts[0].diag:  # positions are shared: a plain concatenation
                return jnp.concatenate(mats, axis=2 + d)
            ax = 2 + 2 * d
            sizes = [m.shape[ax] for m in mats]
            rows = []
            for i, m in enumerate(mats):  # block-diagonal over the pair (ax, ax + 1)
                widths_ = [(0, 0)] * m.ndim
                widths_[ax + 1] = (sum(sizes[:i]), sum(sizes[i + 1:]))
                rows.append(jnp.pad(m, widths_))
            return jnp.concatenate(rows, axis=ax)

        def grow(shape):
            out = list(shape)
            out[1 + d] = sum(s.shape1[1 + d] for s in sts)
            return tuple(out)

        return sts[0].replace(nngp=stack([s.nngp for s in sts]), ntk=stack([s.ntk for s in sts]),
                              is_gaussian=all(s.is_gaussian for s in sts),
                              shape1=grow(sts[0].shape1), shape2=grow(sts[0].shape2))

    def mask_fn(masks, input_shapes):
        return _concat_masks(masks, input_shapes, axis)

    return make_layer(init_fn, apply_fn, transform, "FanInConcat", mask_fn=mask_fn, kernel_mask=False)


def _concat_batch(fn: str, sts: list[State], axis: int, b: int) -> State:
    """``FanInConcat`` along the batch axis (neural-tangents' ``_concat_kernels`` with ``axis=0``):
    the examples of the branches are stacked, ``[x1 of branch 0, x1 of branch 1, ...]`` (and the
    same for ``x2``); examples of different branches are uncorrelated (zero blocks: exact for
    independent mean-zero Gaussian branches, which NT and kjax require)."""
    if not all(s.is_gaussian for s in sts):
        fail(f"{fn} kernel_fn", "axis", f"not be the batch axis {b} unless every branch is Gaussian "
             f"(ends in a Dense / Conv layer; is_gaussian={[s.is_gaussian for s in sts]})",
             repr(axis))
    if any(s.shape1[1:] != sts[0].shape1[1:] or s.diag != sts[0].diag
           or s.has_x2 != sts[0].has_x2 for s in sts):
        fail(fn, "branches", "have shapes equal except in the batch axis",
             f"shapes {[s.shape1 for s in sts]}")
    sizes = [s.nngp.shape[0] for s in sts]
    offsets = [sum(sizes[:i]) for i in range(len(sts))]

    def block_diag(mats):
        rows = []
        for i, m in enumerate(mats):
            pads = [(0, 0)] * m.ndim
            pads[1] = (offsets[i], sum(sizes) - offsets[i] - sizes[i])
            rows.append(jnp.pad(m, pads))
        return jnp.concatenate(rows, axis=0)

    # joint rows ordered [x1 rows of every branch; x2 rows of every branch]
    perm = [o + i for o, s in zip(offsets, sts, strict=True) for i in range(s.n1)]
    perm += [o + i for o, s, n in zip(offsets, sts, sizes, strict=True) for i in range(s.n1, n)]
    perm = jnp.asarray(perm)

    def reorder(m):
        return jnp.take(jnp.take(m, perm, axis=0), perm, axis=1)

    mask = None
    if any(s.mask is not None for s in sts):
        full = tuple(max(d) for d in zip(*[s.mask.shape[1:] for s in sts if s.mask is not None],
                                          strict=True))
        ms = [jnp.zeros((n, *full), bool) if s.mask is None else
              jnp.broadcast_to(s.mask, (n, *full)) for s, n in zip(sts, sizes, strict=True)]
        mask = jnp.take(jnp.concatenate(ms, axis=0), perm, axis=0)
    n1 = sum(s.n1 for s in sts)
    n2 = sum(s.shape2[0] for s in sts)
    return sts[0].replace(nngp=reorder(block_diag([s.nngp for s in sts])),
                          ntk=reorder(block_diag([s.ntk for s in sts])), n1=n1, is_gaussian=True,
                          shape1=(n1, *sts[0].shape1[1:]), shape2=(n2, *sts[0].shape2[1:]),
                          mask=mask)


def FanInProd() -> Layer:
    r"""Multiply the branches elementwise.

    For independent branches the kernels of a product are products:
    :math:`K' = \prod_b K_b` and :math:`\Theta' = \sum_b \Theta_b \prod_{c \ne b} K_c`
    (the product rule). The output is Gaussian only with a single branch.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: branches of different shapes.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.FanInProd()
      >>> apply_fn((), [jnp.full(2, 3.0), jnp.full(2, 2.0)]).tolist()
      [6.0, 6.0]

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{STAX}.FanInProd"

    def init_fn(rng, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if any(s != shapes[0] for s in shapes):
            fail(fn, "input_shape", "list equal shapes", shapes)
        return shapes[0], ()

    def apply_fn(params, inputs, **kwargs):
        if any(x.shape != inputs[0].shape for x in inputs):
            fail(fn, "inputs", "have equal shapes", [x.shape for x in inputs])
        out = inputs[0]
        for x in inputs[1:]:
            out = out * x
        return out

    def transform(sts):
        _check_branches(fn, sts)
        nngp, ntk = sts[0].nngp, sts[0].ntk
        for s in sts[1:]:
            ntk = ntk * s.nngp + nngp * s.ntk
            nngp = nngp * s.nngp
        return sts[0].replace(nngp=nngp, ntk=ntk,
                              is_gaussian=len(sts) == 1 and sts[0].is_gaussian)

    return make_layer(init_fn, apply_fn, transform, "FanInProd", mask_fn=_and_masks)


def repeat(layer: Layer, n: int) -> Layer:
    """Compose ``layer`` with itself ``n`` times in a compiled loop (``jax.lax.scan``).

    The same computation as ``serial(*([layer] * n))`` with independent parameters per
    repetition (stacked along a leading axis of size ``n``), but traced once, so deep networks
    compile fast. ``layer`` must keep the shape of its input (and the rest of the kernel's
    metadata).

    Args:
      layer: an ``(init_fn, apply_fn, kernel_fn)`` triple that keeps its input's shape.
      n: number of repetitions (>= 0).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: ``n`` negative, ``layer`` not a triple, or (``init_fn`` / ``kernel_fn``) a
        layer that changes the shape of its input (use ``serial(*([layer] * n))`` then).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> block = stax.serial(stax.Dense(8), stax.Relu())
      >>> _, _, deep = stax.repeat(block, 3)
      >>> _, _, unrolled = stax.serial(block, block, block)
      >>> x = jnp.ones((2, 8))
      >>> bool(jnp.allclose(deep(x, get="ntk"), unrolled(x, get="ntk")))
      True

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{STAX}.repeat"
    _check_layers(fn, (layer,))
    n = check_int(fn, "n", n, minimum=0)
    init_one, apply_one, kf = layer

    def init_fn(rng, input_shape):
        out_shape, _ = init_one(rng, input_shape)
        if tuple(out_shape) != tuple(input_shape):
            fail(f"{fn} init_fn", "layer", f"keep the shape of its input {tuple(input_shape)} "
                 "(use serial(*([layer] * n)) otherwise)", f"output shape {tuple(out_shape)}")

        def body(key, _):
            key, sub = jax.random.split(key)
            return key, init_one(sub, input_shape)[1]

        _, params = jax.lax.scan(body, rng, None, n)
        return out_shape, params

    def apply_fn(params, inputs, **kwargs):
        if kwargs.get("mask_constant") is not None or isinstance(inputs, MaskedArray):
            # the mask's shape may change after the first layer (channels collapse): unrolled
            for i in range(n):
                inputs = apply_one(jax.tree.map(lambda p, i=i: p[i], params), inputs, **kwargs)
            return inputs

        def body(x, p):
            return apply_one(p, x, **kwargs), None

        out, _ = jax.lax.scan(body, inputs, params, n)
        return out

    def transform(st):
        if n == 0:
            return st
        st_in = single_branch(fn, st)
        st = single_branch(fn, kf.transform(st_in))
        if (st.shape1, st.shape2) != (st_in.shape1, st_in.shape2):
            fail(f"{fn} kernel_fn", "layer", "keep the shape of its input (use "
                 "serial(*([layer] * n)) otherwise)", f"shape {st_in.shape1} -> {st.shape1}")

        def body(carry, _):
            out = kf.transform(st.replace(nngp=carry[0], ntk=carry[1]))
            out = single_branch(fn, out)
            if (out.shape1, out.shape2, out.is_gaussian, out.diag, out.axes()) != (
                    st.shape1, st.shape2, st.is_gaussian, st.diag, st.axes()):
                fail(f"{fn} kernel_fn", "layer", "keep the shape and metadata of its kernel (use "
                     "serial(*([layer] * n)) otherwise)", f"shape {st.shape1} -> {out.shape1}")
            return (out.nngp.astype(carry[0].dtype), out.ntk.astype(carry[1].dtype)), None

        (nngp, ntk), _ = jax.lax.scan(body, (st.nngp, st.ntk), None, n - 1)
        return st.replace(nngp=nngp, ntk=ntk)

    return make_layer(init_fn, apply_fn, transform, f"repeat({kf.name}, {n})",
                      needs_full=kf.needs_full, reqs=kf.reqs, masking=False)


def _and_masks(masks, input_shapes):
    """A position of a sum / product of branches is masked iff it is masked in every branch
    (neural-tangents' ``_sum_masks``)."""
    out = None
    for m in masks:
        out = m if out is None else (out if m is None else out & m)
    return out


def _concat_masks(masks, input_shapes, axis):
    """The mask of the concatenation along ``axis`` (neural-tangents' ``_concat_masks``): each
    mask broadcast to its branch's size along ``axis``, missing masks all False."""
    if all(m is None for m in masks):
        return None
    a = axis % len(input_shapes[0])
    masks = [None if m is None else jnp.broadcast_to(
        m, m.shape[:a] + tuple(input_shapes[i][a:a + 1]) + m.shape[a + 1:])
        for i, m in enumerate(masks)]
    shapes = [m.shape for m in masks if m is not None]
    big = tuple(max(d) for d in zip(*shapes, strict=True))
    out = []
    for i, m in enumerate(masks):
        if m is None:
            small = tuple(min(x, y) for x, y in zip(big, input_shapes[i], strict=True))
            out.append(jnp.zeros(small[:a] + tuple(input_shapes[i][a:a + 1]) + small[a + 1:],
                                 bool))
        else:
            out.append(jnp.broadcast_to(m, big[:a] + m.shape[a:a + 1] + big[a + 1:]))
    return jnp.concatenate(out, axis=a)

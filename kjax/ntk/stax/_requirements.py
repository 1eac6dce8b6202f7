"""The helpers neural-tangents' layers are written with, for user-written layers.

``layer`` turns a function returning ``(init_fn, apply_fn, kernel_fn)`` with a ``kernel_fn`` that
maps a :class:`~kjax.ntk.stax.Kernel` to a :class:`~kjax.ntk.stax.Kernel` into a kjax layer
(whose ``kernel_fn`` also takes arrays, ``get`` and the other keyword arguments); ``requires``
states what such a ``kernel_fn`` needs of its input; ``supports_masking``, ``MaskedArray`` and
``unmask_fn`` give ``apply_fn`` neural-tangents' ``mask_constant`` argument. ``Bool`` and
``Diagonal`` are the requirement values; ``Padding`` names the convolution paddings.
kjax's own layers are written without these decorators (see :mod:`kjax.ntk.stax._core`).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxError, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import STAX, KernelFn, Layer, MaskedArray, make_layer, masked_apply

_INPUT_REQ = "input_req"


class Padding(enum.Enum):
    """Convolution / pooling paddings (``Conv(..., padding=stax.Padding.SAME)``)."""

    CIRCULAR = "CIRCULAR"
    SAME = "SAME"
    VALID = "VALID"


class PositionalEmbedding(enum.Enum):
    """Positional embeddings of :func:`~kjax.ntk.stax.GlobalSelfAttention` (NT's names)."""

    NONE = "NONE"
    SUM = "SUM"
    CONCAT = "CONCAT"


class AttentionMechanism(enum.Enum):
    """Attention mechanisms of :func:`~kjax.ntk.stax.GlobalSelfAttention` (NT's names)."""

    SOFTMAX = "SOFTMAX"
    IDENTITY = "IDENTITY"
    ABS = "ABS"
    RELU = "RELU"


class AggregateImplementation(enum.Enum):
    """Implementations of :func:`~kjax.ntk.stax.Aggregate` (NT's names)."""

    DENSE = "DENSE"
    SPARSE = "SPARSE"


class Bool(enum.IntEnum):
    """Three-valued logic of requirements: ``NO < MAYBE < YES``; ``&`` is the minimum."""

    NO = 0
    MAYBE = 1
    YES = 2

    def __and__(self, other: Bool) -> Bool:
        return min(self, other)

    __rand__ = __and__


@dataclasses.dataclass(frozen=True)
class Diagonal:
    """Whether a layer's kernels may keep only diagonal entries (NT's requirement value).

    Attributes:
      input: whether the layer's *input* may be diagonal-only: ``Bool.YES``; ``Bool.MAYBE``
        (iff its off-diagonal entries are zero); ``Bool.NO`` (it needs the full covariance, e.g.
        pooling).
      output: whether the outputs from this layer on may be diagonal-only.

    ``a >> b`` is the requirement of ``b`` after ``a``, ``a & b`` of both in parallel, and
    ``bool(d)`` says whether the kernel is stored diagonal-only.

    Example:
      >>> from kjax.ntk import stax
      >>> bool(stax.Diagonal(input=stax.Bool.YES, output=stax.Bool.YES))
      True
    """

    input: Bool = Bool.YES
    output: Bool = Bool.NO

    def __rshift__(self, other: Diagonal) -> Diagonal:
        if self.output == Bool.YES:
            return self
        if self.output > Bool.NO and other.input > Bool.NO:
            inp = self.input
        elif self.output == Bool.NO and other.input < Bool.YES:
            inp = Bool.NO
        else:
            inp = min(self.input, other.input)
        return Diagonal(input=inp, output=other.output)

    def __lshift__(self, other: Diagonal) -> Diagonal:
        return other >> self

    def __and__(self, other: Diagonal) -> Diagonal:
        return Diagonal(input=self.input & other.input, output=self.output & other.output)

    __rand__ = __and__

    def __bool__(self) -> bool:
        return self.input == Bool.YES and self.output > Bool.NO


def _refuses_diagonal(v) -> bool:
    return v is False or (isinstance(v, Diagonal) and v.input == Bool.NO)


def requires(**static_reqs: Any) -> Callable[[Callable], Callable]:
    """Decorate a ``Kernel -> Kernel`` function with what it needs of its input kernel.

    Keys as in neural-tangents: ``diagonal_batch`` / ``diagonal_spatial`` (``False`` or a
    :class:`Diagonal` with ``input=Bool.NO`` means the full covariance is needed),
    ``batch_axis`` / ``channel_axis`` (the layout of the input). The decorated function checks its
    input kernel against them and records them for :func:`layer`.

    Args:
      **static_reqs: the requirements.

    Returns:
      A decorator.

    Raises:
      KjaxError: (the decorated function) an input kernel that doesn't meet a requirement.

    Example:
      >>> from kjax.ntk import stax
      >>> @stax.requires(diagonal_spatial=stax.Diagonal(input=stax.Bool.NO))
      ... def kernel_fn(k, **kwargs):
      ...     return k
      >>> kernel_fn.input_req["diagonal_spatial"].input == stax.Bool.NO
      True
    """

    def decorate(kernel_fn: Callable) -> Callable:
        name = getattr(kernel_fn, "__name__", "kernel_fn")

        @functools.wraps(kernel_fn)
        def checked(k, **kwargs):
            for kk in (k if isinstance(k, list | tuple) else [k]):
                if not isinstance(kk, K.Kernel):
                    continue
                for key, v in static_reqs.items():
                    if v is None:
                        continue
                    if key in ("diagonal_batch", "diagonal_spatial"):
                        if getattr(kk, key) is True and _refuses_diagonal(v):
                            fail(f"{STAX} {name}", key, f"be False in the input kernel (the layer "
                                 f"requires {key}={v})", "True")
                    elif key in ("batch_axis", "channel_axis"):
                        nd = len(kk.shape1)
                        if getattr(kk, key) % nd != v % nd:
                            fail(f"{STAX} {name}", key, f"be {v % nd} in the input kernel",
                                 repr(getattr(kk, key)))
            return kernel_fn(k, **kwargs)

        setattr(checked, _INPUT_REQ, dict(static_reqs))
        return checked

    return decorate


def layer(layer_fn: Callable[..., tuple]) -> Callable[..., Layer]:
    """Turn a function returning ``(init_fn, apply_fn, kernel_fn)`` into a kjax layer.

    ``kernel_fn(k: Kernel, **kwargs) -> Kernel`` transforms the kernel of the layer's input into
    that of its output (a list of kernels for layers that take or make branches), as in
    neural-tangents; as there, ``k.ntk`` is None when the call does not ask for the NTK (e.g.
    ``get="nngp"``), so a ``kernel_fn`` must pass None through. The resulting layer's
    ``kernel_fn`` is a :class:`~kjax.ntk.stax.KernelFn`: it takes arrays or a ``Kernel``, ``get``
    and the other keyword arguments, and composes with kjax's layers. The output kernel's
    ``shape1`` / ``shape2`` are set from ``init_fn`` / ``apply_fn`` (by abstract evaluation), and
    requirements set with :func:`requires` are honoured.

    Args:
      layer_fn: the layer constructor.

    Returns:
      The constructor of the kjax layer, with ``layer_fn``'s signature.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> @stax.layer
      ... def Double():
      ...     def init_fn(rng, input_shape):
      ...         return input_shape, ()
      ...     def apply_fn(params, x, **kwargs):
      ...         return 2 * x
      ...     def kernel_fn(k, **kwargs):
      ...         return k.replace(nngp=4 * k.nngp, ntk=None if k.ntk is None else 4 * k.ntk,
      ...                          cov1=4 * k.cov1, cov2=None if k.cov2 is None else 4 * k.cov2)
      ...     return init_fn, apply_fn, kernel_fn
      >>> _, _, kernel_fn = stax.serial(stax.Dense(3), Double())
      >>> kernel_fn(jnp.ones((1, 2)), get="nngp").tolist()
      [[4.0]]

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    name = getattr(layer_fn, "__name__", "layer")

    @functools.wraps(layer_fn)
    def make(*args, **kwargs) -> Layer:
        fns = layer_fn(*args, **kwargs)
        if not (isinstance(fns, tuple | list) and len(fns) == 3 and all(map(callable, fns))):
            fail(f"{STAX}.layer", "layer_fn", "return (init_fn, apply_fn, kernel_fn)",
                 type(fns).__name__)
        init_fn, apply_fn, kernel_fn = fns
        if isinstance(kernel_fn, KernelFn):  # already a kjax layer
            return init_fn, apply_fn, kernel_fn
        reqs = dict(getattr(kernel_fn, _INPUT_REQ, {}))
        needs_full = any(_refuses_diagonal(reqs.get(k)) for k in ("diagonal_spatial",))
        axes = {k: reqs[k] for k in ("batch_axis", "channel_axis") if reqs.get(k) is not None}
        fn = f"{STAX}.{name} kernel_fn"

        def shapes_after(st):
            b, c = st.axes()
            outs = []
            for shape in (st.shape1, st.shape2):
                logical = K.logical_shape(shape, b, c)

                def run(x, logical=logical):
                    _, params = init_fn(jax.random.key(0), logical)
                    return apply_fn(params, x)

                try:
                    out = jax.eval_shape(run, jax.ShapeDtypeStruct(logical, st.nngp.dtype))
                except NotImplementedError:
                    out = None
                if isinstance(out, MaskedArray):
                    out = out.masked_value
                outs.append(None if out is None else tuple(out.shape))
            return outs

        def transform(st):
            many = not isinstance(st, K.State)
            sts = list(st) if many else [st]
            # NT: a call that does not ask for the NTK gives the layer a Kernel with ntk None
            ks = [K.to_kernel(s, names=None if s.ntk_wanted else ("nngp", "cov1", "cov2"))
                  for s in sts]
            out = kernel_fn(ks if many else ks[0])
            if isinstance(out, K.Kernel) and not many:
                s1, s2 = shapes_after(st)
                out = out.replace(shape1=s1 or out.shape1, shape2=s2 or out.shape2)
            # the masks are moved by make_layer's mask_fn, not by the layer's kernel_fn
            if isinstance(out, K.Kernel):
                return K.from_kernel(fn, out.replace(mask1=None, mask2=None))
            if isinstance(out, list | tuple) and all(isinstance(o, K.Kernel) for o in out):
                return [K.from_kernel(fn, o.replace(mask1=None, mask2=None)) for o in out]
            raise KjaxError(f"{fn}: the layer's kernel_fn must return a Kernel or a list of "
                            f"Kernels; got {type(out).__name__}.")

        masking = getattr(apply_fn, "_kjax_masking", None)
        if masking is not None:
            raw_apply, mask_fn, remask = masking
            return make_layer(init_fn, raw_apply, transform, name, needs_full=needs_full,
                              reqs=axes, mask_fn=mask_fn, remask=remask)
        return make_layer(init_fn, apply_fn, transform, name, needs_full=needs_full, reqs=axes)

    return make


def supports_masking(remask_kernel: bool) -> Callable:
    """Give a layer's ``apply_fn`` neural-tangents' ``mask_constant`` keyword.

    The decorated layer function returns ``(init_fn, apply_fn, kernel_fn[, mask_fn])`` where
    ``apply_fn(params, x, mask=None, **kwargs)`` takes the boolean mask of ``x`` and ``mask_fn(mask,
    input_shape)`` says how the layer moves the mask (identity when absent). The new
    ``apply_fn(params, x, *, mask_constant=None, **kwargs)`` masks the entries of ``x`` equal to
    ``mask_constant`` (NaN allowed), zeroes them, and returns a :class:`MaskedArray` when masking.
    Apply it before :func:`layer`, which then also moves the masks of ``kernel_fn``'s kernels
    (``Kernel.mask1`` / ``mask2``) with ``mask_fn`` and, with ``remask_kernel``, zeroes the
    covariances between entries of which one is masked.

    Args:
      remask_kernel: whether the kernels are re-masked (zeroed where masked) after the layer.

    Returns:
      A decorator of layer functions.

    Raises:
      KjaxError: a layer function that returns other than 3 or 4 functions.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> @stax.supports_masking(remask_kernel=False)
      ... def Neg():
      ...     return (lambda rng, s: (s, ())), (lambda p, x, mask=None, **kw: -x), (lambda k, **kw: k)
      >>> _, apply_fn, _ = Neg()
      >>> out = apply_fn((), jnp.array([1.0, 5.0]), mask_constant=5.0)
      >>> out.masked_value.tolist(), out.mask.tolist()
      ([-1.0, -0.0], [False, True])

    References:
      Novak et al. Neural Tangents. ICLR 2020 (masking: examples/imdb.py).
    """

    def decorate(layer_fn: Callable) -> Callable:
        @functools.wraps(layer_fn)
        def with_masking(*args, **kwargs):
            fns = layer_fn(*args, **kwargs)
            if not isinstance(fns, tuple | list) or len(fns) not in (3, 4):
                fail(f"{STAX}.supports_masking", "layer", "return 3 (init_fn, apply_fn, "
                     "kernel_fn) or 4 (..., mask_fn) functions",
                     f"{len(fns) if isinstance(fns, tuple | list) else type(fns).__name__}")
            init_fn, apply_fn, kernel_fn = fns[:3]
            user_mask_fn = fns[3] if len(fns) == 4 else (lambda mask, input_shape: mask)

            def mask_fn(mask, input_shape):
                return None if mask is None else user_mask_fn(mask, input_shape)

            apply_masked = masked_apply(apply_fn, mask_fn)
            # what `layer` needs to give the kernel_fn masks too
            apply_masked._kjax_masking = (apply_fn, user_mask_fn, bool(remask_kernel))

            if hasattr(kernel_fn, _INPUT_REQ):
                reqs = getattr(kernel_fn, _INPUT_REQ)
                kernel_inner = kernel_fn

                def kernel_fn(k, **kw):
                    return kernel_inner(k, **kw)

                setattr(kernel_fn, _INPUT_REQ, reqs)
            return init_fn, apply_masked, kernel_fn

        return with_masking

    return decorate


def unmask_fn(fn: Callable) -> Callable:
    """Make a function that returns :class:`MaskedArray` values return arrays with the masked
    entries zeroed (e.g. an ``apply_fn`` given ``mask_constant``, before
    ``empirical_kernel_fn``).

    Args:
      fn: a function whose outputs may hold :class:`MaskedArray` values.

    Returns:
      ``fn`` with each :class:`MaskedArray` in its output replaced by its zero-masked array.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> f = stax.unmask_fn(lambda: stax.MaskedArray(jnp.array([1.0, 2.0]),
      ...                                              jnp.array([False, True])))
      >>> f().tolist()
      [1.0, 0.0]
    """

    def unmask(x):
        if isinstance(x, MaskedArray):
            return jnp.where(x.mask, jnp.zeros((), x.masked_value.dtype), x.masked_value)
        return x

    @functools.wraps(fn)
    def fn_no_mask(*args, **kwargs):
        return jax.tree.map(unmask, fn(*args, **kwargs),
                            is_leaf=lambda x: isinstance(x, jax.Array | np.ndarray | MaskedArray))

    return fn_no_mask

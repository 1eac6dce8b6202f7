"""What every infinite-width layer is made of: the ``kernel_fn`` object, the layer triple, checks.

A layer is neural-tangents' triple ``(init_fn, apply_fn, kernel_fn)``. ``kernel_fn`` is a
:class:`KernelFn`, which wraps the layer's ``transform`` (a map from the kernel state of
:mod:`kjax.ntk.stax._kernel` to the next one) and, called on arrays, builds the input state, runs
the transforms in one jitted program, slices out what ``get`` asks for, and checks first that the
program's estimated peak memory fits (:mod:`kjax.ntk._memory`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import check_in, check_positive, fail
from kjax.ntk import _memory
from kjax.ntk._model import all_none
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._kernel import State

Layer = tuple[Callable, Callable, Callable]
#: the prefix of every layer's name in messages
STAX = "kjax.ntk.stax"
#: estimates kept per kernel_fn (one per input shapes and ``get``)
_CACHE_SIZE = 64


class KernelFn:
    """``kernel_fn(x1_or_kernel, x2=None, get=None, *, diagonal_batch=None, diagonal_spatial=None,
    mask_constant=None, **kwargs)``: the infinite-width kernels of a network.

    Called on arrays ``x1: [n1, *spatial, C]`` and ``x2: [n2, *spatial, C]`` (or None for ``x1``),
    it returns NT's outputs: with ``get=None`` a :class:`Kernel`; with a string, that field (e.g.
    ``"nngp"``, ``"ntk"``, ``"cov1"``, ``"shape1"``, ``"is_gaussian"``); with a tuple of names, a
    namedtuple ``AnalyticKernel`` with those fields in that order. Kernels have shape ``[n1, n2,
    *spatial pairs]``. Called on a :class:`Kernel` (the kernel of the network's input, e.g. the
    output of another ``kernel_fn``), it returns the :class:`Kernel` of the output. A network whose
    input is a list of branches (``parallel``) takes lists of arrays, nested for nested
    ``parallel`` layers (``(x_a, (x_b, x_c))``; ``x2`` nested alike, or None, or all None as in
    NT's ``(None, None)``); a network that ends in several branches returns a list.

    ``diagonal_spatial=True`` keeps only the spatial diagonal of every covariance (``nngp: [n1,
    n2, H, W]``; refused when a layer mixes positions, e.g. pooling), ``False`` the full one, and
    None the cheapest that gives the result. ``diagonal_batch=False`` returns the full ``cov1:
    [n1, n1, ...]``. ``mask_constant`` (a real scalar; NaN matches NaN) masks the input entries
    equal to it, as neural-tangents does for padding: they are zeroed, their masks travel in the
    kernels (``Kernel.mask1`` / ``mask2``, True where masked; a Dense / Conv / attention layer
    masks a position when all its channels are masked, a Conv / pooling output takes its window
    centre's mask), the layers that mix positions (``GlobalAvgPool``, ``LayerNorm`` over spatial
    axes, ``GlobalSelfAttention``) average or attend over unmasked positions only, and affine
    layers, pooling and the nonlinearities that don't keep zero at zero zero the kernels between
    masked positions. Pooling layers (and ``LayerNorm``) refuse masks that differ between channels
    (a ``NotImplementedError``, as NT's); put a Dense / Conv first. Other keyword
    arguments are accepted and ignored, as neural-tangents' layers do with what they don't use,
    except ``pattern=(pattern1, pattern2)``, the graphs of :func:`~kjax.ntk.stax.Aggregate` layers
    (``pattern2`` for ``x2``; ``pattern1`` alone is used when ``x2`` is None).

    Before it runs, the call's peak memory is estimated from shapes (the live set of its jaxpr,
    times :data:`kjax.ntk._memory.XLA_FACTOR`); when it exceeds the free memory a
    ``KjaxMemoryError`` (a ``MemoryError``) names a ``stax.batch`` batch size that fits.
    """

    def __init__(self, transform: Callable, name: str, needs_full: bool = False,
                 reqs: dict | None = None):
        self.transform = transform
        self.name = name
        self.fn_name = f"{STAX}.{name} kernel_fn"
        # True when some layer mixes spatial positions (pooling), so the spatial diagonal is not
        # enough; otherwise a network ending in Flatten is computed on the diagonal only
        self.needs_full = needs_full
        # the layout the first layers need of the input: {"batch_axis": b, "channel_axis": c}
        self.reqs = dict(reqs or {})
        self.__name__ = name
        # one compiled program per (shapes, get) instead of hundreds of eagerly dispatched ops
        self._jitted = jax.jit(self._compute, static_argnames=("names", "diagonal_spatial",
                                                               "diagonal_batch"))
        self._jitted_kernel = jax.jit(self._compute_kernel, static_argnames=("names",
                                                                             "diagonal_batch"))
        self._estimates: dict[Any, tuple[float, tuple]] = {}

    def _states(self, x1, x2, diag, extra=None, mask_constant=None, names=None):
        states = self._states_no_extra(x1, x2, diag, mask_constant)
        if names is not None and "ntk" not in names:  # NT computes no NTK for such a call
            states = _map_nested(lambda s: s.replace(ntk_wanted=False), states)
        if extra is None:
            return states
        return _map_nested(lambda s: s.replace(extra=extra), states)

    def _states_no_extra(self, x1, x2, diag, mask_constant=None):
        fn = self.fn_name
        b, c = self.reqs.get("batch_axis", 0), self.reqs.get("channel_axis", -1)
        nd = min(jnp.ndim(x) for x in jax.tree.leaves(x1))
        if not (-nd <= b < nd and -nd <= c < nd) or b % nd == c % nd:
            b, c = 0, -1  # inputs of the wrong rank: the first layer's rank check names it

        def state(a, z):
            if isinstance(a, list | tuple):  # branches, nested as NT's parallel inputs may be
                z = [None] * len(a) if z is None else z
                return [state(aa, zz) for aa, zz in zip(a, z, strict=True)]
            return K.input_state(fn, a, z, diag=diag, batch_axis=b, channel_axis=c,
                                 mask_constant=mask_constant)

        return state(x1, x2)

    def _compute(self, x1, x2, names, diagonal_spatial, diagonal_batch, extra=None,
                 mask_constant=None):
        out = None
        ndim = min(jnp.ndim(x) for x in jax.tree.leaves(x1))
        if diagonal_spatial or (diagonal_spatial is None and not self.needs_full and ndim > 2):
            # NT's diagonal_spatial: valid when the output has no spatial axes left (Flatten);
            # otherwise trace again with the full covariance (the unused trace is dead code)
            out = self.transform(self._states(x1, x2, True, extra, mask_constant, names))
            if not diagonal_spatial and not _all_flat(out):
                out = None
        if out is None:
            out = self.transform(self._states(x1, x2, False, extra, mask_constant, names))
        return _to_kernels(out, diagonal_batch, names)

    def _compute_kernel(self, k, names, diagonal_batch, extra=None):
        fn = self.fn_name
        st = _map_nested(lambda kk: K.from_kernel(fn, kk).replace(extra=extra), k)
        db = _first_leaf(k).diagonal_batch
        return _to_kernels(self.transform(st), db if diagonal_batch is None else diagonal_batch,
                           names)

    def memory_estimate(self, x1: Any, x2: Any = None, get: Any = None) -> tuple[float, tuple]:
        """``(peak bytes, pair shape)`` of ``kernel_fn(x1, x2, get)``, from shapes.

        ``x1`` / ``x2`` may be arrays or ``jax.ShapeDtypeStruct``; nothing is computed. The pair
        shape is that of one pair of inputs' slice of the result, ``[*spatial pairs]`` (``()``
        without spatial axes).
        """
        _, names = K.canonical_get(self.fn_name, get, K.KERNEL_FIELDS)
        key = (tuple(np.shape(x1)), np.dtype(x1.dtype),
               None if x2 is None else (tuple(np.shape(x2)), np.dtype(x2.dtype)), names)
        if key not in self._estimates:
            a1 = jax.ShapeDtypeStruct(np.shape(x1), x1.dtype)
            a2 = None if x2 is None else jax.ShapeDtypeStruct(np.shape(x2), x2.dtype)
            traced = self._jitted.trace(a1, a2, names=names, diagonal_spatial=None,
                                        diagonal_batch=True)
            peak = _memory.XLA_FACTOR * _memory.jaxpr_peak_bytes(traced.jaxpr)
            outs = [o for o in jax.tree.leaves(traced.out_info) if len(o.shape) >= 2]
            pair_shape = tuple(outs[0].shape[2:]) if outs else ()
            if len(self._estimates) >= _CACHE_SIZE:
                self._estimates.clear()
            self._estimates[key] = (peak, pair_shape)
        return self._estimates[key]

    def check_memory(self, fn: str, x1: Any, x2: Any, get: Any, n_kernels: int) -> None:
        """Raise ``KjaxMemoryError`` naming a ``stax.batch`` batch size when the call won't fit."""
        peak, pair_shape = self.memory_estimate(x1, x2, get)
        per_pair = int(np.prod(pair_shape))
        n1 = np.shape(x1)[0]
        n2 = n1 if x2 is None else np.shape(x2)[0]
        total = n1 if x2 is None else n1 + n2
        itemsize = max(np.dtype(x1.dtype).itemsize, 4)
        result = 3.0 * n1 * n2 * per_pair * n_kernels * itemsize  # stax.batch's assembly

        def need(b):
            return peak * (min(2 * b, total) / total) ** 2 + result

        def advice(free):
            b = _memory.largest_fitting(need, max(n1, n2), _memory.HEADROOM * free)
            if b >= 1:
                return f"use kjax.ntk.stax.batch(kernel_fn, batch_size={b})"
            return ("not even blocks of one example fit (kjax.ntk.stax.batch(kernel_fn, "
                    "batch_size=1)): reduce the spatial size before the layers that need the full "
                    "covariance (pool or stride earlier), or stream the result with `out=`")

        shape = [n1, n2, *pair_shape]
        _memory.check_memory(fn, peak, f"the kernel {shape} of {total} inputs of shape "
                             f"{tuple(np.shape(x1)[1:])}", advice)

    def __call__(self, x1_or_kernel, x2=None, get=None, *, diagonal_batch=None,
                 diagonal_spatial=None, mask_constant=None, **kwargs):
        x1 = x1_or_kernel
        x2 = None if all_none(x2) else x2  # NT: (None, None) for parallel inputs is x2 = x1
        if _all_nested(x1, State):
            return self.transform(x1)
        fn = self.fn_name
        _, names = K.canonical_get(fn, get, K.KERNEL_FIELDS)
        for arg, v in (("diagonal_batch", diagonal_batch), ("diagonal_spatial", diagonal_spatial)):
            if v is not None and not isinstance(v, bool | np.bool_):
                fail(fn, arg, "be None, True or False", repr(v))
        extra = _extra(fn, kwargs)
        if mask_constant is not None:
            if isinstance(mask_constant, bool) or not (
                    isinstance(mask_constant, int | float | np.number)
                    or (isinstance(mask_constant, np.ndarray | jax.Array)
                        and np.ndim(mask_constant) == 0)):
                fail(fn, "mask_constant", "be None or a real scalar (inputs equal to it are "
                     "masked; NaN masks NaNs)", repr(mask_constant))
        if diagonal_spatial and self.needs_full:
            fail(fn, "diagonal_spatial", f"be None or False: a layer of {self.name} mixes spatial "
                 "positions (pooling), which needs the full spatial covariance", "True")
        if _all_nested(x1, K.Kernel):
            if x2 is not None:
                fail(fn, "x2", "be None when a Kernel is given", type(x2).__name__)
            out = self._jitted_kernel(x1, names=names,
                                      diagonal_batch=None if diagonal_batch is None
                                      else bool(diagonal_batch), extra=extra)
            return _select(fn, out, get)
        kw = dict(names=names, diagonal_spatial=None if diagonal_spatial is None
                  else bool(diagonal_spatial),
                  diagonal_batch=True if diagonal_batch is None else bool(diagonal_batch))
        if isinstance(x1, list | tuple):
            x1 = _check_nested(fn, "x1", x1)
            if x2 is not None:
                x2 = _check_nested(fn, "x2", x2, like=x1)
            return _select(fn, self._jitted(x1, x2, extra=extra, mask_constant=mask_constant, **kw),
                           get)
        x1 = K.check_input(fn, "x1", K.to_float(fn, "x1", x1))
        x2 = None if x2 is None else K.check_input(fn, "x2", K.to_float(fn, "x2", x2))
        self.check_memory(fn, x1, x2, names, 2 if names is None else len(names))
        return _select(fn, self._jitted(x1, x2, extra=extra, mask_constant=mask_constant, **kw),
                       get)

    def __repr__(self) -> str:
        return f"<kernel_fn of {self.name}>"


def _map_nested(f: Callable, x: Any) -> Any:
    """``f`` on each leaf of nested lists / tuples (branches), as lists."""
    if isinstance(x, list | tuple):
        return [_map_nested(f, v) for v in x]
    return f(x)


def _first_leaf(x: Any) -> Any:
    while isinstance(x, list | tuple):
        x = x[0]
    return x


def _all_nested(x: Any, cls: type) -> bool:
    """``x`` is a ``cls`` or non-empty nested lists / tuples of them."""
    if isinstance(x, list | tuple):
        return bool(x) and all(_all_nested(v, cls) for v in x)
    return isinstance(x, cls)


def _check_nested(fn: str, arg: str, x: Any, like: Any = None, path: str = "") -> Any:
    """Branch inputs (NT's parallel inputs, possibly nested: ``(x_a, (x_b, x_c))``) as nested
    lists of checked float arrays; ``like``: the nesting ``x`` must have (``x1``'s, for ``x2``)."""
    if like is not None and (isinstance(x, list | tuple) != isinstance(like, list)
                             or (isinstance(x, list | tuple) and len(x) != len(like))):
        want = f"a list of {len(like)} arrays" if isinstance(like, list) else "an array"
        fail(fn, f"{arg}{path}", f"be None or nested like `x1` ({want})", type(x).__name__)
    if x is None:
        fail(fn, f"{arg}{path}", "be an array (`x2` may be None only as a whole, or all None)",
             "None")
    if isinstance(x, list | tuple):
        if not x:
            fail(fn, f"{arg}{path}", "be a non-empty list of inputs (one per branch)", "[]")
        return [_check_nested(fn, arg, v, None if like is None else like[i], f"{path}[{i}]")
                for i, v in enumerate(x)]
    return K.check_input(fn, f"{arg}{path}", K.to_float(fn, f"{arg}{path}", x))


def _extra(fn: str, kwargs: dict):
    """The keyword arrays layers read (NT's ``pattern=(pattern1, pattern2)`` of ``Aggregate``);
    other keywords are ignored, as in neural-tangents."""
    pattern = kwargs.get("pattern")
    if pattern is None:
        return None
    if not isinstance(pattern, tuple | list) or len(pattern) != 2:
        fail(fn, "pattern", "be a pair (pattern1, pattern2) (pattern2 for x2; (pattern1, pattern1) "
             "or (pattern1, None) when x2 is None)", type(pattern).__name__)
    return {"pattern": tuple(pattern)}  # arrays or pytrees (what a layer's to_dense reads)


def _all_flat(out) -> bool:
    if isinstance(out, State):
        return len(out.shape1) == 2
    return all(_all_flat(o) for o in out)


def _to_kernels(out, diagonal_batch, names):
    if isinstance(out, State):
        return K.to_kernel(out, diagonal_batch, names)
    return [_to_kernels(o, diagonal_batch, names) for o in out]


def _select(fn, out, get):
    if isinstance(out, K.Kernel):
        return K.select(fn, out, get)
    return [_select(fn, o, get) for o in out]


def make_layer(init_fn, apply_fn, transform, name, needs_full=False, reqs=None, *,
               mask_fn: Callable | None = None, remask: bool = False,
               masking: bool = True, kernel_mask: bool = True) -> Layer:
    """The ``(init_fn, apply_fn, kernel_fn)`` triple of a layer named ``name``; ``reqs`` are the
    layout it needs of its input (``batch_axis``, ``channel_axis``).

    Masking (neural-tangents' ``supports_masking``): ``mask_fn(mask, input_shape)`` moves a boolean
    mask of the layer's input (in the activations' own layout; lists for layers with branches) to
    its output (None: unchanged); ``remask`` zeroes the output kernels between entries of which one
    is masked. ``apply_fn`` gains ``mask_constant=`` (and takes :class:`MaskedArray` inputs): its
    own ``apply_fn`` then gets the zeroed inputs and ``mask=``. ``masking=False`` is for
    combinators, whose layers do this themselves; ``kernel_mask=False`` for layers whose
    ``transform`` sets the state's mask itself (``mask_fn`` then serves ``apply_fn`` only).
    """
    if masking:
        mfn = mask_fn or (lambda mask, input_shape: mask)
        apply_fn = masked_apply(apply_fn, mfn)
        transform = _masked_transform(transform, mfn if kernel_mask else None, remask,
                                      f"{STAX}.{name} kernel_fn")
    init_fn.__name__ = apply_fn.__name__ = name
    return init_fn, apply_fn, KernelFn(transform, name, needs_full, reqs)


# --------------------------------------------------------------------------------------------
# masking


@dataclasses.dataclass
class MaskedArray:
    """An array (or pytree) with a boolean mask (``True``: masked), as an ``apply_fn`` returns
    when given ``mask_constant``.

    Attributes:
      masked_value: the values, with masked entries zeroed.
      mask: boolean, same structure and broadcastable shapes (the channel axis may have size 1).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> stax.MaskedArray(jnp.ones(2), jnp.array([False, True])).mask.tolist()
      [False, True]
    """

    masked_value: Any
    mask: Any


jax.tree_util.register_dataclass(MaskedArray, data_fields=["masked_value", "mask"], meta_fields=[])


def masked(x, mask_constant) -> MaskedArray:
    """``x`` as a :class:`MaskedArray`: entries equal to ``mask_constant`` (NaN matches NaN)
    masked and zeroed; a :class:`MaskedArray` passes through (its masked entries zeroed)."""
    if isinstance(x, MaskedArray):
        x, mask = x.masked_value, x.mask
    elif x is None or mask_constant is None:
        mask = None
    else:
        x = jnp.asarray(x)
        mc = jnp.asarray(mask_constant, x.dtype if jnp.issubdtype(x.dtype, jnp.inexact)
                         else jnp.result_type(float))
        mask = jnp.where(jnp.isnan(mc), jnp.isnan(x), x == mc)
    if mask is not None:
        x = jnp.where(mask, jnp.zeros((), x.dtype), x)
    return MaskedArray(x, mask)


def _is_array_leaf(x) -> bool:
    return isinstance(x, jax.Array | np.ndarray | MaskedArray)


def masked_apply(apply_fn, mask_fn):
    """``apply_fn(params, inputs, mask=...)`` behind NT's masked interface: inputs (or
    :class:`MaskedArray` leaves) masked by ``mask_constant``, the output a :class:`MaskedArray` with
    ``mask_fn(mask, input_shapes)``; without any mask ``apply_fn`` runs as it is."""

    def apply_masked(params, inputs, *, mask_constant=None, **kwargs):
        leaves = jax.tree.leaves(inputs, is_leaf=lambda x: isinstance(x, MaskedArray))
        if mask_constant is None and not any(isinstance(x, MaskedArray) for x in leaves):
            return apply_fn(params, inputs, **kwargs)
        mk = jax.tree.map(lambda x: masked(x, mask_constant), inputs, is_leaf=_is_array_leaf)

        def leaf(x):
            return isinstance(x, MaskedArray)

        values = jax.tree.map(lambda m: m.masked_value, mk, is_leaf=leaf)
        mask = jax.tree.map(lambda m: m.mask, mk, is_leaf=leaf)
        out = apply_fn(params, values, mask=mask, **kwargs)
        shapes = (values.shape if hasattr(values, "shape")
                  else [jnp.shape(v) for v in values])
        out_mask = None if mask is None else mask_fn(mask, shapes)
        return out if out_mask is None else MaskedArray(out, out_mask)

    return apply_masked


def _masked_transform(transform, mask_fn, remask, fn):
    def masked_transform(st):
        many = not isinstance(st, State)
        sts = list(st) if many else [st]
        if all(s.mask is None for s in sts):
            return transform(st)
        out = transform(st)
        if mask_fn is None:
            return K.remask(fn, out) if remask else out
        masks = [None if s.mask is None else K.from_canonical(s.mask, *s.axes()) for s in sts]
        shapes = [K.logical_shape((s.nngp.shape[0],) + tuple(s.shape1[1:]), *s.axes())
                  for s in sts]
        m = mask_fn(masks if many else masks[0], shapes if many else shapes[0])
        if m is not None:
            m = jnp.asarray(m, bool)
            b, c = out.axes()
            m = K.to_canonical(m, b, c) if m.ndim == len(out.shape1) and m.ndim >= 2 else m
        out = out.replace(mask=m)
        return K.remask(fn, out) if remask else out

    return masked_transform


def merge_reqs(kernel_fns) -> dict:
    """The input layout a sequence of layers needs: the first layer that has a requirement sets
    it (elementwise layers have none; a layer with one fixes the layout for those after it)."""
    out: dict = {}
    for kf in kernel_fns:
        for key, v in kf.reqs.items():
            if key != "_reset":
                out.setdefault(key, v)
        if kf.reqs.get("_reset"):  # e.g. Flatten: the layers after it see its output's layout
            out["_reset"] = True
            break
    return out


def check_axes(fn: str, st: State, batch_axis: int | None, channel_axis: int | None) -> None:
    """The activations' batch / channel axes are those the layer was built with."""
    nd = len(st.shape1)
    b, c = st.axes()
    for arg, want, have in (("batch_axis", batch_axis, b), ("channel_axis", channel_axis, c)):
        if want is None:
            continue
        if not -nd <= want < nd:
            fail(fn, arg, f"be in [-{nd}, {nd}) for activations of rank {nd}", repr(want))
        if want % nd != have:
            fail(fn, arg, f"be the {arg.split('_')[0]} axis of its input, {have} (set by the "
                 "layers before it or the first layer's arguments; mixing layouts makes the "
                 "infinite limit ill-defined)", repr(want))


def axis_arg(fn: str, arg: str, value) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        fail(fn, arg, "be an int", repr(value))
    return int(value)


def batch_channel_axes(fn: str, batch_axis: int, channel_axis: int, nd: int) -> tuple[int, int]:
    """``(batch_axis, channel_axis)`` as non-negative axes of rank-``nd`` inputs, checked: both
    in ``[-nd, nd)`` and different (errors name ``fn`` and the argument)."""
    for arg, a in (("batch_axis", batch_axis), ("channel_axis", channel_axis)):
        if not -nd <= a < nd:
            fail(fn, arg, f"be in [-{nd}, {nd}) for inputs of rank {nd}", repr(a))
    b, c = batch_axis % nd, channel_axis % nd
    if b == c:
        fail(fn, "channel_axis", "differ from `batch_axis`", repr(channel_axis))
    return b, c


def check_std(fn: str, W_std, b_std) -> None:
    check_positive(fn, "W_std", W_std, allow_zero=True)
    check_positive(fn, "b_std", b_std, allow_zero=True)


def check_parameterization(fn: str, parameterization: str) -> str:
    p = str(parameterization).lower()
    check_in(fn, "parameterization", p, ("ntk", "standard"))
    return p


def single_branch(fn: str, st) -> State:
    if not isinstance(st, State):
        fail(fn, "input", "be a single branch (use parallel(...) to act on branches)",
             f"{len(st)} branches")
    return st


# --------------------------------------------------------------------------------------------
# spatial layers: padding, windows, ranks


def canonical_padding(fn: str, padding) -> str:
    p = str(getattr(padding, "value", padding)).upper()
    check_in(fn, "padding", p, ("VALID", "SAME", "CIRCULAR"))
    return p


def tuple_of_ints(fn: str, arg: str, value, n: int | None = None) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * (n or 1)
    if not isinstance(value, tuple | list) or not value or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in value):
        fail(fn, arg, "be a tuple of positive ints", repr(value))
    if n is not None and len(value) != n:
        fail(fn, arg, f"have {n} entries (one per spatial axis)", repr(value))
    return tuple(int(v) for v in value)


def check_spatial_rank(fn: str, arg: str, shape: tuple, n_spatial: int,
                       window: tuple[str, tuple] | None = None) -> None:
    """``shape`` is ``[n, *spatial, C]`` with one spatial axis per entry of the layer's window
    (``window = (its argument name, its value)``, named in the message)."""
    if len(shape) != n_spatial + 2:
        lay = "[n, " + ", ".join("HWD"[:n_spatial]) + ", C]"
        which = f" (`{window[0]}` {window[1]})" if window else ""
        fail(fn, arg, f"have rank {n_spatial + 2} {lay} for a {n_spatial}D layer{which}",
             f"shape {tuple(shape)} (rank {len(shape)})")


def spatial_out_shape(fn: str, arg: str, shape: tuple, window: tuple, strides: tuple,
                      padding: str) -> tuple[int, ...]:
    """Output spatial sizes of a window layer on ``[n, *spatial, C]``; a ``VALID`` window larger
    than its input (an empty output, which neural-tangents rejects too) raises, naming ``arg``."""
    spatial = tuple(shape[1:-1])
    if padding == "VALID" and any(w > s for s, w in zip(spatial, window, strict=True)):
        fail(fn, arg, f"fit in the input's spatial shape {spatial} with padding 'VALID' (the output "
             "would be empty; use padding='SAME', a smaller window or larger inputs)", window)
    return tuple(K.out_length(s, w, st, padding)
                 for s, w, st in zip(spatial, window, strides, strict=True))

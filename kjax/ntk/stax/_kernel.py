"""The internal kernel state that infinite-width layers transform, and the operations on it.

A state holds the NNGP covariance ``nngp`` and the NTK ``ntk`` of the *concatenated* batch
``x = [x1; x2]`` (``N = n1 + n2`` rows, or ``n1`` when ``x2`` is None), with the full spatial
covariance in neural-tangents' zipped layout ``[N, N, H, H', W, W', ...]``. The variances that the
nonlinearities need are the diagonal of that array, so one array serves NT's ``cov1``, ``nngp`` and
``cov2``; the public :class:`Kernel` slices them out at the end (:func:`to_kernel`), and a
:class:`Kernel` fed back into a ``kernel_fn`` is turned into a state again (:func:`from_kernel`).

It also carries the finite-width shapes of the activations (``shape1``, ``shape2``: what the
network's ``apply_fn`` would produce for ``x1`` and ``x2``, always in the canonical layout
``[n, *spatial, C]``), needed by the standard parameterisation and by the shape checks, NT's
``is_gaussian`` flag (a nonlinearity needs a Gaussian input, i.e. a ``Dense`` / ``Conv`` before
it), and where the batch and channel axes sit in the activations' own layout (``batch_axis``,
``channel_axis``; layers with those arguments check them, and the public :class:`Kernel` reports
its shapes in that layout).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxError, KjaxTypeError, fail

#: the kernels ``get`` may name, in neural-tangents' order
GETS = ("nngp", "ntk", "cov1", "cov2")


@dataclasses.dataclass(frozen=True)
class Kernel:
    """The infinite-width kernels of a network, and what a layer needs to know about them.

    neural-tangents' ``Kernel``: what ``kernel_fn(x1, x2)`` returns with ``get=None``, and what a
    ``kernel_fn`` accepts instead of inputs (``kernel_fn(kernel)`` applies the network to the
    kernel of its input, so networks can be evaluated layer by layer). A JAX pytree: the arrays are
    its leaves, the flags and shapes are static.

    Attributes:
      nngp: ``[n1, n2, *spatial]`` NNGP covariance between ``x1`` and ``x2``; the spatial axes are
        pairs ``H, H', W, W'`` (zipped), or single ``H, W`` when ``diagonal_spatial``.
      ntk: the neural tangent kernel, same shape as ``nngp`` (None when not computed).
      cov1: ``[n1, *spatial]`` NNGP covariance of each ``x1[i]`` with itself, or ``[n1, n1,
        *spatial]`` when ``diagonal_batch`` is False.
      cov2: the same for ``x2``, or None when ``x2`` is None.
      x1_is_x2: boolean scalar array, whether ``x2`` is ``x1`` (or None).
      is_gaussian: whether the activations are Gaussian given the inputs (after a ``Dense`` /
        ``Conv``), as a nonlinearity needs.
      is_reversed: always False in kjax (NT may store spatial axes reversed internally).
      is_input: False (NT's flag for the input layer).
      diagonal_batch: whether ``cov1`` / ``cov2`` hold only the batch diagonal.
      diagonal_spatial: whether the spatial axes are single (diagonal) instead of pairs.
      shape1: shape of the finite network's activations for ``x1``, in its own layout.
      shape2: the same for ``x2``.
      batch_axis: batch axis of the activations.
      channel_axis: channel axis of the activations (the one taken to infinity).
      mask1: boolean ``[n1, ...]`` mask of the activations for ``x1`` (True: masked, e.g.
        padding), in the activations' layout with a channel axis of size 1 or ``C``; None without
        ``mask_constant``.
      mask2: the same for ``x2`` (None when ``x2`` is None).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
      >>> k = kernel_fn(jnp.ones((3, 4)), jnp.ones((2, 4)))
      >>> k.nngp.shape, k.cov1.shape, k.shape1, k.is_gaussian
      ((3, 2), (3,), (3, 1), True)

    References:
      Novak et al. Neural Tangents: Fast and Easy Infinite Neural Networks in Python. ICLR 2020.
    """

    nngp: Any
    ntk: Any
    cov1: Any
    cov2: Any = None
    x1_is_x2: Any = None
    is_gaussian: bool = False
    is_reversed: bool = False
    is_input: bool = False
    diagonal_batch: bool = True
    diagonal_spatial: bool = False
    shape1: tuple[int, ...] | None = None
    shape2: tuple[int, ...] | None = None
    batch_axis: int = 0
    channel_axis: int = -1
    mask1: Any = None
    mask2: Any = None

    def replace(self, **kw) -> Kernel:
        """A copy with the given fields replaced (NT's ``Kernel.replace``)."""
        return dataclasses.replace(self, **kw)

    def asdict(self) -> dict[str, Any]:
        """The fields as a dict, in NT's order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def astuple(self) -> tuple[Any, ...]:
        """The fields as a tuple, in NT's order."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    def slice(self, n1_slice: slice, n2_slice: slice) -> Kernel:
        """The kernel of ``x1[n1_slice]`` and ``x2[n2_slice]`` (NT's ``Kernel.slice``)."""
        cov1 = self.cov1[n1_slice]
        cov2 = self.cov1[n2_slice] if self.cov2 is None else self.cov2[n2_slice]
        ntk = self.ntk
        ntk = ntk if ntk is None or jnp.ndim(ntk) == 0 else ntk[n1_slice, n2_slice]
        return self.replace(cov1=cov1, cov2=cov2, nngp=self.nngp[n1_slice, n2_slice], ntk=ntk,
                            shape1=_with_batch(self.shape1, self.batch_axis, cov1.shape[0]),
                            shape2=_with_batch(self.shape2, self.batch_axis, cov2.shape[0]))


def _with_batch(shape, batch_axis, n):
    if shape is None:
        return None
    shape = list(shape)
    shape[batch_axis] = n
    return tuple(shape)


_DATA = ("nngp", "ntk", "cov1", "cov2", "x1_is_x2", "mask1", "mask2")
jax.tree_util.register_dataclass(
    Kernel, data_fields=list(_DATA),
    meta_fields=[f.name for f in dataclasses.fields(Kernel) if f.name not in _DATA])
#: every name ``get`` may ask for: the fields of :class:`Kernel`
KERNEL_FIELDS = tuple(f.name for f in dataclasses.fields(Kernel))


@dataclasses.dataclass(frozen=True)
class State:
    nngp: jax.Array
    ntk: jax.Array
    n1: int
    has_x2: bool
    shape1: tuple[int, ...]
    shape2: tuple[int, ...]
    is_gaussian: bool
    diag: bool = False  # spatial diagonal only: [N, N, H, W] instead of [N, N, H, H', W, W']
    # where the batch / channel axes sit in the activations' own layout (non-negative)
    batch_axis: int = 0
    channel_axis: int = -1
    x1_is_x2: Any = None
    # kernel_fn keyword arrays a layer reads (Aggregate's ``pattern``: (pattern1, pattern2))
    extra: Any = None
    # boolean mask of the activations of [x1; x2], canonical [N, *spatial, C or 1] (True: masked)
    mask: Any = None
    # whether the call asked for the NTK: NT's kernel_fn computes none otherwise, so a custom
    # layer's kernel_fn (stax.layer) sees ``Kernel.ntk`` None
    ntk_wanted: bool = True

    def replace(self, **kw) -> State:
        return dataclasses.replace(self, **kw)

    @property
    def n_spatial(self) -> int:
        return len(self.shape1) - 2

    def axes(self) -> tuple[int, int]:
        """``(batch_axis, channel_axis)`` as non-negative axes of the activations."""
        nd = len(self.shape1)
        return self.batch_axis % nd, self.channel_axis % nd


def logical_shape(shape: tuple[int, ...], batch_axis: int, channel_axis: int) -> tuple[int, ...]:
    """The canonical ``[n, *spatial, C]`` shape in the layout with the batch at ``batch_axis`` and
    the channels at ``channel_axis`` (spatial axes in order in the remaining slots)."""
    nd = len(shape)
    b, c = batch_axis % nd, channel_axis % nd
    spatial = iter(shape[1:-1])
    return tuple(shape[0] if i == b else shape[-1] if i == c else next(spatial) for i in range(nd))


def canonical_shape(shape: tuple[int, ...], batch_axis: int, channel_axis: int) -> tuple[int, ...]:
    """Inverse of :func:`logical_shape`."""
    nd = len(shape)
    b, c = batch_axis % nd, channel_axis % nd
    return (shape[b], *[s for i, s in enumerate(shape) if i not in (b, c)], shape[c])


def to_canonical(x: jax.Array, batch_axis: int, channel_axis: int) -> jax.Array:
    """Move the batch axis first and the channel axis last."""
    return jnp.moveaxis(x, (batch_axis % x.ndim, channel_axis % x.ndim), (0, -1))


def from_canonical(x: jax.Array, batch_axis: int, channel_axis: int) -> jax.Array:
    return jnp.moveaxis(x, (0, -1), (batch_axis % x.ndim, channel_axis % x.ndim))


def to_float(fn: str, arg: str, x: Any) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == bool:
            x = x.astype(jnp.result_type(float))
        else:
            fail(fn, arg, "be a real array", f"dtype {x.dtype}", cls=KjaxTypeError)
    return x


def check_input(fn: str, arg: str, x: jax.Array) -> jax.Array:
    """``x: [n, ..., C]`` with ``n >= 1`` and no empty axis (at least one channel and position)."""
    if x.ndim < 2:
        fail(fn, arg, "have rank >= 2 [n, ..., C] (a batch axis and a channel axis)",
             f"shape {x.shape} (rank {x.ndim})")
    if x.shape[0] == 0:
        fail(fn, arg, "hold at least one example", f"shape {x.shape} (n = 0)")
    if 0 in x.shape:
        fail(fn, arg, "have no empty axis (at least one channel and one position per spatial axis)",
             f"shape {x.shape}")
    return x


def input_mask(x: jax.Array, mask_constant: Any) -> tuple[jax.Array, jax.Array]:
    """``(x with masked entries zeroed, mask)``: entries equal to ``mask_constant`` (NaN matches
    NaN) are masked, as neural-tangents' ``_get_masked_array``."""
    mc = jnp.asarray(mask_constant, x.dtype)
    mask = jnp.where(jnp.isnan(mc), jnp.isnan(x), x == mc)
    return jnp.where(mask, jnp.zeros((), x.dtype), x), mask


def input_state(fn: str, x1: Any, x2: Any, diag: bool = False, batch_axis: int = 0,
                channel_axis: int = -1, mask_constant: Any = None) -> State:
    """NT's input kernel: ``nngp = x x'^T / C`` over the channel axis; ``ntk = 0``.

    With ``diag`` only the spatial diagonal (same position in both inputs) is kept, which is all
    that networks made of Dense / Conv / elementwise layers and a final Flatten need (NT's
    ``diagonal_spatial``). ``batch_axis`` / ``channel_axis`` say where those axes are in ``x1``
    (the first layers' requirement); the state is canonical ``[n, *spatial, C]`` inside.
    """
    x1 = to_float(fn, "x1", x1)
    if x1.ndim < 2:
        fail(fn, "x1", "have rank >= 2 [n, ..., C] (a batch axis and a channel axis)",
             f"shape {x1.shape} (rank {x1.ndim})")
    nd = x1.ndim
    b, c = batch_axis % nd, channel_axis % nd
    if b == c:
        fail(fn, "channel_axis", "differ from `batch_axis`", f"both {b}")
    x1 = to_canonical(x1, b, c)
    mask = None
    if mask_constant is not None:
        x1, mask = input_mask(x1, mask_constant)
    if x2 is not None:
        x2 = to_float(fn, "x2", x2)
        if x2.ndim != nd:
            fail(fn, "x2", f"have the rank of `x1` ({nd})", f"shape {x2.shape}")
        x2 = to_canonical(x2, b, c)
        if mask_constant is not None:
            x2, mask2 = input_mask(x2, mask_constant)
            if x2.shape[1:] == x1.shape[1:]:
                mask = jnp.concatenate([mask, mask2], axis=0)
        if x2.shape[1:] != x1.shape[1:]:
            fail(fn, "x2", f"have the same non-batch shape as `x1` ({x1.shape[1:]})", f"shape {x2.shape}")
        x = jnp.concatenate([x1, x2.astype(x1.dtype)], axis=0)
        if x2.shape == x1.shape:
            x1_is_x2 = jnp.max(jnp.abs(x1 - x2.astype(x1.dtype))) < 1e-12
        else:
            x1_is_x2 = jnp.asarray(False)
    else:
        x = x1
        x1_is_x2 = jnp.asarray(True)
    s = x.ndim - 2
    letters = "abcdefghklm"[:s]
    primes = "ABCDEFGHKLM"[:s]
    pairs = "".join(a + b for a, b in zip(letters, primes, strict=True))
    if diag:
        primes, pairs = letters, letters
    nngp = jnp.einsum(f"i{letters}z,j{primes}z->ij{pairs}", x, x,
                      precision=jax.lax.Precision.HIGHEST) / x.shape[-1]
    return State(nngp=nngp, ntk=jnp.zeros_like(nngp), n1=x1.shape[0], has_x2=x2 is not None,
                 shape1=tuple(x1.shape), shape2=tuple((x2 if x2 is not None else x1).shape),
                 is_gaussian=False, diag=diag, batch_axis=b, channel_axis=c, x1_is_x2=x1_is_x2,
                 mask=mask)


def _batch_diagonal(mat: jax.Array) -> jax.Array:
    """``[n, n, *rest] -> [n, *rest]``."""
    return jnp.moveaxis(jnp.diagonal(mat, axis1=0, axis2=1), -1, 0)


def _swap_pairs(mat: jax.Array, diag: bool) -> jax.Array:
    """``m[j, i, x', x] = mat[i, j, x, x']``: the kernel of (x2, x1) from that of (x1, x2)."""
    perm = [1, 0]
    if diag:
        perm += list(range(2, mat.ndim))
    else:
        for d in range((mat.ndim - 2) // 2):
            perm += [3 + 2 * d, 2 + 2 * d]
    return jnp.transpose(mat, perm)


def to_kernel(st: State, diagonal_batch: bool = True, names: tuple[str, ...] | None = None) -> Kernel:
    """The public :class:`Kernel` of a state (arrays that ``names`` doesn't ask for are None)."""
    n1 = st.n1
    r1, r2 = (slice(0, n1), slice(n1, None)) if st.has_x2 else (slice(None), slice(None))

    def want(name):
        return names is None or name in names

    def cov(rows):
        block = st.nngp[rows, rows]
        return _batch_diagonal(block) if diagonal_batch else block

    b, c = st.axes()
    mask1 = mask2 = None
    if st.mask is not None:
        mask1 = from_canonical(st.mask[r1], b, c)
        mask2 = from_canonical(st.mask[r2], b, c) if st.has_x2 else None
    return Kernel(
        nngp=st.nngp[r1, r2] if want("nngp") else None,
        ntk=st.ntk[r1, r2] if want("ntk") else None,
        cov1=cov(r1) if want("cov1") else None,
        cov2=cov(r2) if st.has_x2 and want("cov2") else None,
        x1_is_x2=jnp.asarray(True) if st.x1_is_x2 is None else st.x1_is_x2,
        is_gaussian=st.is_gaussian, is_reversed=False, is_input=False,
        diagonal_batch=diagonal_batch, diagonal_spatial=st.diag and len(st.shape1) > 2,
        shape1=logical_shape(st.shape1, b, c), shape2=logical_shape(st.shape2, b, c),
        batch_axis=b, channel_axis=c, mask1=mask1, mask2=mask2)


def from_kernel(fn: str, k: Kernel) -> State:
    """The state of a :class:`Kernel` given back to a ``kernel_fn``.

    The state needs the covariances within ``x1`` (and within ``x2``); a kernel with a diagonal
    ``cov1`` knows only their diagonal, so the rest is set to zero: those entries never reach a
    result, since no layer mixes different examples.
    """
    if k.shape1 is None or k.nngp is None or k.cov1 is None:
        fail(fn, "x1_or_kernel", "be a Kernel with `nngp`, `cov1` and `shape1` (computed with "
             "get=None)", "a Kernel without them")
    nd = len(k.shape1)
    b, c = k.batch_axis % nd, k.channel_axis % nd
    shape1 = canonical_shape(tuple(k.shape1), b, c)
    shape2 = canonical_shape(tuple(k.shape2 if k.shape2 is not None else k.shape1), b, c)
    diag = bool(k.diagonal_spatial) and nd > 2
    nngp = jnp.asarray(k.nngp)
    ntk = jnp.zeros_like(nngp) if k.ntk is None else jnp.broadcast_to(jnp.asarray(k.ntk, nngp.dtype),
                                                                      nngp.shape)
    mask = None
    if k.mask1 is not None or k.mask2 is not None:
        def canon_mask(m, shape):
            if m is None:
                return jnp.zeros((shape[0],) + (1,) * (len(shape) - 1), bool)
            m = jnp.asarray(m, bool)
            if m.ndim != nd:
                fail(fn, "x1_or_kernel", f"carry masks of rank {nd} like its activations",
                     f"mask of shape {m.shape}")
            return to_canonical(m, b, c)
        m1 = canon_mask(k.mask1, shape1)
        mask = m1
        if k.cov2 is not None:
            m2 = canon_mask(k.mask2, shape2)
            full = np.broadcast_shapes(m1.shape[1:], m2.shape[1:])
            mask = jnp.concatenate([jnp.broadcast_to(m1, m1.shape[:1] + full),
                                    jnp.broadcast_to(m2, m2.shape[:1] + full)], axis=0)
    if k.cov2 is None:
        return State(nngp=nngp, ntk=ntk, n1=nngp.shape[0], has_x2=False, shape1=shape1,
                     shape2=shape2, is_gaussian=bool(k.is_gaussian), diag=diag, batch_axis=b,
                     channel_axis=c, x1_is_x2=k.x1_is_x2, mask=mask, ntk_wanted=k.ntk is not None)

    def block(cov):
        cov = jnp.asarray(cov, nngp.dtype)
        if not k.diagonal_batch:
            return cov
        n = cov.shape[0]
        eye = jnp.eye(n, dtype=cov.dtype).reshape((n, n) + (1,) * (cov.ndim - 1))
        return eye * cov[:, None]

    c1, c2 = block(k.cov1), block(k.cov2)
    full = jnp.concatenate([jnp.concatenate([c1, nngp], axis=1),
                            jnp.concatenate([_swap_pairs(nngp, diag), c2], axis=1)], axis=0)
    z1, z2 = jnp.zeros_like(c1), jnp.zeros_like(c2)
    full_ntk = jnp.concatenate([jnp.concatenate([z1, ntk], axis=1),
                                jnp.concatenate([_swap_pairs(ntk, diag), z2], axis=1)], axis=0)
    return State(nngp=full, ntk=full_ntk, n1=nngp.shape[0], has_x2=True, shape1=shape1,
                 shape2=shape2, is_gaussian=bool(k.is_gaussian), diag=diag, batch_axis=b,
                 channel_axis=c, x1_is_x2=k.x1_is_x2, mask=mask, ntk_wanted=k.ntk is not None)


def variances(mat: jax.Array, n_spatial: int, diag: bool = False) -> jax.Array:
    """The diagonal ``v[i, x, y, ...] = mat[i, i, x, x, y, y, ...]``: shape ``[N, X, Y, ...]``."""
    v = jnp.diagonal(mat, axis1=0, axis2=1)  # [*pairs, N]
    v = jnp.moveaxis(v, -1, 0)
    if diag:
        return v
    for _ in range(n_spatial):
        v = jnp.diagonal(v, axis1=1, axis2=2)  # diag goes last
    return v


def outer(v: jax.Array, op=jnp.multiply, diag: bool = False) -> jax.Array:
    """``op(v[i, x, y], v[j, x', y'])`` in the zipped layout ``[N, N, X, X', Y, Y']``.

    With ``diag``, positions are shared: ``op(v[i, x, y], v[j, x, y])`` of shape ``[N, N, X, Y]``.
    """
    if diag:
        return op(v[:, None], v[None, :])
    n_spatial = v.ndim - 1
    shape1 = [v.shape[0], 1]
    shape2 = [1, v.shape[0]]
    for d in range(n_spatial):
        shape1 += [v.shape[1 + d], 1]
        shape2 += [1, v.shape[1 + d]]
    return op(v.reshape(shape1), v.reshape(shape2))


def select(fn: str, k: Kernel, get: Any):
    """NT's output for ``get``: the Kernel (None), one field (a string) or a namedtuple
    ``AnalyticKernel`` of fields (a tuple)."""
    single, names = canonical_get(fn, get, KERNEL_FIELDS)
    if names is None:
        return k
    if single:
        return getattr(k, names[0])
    return namedtuple_for(names, "AnalyticKernel")(*(getattr(k, n) for n in names))


def finish(fn: str, st: State, get: Any, diagonal_batch: bool = True):
    """Slice the concatenated-batch state into NT's outputs for ``get``."""
    _, names = canonical_get(fn, get, KERNEL_FIELDS)
    return select(fn, to_kernel(st, diagonal_batch, names), get)


_NT_CACHE: dict[tuple[str, tuple[str, ...]], type] = {}


def namedtuple_for(names: tuple[str, ...], name: str = "Kernel") -> type:
    if (name, names) not in _NT_CACHE:
        _NT_CACHE[name, names] = collections.namedtuple(name, names)
    return _NT_CACHE[name, names]


def canonical_get(fn: str, get: Any, allowed: tuple[str, ...] = GETS
                  ) -> tuple[bool, tuple[str, ...] | None]:
    """(is a single string, the names in order) with NT's rules; None means the whole Kernel."""
    if get is None:
        return False, None
    single = isinstance(get, str)
    names = (get,) if single else get
    shown = GETS if allowed == GETS else GETS + tuple(n for n in allowed if n not in GETS)
    expected = f"be None, one of {shown} or a non-empty tuple of them"
    if not isinstance(names, tuple | list) or not names:
        fail(fn, "get", expected, repr(get))
    names = tuple(str(n).lower() if isinstance(n, str) else n for n in names)
    for n in names:
        if n not in allowed:
            fail(fn, "get", expected, repr(get))
    if len(set(names)) < len(names):
        fail(fn, "get", "name each kernel once", repr(get))
    return single, names


def same_padding(length: int, window: int, stride: int) -> tuple[int, int]:
    return jax.lax.padtype_to_pads((length,), (window,), (stride,), "SAME")[0]


def out_length(length: int, window: int, stride: int, padding: str) -> int:
    if padding == "VALID":
        return max(0, (length - window) // stride + 1)
    return -(-length // stride)  # SAME and CIRCULAR


def pad_axis(mat: jax.Array, axes: tuple[int, ...], pads: tuple[int, int], mode: str) -> jax.Array:
    widths = [(0, 0)] * mat.ndim
    for ax in axes:
        widths[ax] = pads
    if mode == "wrap":
        return jnp.pad(mat, widths, mode="wrap")
    return jnp.pad(mat, widths)


def _strided(mat, ax, start, count, stride):
    return jax.lax.slice_in_dim(mat, start, start + stride * (count - 1) + 1, stride, axis=ax)


def conv_pair(mat: jax.Array, ax: int, window: int, stride: int, padding: str) -> jax.Array:
    """Covariance after a shared-weight 1D filter along the spatial pair ``(ax, ax + 1)``.

    ``out[x, x'] = (1/w) sum_k in_pad[s x + k, s x' + k]``: the same filter tap meets both
    positions, so the window moves along the diagonal.
    """
    length = mat.shape[ax]
    count = out_length(length, window, stride, padding)
    if padding != "VALID":
        pads = same_padding(length, window, stride)
        mat = pad_axis(mat, (ax, ax + 1), pads, "wrap" if padding == "CIRCULAR" else "zero")
    out = 0.0
    for k in range(window):
        out = out + _strided(_strided(mat, ax, k, count, stride), ax + 1, k, count, stride)
    return out / window


def pool_axis(mat: jax.Array, ax: int, window: int, stride: int, padding: str,
              normalize_edges: bool) -> jax.Array:
    """Average pooling of one axis of a covariance (both axes of a pair are pooled independently)."""
    length = mat.shape[ax]
    count = out_length(length, window, stride, padding)
    if padding != "VALID":
        pads = same_padding(length, window, stride)
        mat = pad_axis(mat, (ax,), pads, "wrap" if padding == "CIRCULAR" else "zero")
    else:
        pads = (0, 0)
    out = 0.0
    for k in range(window):
        out = out + _strided(mat, ax, k, count, stride)
    if normalize_edges and padding == "SAME":
        ones = np.pad(np.ones(length), pads)
        sizes = sum(ones[k: k + stride * (count - 1) + 1: stride] for k in range(window))
        shape = [1] * mat.ndim
        shape[ax] = count
        return out / jnp.asarray(sizes.reshape(shape), out.dtype)
    return out / window


def check_gaussian(fn: str, st: State) -> None:
    if not st.is_gaussian:
        raise KjaxError(
            f"{fn}: the input of a nonlinearity must be Gaussian (the output of a `Dense` or `Conv` "
            "layer, or a sum of them); put an affine layer before it.")


# --------------------------------------------------------------------------------------------
# masking (neural-tangents' ``mask_constant``): masks travel in the state, canonical
# ``[N, *spatial, C or 1]``; layers move them (``mask_fn``) and may zero the kernels they reach


class MaskingNotImplementedError(KjaxError, NotImplementedError):
    """A masking case neural-tangents does not implement either (channel-wise masks where a layer
    needs one mask per position); both a ``KjaxError`` and a ``NotImplementedError`` as NT's."""


def spatial_mask(fn: str, st: State) -> jax.Array:
    """``[N, *spatial]``: the state's mask with its channel axis (of size 1) dropped."""
    m = st.mask
    if m.shape[-1] != 1:
        raise MaskingNotImplementedError(
            f"{fn}: masks that differ between channels (mask shape {m.shape} in [n, ..., C] "
            "layout) are not supported here, as in neural-tangents: put a Dense / Conv layer "
            "before, which masks a position when all its channels are masked.")
    return jnp.broadcast_to(m[..., 0], (st.nngp.shape[0],) + tuple(st.shape1[1:-1]))


def pair_mask(m: jax.Array, diag: bool) -> jax.Array:
    """``m[i, x] | m[j, x']`` in the zipped layout (``m[i, x] | m[j, x]`` with ``diag``)."""
    return outer(m, jnp.logical_or, diag)


def remask(fn: str, st: State) -> State:
    """Zero the covariances between entries of which at least one is masked (NT's
    ``Kernel.mask``)."""
    if st.mask is None:
        return st
    pm = pair_mask(spatial_mask(fn, st), st.diag)
    zero = jnp.zeros((), st.nngp.dtype)
    return st.replace(nngp=jnp.where(pm, zero, st.nngp), ntk=jnp.where(pm, zero, st.ntk))


def pool_mask(mask: jax.Array, window: tuple[int, ...], strides: tuple[int, ...], padding: str,
              spatial_axes: tuple[int, ...]) -> jax.Array:
    """The mask after a window layer (NT's ``_pool_mask``): each output position takes the mask of
    its window's centre input position (strided), whatever the other positions are."""
    idx: list[Any] = [slice(None)] * mask.ndim
    for ax, w, s in zip(spatial_axes, window, strides, strict=True):
        length = mask.shape[ax]
        count = out_length(length, w, s, "VALID" if padding == "VALID" else "SAME")
        lo = 0 if padding == "VALID" else same_padding(length, w, s)[0]
        start = -lo + (w - 1) // 2
        idx[ax] = slice(start, start + 1 + (count - 1) * s, s)
    out = mask[tuple(idx)]
    return out

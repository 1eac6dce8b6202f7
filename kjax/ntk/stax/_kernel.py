"""The internal kernel state that infinite-width layers transform, and the operations on it.

A state holds the NNGP covariance ``nngp`` and the NTK ``ntk`` of the *concatenated* batch
``x = [x1; x2]`` (``N = n1 + n2`` rows, or ``n1`` when ``x2`` is None), with the full spatial
covariance in neural-tangents' zipped layout ``[N, N, H, H', W, W', ...]``. The variances that the
nonlinearities need are the diagonal of that array, so one array serves NT's ``cov1``, ``nngp`` and
``cov2``; the public :class:`Kernel` slices them out at the end.

It also carries the finite-width shapes of the activations (``shape1``, ``shape2``: what the
network's ``apply_fn`` would produce for ``x1`` and ``x2``), needed by the standard
parameterisation and by the shape checks, and NT's ``is_gaussian`` flag (a nonlinearity needs a
Gaussian input, i.e. a ``Dense`` / ``Conv`` before it).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxError, KjaxTypeError, fail

#: the kernels ``get`` may name, in neural-tangents' order
GETS = ("nngp", "ntk", "cov1", "cov2")


class Kernel(NamedTuple):
    """What ``kernel_fn(x1, x2)`` returns with ``get=None``: neural-tangents' kernel fields.

    Attributes:
      nngp: ``[n1, n2, *spatial pairs]`` NNGP covariance between ``x1`` and ``x2``.
      ntk: ``[n1, n2, *spatial pairs]`` neural tangent kernel.
      cov1: ``[n1, *spatial pairs]`` NNGP covariance of each ``x1[i]`` with itself.
      cov2: ``[n2, *spatial pairs]`` the same for ``x2``, or None when ``x2`` is None.
    """

    nngp: jax.Array
    ntk: jax.Array
    cov1: jax.Array
    cov2: jax.Array | None


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

    def replace(self, **kw) -> State:
        return dataclasses.replace(self, **kw)

    @property
    def n_spatial(self) -> int:
        return len(self.shape1) - 2


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


def input_state(fn: str, x1: Any, x2: Any, diag: bool = False) -> State:
    """NT's input kernel: ``nngp = x x'^T / C`` over the channel (last) axis; ``ntk = 0``.

    With ``diag`` only the spatial diagonal (same position in both inputs) is kept, which is all
    that networks made of Dense / Conv / elementwise layers and a final Flatten need (NT's
    ``diagonal_spatial``).
    """
    x1 = to_float(fn, "x1", x1)
    if x1.ndim < 2:
        fail(fn, "x1", "have rank >= 2 [n, ..., C] (a batch axis and a channel axis)",
             f"shape {x1.shape} (rank {x1.ndim})")
    if x2 is not None:
        x2 = to_float(fn, "x2", x2)
        if x2.shape[1:] != x1.shape[1:]:
            fail(fn, "x2", f"have the same non-batch shape as `x1` ({x1.shape[1:]})", f"shape {x2.shape}")
        x = jnp.concatenate([x1, x2.astype(x1.dtype)], axis=0)
    else:
        x = x1
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
                 is_gaussian=False, diag=diag)


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


def finish(fn: str, st: State, get: Any):
    """Slice the concatenated-batch state into NT's outputs for ``get``."""
    single, names = canonical_get(fn, get)
    n1 = st.n1

    def part(mat, a, b):
        return mat[a, b]

    def cov(mat, rows):
        v = mat[rows, rows]
        v = jnp.moveaxis(jnp.diagonal(v, axis1=0, axis2=1), -1, 0)
        return v

    if st.has_x2:
        r1, r2 = slice(0, n1), slice(n1, None)
    else:
        r1 = r2 = slice(None)
    vals = {}
    for name in names if names is not None else GETS:
        if name == "nngp":
            vals[name] = part(st.nngp, r1, r2)
        elif name == "ntk":
            vals[name] = part(st.ntk, r1, r2)
        elif name == "cov1":
            vals[name] = cov(st.nngp, r1)
        else:
            vals[name] = cov(st.nngp, r2) if st.has_x2 else None
    if names is None:
        return Kernel(**vals)
    if single:
        return vals[names[0]]
    return namedtuple_for(names)(*(vals[n] for n in names))


_NT_CACHE: dict[tuple[str, ...], type] = {}


def namedtuple_for(names: tuple[str, ...]) -> type:
    if names not in _NT_CACHE:
        _NT_CACHE[names] = collections.namedtuple("Kernel", names)
    return _NT_CACHE[names]


def canonical_get(fn: str, get: Any) -> tuple[bool, tuple[str, ...] | None]:
    """(is a single string, the names in order) with NT's rules; None means the whole Kernel."""
    if get is None:
        return False, None
    single = isinstance(get, str)
    names = (get,) if single else get
    if not isinstance(names, tuple | list) or not names:
        fail(fn, "get", f"be None, one of {GETS} or a non-empty tuple of them", repr(get))
    names = tuple(str(n).lower() if isinstance(n, str) else n for n in names)
    for n in names:
        if n not in GETS:
            fail(fn, "get", f"be None, one of {GETS} or a non-empty tuple of them", repr(get))
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

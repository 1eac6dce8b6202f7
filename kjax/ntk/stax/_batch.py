"""Kernels over datasets: ``kernel_fn`` evaluated blockwise (and sharded) through the foundation's map."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from kjax._src.blockwise import blockwise_gram, leading_dim
from kjax._src.errors import check_int, fail
from kjax._src.sharding import check_mesh
from kjax.ntk import _memory
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import KernelFn

_FN = "kjax.ntk.stax.batch"


def batch(kernel_fn: Callable, batch_size: int = 1024, *, mesh: Mesh | None = None,
          mesh_axis: str | None = None, progress: bool = False) -> Callable:
    r"""``kernel_fn`` over large inputs, block by block, with a memory guard and host streaming.

    kjax's own blockwise stax kernel (``mesh=``, ``out=``, ``progress=``; default ``get="nngp"``).
    neural-tangents' ``nt.batch`` (its signature and defaults, for stax and empirical kernel
    functions) is :func:`kjax.ntk.batch`.

    ``kernel_fn(x1[a], x2[b])`` is evaluated on blocks of ``batch_size`` rows by
    :func:`kjax._src.blockwise.blockwise_gram`: with ``x2=None`` only blocks ``a <= b`` are computed
    and mirrored; with ``mesh`` the blocks are split over the devices of ``mesh_axis``; with
    ``out`` (a NumPy array or memmap) or ``progress`` a host loop streams blocks to host memory, so
    an ``n x n`` kernel never has to fit on a device. Peak device memory is that of one block
    (times the number of devices).

    Args:
      kernel_fn: a :mod:`kjax.ntk.stax` ``kernel_fn``.
      batch_size: rows per block.
      mesh: a ``jax.sharding.Mesh`` to split blocks over.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis; required on a
        multi-axis mesh).
      progress: show a tqdm bar (host loop).

    Returns:
      ``batched(x1, x2=None, get="nngp", *, pattern=None, mask_constant=None, out=None)``:
      ``[n1, n2, *spatial pairs]`` for a string ``get``, a namedtuple for a tuple of ``"nngp"`` /
      ``"ntk"``; values equal to ``kernel_fn(x1, x2, get, pattern=pattern,
      mask_constant=mask_constant)``. ``pattern=(pattern1, pattern2)`` (the graphs of
      :func:`~kjax.ntk.stax.Aggregate` layers: arrays or pytrees with a leading axis ``n1`` /
      ``n2``) is split into blocks with the rows of ``x1`` / ``x2``; with ``x2=None``,
      ``pattern1`` serves both sides (``pattern2`` may be None). ``mask_constant`` (a real scalar;
      NaN matches NaN) masks the input entries equal to it, as in ``kernel_fn``.

    Before anything runs, the peak memory of one block (the live set of ``kernel_fn``'s program
    on a block, see :class:`kjax.ntk.stax.KernelFn`) and of the assembled result is estimated from
    shapes; a call that does not fit raises at once, naming a ``batch_size`` that does, or
    ``out=`` when the result itself is too large to hold.

    Raises:
      KjaxError: a ``get`` other than ``"nngp"``, ``"ntk"`` or a tuple of them (``cov1`` /
        ``cov2`` are per-example: call ``kernel_fn`` on the rows you need), a bad
        ``batch_size``, an empty ``x1`` / ``x2``, ``mesh_axis`` missing for a multi-axis mesh,
        a ``pattern`` that is not a pair, gives only one of ``pattern1`` / ``pattern2`` when
        ``x2`` is given, or whose leading axes are not ``n1`` / ``n2``, a ``mask_constant`` that
        is not a real scalar.
      MemoryError: (``kjax.ntk._memory.KjaxMemoryError``, also a ``KjaxError``) one block and
        the result are estimated to exceed the free memory; the message names what fits.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
      >>> x = jnp.linspace(-1, 1, 14).reshape(7, 2)
      >>> batched = stax.batch(kernel_fn, batch_size=3)
      >>> bool(jnp.allclose(batched(x, None, "ntk"), kernel_fn(x, None, "ntk")))
      True

    References:
      Novak et al. Neural Tangents: Fast and Easy Infinite Neural Networks in Python. ICLR 2020.
    """
    batch_size = check_int(_FN, "batch_size", batch_size, minimum=1)

    def batched(x1, x2=None, get="nngp", *, pattern=None, mask_constant=None,
                out: np.ndarray | None = None):
        single, names = K.canonical_get(_FN, get)
        if names is None or any(n not in ("nngp", "ntk") for n in names):
            fail(_FN, "get", "be 'nngp', 'ntk' or a tuple of them", repr(get))
        x1 = K.check_input(_FN, "x1", K.to_float(_FN, "x1", x1))
        x2 = None if x2 is None else K.check_input(_FN, "x2", K.to_float(_FN, "x2", x2))
        if x2 is not None and x2.shape[1:] != x1.shape[1:]:
            fail(_FN, "x2", f"have the same non-batch shape as `x1` {x1.shape[1:]}",
                 f"shape {x2.shape}")
        if out is not None and not single:
            fail(_FN, "out", "be used with a single `get` string", repr(get))
        if mesh is not None:
            check_mesh(_FN, mesh, mesh_axis)
        _check_mask_constant(mask_constant)
        p1, p2 = _split_pattern(pattern, x1, x2)
        if isinstance(kernel_fn, KernelFn):
            _check_fits(kernel_fn, x1, x2, names, batch_size, streamed=out is not None or progress)

        def block(xa, xb):
            kw = {} if mask_constant is None else {"mask_constant": mask_constant}
            if p1 is not None:  # (rows, their patterns): each block gets its rows' graphs
                (xa, pa), (xb, pb) = xa, xb
                kw["pattern"] = (pa, pb)
            res = kernel_fn(xa, xb, names, **kw)
            return jnp.stack([getattr(res, n) for n in names], axis=-1)

        if p1 is not None:
            x1 = (x1, p1)
            x2 = None if x2 is None else (x2, p2)

        def transpose(b):
            # [ba, bb, *spatial pairs, names]: swap the rows, and the two axes of each pair
            perm = [1, 0]
            for d in range((b.ndim - 3) // 2):
                perm += [3 + 2 * d, 2 + 2 * d]
            return jnp.transpose(b, perm + [b.ndim - 1])

        buf = None if out is None else out[..., None]
        res = blockwise_gram(block, x1, x2, block_size=batch_size, block_transpose=transpose,
                             mesh=mesh, mesh_axis=mesh_axis, out=buf, progress=progress, fn_name=_FN)
        if out is not None:
            return out
        if single:
            return res[..., 0]
        return K.namedtuple_for(names)(*(res[..., i] for i in range(len(names))))

    return batched


def _check_mask_constant(mask_constant) -> None:
    """``mask_constant``: None or a real scalar, as ``kernel_fn`` takes it."""
    if mask_constant is None:
        return
    ok = not isinstance(mask_constant, bool | np.bool_) and (
        isinstance(mask_constant, int | float | np.integer | np.floating)
        or (isinstance(mask_constant, np.ndarray | jax.Array) and np.ndim(mask_constant) == 0
            and (np.issubdtype(mask_constant.dtype, np.integer)
                 or np.issubdtype(mask_constant.dtype, np.floating))))
    if not ok:
        fail(_FN, "mask_constant", "be None or a real scalar (inputs equal to it are masked; NaN "
             "masks NaNs)", repr(mask_constant))


def _split_pattern(pattern, x1, x2):
    """``(pattern1, pattern2)`` checked against the rows of ``x1`` / ``x2``: ``(None, None)``
    without patterns; with ``x2=None``, ``pattern1`` serves both sides."""
    if pattern is None:
        return None, None
    if not isinstance(pattern, tuple | list) or len(pattern) != 2:
        fail(_FN, "pattern", "be None or a pair (pattern1, pattern2) (pattern2 for x2; "
             "(pattern1, pattern1) or (pattern1, None) when x2 is None)",
             type(pattern).__name__ if not isinstance(pattern, tuple | list)
             else f"a sequence of length {len(pattern)}")
    p1, p2 = pattern
    if x2 is None:
        p2 = p1
    if p1 is None and p2 is None:
        return None, None
    if p1 is None or p2 is None:
        fail(_FN, "pattern", "give both pattern1 and pattern2 (or neither) when x2 is given",
             "(None, pattern2)" if p1 is None else "(pattern1, None)")
    sides = [("pattern1", p1, "x1", x1)] + ([] if x2 is None else [("pattern2", p2, "x2", x2)])
    for which, p, arg, x in sides:
        rows = leading_dim(_FN, "pattern", p)
        if rows != x.shape[0]:
            fail(_FN, "pattern", f"have {which} with one row per example of `{arg}` "
                 f"(leading axis {x.shape[0]})", f"{which} with leading axis {rows}")
    return p1, p2


def _check_fits(kernel_fn: KernelFn, x1, x2, names, batch_size: int, streamed: bool) -> None:
    """The memory guard: one block of ``batch_size`` rows plus the assembled result must fit."""
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    b1, b2 = min(batch_size, n1), min(batch_size, n2)
    if x2 is None:
        b1 = b2 = min(b1, b2)
    block_a = jax.ShapeDtypeStruct((b1, *x1.shape[1:]), x1.dtype)
    block_b = jax.ShapeDtypeStruct((b2, *x1.shape[1:]), x1.dtype)
    peak, pair_shape = kernel_fn.memory_estimate(block_a, block_b, names)
    per_pair = int(np.prod(pair_shape))
    itemsize = max(np.dtype(x1.dtype).itemsize, 4)
    result_shape = [n1, n2, *pair_shape]
    # the device path stacks the blocks, assembles them and mirrors the result: ~3 copies
    result = 0.0 if streamed else 3.0 * n1 * n2 * per_pair * len(names) * itemsize

    def need(b):
        return peak * (min(b, n1) + min(b, n2)) ** 2 / (b1 + b2) ** 2

    def advice(free):
        budget = _memory.HEADROOM * free
        b = _memory.largest_fitting(need, max(n1, n2), budget - result)
        if b >= 1:
            return f"use batch_size={b}"
        b = _memory.largest_fitting(need, max(n1, n2), budget)
        if b >= 1 and result > 0:
            return (f"pass `out=` (a NumPy array, or np.lib.format.open_memmap(path, mode='w+', "
                    f"dtype=..., shape=...)) to stream the result to host memory or disk, with "
                    f"batch_size={b}")
        return ("not even blocks of one example fit: reduce the spatial size before the layers "
                "that need the full covariance (pool or stride earlier)")

    what = f"one block of `batch_size={batch_size}`"
    if result:
        what += f" and the result {result_shape}"
    _memory.check_memory(_FN, peak + result, what, advice)

"""The blockwise map: evaluate a pairwise function on blocks of rows, any n, optionally sharded.

Every pillar that touches an ``n x n`` object goes through here: Gram matrices of positive-definite
kernels, kernel matvecs (Falkon, GPs, CG solves), and empirical NTKs over datasets.

Three operations, one blocking scheme:

* :func:`blockwise_gram` assembles ``F[i, j] = fn(x1[i], x2[j])`` from blocks
  ``fn(x1[rows_a], x2[rows_b]) -> [ba, bb, *trailing]``. With ``x2 is None`` and ``symmetric``, only
  block pairs ``a <= b`` are evaluated and the lower triangle is mirrored.
* :func:`blockwise_matvec` returns ``F @ v`` without forming ``F``: each row block scans over column
  blocks and accumulates ``fn(xa, xb) @ v_b`` in at least float32. Peak memory is
  ``O(block_rows x block_cols)`` per device; the scan body is rematerialised under ``grad``.
* :func:`blockwise_normal_matvec` returns ``F^T (F v + w)`` for a tall ``F = fn(x, z)``, each block
  of ``F`` evaluated once (Falkon's and EigenPro 3's product).

Any ``n`` works: the last block is padded with copies of the last real row (so a kernel never sees
made-up values such as zero vectors) and the padding is cropped from the result; for matvecs the
padded entries of ``v`` are zero.

With ``mesh``, the list of block pairs (Gram) or of row blocks (matvec) is split over the devices of
one mesh axis with ``shard_map``; the inputs are replicated, which is what one wants when ``d`` is
small next to ``n``. With ``out`` (a NumPy array or memmap) or ``progress=True``, the blocks are
computed by a host loop that streams results to ``out`` so an ``n x n`` result never lives on the
device; that path cannot be traced (no ``jit``/``grad`` around it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from kjax._src import dtypes
from kjax._src.errors import KjaxError, KjaxTypeError, fail
from kjax._src.sharding import check_mesh, replicate_explicit, shard_map_rows

PyTree = Any
BlockFn = Callable[[PyTree, PyTree], jax.Array]

#: default rows per block for Gram assembly and matvecs
DEFAULT_GRAM_BLOCK = 1024
DEFAULT_MATVEC_BLOCK = (256, 4096)
#: column blocks per unrolled step of the matvec scan
MATVEC_UNROLL = 16
#: square block of the symmetric product (``blockwise_matvec`` with ``x2=None``)
SYMMETRIC_MATVEC_BLOCK = 384
#: target size of one ``[rows, m]`` block of the fused normal-equations product (about 320 KB in
#: float32, so a block stays in cache between its two products; ``benchmarks/cpu_limits.py`` times
#: several row counts)
NORMAL_BLOCK_ELEMENTS = 80_000


# --------------------------------------------------------------------------------------------
# small pieces


def leading_dim(fn: str, arg: str, x: PyTree) -> int:
    """The common leading axis length of the leaves of ``x``."""
    leaves = jax.tree.leaves(x)
    if not leaves:
        fail(fn, arg, "contain at least one array", "an empty pytree")
    ns = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in ns:
        fail(fn, arg, "have a leading batch axis on every leaf", "a scalar leaf")
    if len(ns) != 1:
        fail(fn, arg, "have the same leading (batch) size on every leaf", f"sizes {sorted(ns)}")
    return ns.pop()


def block_sizes(fn: str, block_size: Any, n1: int, n2: int, default: Any) -> tuple[int, int]:
    """Normalise ``block_size`` (int, pair or None) and clamp it to the problem size."""
    bs = default if block_size is None else block_size
    if isinstance(bs, int | np.integer) and not isinstance(bs, bool):
        b1 = b2 = int(bs)
    elif isinstance(bs, tuple | list) and len(bs) == 2 and all(
        isinstance(b, int | np.integer) and not isinstance(b, bool) for b in bs
    ):
        b1, b2 = int(bs[0]), int(bs[1])
    else:
        fail(fn, "block_size", "be a positive int, a pair of them, or None", repr(block_size),
             cls=KjaxTypeError)
    if b1 <= 0 or b2 <= 0:
        fail(fn, "block_size", "be positive", repr(block_size))
    return max(1, min(b1, n1)), max(1, min(b2, n2))


def pad_rows(x: PyTree, n_to: int) -> PyTree:
    """Pad every leaf along axis 0 to ``n_to`` rows by repeating its last row."""

    def pad(a):
        a = jnp.asarray(a)
        extra = n_to - a.shape[0]
        if extra == 0:
            return a
        return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)], axis=0)

    return jax.tree.map(pad, x)


def take_block(x: PyTree, i: jax.Array, b: int) -> PyTree:
    """Rows ``[i*b, (i+1)*b)`` of every leaf (``i`` may be traced)."""
    return jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, i * b, b, axis=0), x)


def _is_traced(x: PyTree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def block_pairs(nb1: int, nb2: int, symmetric: bool) -> np.ndarray:
    """Static list of (row block, column block) pairs: all of them, or ``a <= b`` if symmetric."""
    if symmetric:
        a, b = np.triu_indices(nb1)
    else:
        a, b = np.divmod(np.arange(nb1 * nb2), nb2)
    return np.stack([a, b], axis=1).astype(np.int32)


def _default_transpose(block: jax.Array) -> jax.Array:
    return jnp.swapaxes(block, 0, 1)


# --------------------------------------------------------------------------------------------
# Gram assembly


def blockwise_gram(
    fn: BlockFn,
    x1: PyTree,
    x2: PyTree | None = None,
    *,
    block_size: int | tuple[int, int] | None = None,
    symmetric: bool | None = None,
    block_transpose: Callable[[jax.Array], jax.Array] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    out: np.ndarray | None = None,
    progress: bool = False,
    fn_name: str = "kjax.blockwise_gram",
) -> jax.Array | np.ndarray:
    """Assemble ``F[i, j, ...] = fn(x1[i], x2[j])`` block by block.

    Args:
      fn: ``fn(xa, xb) -> [ba, bb, *trailing]`` on row blocks (pytrees with a leading axis).
      x1: pytree of arrays with leading axis ``n1``.
      x2: pytree with leading axis ``n2``, or None for ``x1``.
      block_size: rows per block (int or ``(rows, cols)``); defaults to 1024, clamped to n.
      symmetric: evaluate only block pairs ``a <= b`` and mirror; default: ``x2 is None``.
      block_transpose: maps ``fn(xa, xb)`` to ``fn(xb, xa)`` for the mirrored blocks; default swaps
        the two leading axes (right for scalar kernels).
      mesh: a ``jax.sharding.Mesh``; block pairs are split over ``mesh_axis`` (the only axis by
        default).
      out: a writable NumPy array or memmap of shape ``[n1, n2, *trailing]``: blocks are streamed
        there by a host loop and ``out`` is returned. On a mesh spanning processes, each process
        writes only the blocks of its own devices (and their mirrors).
      progress: show a tqdm bar (host loop).

    Returns:
      ``[n1, n2, *trailing]``: a jax array, or ``out``.
    """
    x1, x2 = replicate_explicit((x1, x2))
    n1 = leading_dim(fn_name, "x1", x1)
    same = x2 is None
    x2_ = x1 if same else x2
    n2 = n1 if same else leading_dim(fn_name, "x2", x2_)
    symmetric = same if symmetric is None else bool(symmetric)
    if symmetric and not same:
        fail(fn_name, "symmetric", "be False when x2 is given (symmetry needs x2 = None)", True)
    b1, b2 = block_sizes(fn_name, block_size, n1, n2, DEFAULT_GRAM_BLOCK)
    if symmetric:
        b1 = b2 = min(b1, b2)
    nb1, nb2 = math.ceil(n1 / b1), math.ceil(n2 / b2)
    xp1 = pad_rows(x1, nb1 * b1)
    xp2 = xp1 if (same and b1 == b2) else pad_rows(x2_, nb2 * b2)
    pairs = block_pairs(nb1, nb2, symmetric)
    transpose = block_transpose or _default_transpose

    def one_pair(xa_all, xb_all, ij):
        return fn(take_block(xa_all, ij[0], b1), take_block(xb_all, ij[1], b2))

    if mesh is not None:
        mesh, mesh_axis = check_mesh(fn_name, mesh, mesh_axis)
        ndev = mesh.shape[mesh_axis]
    else:
        ndev = 1

    def compute(xa_all, xb_all, pair_chunk):
        """Blocks for a chunk of pairs: [len(chunk), b1, b2, *trailing], sharded if mesh."""

        def local(xa_all, xb_all, ps):
            return jax.lax.map(lambda ij: one_pair(xa_all, xb_all, ij), ps)

        if mesh is None:
            return local(xa_all, xb_all, pair_chunk)
        rep = jax.tree.map(lambda _: P(), xa_all)
        repb = jax.tree.map(lambda _: P(), xb_all)
        return shard_map_rows(local, mesh, mesh_axis, (rep, repb, P(mesh_axis)), P(mesh_axis),
                              (xa_all, xb_all, pair_chunk))

    if out is not None or progress:
        if _is_traced((x1, x2)):
            raise KjaxError(
                f"{fn_name}: `out` and `progress` run a host loop and cannot be used under "
                "jit/vmap/grad; call it outside of traced code or leave them unset."
            )
        return _gram_host_loop(compute, xp1, xp2, pairs, (n1, n2, b1, b2, ndev), symmetric,
                               transpose, out, progress, fn_name)

    if mesh is None and not symmetric and nb2 == 1 and nb1 > 1:
        return _row_slabs(fn, x1, x2_, n1, b1)
    npairs = len(pairs)
    pad_to = math.ceil(npairs / ndev) * ndev
    pairs_p = np.concatenate([pairs, np.repeat(pairs[:1], pad_to - npairs, axis=0)])
    blocks = compute(xp1, xp2, jnp.asarray(pairs_p))[:npairs]
    trailing = blocks.shape[3:]
    if not symmetric:
        full = blocks.reshape(nb1, nb2, b1, b2, *trailing)
    else:
        full = jnp.zeros((nb1, nb1, b1, b1, *trailing), blocks.dtype)
        a, b = jnp.asarray(pairs[:, 0]), jnp.asarray(pairs[:, 1])
        full = full.at[b, a].set(jax.vmap(transpose)(blocks))
        full = full.at[a, b].set(blocks)
    full = jnp.moveaxis(full, 2, 1).reshape(nb1 * b1, nb2 * b2, *trailing)[:n1, :n2]
    if symmetric:
        full = mirror_upper(full, transpose)
    return full


def _row_slabs(fn, x1, x2, n1, b1):
    """Row slabs ``fn(x1[a:a+b1], x2)`` written in place into the ``[n1, n2, ...]`` result.

    No padding and no stacked copy: the last slab starts at ``n1 - b1`` and overlaps the one
    before it (its rows are recomputed, identically). Each pass over an ``n1 x n2`` array counts on
    a memory-bound CPU; benchmarks/cpu_limits.py times this path against one direct kernel call.
    """
    nb = math.ceil(n1 / b1)
    first = jax.tree.map(lambda a: jax.lax.slice_in_dim(a, 0, b1, axis=0), x1)
    shape = jax.eval_shape(fn, first, x2)
    full = jnp.zeros((n1, *shape.shape[1:]), shape.dtype)

    def body(i, full):
        start = jnp.minimum(i * b1, n1 - b1)
        xa = jax.tree.map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, b1, axis=0), x1)
        return jax.lax.dynamic_update_slice_in_dim(full, fn(xa, x2), start, axis=0)

    return jax.lax.fori_loop(0, nb, body, full)


def mirror_upper(full, transpose):
    """Exact symmetry: keep the upper triangle, take the lower one from the transpose.

    Blocks on the diagonal are computed as ``fn(xa, xa)``, which is symmetric only up to roundoff.
    """
    n = full.shape[0]
    upper = jnp.triu(jnp.ones((n, n), dtype=bool))
    upper = upper.reshape(n, n, *([1] * (full.ndim - 2)))
    return jnp.where(upper, full, transpose(full))


def _local(blocks: jax.Array, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, host blocks)`` of the first ``count`` blocks (axis 0) that this process holds:
    all of them in one process, the addressable shards of a global array across processes."""
    if getattr(blocks, "is_fully_addressable", True):
        return np.arange(count), np.asarray(blocks)[:count]
    idx, data, seen = [], [], set()
    for shard in blocks.addressable_shards:
        sl = shard.index[0]
        start = 0 if sl.start is None else sl.start
        if start in seen:  # replicated over this process's devices
            continue
        seen.add(start)
        rows = np.arange(start, start + shard.data.shape[0])
        sel = rows < count
        idx.append(rows[sel])
        data.append(np.asarray(shard.data)[sel])
    if not idx:
        return np.arange(0), np.asarray(blocks.addressable_shards[0].data)[:0]
    order = np.argsort(np.concatenate(idx))
    return np.concatenate(idx)[order], np.concatenate(data)[order]


def _gram_host_loop(compute, xp1, xp2, pairs, sizes, symmetric, transpose, out, progress, fn_name):
    n1, n2, b1, b2, ndev = sizes
    # Blocks per device per step: enough work per call to amortise dispatch.
    per_step = ndev
    steps = math.ceil(len(pairs) / per_step)
    pad_to = steps * per_step
    pairs_p = np.concatenate([pairs, np.repeat(pairs[:1], pad_to - len(pairs), axis=0)])
    step_fn = jax.jit(compute)
    transpose_fn = jax.jit(jax.vmap(transpose))
    mirror_fn = jax.jit(lambda blk: mirror_upper(blk, transpose))

    # Shape/dtype of one block, to allocate or check `out`.
    probe = jax.eval_shape(step_fn, xp1, xp2, jnp.asarray(pairs_p[:per_step]))
    trailing, dtype = probe.shape[3:], probe.dtype
    if out is None:
        out = np.empty((n1, n2, *trailing), dtype=dtype)
    else:
        expected = (n1, n2, *trailing)
        if tuple(np.shape(out)) != expected:
            fail(fn_name, "out", f"have shape {expected}", f"shape {tuple(np.shape(out))}")
        if not isinstance(out, np.ndarray):
            fail(fn_name, "out", "be a writable NumPy array or numpy.memmap",
                 type(out).__name__, cls=KjaxTypeError)
        if not np.can_cast(dtype, out.dtype, casting="same_kind") or (
            np.dtype(out.dtype).itemsize < np.dtype(dtype).itemsize
        ):
            fail(fn_name, "out", f"have dtype {np.dtype(dtype)} (or wider)", f"dtype {out.dtype}")

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError as e:  # pragma: no cover - tqdm is a dev dependency
            raise KjaxError(f"{fn_name}: `progress=True` needs tqdm (pip install tqdm).") from e
        bar = tqdm(total=len(pairs), desc=fn_name, unit="block")

    def write(chunk_pairs, blocks, blocks_t):
        # Across processes, each writes the blocks its own devices computed (and their mirrors):
        # the union of the processes' `out` arrays is the result.
        keep, blocks = _local(blocks, len(chunk_pairs))
        blocks_t = _local(blocks_t, len(chunk_pairs))[1] if symmetric else blocks
        for (a, b), blk, blk_t in zip(chunk_pairs[keep], blocks, blocks_t, strict=True):
            r0, c0 = a * b1, b * b2
            r1, c1 = min(r0 + b1, n1), min(c0 + b2, n2)
            if symmetric and a == b:
                blk = np.asarray(mirror_fn(blk))
            out[r0:r1, c0:c1] = blk[: r1 - r0, : c1 - c0]
            if symmetric and a != b:
                out[c0:c1, r0:r1] = blk_t[: c1 - c0, : r1 - r0]
        if bar is not None:
            bar.update(len(chunk_pairs))

    # Dispatch step s+1 before copying step s to the host, so device work overlaps the copy.
    pending = None
    for s in range(steps):
        chunk = pairs_p[s * per_step:(s + 1) * per_step]
        real = chunk[: min(per_step, len(pairs) - s * per_step)]
        blocks = step_fn(xp1, xp2, jnp.asarray(chunk))
        blocks_t = transpose_fn(blocks) if symmetric else None
        if pending is not None:
            write(*pending)
        pending = (real, blocks, blocks_t)
    if pending is not None:
        write(*pending)
    if bar is not None:
        bar.close()
    if isinstance(out, np.memmap):
        out.flush()
    return out


# --------------------------------------------------------------------------------------------
# matvec


def blockwise_matvec(
    fn: BlockFn,
    x1: PyTree,
    x2: PyTree | None,
    v: jax.Array,
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    fn_name: str = "kjax.blockwise_matvec",
) -> jax.Array:
    """``F(x1, x2) @ v`` without forming ``F``; ``fn(xa, xb) -> [ba, bb]``, ``v: [n2] or [n2, k]``.

    Each row block of ``x1`` scans over column blocks of ``x2`` and accumulates in at least float32.
    With ``mesh`` the larger of the two block lists is split over the devices: row blocks (the
    result comes back sharded by rows) or, when ``x1`` has fewer blocks than there are devices,
    column blocks with a ``psum``.

    ``x2=None``: ``F(x1, x1)`` taken as symmetric, each off-diagonal block evaluated once
    (:func:`_symmetric_matvec`).
    """
    x1, x2, v = replicate_explicit((x1, x2, v))
    n1 = leading_dim(fn_name, "x1", x1)
    n2 = n1 if x2 is None else leading_dim(fn_name, "x2", x2)
    v = jnp.asarray(v)
    if v.ndim not in (1, 2):
        fail(fn_name, "v", "have shape [n2] or [n2, k]", f"shape {v.shape}")
    if v.shape[0] != n2:
        fail(fn_name, "v", f"have {n2} rows to match x2", f"shape {v.shape}")
    vec = v.ndim == 1
    v2 = v[:, None] if vec else v
    acc = dtypes.accum_dtype(jnp.result_type(v2.dtype, *jax.tree.leaves(x1)))
    if x2 is None:
        res = _symmetric_matvec(fn, x1, v2, block_size, mesh, mesh_axis, acc, fn_name)
        return res[:, 0] if vec else res
    b1, b2 = block_sizes(fn_name, block_size, n1, n2, DEFAULT_MATVEC_BLOCK)
    nb1, nb2 = math.ceil(n1 / b1), math.ceil(n2 / b2)

    if mesh is not None:
        mesh, mesh_axis = check_mesh(fn_name, mesh, mesh_axis)
        ndev = mesh.shape[mesh_axis]
        by_rows = nb1 >= ndev
        if by_rows:
            nb1 = math.ceil(nb1 / ndev) * ndev
        else:
            nb2 = math.ceil(nb2 / ndev) * ndev
    xp1 = pad_rows(x1, nb1 * b1)
    xp2 = pad_rows(x2, nb2 * b2)
    vp = jnp.zeros((nb2 * b2, v2.shape[1]), v2.dtype).at[:n2].set(v2)

    # x1 row blocks: [nb1, b1, ...]; x2 / v column blocks: [nb2, b2, ...]
    xb1 = jax.tree.map(lambda a: a.reshape(nb1, b1, *a.shape[1:]), xp1)
    xb2 = jax.tree.map(lambda a: a.reshape(nb2, b2, *a.shape[1:]), xp2)
    vb = vp.reshape(nb2, b2, -1)

    @jax.checkpoint
    def col_step(carry, xb_and_vb):
        xa, (xb, vblk) = carry[1], xb_and_vb
        k = fn(xa, xb)
        prod = jnp.matmul(k.astype(acc), vblk.astype(acc), precision=jax.lax.Precision.HIGHEST)
        return (carry[0] + prod, xa), None

    def row_blocks(xb1_local, xb2_local, vb_local):
        def one_row(xa):
            init = (jnp.zeros((b1, vb_local.shape[-1]), acc), xa)
            # XLA:CPU runs a rolled loop of small blocks several times slower than straight-line
            # code (measured 4-5x at d = 3), so up to MATVEC_UNROLL column blocks are unrolled
            (res, _), _ = jax.lax.scan(col_step, init, (xb2_local, vb_local),
                                       unroll=max(1, min(MATVEC_UNROLL, vb_local.shape[0])))
            return res

        return jax.lax.map(one_row, xb1_local)

    if mesh is None:
        res = row_blocks(xb1, xb2, vb)
    elif by_rows:
        rep = jax.tree.map(lambda _: P(), xb2)
        row = jax.tree.map(lambda _: P(mesh_axis), xb1)
        res = shard_map_rows(row_blocks, mesh, mesh_axis, (row, rep, P()), P(mesh_axis),
                             (xb1, xb2, vb))
    else:
        def summed(a, b, c):
            return jax.lax.psum(row_blocks(a, b, c), mesh_axis)

        rep = jax.tree.map(lambda _: P(), xb1)
        col = jax.tree.map(lambda _: P(mesh_axis), xb2)
        res = shard_map_rows(summed, mesh, mesh_axis, (rep, col, P(mesh_axis)), P(),
                             (xb1, xb2, vb))
    res = res.reshape(nb1 * b1, -1)[:n1]
    return res[:, 0] if vec else res


def _symmetric_matvec(fn, x, v2, block_size, mesh, mesh_axis, acc, fn_name):
    """``F(x, x) @ v2`` for a symmetric ``F`` (``fn(xb, xa) = fn(xa, xb)^T``), each off-diagonal
    block evaluated once: half the kernel evaluations of the general product.

    Square ``b x b`` blocks (``block_size``: an int, or the smaller of a pair; default
    ``SYMMETRIC_MATVEC_BLOCK``); the pairs ``a <= b`` of block indices are scanned, and the block
    ``F_ab`` adds ``F_ab v_b`` to rows ``a`` and ``F_ab^T v_a`` to rows ``b``. With ``mesh`` the pairs
    are split over the devices, each accumulates a full-length partial result, and one ``psum`` of
    ``[n, k]`` sums them (the result is replicated).
    """
    n = v2.shape[0]
    b = min(block_sizes(fn_name, block_size, n, n, SYMMETRIC_MATVEC_BLOCK))
    nb = math.ceil(n / b)
    xb = jax.tree.map(lambda a: a.reshape(nb, b, *a.shape[1:]), pad_rows(x, nb * b))
    vb = jnp.zeros((nb * b, v2.shape[1]), acc).at[:n].set(v2.astype(acc)).reshape(nb, b, -1)
    pairs = block_pairs(nb, nb, True)
    ndev = 1
    if mesh is not None:
        mesh, mesh_axis = check_mesh(fn_name, mesh, mesh_axis)
        ndev = mesh.shape[mesh_axis]
    # padding pairs carry weight 0 (they add nothing); the diagonal blocks' mirror has weight 0
    npairs = math.ceil(len(pairs) / ndev) * ndev
    weights = np.zeros((npairs, 2), np.float64)
    weights[:len(pairs), 0] = 1.0
    weights[:len(pairs), 1] = pairs[:, 0] != pairs[:, 1]
    pairs = np.concatenate([pairs, np.zeros((npairs - len(pairs), 2), np.int32)])
    hi = jax.lax.Precision.HIGHEST

    def local(xb, vb, ps, ws):
        @jax.checkpoint
        def step(out, pw):
            (i, j), w = pw
            k = fn(jax.tree.map(lambda a: a[i], xb), jax.tree.map(lambda a: a[j], xb)).astype(acc)
            out = out.at[i].add(w[0] * jnp.matmul(k, vb[j], precision=hi))
            return out.at[j].add(w[1] * jnp.matmul(k.T, vb[i], precision=hi)), None

        out, _ = jax.lax.scan(step, jnp.zeros_like(vb), (ps, ws.astype(acc)))
        return out

    ps, ws = jnp.asarray(pairs), jnp.asarray(weights)
    if mesh is None:
        res = local(xb, vb, ps, ws)
    else:
        def summed(*args):
            return jax.lax.psum(local(*args), mesh_axis)

        rep = jax.tree.map(lambda _: P(), xb)
        res = shard_map_rows(summed, mesh, mesh_axis, (rep, P(), P(mesh_axis), P(mesh_axis)), P(),
                             (xb, vb, ps, ws))
    return res.reshape(nb * b, -1)[:n]


def normal_rows(fn_name: str, block_size: Any, n: int, m: int) -> int:
    """Rows per block of :func:`blockwise_normal_matvec`: ``block_size`` (an int, or the rows of a
    pair) or about ``NORMAL_BLOCK_ELEMENTS / m`` rows (a multiple of 8), clamped to ``[1, n]``."""
    if block_size is None:
        b = max(8, (NORMAL_BLOCK_ELEMENTS // max(m, 1)) // 8 * 8)
        return max(1, min(b, n))
    return block_sizes(fn_name, block_size, n, m, None)[0]


def blockwise_normal_matvec(
    fn: BlockFn,
    x: PyTree,
    z: PyTree,
    v: jax.Array,
    w: jax.Array | None = None,
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    fn_name: str = "kjax.blockwise_normal_matvec",
) -> jax.Array:
    """``F^T (F v + w)`` with ``F = fn(x, z): [n, m]``, evaluating each block of ``F`` once.

    ``v: [m] or [m, k]``, ``w: [n] or [n, k]`` (or None). Each block of ``x`` rows against all of
    ``z`` gives ``F_b``; ``F_b^T (F_b v + w_b)`` is accumulated in at least float32 in an ``[m, k]``
    carry. Two :func:`blockwise_matvec` calls would evaluate ``F`` twice; this is the product of
    Falkon's CG (``K_nM^T K_nM v``) and of EigenPro 3's gradient (``K_nM^T (K_nM a - y_b)``).
    Padded rows are masked out. With ``mesh`` the row blocks are split over the devices and the
    partial sums are ``psum``-ed.
    """
    x, z, v, w = replicate_explicit((x, z, v, w))
    n = leading_dim(fn_name, "x", x)
    m = leading_dim(fn_name, "z", z)
    v = jnp.asarray(v)
    if v.ndim not in (1, 2) or v.shape[0] != m:
        fail(fn_name, "v", f"have shape [{m}] or [{m}, k] (one row per centre)", f"shape {v.shape}")
    vec = v.ndim == 1
    v2 = v[:, None] if vec else v
    if w is not None:
        w = jnp.asarray(w)
        if w.shape != (n, *v.shape[1:]):
            fail(fn_name, "w", f"have shape {(n, *v.shape[1:])} (one row per point, v's columns)",
                 f"shape {w.shape}")
        w = w[:, None] if vec else w
    b = normal_rows(fn_name, block_size, n, m)
    ndev = 1
    if mesh is not None:
        mesh, mesh_axis = check_mesh(fn_name, mesh, mesh_axis)
        ndev = mesh.shape[mesh_axis]
    # each device sums its blocks in two levels, `inner` blocks into a partial sum that is then
    # added to the result and reset, so rounding grows with ~2 sqrt(blocks), not with the number
    # of blocks: at n = 1e6, M = 5000 one running float32 sum over 15k blocks per device moved
    # Falkon's test error by 15% (tests/kernels/test_gram.py checks the sum over 25000 blocks)
    nb = math.ceil(math.ceil(n / b) / ndev) * ndev
    inner = math.ceil(math.sqrt(nb // ndev))
    acc = dtypes.accum_dtype(jnp.result_type(v2.dtype, *jax.tree.leaves(x), *jax.tree.leaves(z)))
    xb = jax.tree.map(lambda a: a.reshape(nb, b, *a.shape[1:]), pad_rows(x, nb * b))
    mask = (jnp.arange(nb * b) < n).astype(acc).reshape(nb, b, 1)
    wb = (jnp.zeros((nb * b, v2.shape[1]), acc) if w is None
          else jnp.zeros((nb * b, v2.shape[1]), acc).at[:n].set(w.astype(acc))).reshape(nb, b, -1)
    hi = jax.lax.Precision.HIGHEST

    def blocks(xb_local, mask_local, wb_local, z_all, v_all):
        zero = jnp.zeros((m, v_all.shape[1]), acc)

        @jax.checkpoint
        def step(carry, inp):
            total, part = carry
            i, xa, ma, wa = inp
            f = fn(xa, z_all).astype(acc)
            r = (jnp.matmul(f, v_all.astype(acc), precision=hi) + wa) * ma
            part = part + jnp.matmul(f.T, r, precision=hi)
            flush = (i + 1) % inner == 0
            return (jnp.where(flush, total + part, total), jnp.where(flush, zero, part)), None

        idx = jnp.arange(mask_local.shape[0])
        (total, part), _ = jax.lax.scan(step, (zero, zero), (idx, xb_local, mask_local, wb_local))
        return total + part

    if mesh is None:
        res = blocks(xb, mask, wb, z, v2)
    else:
        def summed(*a):
            return jax.lax.psum(blocks(*a), mesh_axis)

        row = jax.tree.map(lambda _: P(mesh_axis), xb)
        rep = jax.tree.map(lambda _: P(), z)
        res = shard_map_rows(summed, mesh, mesh_axis, (row, P(mesh_axis), P(mesh_axis), rep, P()),
                             P(), (xb, mask, wb, z, v2))
    return res[:, 0] if vec else res


def blockwise_diag(fn: BlockFn, x: PyTree, *, block_size: int | None = None,
                   fn_name: str = "kjax.blockwise_diag") -> jax.Array:
    """``[fn(x[i:i+1], x[i:i+1])[0, 0, ...] for i]`` in blocks: the diagonal without the matrix."""
    x = replicate_explicit(x)
    n = leading_dim(fn_name, "x", x)
    b, _ = block_sizes(fn_name, block_size, n, n, DEFAULT_GRAM_BLOCK)
    nb = math.ceil(n / b)
    xp = pad_rows(x, nb * b)
    xb = jax.tree.map(lambda a: a.reshape(nb, b, *a.shape[1:]), xp)

    def one_row(xi):
        xi = jax.tree.map(lambda a: a[None], xi)
        return fn(xi, xi)[0, 0]

    res = jax.lax.map(lambda blk: jax.vmap(one_row)(blk), xb)
    return res.reshape(nb * b, *res.shape[2:])[:n]

"""Causal linear attention as Pallas kernels for NVIDIA GPUs (the Triton backend), forward and backward.

One program per (batch, head, value tile) walks the chunks of its sequence with a ``fori_loop``,
keeping the state in registers; inputs stay in their ``[B, T, H, *]`` layout (Triton addresses the
strided rows directly). Tiles are powers of two (Triton's rule): ``D`` and ``M`` are padded to a
power of two >= 16, values are split into tiles of at most 64 columns, the chunk is a power of two
in [16, 64]. The maths of a chunk, the padding plan and the custom VJP are in ``_pallas_common``.
Scalar decays (``[B, T, H]`` log-gates) come as chunk-local cumulative log-gates ``[B, H, Tp]``, one
row per program.

The Triton backend is chosen explicitly with ``compiler_params=pallas.triton.CompilerParams``;
``interpret=True`` runs the same kernels on any backend (tests). Verified: values in interpret mode
against the reference, and lowering by ``jax.export(..., platforms=["cuda"])``; the compiled kernels
have not run on a GPU in this repository's CI.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from kjax.attention import _pallas_common as pc

MAX_BV = 64


def plan(t: int, d: int, m: int, dv: int, chunk_size: int) -> pc.Plan:
    """Chunk: ``chunk_size`` rounded to a power of two in [16, 64] (32 at most when ``M > 128``, so a
    chunk's ``[C, M]`` feature tiles and the ``[M, 64]`` state stay within a program's registers)."""
    cap = 64 if pc.next_pow2(max(d, m)) <= 128 else 32
    c = min(cap, max(16, pc.next_pow2(min(chunk_size, t))))
    return pc.make_plan(t, d, m, dv, chunk=c, lane=16, max_bv=MAX_BV)


def _params(p: pc.Plan):
    warps = 4 if max(p.mp, p.dp) <= 64 else 8
    return pl_triton.CompilerParams(num_warps=warps, num_stages=1)


def seq_spec(tp, f, *, tile=None):
    """``[B, Tp, H, F]`` -> the whole sequence of one (batch, head) (and value tile ``j``)."""
    if tile is None:
        return pl.BlockSpec((None, tp, None, f), lambda b, h, j: (b, 0, h, 0))
    return pl.BlockSpec((None, tp, None, tile), lambda b, h, j: (b, 0, h, j))


def state_spec(p):
    return pl.BlockSpec((None, None, p.mp, p.bv), lambda b, h, j: (b, h, 0, j))


def _z_spec(p):
    return pl.BlockSpec((None, None, 1, p.mp), lambda b, h, j: (b, h, 0, 0))


def _row_spec(tp):
    return pl.BlockSpec((None, tp), lambda b, h, j: (b, 0))


def _partial_spec(p):
    return pl.BlockSpec((None, None, p.tp, None, p.mp), lambda b, h, j: (j, b, 0, h, 0))


def gate_spec(tp):
    """Chunk-local cumulative log-gates ``[B, H, Tp]``: one (batch, head) row per program."""
    return pl.BlockSpec((None, None, tp), lambda b, h, j: (b, h, 0))


def gate_args(b):
    """``([b [B, H, Tp]], [spec])`` or nothing (no decay)."""
    if b is None:
        return [], []
    return [jnp.swapaxes(b, 1, 2)], [gate_spec(b.shape[1])]


def _load_gates(b_ref, sl):
    """``dict(b_col=[C, 1], b_row=[1, C])`` of a chunk, or ``{}`` without decay."""
    if b_ref is None:
        return {}
    g = b_ref[sl]
    return dict(b_col=g[:, None], b_row=g[None, :])


def _load_runs(runs_ref, flags_ref, sl):
    flags = flags_ref[sl][:, None]
    if runs_ref is None:
        return flags, None, None
    r = runs_ref[sl]
    return flags, r[:, None], r[None, :]


def call_kernel(kernel, *, grid, in_specs, out_specs, out_shape, p, interpret, name):
    return pl.pallas_call(kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
                          compiler_params=_params(p), interpret=interpret, name=name)


# ------------------------------------------------------------------------------------ forward


def _fwd_kernel(*refs, p, feature_map, m, normalize, eps, acc, has_runs, has_g):
    q_ref, k_ref, v_ref, w_ref, s0_ref, z0_ref = refs[:6]
    runs_ref = refs[6] if has_runs else None
    flags_ref = refs[6 + has_runs]
    b_ref = refs[7 + has_runs] if has_g else None
    o_ref, den_ref, s_ref, z_ref = refs[7 + has_runs + has_g:]
    c = p.c
    w = w_ref[...].astype(acc)
    phi = functools.partial(pc.phi_tile, feature_map=feature_map, m=m, mp=p.mp, io_dtype=q_ref.dtype)
    lo = q_ref.dtype if q_ref.dtype != jnp.float64 else acc

    def body(i, carry):
        s, z = carry
        sl = pl.ds(i * c, c)
        flags, rc, rr = _load_runs(runs_ref, flags_ref, sl)
        pq = phi(q_ref[sl, :].astype(acc), w, is_query=True).astype(lo)
        pk = phi(k_ref[sl, :].astype(acc), w, is_query=False).astype(lo)
        out, den, s, z = pc.forward_chunk(pq, pk, v_ref[sl, :], s, z, flags, rc, rr, normalize=normalize,
                                          eps=eps, acc=acc, **_load_gates(b_ref, sl))
        o_ref[sl, :] = out.astype(o_ref.dtype)
        den_ref[sl, :] = den.astype(den_ref.dtype)
        return s, z

    s, z = jax.lax.fori_loop(0, p.n_chunks, body, (s0_ref[...], z0_ref[...]))
    s_ref[...] = s
    z_ref[...] = z


def forward(q, k, v, w, s0, z0, runs, flags, gates, *, plan, feature_map, m, normalize, eps, interpret=False):
    p = plan
    b, tp, h, _ = q.shape
    acc = s0.dtype
    has_runs = runs is not None
    kernel = functools.partial(_fwd_kernel, p=p, feature_map=feature_map, m=m, normalize=normalize, eps=eps,
                               acc=acc, has_runs=has_runs, has_g=gates is not None)
    w_spec = pl.BlockSpec(w.shape, lambda b, h, j: (0, 0))
    in_specs = [seq_spec(tp, p.dp), seq_spec(tp, p.dp), seq_spec(tp, p.dvp, tile=p.bv), w_spec, state_spec(p),
                _z_spec(p)]
    args = [q, k, v, w, s0, z0]
    if has_runs:
        in_specs.append(_row_spec(tp))
        args.append(runs)
    in_specs.append(_row_spec(tp))
    args.append(flags)
    gargs, gspecs = gate_args(gates)
    args, in_specs = args + gargs, in_specs + gspecs
    name = f"kjax_linear_attention_fwd_{feature_map}" + ("_decay" if gates is not None else "")
    return call_kernel(
        kernel, grid=(b, h, p.n_v), in_specs=in_specs,
        out_specs=[seq_spec(tp, p.dvp, tile=p.bv), seq_spec(tp, 1), state_spec(p), _z_spec(p)],
        out_shape=[jax.ShapeDtypeStruct((b, tp, h, p.dvp), v.dtype), jax.ShapeDtypeStruct((b, tp, h, 1), acc),
                   jax.ShapeDtypeStruct(s0.shape, acc), jax.ShapeDtypeStruct(z0.shape, acc)],
        p=p, interpret=interpret, name=name,
    )(*args)


# ------------------------------------------------------------------------------------ backward


def _dq_kernel(*refs, p, acc, has_runs, has_g):
    pk_ref, v_ref, dn_ref, dd_ref, s0_ref, z0_ref = refs[:6]
    runs_ref = refs[6] if has_runs else None
    flags_ref = refs[6 + has_runs]
    b_ref = refs[7 + has_runs] if has_g else None
    (dpq_ref,) = refs[7 + has_runs + has_g:]
    c = p.c
    first = pl.program_id(2) == 0

    def body(i, carry):
        s, z = carry
        sl = pl.ds(i * c, c)
        flags, rc, rr = _load_runs(runs_ref, flags_ref, sl)
        dd = jnp.where(first, dd_ref[sl, :], 0)
        dpq, s, z = pc.dq_chunk(pk_ref[sl, :], v_ref[sl, :], dn_ref[sl, :], dd, s, z, flags, rc, rr, acc=acc,
                                **_load_gates(b_ref, sl))
        dpq_ref[sl, :] = dpq.astype(dpq_ref.dtype)
        return s, z

    jax.lax.fori_loop(0, p.n_chunks, body, (s0_ref[...], z0_ref[...]))


def _dkv_kernel(*refs, p, acc, has_runs, has_g):
    pq_ref, pk_ref, v_ref, dn_ref, dd_ref, gs_ref, gz_ref = refs[:7]
    runs_ref = refs[7] if has_runs else None
    flags_ref = refs[7 + has_runs]
    b_ref = refs[8 + has_runs] if has_g else None
    dpk_ref, dv_ref, ds0_ref, dz0_ref = refs[8 + has_runs + has_g:]
    c, n = p.c, p.n_chunks
    first = pl.program_id(2) == 0

    def body(i, carry):
        r_s, r_z = carry
        sl = pl.ds((n - 1 - i) * c, c)
        flags, rc, rr = _load_runs(runs_ref, flags_ref, sl)
        dd = jnp.where(first, dd_ref[sl, :], 0)
        dpk, dv, r_s, r_z = pc.dkv_chunk(pq_ref[sl, :], pk_ref[sl, :], v_ref[sl, :], dn_ref[sl, :], dd, r_s,
                                         r_z, flags, rc, rr, acc=acc, **_load_gates(b_ref, sl))
        dpk_ref[sl, :] = dpk.astype(dpk_ref.dtype)
        dv_ref[sl, :] = dv.astype(dv_ref.dtype)
        return r_s, r_z

    r_s, r_z = jax.lax.fori_loop(0, n, body, (gs_ref[...], jnp.where(first, gz_ref[...], 0)))
    ds0_ref[...] = r_s

    @pl.when(first)
    def _():
        dz0_ref[...] = r_z


def dq(pk, v, dn, dd, s0, z0, runs, flags, gates, *, plan, interpret=False):
    p = plan
    b, tp, h, _ = pk.shape
    acc = s0.dtype
    has_runs = runs is not None
    gargs, gspecs = gate_args(gates)
    in_specs = [seq_spec(tp, p.mp), seq_spec(tp, p.dvp, tile=p.bv), seq_spec(tp, p.dvp, tile=p.bv),
                seq_spec(tp, 1),
                state_spec(p), _z_spec(p)] + [_row_spec(tp)] * (1 + has_runs) + gspecs
    args = [pk, v, dn, dd, s0, z0] + ([runs] if has_runs else []) + [flags] + gargs
    kernel = functools.partial(_dq_kernel, p=p, acc=acc, has_runs=has_runs, has_g=gates is not None)
    part = call_kernel(kernel, grid=(b, h, p.n_v),
                 in_specs=in_specs, out_specs=_partial_spec(p),
                 out_shape=jax.ShapeDtypeStruct((p.n_v, b, tp, h, p.mp), acc), p=p, interpret=interpret,
                 name="kjax_linear_attention_bwd_dq")(*args)
    return jnp.sum(part, axis=0)


def dkv(pq, pk, v, dn, dd, gs, gz, runs, flags, gates, *, plan, interpret=False):
    p = plan
    b, tp, h, _ = pq.shape
    acc = gs.dtype
    has_runs = runs is not None
    gargs, gspecs = gate_args(gates)
    in_specs = [seq_spec(tp, p.mp), seq_spec(tp, p.mp), seq_spec(tp, p.dvp, tile=p.bv),
                seq_spec(tp, p.dvp, tile=p.bv), seq_spec(tp, 1), state_spec(p), _z_spec(p)]
    in_specs += [_row_spec(tp)] * (1 + has_runs) + gspecs
    args = [pq, pk, v, dn, dd, gs, gz] + ([runs] if has_runs else []) + [flags] + gargs
    dpk, dvv, ds0, dz0 = call_kernel(
        functools.partial(_dkv_kernel, p=p, acc=acc, has_runs=has_runs, has_g=gates is not None),
        grid=(b, h, p.n_v),
        in_specs=in_specs,
        out_specs=[_partial_spec(p), seq_spec(tp, p.dvp, tile=p.bv), state_spec(p), _z_spec(p)],
        out_shape=[jax.ShapeDtypeStruct((p.n_v, b, tp, h, p.mp), acc), jax.ShapeDtypeStruct(v.shape, acc),
                   jax.ShapeDtypeStruct(gs.shape, acc), jax.ShapeDtypeStruct(gz.shape, acc)],
        p=p, interpret=interpret, name="kjax_linear_attention_bwd_dkv")(*args)
    return jnp.sum(dpk, axis=0), dvv, ds0, dz0


#: ``f(q, k, v, w, s0, z0, runs, g, *, feature_map, normalize, eps, chunk_size) -> (out, s, z)``
causal_linear_attention, causal_linear_attention_interpret = pc.kernel_family(forward, dq, dkv, plan)

#: the configurations these kernels serve (``None``) or the reason they don't
supports = pc.make_supports((jnp.float32, jnp.bfloat16, jnp.float16), "Triton")

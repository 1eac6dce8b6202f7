"""Causal linear attention as Pallas kernels for TPUs (Mosaic), forward and backward.

The grid is ``(batch * head, value tile, chunk)`` with the chunk axis sequential ("arbitrary"):
Pallas pipelines the chunk blocks from HBM into VMEM while the state lives in VMEM scratch, reset
at the first chunk and written out at the last. Inputs are moved to ``[B * H, T, F]`` so that a
block's last two dims are ``(chunk, features)``: the chunk is 128 tokens and ``D``, ``M`` and the
value tiles are padded to multiples of 128 (the (8, 128) rule). The reverse scan of the backward
walks the chunks with a reversed index map. The maths of a chunk, the padding plan and the custom
VJP are in ``_pallas_common``. Scalar decays come as chunk-local
cumulative log-gates in two orientations, a column ``[B * H, Tp, 1]`` and a row ``[B * H, 1, Tp]``
(blocks ``(C, 1)`` and ``(1, C)``), so no transpose is needed in VMEM.

Verified: values under ``pltpu.InterpretParams()`` against the reference on CPU, and lowering by
``jax.export(..., platforms=["tpu"])``; the compiled kernels have not run on a TPU in this
repository's CI.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kjax.attention import _pallas_common as pc

CHUNK = 128
MAX_BV = 128


def plan(t: int, d: int, m: int, dv: int, chunk_size: int) -> pc.Plan:
    del chunk_size  # the TPU kernels use 128-token chunks (the MXU's and the block rule's size)
    return pc.make_plan(t, d, m, dv, chunk=CHUNK, lane=128, max_bv=MAX_BV)


def heads_first(x):
    """``[B, T, H, F] -> [B * H, T, F]``."""
    b, t, h, f = x.shape
    return jnp.swapaxes(x, 1, 2).reshape(b * h, t, f)


def heads_back(x, b, h):
    bh, t, f = x.shape
    return jnp.swapaxes(x.reshape(b, h, t, f), 1, 2)


class Specs:
    def __init__(self, p: pc.Plan, h: int, reverse: bool):
        n = p.n_chunks
        self.p, self.h = p, h
        self.ci = (lambda c: n - 1 - c) if reverse else (lambda c: c)

    def seq(self, f):
        return pl.BlockSpec((None, self.p.c, f), lambda i, j, c: (i, self.ci(c), 0))

    def vtile(self):
        return pl.BlockSpec((None, self.p.c, self.p.bv), lambda i, j, c: (i, self.ci(c), j))

    def batch(self, i):  # the batch of program row i = b * H + h (lax.div: no sign op to lower)
        return jax.lax.div(i, jnp.int32(self.h))

    def col(self):  # per-token [B, Tp, 1] ints
        return pl.BlockSpec((None, self.p.c, 1), lambda i, j, c: (self.batch(i), self.ci(c), 0))

    def tok(self):
        return pl.BlockSpec((None, self.p.c, 1), lambda i, j, c: (i, self.ci(c), 0))

    def row(self):  # [B, 1, Tp]
        return pl.BlockSpec((None, 1, self.p.c), lambda i, j, c: (self.batch(i), 0, self.ci(c)))

    def gate_row(self):  # [B * H, 1, Tp]
        return pl.BlockSpec((None, 1, self.p.c), lambda i, j, c: (i, 0, self.ci(c)))

    def state(self):
        return pl.BlockSpec((None, self.p.mp, self.p.bv), lambda i, j, c: (i, 0, j))

    def z(self):
        return pl.BlockSpec((None, 1, self.p.mp), lambda i, j, c: (i, 0, 0))

    def partial(self):
        return pl.BlockSpec((None, None, self.p.c, self.p.mp), lambda i, j, c: (j, i, self.ci(c), 0))


def call_kernel(kernel, p, grid, in_specs, out_specs, out_shape, interpret, name, acc):
    params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        scratch_shapes=[pltpu.VMEM((p.mp, p.bv), acc), pltpu.VMEM((1, p.mp), acc)],
        compiler_params=params, interpret=pltpu.InterpretParams() if interpret else False, name=name)


def _runs_args(runs, flags, specs, has_runs):
    """Kernel inputs for the per-token run ids (column and row forms) and flags."""
    flags_col = flags[:, :, None]
    if not has_runs:
        return [flags_col], [specs.col()]
    return [runs[:, :, None], runs[:, None, :], flags_col], [specs.col(), specs.row(), specs.col()]


def gate_args(b, specs):
    """Chunk-local cumulative log-gates ``[B, Tp, H]`` as a column ``[B * H, Tp, 1]`` and a row
    ``[B * H, 1, Tp]`` (the kernels need both orientations; a transpose in VMEM is avoided)."""
    if b is None:
        return [], []
    col = heads_first(b[..., None])
    return [col, jnp.swapaxes(col, 1, 2)], [specs.tok(), specs.gate_row()]


def read_gates(g_refs):
    if not g_refs:
        return {}
    return dict(b_col=g_refs[0][...], b_row=g_refs[1][...])


def _read_runs(run_refs, has_runs):
    if not has_runs:
        return run_refs[0][...], None, None
    rc, rr, fl = run_refs
    return fl[...], rc[...], rr[...]


def _fwd_kernel(*refs, p, feature_map, m, normalize, eps, acc, has_runs, ng):
    q_ref, k_ref, v_ref, w_ref, s0_ref, z0_ref = refs[:6]
    nr = 3 if has_runs else 1
    run_refs = refs[6:6 + nr]
    g_refs = refs[6 + nr:6 + nr + ng]
    o_ref, den_ref, s_ref, z_ref, s_scr, z_scr = refs[6 + nr + ng:]
    c = pl.program_id(2)

    @pl.when(c == 0)
    def _():
        s_scr[...] = s0_ref[...]
        z_scr[...] = z0_ref[...]

    w = w_ref[...].astype(acc)
    phi = functools.partial(pc.phi_tile, w=w, feature_map=feature_map, m=m, mp=p.mp, io_dtype=q_ref.dtype)
    lo = q_ref.dtype if q_ref.dtype != jnp.float64 else acc
    flags, rc, rr = _read_runs(run_refs, has_runs)
    pq = phi(q_ref[...].astype(acc), is_query=True).astype(lo)
    pk = phi(k_ref[...].astype(acc), is_query=False).astype(lo)
    out, den, s, z = pc.forward_chunk(pq, pk, v_ref[...], s_scr[...], z_scr[...], flags, rc, rr,
                                      normalize=normalize, eps=eps, acc=acc, **read_gates(g_refs))
    o_ref[...] = out.astype(o_ref.dtype)
    den_ref[...] = den.astype(den_ref.dtype)
    s_scr[...] = s
    z_scr[...] = z

    @pl.when(c == p.n_chunks - 1)
    def _():
        s_ref[...] = s
        z_ref[...] = z


def forward(q, k, v, w, s0, z0, runs, flags, gates, *, plan, feature_map, m, normalize, eps, interpret=False):
    p = plan
    b, tp, h, _ = q.shape
    acc = s0.dtype
    has_runs = runs is not None
    sp = Specs(p, h, reverse=False)
    rargs, rspecs = _runs_args(runs, flags, sp, has_runs)
    gargs, gspecs = gate_args(gates, sp)
    kernel = functools.partial(_fwd_kernel, p=p, feature_map=feature_map, m=m, normalize=normalize, eps=eps,
                               acc=acc, has_runs=has_runs, ng=len(gargs))
    args = [heads_first(q), heads_first(k), heads_first(v), w, s0.reshape(b * h, p.mp, p.dvp),
            z0.reshape(b * h, 1, p.mp), *rargs, *gargs]
    in_specs = [sp.seq(p.dp), sp.seq(p.dp), sp.vtile(), pl.BlockSpec(w.shape, lambda i, j, c: (0, 0)),
                sp.state(), sp.z(), *rspecs, *gspecs]
    name = f"kjax_linear_attention_fwd_{feature_map}" + ("_decay" if gates is not None else "")
    out, den, s, z = call_kernel(
        kernel, p, (b * h, p.n_v, p.n_chunks), in_specs, [sp.vtile(), sp.tok(), sp.state(), sp.z()],
        [jax.ShapeDtypeStruct((b * h, tp, p.dvp), v.dtype), jax.ShapeDtypeStruct((b * h, tp, 1), acc),
         jax.ShapeDtypeStruct((b * h, p.mp, p.dvp), acc), jax.ShapeDtypeStruct((b * h, 1, p.mp), acc)],
        interpret, name, acc)(*args)
    return (heads_back(out, b, h), heads_back(den, b, h), s.reshape(s0.shape), z.reshape(z0.shape))


def _dq_kernel(*refs, p, acc, has_runs, ng):
    pk_ref, v_ref, dn_ref, dd_ref, s0_ref, z0_ref = refs[:6]
    nr = 3 if has_runs else 1
    run_refs = refs[6:6 + nr]
    g_refs = refs[6 + nr:6 + nr + ng]
    dpq_ref, s_scr, z_scr = refs[6 + nr + ng:]
    c = pl.program_id(2)

    @pl.when(c == 0)
    def _():
        s_scr[...] = s0_ref[...]
        z_scr[...] = z0_ref[...]

    flags, rc, rr = _read_runs(run_refs, has_runs)
    dd = jnp.where(pl.program_id(1) == 0, dd_ref[...], 0)
    dpq, s, z = pc.dq_chunk(pk_ref[...], v_ref[...], dn_ref[...], dd, s_scr[...], z_scr[...], flags, rc, rr,
                            acc=acc, **read_gates(g_refs))
    dpq_ref[...] = dpq.astype(dpq_ref.dtype)
    s_scr[...] = s
    z_scr[...] = z


def _dkv_kernel(*refs, p, acc, has_runs, ng):
    pq_ref, pk_ref, v_ref, dn_ref, dd_ref, gs_ref, gz_ref = refs[:7]
    nr = 3 if has_runs else 1
    run_refs = refs[7:7 + nr]
    g_refs = refs[7 + nr:7 + nr + ng]
    dpk_ref, dv_ref, ds0_ref, dz0_ref, r_scr, rz_scr = refs[7 + nr + ng:]
    c = pl.program_id(2)
    first = pl.program_id(1) == 0

    @pl.when(c == 0)
    def _():
        r_scr[...] = gs_ref[...]
        rz_scr[...] = jnp.where(first, gz_ref[...], 0)

    flags, rc, rr = _read_runs(run_refs, has_runs)
    dd = jnp.where(first, dd_ref[...], 0)
    dpk, dv, r_s, r_z = pc.dkv_chunk(pq_ref[...], pk_ref[...], v_ref[...], dn_ref[...], dd, r_scr[...],
                                     rz_scr[...], flags, rc, rr, acc=acc, **read_gates(g_refs))
    dpk_ref[...] = dpk.astype(dpk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)
    r_scr[...] = r_s
    rz_scr[...] = r_z

    @pl.when(c == p.n_chunks - 1)
    def _():
        ds0_ref[...] = r_s
        dz0_ref[...] = r_z


def dq(pk, v, dn, dd, s0, z0, runs, flags, gates, *, plan, interpret=False):
    p = plan
    b, tp, h, _ = pk.shape
    acc = s0.dtype
    has_runs = runs is not None
    sp = Specs(p, h, reverse=False)
    rargs, rspecs = _runs_args(runs, flags, sp, has_runs)
    gargs, gspecs = gate_args(gates, sp)
    args = [heads_first(pk), heads_first(v), heads_first(dn), heads_first(dd),
            s0.reshape(b * h, p.mp, p.dvp), z0.reshape(b * h, 1, p.mp), *rargs, *gargs]
    in_specs = [sp.seq(p.mp), sp.vtile(), sp.vtile(), sp.tok(), sp.state(), sp.z(), *rspecs, *gspecs]
    kernel = functools.partial(_dq_kernel, p=p, acc=acc, has_runs=has_runs, ng=len(gargs))
    part = call_kernel(kernel, p, (b * h, p.n_v, p.n_chunks), in_specs, sp.partial(),
                 jax.ShapeDtypeStruct((p.n_v, b * h, tp, p.mp), acc), interpret,
                 "kjax_linear_attention_bwd_dq", acc)(*args)
    return heads_back(jnp.sum(part, axis=0), b, h)


def dkv(pq, pk, v, dn, dd, gs, gz, runs, flags, gates, *, plan, interpret=False):
    p = plan
    b, tp, h, _ = pq.shape
    acc = gs.dtype
    has_runs = runs is not None
    sp = Specs(p, h, reverse=True)
    rargs, rspecs = _runs_args(runs, flags, sp, has_runs)
    gargs, gspecs = gate_args(gates, sp)
    args = [heads_first(pq), heads_first(pk), heads_first(v), heads_first(dn), heads_first(dd),
            gs.reshape(b * h, p.mp, p.dvp), gz.reshape(b * h, 1, p.mp), *rargs, *gargs]
    in_specs = [sp.seq(p.mp), sp.seq(p.mp), sp.vtile(), sp.vtile(), sp.tok(), sp.state(), sp.z(), *rspecs,
                *gspecs]
    dpk, dvv, ds0, dz0 = call_kernel(
        functools.partial(_dkv_kernel, p=p, acc=acc, has_runs=has_runs, ng=len(gargs)), p,
        (b * h, p.n_v, p.n_chunks),
        in_specs, [sp.partial(), sp.vtile(), sp.state(), sp.z()],
        [jax.ShapeDtypeStruct((p.n_v, b * h, tp, p.mp), acc), jax.ShapeDtypeStruct((b * h, tp, p.dvp), acc),
         jax.ShapeDtypeStruct((b * h, p.mp, p.dvp), acc), jax.ShapeDtypeStruct((b * h, 1, p.mp), acc)],
        interpret, "kjax_linear_attention_bwd_dkv", acc)(*args)
    return (heads_back(jnp.sum(dpk, axis=0), b, h), heads_back(dvv, b, h), ds0.reshape(gs.shape),
            dz0.reshape(gz.shape))


#: ``f(q, k, v, w, s0, z0, runs, g, *, feature_map, normalize, eps, chunk_size) -> (out, s, z)``
causal_linear_attention, causal_linear_attention_interpret = pc.kernel_family(forward, dq, dkv, plan)

#: the configurations these kernels serve (``None``) or the reason they don't
supports = pc.make_supports((jnp.float32, jnp.bfloat16), "TPU")

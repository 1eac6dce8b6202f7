"""The (gated) delta rule as a Pallas kernel for TPUs (Mosaic): the forward.

The grid is ``(batch * head, value tile, chunk)`` with the chunk axis sequential ("arbitrary"), the
state ``[M, BV]`` in VMEM scratch; inputs are moved to ``[B * H, T, F]``, chunks are 128 tokens and
``M`` and the value tiles are padded to multiples of 128 (the (8, 128) rule), as in the
linear-attention kernels of ``_pallas_tpu``. The chunk maths (the WY transform by doubling) is in
``_pallas_delta``; the backward is the VJP of the XLA chunked path. Verified: values under
``pltpu.InterpretParams()`` against the XLA path and a NumPy token recurrence, and lowering by
``jax.export(..., platforms=["tpu"])``; not run on a TPU in this repository's CI.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kjax.attention import _pallas_common as pc
from kjax.attention import _pallas_delta as pd
from kjax.attention import _pallas_tpu as tp_

MAX_FEATURES = 256


def plan(t: int, d: int, m: int, dv: int, chunk_size: int) -> pc.Plan:
    return tp_.plan(t, d, m, dv, chunk_size)


def _kernel(*refs, p, acc, ng):
    q_ref, k_ref, v_ref, beta_ref, s0_ref = refs[:5]
    g_refs = refs[5:5 + ng]
    o_ref, s_ref, s_scr = refs[5 + ng:]
    c = pl.program_id(2)

    @pl.when(c == 0)
    def _():
        s_scr[...] = s0_ref[...]

    out, s = pd.delta_chunk(q_ref[...], k_ref[...], v_ref[...], beta_ref[...], s_scr[...], acc=acc,
                            **tp_.read_gates(g_refs))
    o_ref[...] = out.astype(o_ref.dtype)
    s_scr[...] = s

    @pl.when(c == p.n_chunks - 1)
    def _():
        s_ref[...] = s


def forward(q, k, v, beta, gates, s0, *, plan, interpret=False):
    p = plan
    b, tp, h, _ = q.shape
    acc = s0.dtype
    sp = tp_.Specs(p, h, reverse=False)
    gargs, gspecs = tp_.gate_args(gates, sp)
    args = [tp_.heads_first(q), tp_.heads_first(k), tp_.heads_first(v), tp_.heads_first(beta),
            s0.reshape(b * h, p.mp, p.dvp), *gargs]
    in_specs = [sp.seq(p.mp), sp.seq(p.mp), sp.vtile(), sp.tok(), sp.state(), *gspecs]
    params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))
    out, s = pl.pallas_call(
        functools.partial(_kernel, p=p, acc=acc, ng=len(gargs)), grid=(b * h, p.n_v, p.n_chunks),
        in_specs=in_specs, out_specs=[sp.vtile(), sp.state()],
        out_shape=[jax.ShapeDtypeStruct((b * h, tp, p.dvp), acc),
                   jax.ShapeDtypeStruct((b * h, p.mp, p.dvp), acc)],
        scratch_shapes=[pltpu.VMEM((p.mp, p.bv), acc)], compiler_params=params,
        interpret=pltpu.InterpretParams() if interpret else False,
        name="kjax_gated_delta_rule_fwd" if gates is not None else "kjax_delta_rule_fwd")(*args)
    return tp_.heads_back(out, b, h), s.reshape(s0.shape)


_family = pd.delta_family(forward, plan)
#: ``f(q, k, v, beta, g, s0, runs, cu, *, chunk_size) -> (out, s)`` (the signature of ``delta_rule_xla``)
delta_rule, delta_rule_interpret = _family.compiled, _family.interpret

#: the configurations these kernels serve (``None``) or the reason they don't
supports = pd.make_supports((jnp.float32, jnp.bfloat16), "TPU", MAX_FEATURES)

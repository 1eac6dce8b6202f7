"""The (gated) delta rule as a Pallas kernel for NVIDIA GPUs (the Triton backend): the forward.

One program per (batch, head, value tile) walks the chunks with a ``fori_loop``, the state
``[M, BV]`` in registers; the chunk maths (the WY transform by doubling) is in ``_pallas_delta``,
the backward is the VJP of the XLA chunked path. Tiles are powers of two >= 16 (Triton's rule):
``M`` is padded to a power of two, values are split into tiles of at most 64 columns, and the chunk
is a power of two in [16, 64] (32 at most when ``M > 64``, for the registers of the ``[C, M]``
tiles). Verified: values in interpret mode against the XLA path and a NumPy token recurrence, and
lowering by ``jax.export(..., platforms=["cuda"])``; not run on a GPU in this repository's CI.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kjax.attention import _pallas_common as pc
from kjax.attention import _pallas_delta as pd
from kjax.attention import _pallas_triton as tr

MAX_BV = 64
MAX_FEATURES = 128


def plan(t: int, d: int, m: int, dv: int, chunk_size: int) -> pc.Plan:
    cap = 64 if pc.next_pow2(m) <= 64 else 32
    c = min(cap, max(16, pc.next_pow2(min(chunk_size, t))))
    return pc.make_plan(t, d, m, dv, chunk=c, lane=16, max_bv=MAX_BV)


def _kernel(*refs, p, acc, has_g):
    q_ref, k_ref, v_ref, beta_ref, s0_ref = refs[:5]
    b_ref = refs[5] if has_g else None
    o_ref, s_ref = refs[5 + has_g:]
    c = p.c

    def body(i, s):
        sl = pl.ds(i * c, c)
        gates = {}
        if b_ref is not None:
            g = b_ref[sl]
            gates = dict(b_col=g[:, None], b_row=g[None, :])
        out, s = pd.delta_chunk(q_ref[sl, :], k_ref[sl, :], v_ref[sl, :], beta_ref[sl, :], s, acc=acc,
                                **gates)
        o_ref[sl, :] = out.astype(o_ref.dtype)
        return s

    s_ref[...] = jax.lax.fori_loop(0, p.n_chunks, body, s0_ref[...])


def forward(q, k, v, beta, gates, s0, *, plan, interpret=False):
    p = plan
    b, tp, h, _ = q.shape
    acc = s0.dtype
    has_g = gates is not None
    in_specs = [tr.seq_spec(tp, p.mp), tr.seq_spec(tp, p.mp), tr.seq_spec(tp, p.dvp, tile=p.bv),
                tr.seq_spec(tp, 1),
                tr.state_spec(p)]
    args = [q, k, v, beta, s0]
    if has_g:
        in_specs.append(tr.gate_spec(tp))
        args.append(jnp.swapaxes(gates, 1, 2))
    return tr.call_kernel(
        functools.partial(_kernel, p=p, acc=acc, has_g=has_g), grid=(b, h, p.n_v), in_specs=in_specs,
        out_specs=[tr.seq_spec(tp, p.dvp, tile=p.bv), tr.state_spec(p)],
        out_shape=[jax.ShapeDtypeStruct((b, tp, h, p.dvp), acc), jax.ShapeDtypeStruct(s0.shape, acc)],
        p=p, interpret=interpret, name="kjax_gated_delta_rule_fwd" if has_g else "kjax_delta_rule_fwd")(*args)


_family = pd.delta_family(forward, plan)
#: ``f(q, k, v, beta, g, s0, runs, cu, *, chunk_size) -> (out, s)`` (the signature of ``delta_rule_xla``)
delta_rule, delta_rule_interpret = _family.compiled, _family.interpret

#: the configurations these kernels serve (``None``) or the reason they don't
supports = pd.make_supports((jnp.float32, jnp.bfloat16, jnp.float16), "Triton", MAX_FEATURES)

"""What the Pallas kernels of the (gated) delta rule share: the chunk maths and the custom VJP.

The recurrence (state layout ``S: [M, Dv]``, gates ``a_t = exp(g_t)``, ``g_t <= 0``):
``S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``, ``o_t = S_t^T q_t``. A chunk of ``C``
tokens with carried state ``S_0`` and inclusive cumulative log-gates ``b`` (``Gam_ts = exp(b_t - b_s)``
for ``s <= t``, masked before the exponential, so no exponent is positive) is, in the WY / UT form
of Yang et al. (and ``kjax.attention._decay._delta_core``, the XLA path):

* ``N = tril(diag(beta) (Gam * K K^T), -1)`` and ``T = (I + N)^{-1}``;
* ``W_v = T diag(beta) V``, ``W_k = T diag(beta e^b) K`` and ``U = W_v - W_k S_0``;
* ``O = diag(e^b) Q S_0 + (Gam * tril(Q K^T)) U``, ``S = e^{b_C} S_0 + (K e^{b_C - b})^T U``.

``T`` is computed in registers / VMEM by doubling: ``N`` is nilpotent (``N^C = 0``), so
``(I + N)^{-1} = sum_k (-N)^k = (I - N)(I + N^2)(I + N^4) ... `` with ``log2(C)`` squarings, all
``[C, C]`` matmuls (no row-by-row substitution, which Triton cannot index). The columns of ``S`` (the
value features) evolve independently, so values are split into tiles, one program per tile, as in
the linear-attention kernels; each tile recomputes the ``[C, C]`` and ``[C, M]`` parts.

The backward is the VJP of the XLA chunked path (recomputed from the inputs in ``jax.custom_vjp``):
the gradients are exact, their cost is that of XLA's backward.
"""

from __future__ import annotations

import functools
import types

import jax
import jax.numpy as jnp

from kjax.attention._pallas_common import acc_dot, decay_tiles, pad_axis
from kjax.attention._xla import delta_rule_xla


def unit_lower_inverse(n, acc):
    """``(I + N)^{-1}`` of a strictly lower-triangular ``N [C, C]`` (``C`` a power of two) by doubling."""
    c = n.shape[0]
    x = -n
    inv = jnp.eye(c, dtype=acc) + x
    p = x
    for _ in range(max(0, (c - 1).bit_length() - 1)):
        p = acc_dot(p, p, acc)
        inv = inv + acc_dot(inv, p, acc)
    return inv


def delta_chunk(q, k, v, beta, s, *, acc, b_col=None, b_row=None):
    """One chunk: ``q, k [C, Mp]``, ``v [C, BV]``, ``beta [C, 1]``, state ``s [Mp, BV]`` (all ``acc``)
    and optional cumulative log-gates ``b_col [C, 1]``, ``b_row [1, C]``; returns ``(out [C, BV], s)``."""
    c = q.shape[0]
    row = jax.lax.broadcasted_iota(jnp.int32, (c, c), 0)
    col = jax.lax.broadcasted_iota(jnp.int32, (c, c), 1)
    tril = row >= col
    if b_col is None:
        gam, ein, eout, etot = tril.astype(acc), None, None, None
    else:
        gam, ein, eout, etot = decay_tiles(b_col, b_row, tril)
    n = jnp.where(row > col, beta * acc_dot(k, k, acc, 1, 1) * gam, 0)
    t_inv = unit_lower_inverse(n, acc)
    bk = beta * k if ein is None else (beta * ein) * k
    u = acc_dot(t_inv, beta * v, acc) - acc_dot(acc_dot(t_inv, bk, acc), s, acc)
    qin = q if ein is None else q * ein
    out = acc_dot(qin, s, acc) + acc_dot(acc_dot(q, k, acc, 1, 1) * gam, u, acc)
    if etot is not None:
        s, k = s * etot, k * eout
    return out, s + acc_dot(k, u, acc, 0, 0)


def delta_family(forward, plan):
    """``(compiled, interpret)`` delta-rule functions of a kernel driver, each with the signature of
    :func:`kjax.attention._xla.delta_rule_xla`: ``f(q, k, v, beta, g, s0, runs, cu, *, chunk_size)
    -> (out [B, T, H, Dv], s [B, H, M, Dv])`` in the dtype of ``s0``; ``runs`` and ``cu`` must be None
    (``supports`` refuses them).

    ``forward(q, k, v, beta, b, s0, *, plan)`` takes padded ``[B, Tp, H, *]`` arrays in the
    accumulation dtype (``b``: None or the chunk-local cumulative log-gates ``[B, Tp, H]``)."""
    from kjax.attention._pallas_common import chunk_cumsum

    def make(interpret):
        fwd_kernel = functools.partial(forward, interpret=interpret)

        def run_kernel(q, k, v, beta, g, s0, chunk_size):
            b, t, h, m = q.shape
            dv = v.shape[-1]
            acc = s0.dtype
            p = plan(t, m, m, dv, chunk_size)
            pad = lambda x, f: pad_axis(pad_axis(x.astype(acc), 1, p.tp), 3, f)
            qp, kp, vp = pad(q, p.mp), pad(k, p.mp), pad(v, p.dvp)
            betap = pad_axis(beta.astype(acc), 1, p.tp)[..., None]
            bp = None if g is None else chunk_cumsum(g.astype(acc), p.tp, p.c)
            s0p = pad_axis(pad_axis(s0, 2, p.mp), 3, p.dvp)
            out, s = fwd_kernel(qp, kp, vp, betap, bp, s0p, plan=p)
            return out[:, :t, :, :dv], s[:, :, :m, :dv]

        @functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
        def delta(q, k, v, beta, g, s0, chunk_size):
            return run_kernel(q, k, v, beta, g, s0, chunk_size)

        def fwd(q, k, v, beta, g, s0, chunk_size):
            return run_kernel(q, k, v, beta, g, s0, chunk_size), (q, k, v, beta, g, s0)

        def bwd(chunk_size, res, cts):
            xla = lambda *a: delta_rule_xla(*a[:5], a[5], None, None, chunk_size=chunk_size)
            _, vjp = jax.vjp(xla, *res)
            return vjp(cts)

        delta.defvjp(fwd, bwd)

        def run(q, k, v, beta, g, s0, runs, cu, *, chunk_size):
            del runs, cu  # refused by ``supports``
            return delta(q, k, v, beta, g, s0, int(chunk_size))
        return run

    return types.SimpleNamespace(compiled=make(False), interpret=make(True))


def make_supports(compiled_dtypes: tuple, what: str, max_features: int):
    """``supports(platform, config)`` of a delta-rule kernel family: no packed sequences (``segment_ids``
    or ``cu_seqlens``), ``M, Dv <= max_features``, and ``compiled_dtypes`` when compiled."""
    names = ", ".join(jnp.dtype(d).name for d in compiled_dtypes)

    def supports(platform: str, config) -> str | None:
        if config.get("segments"):
            return "`segment_ids` with the delta rule is served by the XLA path"
        if config.get("varlen"):
            return "`cu_seqlens` is served by the XLA path"
        if platform != "cpu" and config["dtype"] not in compiled_dtypes:
            return f"compiled {what} delta-rule kernels take {names} inputs, not {config['dtype']}"
        if max(config["m"], config["dv"]) > max_features:
            return f"feature sizes (M, Dv) of `k`, `v` above {max_features} are served by the XLA path"
        return None
    return supports

"""The chunked machinery of decayed / gated linear attention and the (gated) delta rule (XLA path).

One recurrence family, in the state layout ``S: [M, F]`` (``kv``; the issue's ``S: [Dv, M]`` is its
transpose), with log-decays ``g_t`` and gates ``a_t = exp(g_t) <= 1``:

* decayed linear attention: ``S_t = Diag(a_t) S_{t-1} + k_t v_t^T``, ``o_t = S_t^T q_t``, where
  ``a_t`` is a scalar per head and step (retention, SSD, simple GLA; ``g: [B, T, H]``) or one gate
  per key feature (GLA; ``g: [B, T, H, M]``);
* the gated delta rule: ``S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``.

Chunks of ``C`` tokens: with the inclusive cumulative log-gate ``G_i = g_1 + ... + g_i`` of a chunk,
every decay the chunk needs is ``exp(G_i - G_j)`` for ``i >= j`` (masked *before* the exponential,
so no exponent is positive), ``exp(G_i)`` (from the chunk start to ``i``) or ``exp(G_C - G_j)`` (from
``j`` to the chunk end): all in ``[0, 1]``, so nothing overflows in float32 however strong the
decay (the factorisation ``(q e^{G}) (k e^{-G})^T`` would overflow). Per-feature gates cannot
be taken out of the ``q k^T`` product as one ``[C, C]`` matrix: the chunk is cut into sub-chunks
of ``SUB`` tokens (GLA's secondary chunking); a block below the diagonal uses
``(q_i e^{G_i - G_r}) (k_j e^{G_r - G_j})^T`` with ``r`` the first token of the row's sub-chunk
(both exponents <= 0), and a diagonal block the ``[c, c, M]`` tensor of masked gates.

Everything that does not depend on the carried state (intra-chunk attention, the WY solve of the
delta rule) is computed for all chunks at once; the ``lax.scan`` over chunks carries only ``S``.

Packed sequences:

* ``runs`` (run ids ``[B, T]`` from ``segment_ids``): pairs across runs are masked, the carried
  state reaches only the run that continues from the previous chunk, and only the last run of a
  chunk feeds the state carried out (the state of row ``b`` starts at ``initial_state[b]`` in its
  first run and is returned for its last run);
* ``cu_seqlens`` (offsets ``[N + 1]``, ``B == 1``): the tokens are moved to a layout in which every
  sequence starts on a chunk boundary (``sum_n ceil(L_n / C) <= (T + N (C - 1)) / C`` chunks, as
  flash-linear-attention's varlen kernels do); the state is replaced by sequence ``n``'s initial
  state at its first chunk, and its final state is the state after its last chunk.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kjax._src.linalg import unit_lower_inverse
from kjax.attention._reference import pad_time, to_chunks

#: tokens per sub-chunk of the per-feature (GLA) form
SUB = 16


def plan_chunk(chunk_size: int, t: int, feature: bool) -> tuple[int, int]:
    """``(c, sub)``: the chunk length (a multiple of ``sub`` for per-feature gates) and sub-chunk."""
    c = max(1, min(chunk_size, t))
    if not feature or c <= SUB:
        return c, c
    return -(-c // SUB) * SUB, SUB


def _safe_exp(mask, x):
    """``exp(x)`` where ``mask``, 0 elsewhere, with no gradient through the masked-out values."""
    return jnp.where(mask, jnp.exp(jnp.where(mask, x, 0.0)), 0.0)


def _chunks_g(g, n: int, c: int):
    """Log-gates ``[B, T, H] -> [N, B, H, C]`` or ``[B, T, H, M] -> [N, B, H, C, M]`` (padded with 0)."""
    pad = n * c - g.shape[1]
    if g.ndim == 3:
        b, _, h = g.shape
        return pad_time(g, pad).reshape(b, n, c, h).transpose(1, 0, 3, 2)
    return to_chunks(pad_time(g, pad), n, c)


def _run_masks(runs, n: int, c: int, t: int):
    """Masks of packed runs per chunk: ``same [N, B, C, C]``, ``cont [N, B, C]`` (the token's run
    continues from the previous chunk), ``keep [N, B]`` (no run starts in the chunk), ``last [N, B, C]``
    (the token is in the chunk's last run)."""
    b = runs.shape[0]
    pad = n * c - t
    rp = pad_time(runs, pad, 0)
    if pad:
        rp = rp.at[:, t:].set(runs[:, -1:])
    rc = rp.reshape(b, n, c).transpose(1, 0, 2)  # [N, B, C]
    prev = jnp.concatenate([rp[:, :1], rp[:, c - 1:-1:c]], axis=1).T  # [N, B]
    same = rc[..., :, None] == rc[..., None, :]
    cont = rc == prev[..., None]
    keep = rc[..., -1] == prev
    last = rc == rc[..., -1:]
    return same, cont, keep, last


# ----------------------------------------------------------------------------------- intra-chunk gates


def _scalar_gates(gc, c: int, same):
    """For scalar log-gates ``gc: [N, B, H, C]`` (or None): ``(gam [N, B, H, C, C]`` masked
    ``exp(G_i - G_j)`` for ``j <= i`` (and the same run), ``ein [.., C]`` = ``exp(G_i)``, ``eout`` =
    ``exp(G_C - G_j)``, ``etot [N, B, H]`` = ``exp(G_C)``)."""
    tril = jnp.tril(jnp.ones((c, c), dtype=bool))
    mask = tril if same is None else tril & same[:, :, None]
    if gc is None:
        return mask, None, None, None
    G = jnp.cumsum(gc, axis=-1)
    gam = _safe_exp(mask, G[..., :, None] - G[..., None, :])
    return gam, jnp.exp(G), jnp.exp(G[..., -1:] - G), jnp.exp(G[..., -1])


def _feature_scores(qc, kc, gc, c: int, sub: int):
    """``A_ij = sum_m q_im k_jm exp(G_im - G_jm)`` for ``j <= i`` (0 above), per-feature log-gates
    ``gc: [N, B, H, C, M]``, by sub-chunks of ``sub`` tokens; returns ``(A, G)``."""
    G = jnp.cumsum(gc, axis=-2)
    lead = G.shape[:-2]
    m = G.shape[-1]
    ns = c // sub
    Gb, qb, kb = (x.reshape(*lead, ns, sub, m) for x in (G, qc, kc))
    # diagonal blocks: the masked [sub, sub, M] gates
    tri = jnp.tril(jnp.ones((sub, sub), dtype=bool))[..., None]
    e = _safe_exp(tri, Gb[..., :, None, :] - Gb[..., None, :, :])
    a_diag = jnp.einsum("...nim,...njm,...nijm->...nij", qb, kb, e)
    a = jnp.einsum("...nij,nl->...nilj", a_diag, jnp.eye(ns, dtype=a_diag.dtype))
    if ns > 1:
        # blocks below the diagonal: reference point r = first token of the row's sub-chunk
        ref = Gb[..., :, 0, :]  # [.., ns, M]
        qt = qb * jnp.exp(Gb - ref[..., None, :])
        before = (jnp.arange(c)[None, :] < (jnp.arange(ns) * sub)[:, None])[..., None]  # [ns, C, 1]
        kt = kc[..., None, :, :] * _safe_exp(before, ref[..., :, None, :] - G[..., None, :, :])
        a_off = jnp.einsum("...nim,...njm->...nij", qt, kt).reshape(*lead, ns, sub, ns, sub)
        a = a + a_off
    return a.reshape(*lead, c, c), G


# ----------------------------------------------------------------------------------- the scans


def _seq_layout(cu, t: int, c: int):
    """Chunk-aligned layout of ``N`` packed sequences (``cu: [N + 1]`` offsets, strictly increasing).

    Returns ``dest [T]`` (each token's position in the aligned layout of ``nc * c`` tokens),
    ``reset [nc]`` (the chunk starts a sequence), ``owner [nc]`` (its sequence), ``last [N]`` (the
    last chunk of each sequence) and the static chunk count ``nc``."""
    n = cu.shape[0] - 1
    cu = cu.astype(jnp.int32)
    lens = cu[1:] - cu[:-1]
    nch = (lens + c - 1) // c
    first = jnp.cumsum(nch) - nch
    nc = (t + n * (c - 1)) // c
    tok = jnp.arange(t)
    seq = jnp.clip(jnp.searchsorted(cu[1:], tok, side="right"), 0, n - 1)
    dest = first[seq] * c + tok - cu[seq]
    reset = jnp.zeros(nc, bool).at[first].set(True)
    owner = jnp.clip(jnp.searchsorted(first, jnp.arange(nc), side="right") - 1, 0, n - 1)
    return dest, reset, owner, first + nch - 1, nc


def _to_aligned(x, dest, nc: int, c: int):
    """``[1, T, ...] -> [1, nc * c, ...]``: tokens to their aligned positions, zeros elsewhere."""
    out = jnp.zeros((1, nc * c) + x.shape[2:], x.dtype)
    return out.at[0, dest].set(x[0])


def _scan_states(step, s0, xs, seq):
    """``lax.scan`` of ``step(s, xs) -> (s, out)`` over chunks; with ``seq = (s0_seq, reset,
    owner)`` the state is replaced at sequence starts and the state after every chunk is returned."""
    if seq is None:
        s, out = jax.lax.scan(step, s0, xs)
        return out, s, None
    s0_seq, reset, owner = seq

    def body(s, xs):
        (r, o), rest = xs
        s = jnp.where(r, s0_seq[o][None], s)
        s, out = step(s, rest)
        return s, (out, s)

    s, (out, states) = jax.lax.scan(body, s0, ((reset, owner), xs))
    return out, s, states


@functools.partial(jax.jit, static_argnames=("c", "sub"))
def _gla_core(q, k, va, g, state, runs, seq, *, c: int, sub: int):
    """Chunked decayed linear attention on ``[B, T, H, *]`` inputs (``va``: augmented values),
    log-gates ``g`` (None, ``[B, T, H]`` or ``[B, T, H, M]``); ``T`` is a multiple of ``c``."""
    b, t, h, m = q.shape
    n = t // c
    qc, kc, vc = (to_chunks(x, n, c) for x in (q, k, va))
    gc = None if g is None else _chunks_g(g, n, c)
    same = cont = keep = last = None
    if runs is not None:
        same, cont, keep, last = _run_masks(runs, n, c, t)
    if gc is None or gc.ndim == 4:
        gam, ein, eout, etot = _scalar_gates(gc, c, same)
        scores = jnp.einsum("nbhcm,nbhsm->nbhcs", qc, kc)
        scores = jnp.where(gam, scores, 0) if gc is None else scores * gam
        qin = qc if ein is None else qc * ein[..., None]
        kout = kc if eout is None else kc * eout[..., None]
        dec = None if etot is None else etot[..., None, None]
    else:
        scores, G = _feature_scores(qc, kc, gc, c, sub)
        mask = jnp.tril(jnp.ones((c, c), dtype=bool))
        if same is not None:
            mask = mask & same[:, :, None]
        scores = jnp.where(mask, scores, 0)
        qin = qc * jnp.exp(G)
        kout = kc * jnp.exp(G[..., -1:, :] - G)
        dec = jnp.exp(G[..., -1, :])[..., None]
    intra = jnp.einsum("nbhcs,nbhsf->nbhcf", scores, vc)
    if runs is not None:
        qin = jnp.where(cont[:, :, None, :, None], qin, 0)
        kout = jnp.where(last[:, :, None, :, None], kout, 0)

    def step(s, xs):
        qi, ki, vi, di, kp = xs
        out = jnp.einsum("bhcm,bhmf->bhcf", qi, s)
        s = s if di is None else di * s
        if kp is not None:
            s = jnp.where(kp[:, None, None, None], s, 0)
        return s + jnp.einsum("bhcm,bhcf->bhmf", ki, vi), out

    out, s, states = _scan_states(step, state, (qin, kout, vc, dec, keep), seq)
    out = out + intra
    return out.transpose(1, 0, 3, 2, 4).reshape(b, t, h, -1), s, states


@functools.partial(jax.jit, static_argnames=("c",))
def _delta_core(q, k, v, beta, g, state, runs, seq, *, c: int):
    """Chunked (gated) delta rule, WY form with gates; ``T`` is a multiple of ``c``.

    In a chunk with carried state ``S_0``, ``u_i = beta_i (v_i - a_i S_{i-1}^T k_i)`` solves the unit
    lower-triangular system ``(I + tril(diag(beta) (Gam * K K^T), -1)) U = diag(beta) (V - diag(e^G)
    K S_0)`` with ``Gam_ij = exp(G_i - G_j)``; then ``O = diag(e^G) Q S_0 + (Gam * tril(Q K^T)) U`` and
    ``S = e^{G_C} S_0 + (K e^{G_C - G})^T U``.
    """
    b, t, h, m = q.shape
    dv = v.shape[-1]
    n = t // c
    qc, kc, vc = (to_chunks(x, n, c) for x in (q, k, v))
    bc = _chunks_g(beta, n, c)  # [N, B, H, C]
    gc = None if g is None else _chunks_g(g, n, c)
    same = cont = keep = last = None
    if runs is not None:
        same, cont, keep, last = _run_masks(runs, n, c, t)
    gam, ein, eout, etot = _scalar_gates(gc, c, same)
    strict = jnp.tril(jnp.ones((c, c), dtype=bool), -1)
    if same is not None:
        strict = strict & same[:, :, None]
    kk = jnp.einsum("nbhcm,nbhsm->nbhcs", kc, kc)
    if gc is not None:
        kk = kk * gam
    # (I + N)^-1 by matrix products: a batched LAPACK triangular solve can hang XLA:CPU (see
    # kjax._src.linalg.unit_lower_inverse)
    t_inv = unit_lower_inverse(jnp.where(strict, bc[..., :, None] * kk, 0))
    kin = kc if ein is None else kc * ein[..., None]
    rhs = bc[..., None] * jnp.concatenate([vc, kin], axis=-1)
    w = jnp.einsum("nbhcs,nbhsx->nbhcx", t_inv, rhs, precision=jax.lax.Precision.HIGHEST)
    wv, wk = w[..., :dv], w[..., dv:]
    qk = jnp.einsum("nbhcm,nbhsm->nbhcs", qc, kc)
    qk = jnp.where(gam, qk, 0) if gc is None else qk * gam
    qin = qc if ein is None else qc * ein[..., None]
    kout = kc if eout is None else kc * eout[..., None]
    dec = None if etot is None else etot[..., None, None]
    if runs is not None:
        qin = jnp.where(cont[:, :, None, :, None], qin, 0)
        wk = jnp.where(cont[:, :, None, :, None], wk, 0)
        kout = jnp.where(last[:, :, None, :, None], kout, 0)

    def step(s, xs):
        qi, ki, qki, wvi, wki, di, kp = xs
        u = wvi - jnp.einsum("bhcm,bhmv->bhcv", wki, s)
        out = jnp.einsum("bhcm,bhmv->bhcv", qi, s) + jnp.einsum("bhcs,bhsv->bhcv", qki, u)
        s = s if di is None else di * s
        if kp is not None:
            s = jnp.where(kp[:, None, None, None], s, 0)
        return s + jnp.einsum("bhcm,bhcv->bhmv", ki, u), out

    out, s, states = _scan_states(step, state, (qin, kout, qk, wv, wk, dec, keep), seq)
    return out.transpose(1, 0, 3, 2, 4).reshape(b, t, h, -1), s, states


def _run(core, arrays, state, runs, cu, *, c: int, **static):
    """Pad to whole chunks (or move to the chunk-aligned layout of ``cu``), run ``core``, undo.

    ``arrays``: the ``[B, T, ...]`` inputs of ``core`` (None entries pass through). Returns
    ``(out [B, T, H, F], final state)``; with ``cu`` the final state has one row per sequence."""
    t = arrays[0].shape[1]
    if cu is None:
        pad = -(-t // c) * c - t
        padded = [None if x is None else pad_time(x, pad) for x in arrays]
        if runs is not None and pad:  # padded tokens continue the last run
            runs = jnp.concatenate([runs, jnp.broadcast_to(runs[:, -1:], (runs.shape[0], pad))], axis=1)
        out, s, _ = core(*padded, state, runs, None, c=c, **static)
        return out[:, :t], s
    dest, reset, owner, last, nc = _seq_layout(cu, t, c)
    aligned = [None if x is None else _to_aligned(x, dest, nc, c) for x in arrays]
    s0 = jnp.zeros((1,) + state.shape[1:], state.dtype)
    out, _, states = core(*aligned, s0, None, (state, reset, owner), c=c, **static)
    return out[:, dest], states[last, 0]


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def linear_attention_decay(q, k, va, g, state, runs, cu, *, chunk_size: int):
    """Causal decayed linear attention on augmented values ``va: [B, T, H, F]``; ``g`` None,
    ``[B, T, H]`` or ``[B, T, H, M]`` log-gates; ``state: [B or N, H, M, F]``. Returns ``(out, s)``."""
    c, sub = plan_chunk(chunk_size, q.shape[1], g is not None and g.ndim == 4)
    return _run(_gla_core, (q, k, va, g), state, runs, cu, c=c, sub=sub)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def delta_rule_decay(q, k, v, beta, g, state, runs, cu, *, chunk_size: int):
    """The (gated) delta rule in chunks; ``g`` None or ``[B, T, H]``. Returns ``(out, s)``."""
    c, _ = plan_chunk(chunk_size, q.shape[1], False)
    return _run(_delta_core, (q, k, v, beta, g), state, runs, cu, c=c)

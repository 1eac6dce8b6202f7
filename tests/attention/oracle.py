"""Independent NumPy oracles (quadratic forms and token loops), float64."""

import numpy as np


def masks(T, causal, segment_ids=None):
    """[B or 1, T, T] boolean mask: causal and same (contiguous) segment."""
    m = np.tril(np.ones((T, T), bool)) if causal else np.ones((T, T), bool)
    m = m[None]
    if segment_ids is not None:
        s = np.asarray(segment_ids)
        m = m & (s[:, :, None] == s[:, None, :])
    return m


def linear_attention(pq, pk, v, *, causal=True, normalize=True, eps=1e-6, segment_ids=None,
                     weights=None, s0=None, z0=None):
    """Masked phi(Q) phi(K)^T V (row-normalised), optional Toeplitz weights [H, T, T] and initial
    state (S0 [B, H, M, Dv], z0 [B, H, M]) seen by the tokens of the first segment."""
    pq, pk, v = (np.asarray(x, np.float64) for x in (pq, pk, v))
    B, T, H, _ = pq.shape
    a = np.einsum("bthm,bshm->bhts", pq, pk)
    a = a * masks(T, causal, segment_ids)[:, None]
    if weights is not None:
        a = a * np.asarray(weights)[None]
    num = np.einsum("bhts,bshv->bthv", a, v)
    den = a.sum(-1).transpose(0, 2, 1)[..., None]
    if s0 is not None:
        first = np.ones((B, T), bool)
        if segment_ids is not None:
            s = np.asarray(segment_ids)
            first = np.cumsum(np.concatenate([np.zeros((B, 1)), s[:, 1:] != s[:, :-1]], 1), 1) == 0
        num = num + first[:, :, None, None] * np.einsum("bthm,bhmv->bthv", pq, np.asarray(s0))
        den = den + first[:, :, None, None] * np.einsum("bthm,bhm->bth", pq, np.asarray(z0))[..., None]
    return num / (den + eps) if normalize else num


def delta_rule(q, k, v, beta, s0=None):
    """Token loop of S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T, o_t = S_t^T q_t."""
    q, k, v, beta = (np.asarray(x, np.float64) for x in (q, k, v, beta))
    B, T, H, M = q.shape
    S = np.zeros((B, H, M, v.shape[-1])) if s0 is None else np.array(s0, np.float64)
    out = np.zeros((B, T, H, v.shape[-1]))
    for t in range(T):
        for b in range(B):
            for h in range(H):
                kt = k[b, t, h]
                S[b, h] += beta[b, t, h] * np.outer(kt, v[b, t, h] - S[b, h].T @ kt)
                out[b, t, h] = S[b, h].T @ q[b, t, h]
    return out, S


def softmax_attention(q, k, v, *, causal=True, scale=None):
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    T, D = q.shape[1], q.shape[-1]
    scale = 1 / np.sqrt(D) if scale is None else scale
    logits = np.einsum("bthd,bshd->bhts", q, k) * scale
    logits = np.where(masks(T, causal)[:, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhts,bshv->bthv", p, v)


def _gates(g, B, T, H, M, t):
    """Gates exp(g) of token t as [B, H, M] (g None, [H], [B, T, H] or [B, T, H, M] log-decays)."""
    if g is None:
        return np.ones((B, H, M))
    g = np.asarray(g, np.float64)
    if g.ndim == 1:
        return np.broadcast_to(np.exp(g)[None, :, None], (B, H, M))
    if g.ndim == 3:
        return np.broadcast_to(np.exp(g[:, t])[..., None], (B, H, M))
    return np.exp(g[:, t])


def decayed_linear_attention(q, k, v, g=None, *, normalize=False, eps=1e-6, s0=None, z0=None):
    """Token loop of S_t = Diag(a_t) S_{t-1} + k_t v_t^T, z_t = a_t * z_{t-1} + k_t,
    o_t = S_t^T q_t (/ (q_t . z_t + eps)), a_t = exp(g_t). Returns (out, S, z)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, T, H, M = q.shape
    S = np.zeros((B, H, M, v.shape[-1])) if s0 is None else np.array(s0, np.float64)
    z = np.zeros((B, H, M)) if z0 is None else np.array(z0, np.float64)
    out = np.zeros((B, T, H, v.shape[-1]))
    for t in range(T):
        a = _gates(g, B, T, H, M, t)
        S = a[..., None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        z = a * z + k[:, t]
        num = np.einsum("bhm,bhmv->bhv", q[:, t], S)
        out[:, t] = num / (np.einsum("bhm,bhm->bh", q[:, t], z)[..., None] + eps) if normalize else num
    return out, S, z


def gated_delta_rule(q, k, v, beta, g=None, s0=None):
    """Token loop of S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T q_t."""
    q, k, v, beta = (np.asarray(x, np.float64) for x in (q, k, v, beta))
    B, T, H, M = q.shape
    S = np.zeros((B, H, M, v.shape[-1])) if s0 is None else np.array(s0, np.float64)
    out = np.zeros((B, T, H, v.shape[-1]))
    eye = np.eye(M)
    for t in range(T):
        a = _gates(g, B, T, H, 1, t)[..., 0]  # [B, H]
        kt = k[:, t]
        proj = eye - beta[:, t, :, None, None] * kt[..., :, None] * kt[..., None, :]
        S = a[..., None, None] * (proj @ S) + (beta[:, t, :, None] * kt)[..., :, None] * v[:, t, :, None, :]
        out[:, t] = np.einsum("bhm,bhmv->bhv", q[:, t], S)
    return out, S

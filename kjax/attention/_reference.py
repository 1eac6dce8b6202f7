"""Pure-jnp reference implementations (the spec): linear attention in its forms, the token steps of
the decayed linear attention and the gated delta rule (the recurrences the chunked forms of
``_decay`` equal), RPE.

Inputs here are already validated and in their compute dtype (the heavy functions are jitted with
static configuration, so eager calls compile once per shape instead of op by op); the public functions in
``_attention.py`` check arguments, cast and dispatch. Layout ``[B, T, H, M]`` for feature-mapped
queries/keys and ``[B, T, H, Dv]`` for values. States are ``[B, H, M, Dv + 1]`` internally: the last
column is the running sum of keys (the normaliser), so numerator and denominator share one matmul.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def augment(v):
    """``[..., Dv] -> [..., Dv + 1]`` with a trailing column of ones (carries the normaliser)."""
    return jnp.concatenate([v, jnp.ones_like(v[..., :1])], axis=-1)


def finish(out, normalize: bool, eps: float):
    """Split ``[..., Dv + 1]`` into numerator and denominator and divide (or drop the denominator)."""
    num, den = out[..., :-1], out[..., -1:]
    if not normalize:
        return num
    return num / (den + eps)


def run_ids(segment_ids, T: int):
    """Run index per token: increments wherever ``segment_ids`` changes (``[B, T]`` int32)."""
    change = jnp.concatenate(
        [jnp.zeros_like(segment_ids[:, :1], dtype=bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    return jnp.cumsum(change.astype(jnp.int32), axis=1)


def pad_time(x, pad: int, value=0):
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, pad)
    return jnp.pad(x, widths, constant_values=value)


def to_chunks(x, n: int, c: int):
    """``[B, N*C, H, F] -> [N, B, H, C, F]``."""
    b, _, h, f = x.shape
    return x.reshape(b, n, c, h, f).transpose(1, 0, 3, 2, 4)


def _chunked(chunk_size: int, *xs):
    """Chunk length ``c``, chunk count ``n``, padding and ``[N, B, H, C, F]`` chunks of each
    ``[B, T, H, F]`` input (zero-padded to ``n * c`` tokens)."""
    t = xs[0].shape[1]
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = n * c - t
    return c, n, pad, tuple(to_chunks(pad_time(x, pad), n, c) for x in xs)


def _from_chunks(y, t: int):
    """``[N, B, H, C, F] -> [B, T, H, F]``."""
    n, b, h, c, f = y.shape
    return y.transpose(1, 0, 3, 2, 4).reshape(b, n * c, h, f)[:, :t]


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def causal_chunked(q, k, va, state, *, chunk_size: int, runs=None):
    """Causal chunked linear attention on augmented values ``va: [B, T, H, F]``.

    ``state: [B, H, M, F]`` is the prefix sum ``sum_s k_s va_s^T`` before the first token. Returns
    ``(out [B, T, H, F], final state)``. With ``runs`` (``[B, T]`` run ids from :func:`run_ids`),
    tokens only see tokens of their own run, and ``state`` belongs to the run of token 0.
    """
    b, t, h, m = q.shape
    c, n, pad, (qc, kc, vc) = _chunked(chunk_size, q, k, va)
    tril = jnp.tril(jnp.ones((c, c), dtype=bool))

    if runs is None:
        def body(s, xs):
            qi, ki, vi = xs
            a = jnp.where(tril, jnp.einsum("bhcm,bhsm->bhcs", qi, ki), 0)
            out = jnp.einsum("bhcs,bhsf->bhcf", a, vi) + jnp.einsum("bhcm,bhmf->bhcf", qi, s)
            s = s + jnp.einsum("bhcm,bhcf->bhmf", ki, vi)
            return s, out

        state, out = jax.lax.scan(body, state, (qc, kc, vc))
        return _from_chunks(out, t), state

    rp = pad_time(runs, pad, 0)
    if pad:
        rp = rp.at[:, t:].set(runs[:, -1:])
    rc = rp.reshape(b, n, c).transpose(1, 0, 2)  # [N, B, C]
    prev = jnp.concatenate([rp[:, :1], rp[:, c - 1:-1:c]], axis=1).T  # run of the token before each chunk

    def body_seg(s, xs):
        qi, ki, vi, ri, pi = xs
        same = ri[:, :, None] == ri[:, None, :]
        a = jnp.where((tril & same)[:, None], jnp.einsum("bhcm,bhsm->bhcs", qi, ki), 0)
        inter = jnp.einsum("bhcm,bhmf->bhcf", qi, s)
        inter = jnp.where((ri == pi[:, None])[:, None, :, None], inter, 0)
        out = jnp.einsum("bhcs,bhsf->bhcf", a, vi) + inter
        last = ri[:, -1]
        keep = (last == pi)[:, None, None, None]
        kin = jnp.where((ri == last[:, None])[:, None, :, None], ki, 0)
        s = jnp.where(keep, s, 0) + jnp.einsum("bhcm,bhcf->bhmf", kin, vi)
        return s, out

    state, out = jax.lax.scan(body_seg, state, (qc, kc, vc, rc, prev))
    return _from_chunks(out, t), state


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def noncausal(q, k, va, state, *, chunk_size: int, runs=None):
    """Non-causal linear attention: every token sees every token of its run (and ``state``)."""
    if runs is None:
        s = state + jnp.einsum("bthm,bthf->bhmf", k, va)
        return jnp.einsum("bthm,bhmf->bthf", q, s), s
    fwd, s = causal_chunked(q, k, va, state, chunk_size=chunk_size, runs=runs)
    flip = lambda x: jnp.flip(x, axis=1)
    bwd, _ = causal_chunked(flip(q), flip(k), flip(va), jnp.zeros_like(state), chunk_size=chunk_size,
                            runs=flip(runs))
    diag = jnp.einsum("bthm,bthm->bth", q, k)[..., None] * va
    return fwd + flip(bwd) - diag, s


@jax.jit
def decay_step(s, q, k, va, a=None):
    """One token of decayed linear attention: ``s <- Diag(a) s + k va^T``, ``out = s^T q``
    (``a: [B, H, M]`` gates or None for 1; ``s: [B, H, M, F]``)."""
    if a is not None:
        s = a[..., None] * s
    s = s + k[..., :, None] * va[..., None, :]
    return jnp.einsum("bhm,bhmf->bhf", q, s), s


@jax.jit
def delta_step(s, q, k, v, beta, a=None):
    """One token of the gated delta rule: ``s <- a (I - beta k k^T) s + beta k v^T``, ``out = s^T q``
    (``beta, a: [B, H]``; ``a`` None for 1)."""
    if a is not None:
        s = a[..., None, None] * s
    err = v - jnp.einsum("bhm,bhmv->bhv", k, s)
    s = s + (beta[..., None] * k)[..., :, None] * err[..., None, :]
    return jnp.einsum("bhm,bhmv->bhv", q, s), s


@functools.partial(jax.jit, static_argnames=("causal",))
def rpe_linear(q, k, va, weights, *, causal: bool):
    """``out_i = sum_j c_{i-j} (q_i . k_j) va_j`` with Toeplitz products via FFT.

    ``weights: [H, 2T-1]`` are the multiplicative coefficients ``c`` for offsets ``-(T-1) .. T-1``.
    """
    from kjax._src.fft import toeplitz_matmul

    t = q.shape[1]
    if causal:
        weights = weights.at[:, : t - 1].set(0)
    kv = k[..., :, None] * va[..., None, :]  # [B, T, H, M, F]
    tw = weights.T[None, :, :, None, None]  # [1, 2T-1, H, 1, 1]
    acc = toeplitz_matmul(tw, kv, axis=1)
    return jnp.einsum("bthm,bthmf->bthf", q, acc)


@functools.partial(jax.jit, static_argnames=("causal", "normalize"))
def rpe_attention(q, k, v, rpe, eps, *, causal: bool, normalize: bool):
    """Attention with weights ``exp(rpe)`` (``rpe: [H, 2T-1]`` biases), stabilised and exact.

    With ``m_h`` the largest bias of head ``h`` that is used (offsets >= 0 when causal; 0 when none
    is finite) the weights are ``exp(b - m_h) <= 1``, so no weight and no FFT sum overflows, and

    * normalised: ``num' / (den' + eps exp(-m_h))``, which is ``num / (den + eps)`` exactly: a
      constant added to the biases cancels up to the ``eps`` term (``eps exp(-m)`` may round to 0
      or inf, the value the exact formula has in the dtype);
    * unnormalised: ``exp(m_h) num'``, exact: it overflows only where the result does.
    """
    t = q.shape[1]
    used = rpe[:, t - 1:] if causal else rpe
    m = jnp.max(used, axis=1)
    m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))[:, None]  # [H, 1]; cancels exactly
    shifted = rpe - m
    if causal:  # ignored offsets get weight 0 (and gradient 0, where exp(large) * 0 would be NaN)
        shifted = jnp.where(jnp.arange(rpe.shape[1]) < t - 1, -jnp.inf, shifted)
    out = rpe_linear(q, k, augment(v), jnp.exp(shifted), causal=causal)
    num, den = out[..., :-1], out[..., -1:]
    if not normalize:
        return jnp.where(num == 0, num, num * jnp.exp(m))  # 0, not 0 * inf, where nothing is summed
    return num / (den + jnp.where(eps > 0, eps * jnp.exp(-m), 0.0))


@functools.partial(jax.jit, static_argnames=("causal",))
def softmax_attention(q, k, v, scale, *, causal: bool, runs=None):
    """Quadratic softmax attention ``softmax(scale q k^T + mask) v`` (float32 or wider logits)."""
    logits = jnp.einsum("bthd,bshd->bhts", q, k) * scale
    t = q.shape[1]
    mask = jnp.ones((t, t), dtype=bool)
    if causal:
        mask = jnp.tril(mask)
    mask = mask[None, None]
    if runs is not None:
        mask = mask & (runs[:, :, None] == runs[:, None, :])[:, None]
    logits = jnp.where(mask, logits, -jnp.inf)
    p = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhts,bshv->bthv", p, v)

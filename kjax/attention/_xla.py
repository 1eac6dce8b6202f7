"""The production XLA path of linear attention (CPU, and any backend without a Pallas kernel).

:func:`linear_attention_xla` has the signature every implementation of ``linear_attention`` shares
(see ``_attention.py``): raw queries and keys with the name of a fused feature map, values, the
initial state ``(s0, z0)`` and run ids; it returns ``(out, s, z)``. The causal form without segments
runs :func:`causal_grouped`, tuned for XLA:CPU; the other forms run the reference's chunked scans.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kjax.attention import _feature_maps as fm
from kjax.attention._decay import delta_rule_decay, linear_attention_decay
from kjax.attention._reference import augment, causal_chunked, finish, noncausal, pad_time


def apply_fused_map(q, k, w, feature_map: str):
    """``phi(q), phi(k)`` for the maps the kernels fuse (queries: per-row stabiliser for FAVOR+)."""
    if feature_map == "identity":
        return q, k
    if feature_map == "relu":
        return fm.relu_features(q), fm.relu_features(k)
    if feature_map == "elu_plus_one":
        return fm.elu_plus_one(q), fm.elu_plus_one(k)
    return fm.favor_positive(q, w, stabilize="row"), fm.favor_positive(k, w, stabilize="weights")


GROUP = 4  # chunks per step of :func:`causal_grouped`


@functools.partial(jax.jit, static_argnames=("chunk_size", "normalize", "group"))
def causal_grouped(q, k, v, state, *, chunk_size: int, normalize: bool, eps: float, group: int = GROUP):
    """:func:`causal_chunked` (no segments) arranged for XLA: the same chunk algebra, finished outputs.

    Differences that matter for speed on XLA:CPU, where the time goes into memory passes over the
    ``[B, T, H, *]`` arrays and into batched matmuls of chunk size: inputs stay in their ``[B, T, H, *]``
    layout (a step reads ``group`` consecutive chunks with a free reshape; no chunk-major transpose
    of whole arrays), the ones column of the normaliser is appended inside the step (no augmented
    copy of ``v``), the ``group`` chunks of a step are one batched matmul each, their prefix states a
    short running sum, and the step divides by the normaliser before it writes its outputs. Takes
    plain ``v: [B, T, H, Dv]`` and the augmented ``state: [B, H, M, Dv + 1]``; returns ``(out [B, T, H,
    Dv], final state)``.
    """
    b, t, h, m = q.shape
    c = min(chunk_size, t)
    g = max(1, min(group, -(-t // c)))
    span = c * g
    n = -(-t // span)
    pad = n * span - t
    tril = jnp.tril(jnp.ones((c, c), dtype=q.dtype))

    q, k, v = (pad_time(x, pad) for x in (q, k, v))

    def body(i, carry):
        s, out = carry
        # a step's g chunks, read in place: [B, g*c, H, F] -> [B, g, c, H, F] is a free reshape
        qi, ki, vi = (jax.lax.dynamic_slice_in_dim(x, i * span, span, axis=1).reshape(b, g, c, h, -1)
                      for x in (q, k, v))
        vi = augment(vi)
        kv = jnp.einsum("bgchm,bgchf->bghmf", ki, vi)
        prefix = [s]
        for j in range(g - 1):
            prefix.append(prefix[-1] + kv[:, j])
        a = jnp.einsum("bgchm,bgshm->bghcs", qi, ki) * tril
        o = (jnp.einsum("bghcs,bgshf->bgchf", a, vi)
             + jnp.einsum("bgchm,bghmf->bgchf", qi, jnp.stack(prefix, axis=1)))
        if pad and normalize:
            # padded tokens (past T) have a zero normaliser: give them 1 so that eps = 0 does not
            # put 0/0 into the gradient of the real tokens
            tok = i * span + jnp.arange(span).reshape(1, g, c, 1, 1)
            o = o.at[..., -1:].set(jnp.where(tok < t, o[..., -1:], 1.0))
        o = finish(o, normalize, eps).reshape(b, span, h, -1)
        return prefix[-1] + kv[:, -1], jax.lax.dynamic_update_slice_in_dim(out, o, i * span, axis=1)

    # a loop that writes into its output in place: a scan with stacked outputs measured ~25% slower
    # on XLA:CPU (extra copies of the [B, T, H, Dv] result); reverse-mode works because the trip
    # count is static (fori_loop lowers to scan)
    out = jnp.zeros(v.shape, q.dtype)
    state, out = jax.lax.fori_loop(0, n, body, (state, out))
    return out[:, :t], state


def linear_attention_xla(q, k, v, w, s0, z0, runs, g, cu, *, feature_map: str, causal: bool,
                         normalize: bool, eps: float, chunk_size: int):
    """``(out [B, T, H, Dv], s [B, H, M, Dv], z [B, H, M])`` in the dtype of ``s0`` (accumulation).

    ``g``: log-decays (None, ``[B, T, H]`` or ``[B, T, H, M]``); ``cu``: sequence offsets ``[N + 1]``
    or None (then ``s0, z0`` and the returned state have ``N`` rows). Either runs the decayed
    chunked scans of ``_decay`` (causal only)."""
    acc, v_dtype = s0.dtype, v.dtype
    q, k = apply_fused_map(q.astype(acc), k.astype(acc), w.astype(acc), feature_map)
    v = v.astype(acc)
    state = jnp.concatenate([s0, z0[..., None]], axis=-1)
    if g is not None or cu is not None:
        g = None if g is None else g.astype(acc)
        out, s = linear_attention_decay(q, k, augment(v), g, state, runs, cu, chunk_size=chunk_size)
        out = finish(out, normalize, eps)
    elif causal and runs is None:
        out, s = causal_grouped(q, k, v, state, chunk_size=chunk_size, normalize=normalize, eps=eps)
    else:
        va = augment(v)
        if causal:
            out, s = causal_chunked(q, k, va, state, chunk_size=chunk_size, runs=runs)
        else:
            out, s = noncausal(q, k, va, state, chunk_size=chunk_size, runs=runs)
        out = finish(out, normalize, eps)
    return out.astype(v_dtype), s[..., :-1], s[..., -1]


def delta_rule_xla(q, k, v, beta, g, s0, runs, cu, *, chunk_size: int):
    """The (gated) delta rule: ``(out [B, T, H, Dv], s [B or N, H, M, Dv])`` in the dtype of ``s0``."""
    acc = s0.dtype
    q, k, v, beta = (x.astype(acc) for x in (q, k, v, beta))
    g = None if g is None else g.astype(acc)
    return delta_rule_decay(q, k, v, beta, g, s0, runs, cu, chunk_size=chunk_size)

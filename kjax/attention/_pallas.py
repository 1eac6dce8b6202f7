"""Pallas kernel for causal chunked linear attention, with the feature map fused in.

One program per (batch, head) walks the sequence chunk by chunk, keeping the state
``S = sum phi(k) v^T`` (``[M, Dv]``) and normaliser ``z = sum phi(k)`` in registers: inside a chunk
the output is ``tril(phi(Q) phi(K)^T) V + phi(Q) S`` (matmuls), then ``S += phi(K)^T V``. The
feature map (``identity``, ``elu_plus_one`` or ``favor_positive`` with ``w: [M, D]``) is applied to
each loaded chunk inside the kernel, so ``phi(Q), phi(K)`` never touch memory.

Backward (``jax.custom_vjp``): the gradient of ``Y = tril(A) V_a`` with ``A = phi(Q) phi(K)^T`` and
augmented values ``V_a = [V, 1]`` is three more causal linear attentions, run by the same kernel
(identity map, unnormalised), two of them on time-reversed sequences:

* ``dphi(Q) = causal(dY, V_a, phi(K))``
* ``dphi(K) = reverse_causal(V_a, dY, phi(Q))``
* ``dV_a = reverse_causal(phi(K), phi(Q), dY)``

where ``dY = [dO / (den + eps), -sum(dO * O) / (den + eps)]`` undoes the normalisation (``den`` is a
residual of the forward kernel). The chain rule through the feature map is the VJP of its jnp
definition (elementwise / one small matmul).

The entry point is jitted with static chunk size, feature map and ``interpret`` flag. Compiled
GPU lowering (Triton) expects power-of-two feature sizes; it has not been run in this repository's
CI (no GPU), only ``interpret=True`` on CPU.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kjax._src import dtypes
from kjax.attention import _feature_maps as fm

MAPS = ("identity", "elu_plus_one", "favor_positive")


def _phi(x, w, feature_map: str, is_query: bool, dtype):
    """The feature map on a loaded ``[C, D]`` tile (same maths as ``_feature_maps``)."""
    if feature_map == "identity":
        return x
    if feature_map == "elu_plus_one":
        return jnp.where(x > 0, x + 1, jnp.exp(jnp.minimum(x, 0)))
    wx = jax.lax.dot_general(x, w, (((1,), (1,)), ((), ())))  # [C, M]
    expo = wx - 0.5 * jnp.sum(x * x, axis=1, keepdims=True)
    if is_query:
        expo = expo - jnp.max(expo, axis=1, keepdims=True)
    else:
        expo = expo - fm.weight_stabilizer(w, dtype)
    return jnp.exp(expo) * (1.0 / math.sqrt(w.shape[0]))


def _kernel(q_ref, k_ref, v_ref, w_ref, o_ref, den_ref, *, chunk: int, length: int, feature_map: str,
            normalize: bool, eps: float, acc):
    """One (batch, head): refs are ``[Tp, D]``, ``[Tp, Dv]``, ``w_ref [M, D]``, ``den_ref [Tp, 1]``."""
    n_chunks = q_ref.shape[0] // chunk
    w = w_ref[...].astype(acc)
    m = w.shape[0] if feature_map == "favor_positive" else q_ref.shape[1]
    dv = v_ref.shape[1]
    row = jax.lax.broadcasted_iota(jnp.int32, (chunk, chunk), 0)
    col = jax.lax.broadcasted_iota(jnp.int32, (chunk, chunk), 1)
    tril = row >= col

    def body(c, carry):
        s, z = carry
        sl = pl.ds(c * chunk, chunk)
        pq = _phi(q_ref[sl, :].astype(acc), w, feature_map, True, q_ref.dtype)
        pk = _phi(k_ref[sl, :].astype(acc), w, feature_map, False, k_ref.dtype)
        valid = (c * chunk + jax.lax.broadcasted_iota(jnp.int32, (chunk, 1), 0)) < length
        pk = jnp.where(valid, pk, 0)
        vv = v_ref[sl, :].astype(acc)
        a = jnp.where(tril, jax.lax.dot_general(pq, pk, (((1,), (1,)), ((), ()))), 0)
        num = jnp.dot(a, vv) + jnp.dot(pq, s)
        den = jnp.sum(a, axis=1, keepdims=True) + jnp.dot(pq, z)
        out = num / (den + eps) if normalize else num
        o_ref[sl, :] = out.astype(o_ref.dtype)
        den_ref[sl, :] = den.astype(den_ref.dtype)
        s = s + jax.lax.dot_general(pk, vv, (((0,), (0,)), ((), ())))
        z = z + jnp.sum(pk, axis=0)[:, None]
        return s, z

    init = (jnp.zeros((m, dv), acc), jnp.zeros((m, 1), acc))
    jax.lax.fori_loop(0, n_chunks, body, init)


@functools.partial(jax.jit, static_argnames=("feature_map", "normalize", "eps", "chunk_size", "interpret"))
def _forward(q, k, v, w, *, feature_map: str, normalize: bool, eps: float, chunk_size: int,
             interpret: bool):
    """``(out [B, T, H, Dv], den [B, T, H, 1])`` from the Pallas kernel."""
    b, t, h, d = q.shape
    dv = v.shape[-1]
    c = min(chunk_size, t)
    tp = pl.cdiv(t, c) * c
    if tp != t:
        pad = ((0, 0), (0, tp - t), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    acc = dtypes.accum_dtype(q.dtype)
    kernel = functools.partial(_kernel, chunk=c, length=t, feature_map=feature_map, normalize=normalize,
                               eps=eps, acc=acc)
    seq = lambda f: pl.BlockSpec((None, tp, None, f), lambda i, j: (i, 0, j, 0))
    out, den = pl.pallas_call(
        kernel,
        grid=(b, h),
        in_specs=[seq(d), seq(d), seq(dv), pl.BlockSpec(w.shape, lambda i, j: (0, 0))],
        out_specs=[seq(dv), seq(1)],
        out_shape=[jax.ShapeDtypeStruct((b, tp, h, dv), v.dtype), jax.ShapeDtypeStruct((b, tp, h, 1), acc)],
        interpret=interpret,
        name=f"kjax_causal_linear_attention_{feature_map}",
    )(q, k, v, w)
    return out[:, :t], den[:, :t]


def _maps_jnp(q, k, w, feature_map: str):
    """``phi(q), phi(k)`` with the jnp definitions (for the chain rule in the backward pass)."""
    if feature_map == "identity":
        return q, k
    if feature_map == "elu_plus_one":
        return fm.elu_plus_one(q), fm.elu_plus_one(k)
    return fm.favor_positive(q, w, stabilize="row"), fm.favor_positive(k, w, stabilize="weights")


def _plain(x, y, z, *, chunk_size, interpret):
    """Unnormalised causal linear attention ``tril(x y^T) z`` by the same kernel (identity map)."""
    dummy = jnp.zeros((1, 1), x.dtype)
    return _forward(x, y, z, dummy, feature_map="identity", normalize=False, eps=0.0,
                    chunk_size=chunk_size, interpret=interpret)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _attention(q, k, v, w, feature_map, normalize, eps, chunk_size, interpret):
    return _forward(q, k, v, w, feature_map=feature_map, normalize=normalize, eps=eps,
                    chunk_size=chunk_size, interpret=interpret)[0]


def _attention_fwd(q, k, v, w, feature_map, normalize, eps, chunk_size, interpret):
    out, den = _forward(q, k, v, w, feature_map=feature_map, normalize=normalize, eps=eps,
                        chunk_size=chunk_size, interpret=interpret)
    return out, (q, k, v, w, out, den)


def _attention_bwd(feature_map, normalize, eps, chunk_size, interpret, res, g):
    q, k, v, w, out, den = res
    acc = den.dtype
    (pq, pk), map_vjp = jax.vjp(lambda q_, k_, w_: _maps_jnp(q_, k_, w_, feature_map), q, k, w)
    pq, pk = pq.astype(acc), pk.astype(acc)
    g = g.astype(acc)
    if normalize:
        inv = 1.0 / (den + eps)
        dy = jnp.concatenate([g * inv, -jnp.sum(g * out.astype(acc), -1, keepdims=True) * inv], -1)
    else:
        dy = jnp.concatenate([g, jnp.zeros_like(den)], -1)
    va = jnp.concatenate([v.astype(acc), jnp.ones_like(den)], -1)
    flip = lambda x: jnp.flip(x, axis=1)
    run = functools.partial(_plain, chunk_size=chunk_size, interpret=interpret)
    dpq = run(dy, va, pk)
    dpk = flip(run(flip(va), flip(dy), flip(pq)))
    dva = flip(run(flip(pk), flip(pq), flip(dy)))
    dq, dk, dw = map_vjp((dpq.astype(pq.dtype), dpk.astype(pk.dtype)))
    dv = dva[..., :-1].astype(v.dtype)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv, dw.astype(w.dtype)


_attention.defvjp(_attention_fwd, _attention_bwd)


def causal_linear_attention(q, k, v, w=None, *, feature_map: str = "identity", normalize: bool = True,
                            eps: float = 1e-6, chunk_size: int = 64, interpret: bool = False):
    """Causal linear attention ``[B, T, H, D] -> [B, T, H, Dv]`` by the Pallas kernel, differentiable.

    ``q, k`` are raw inputs that the kernel maps with ``feature_map`` (``"identity"`` when they are
    features already); ``w: [M, D]`` is the projection of ``"favor_positive"``. Matches
    ``kernel_attention(..., feature_map=feature_map, causal=True)`` of the XLA path.
    """
    if feature_map not in MAPS:
        raise ValueError(f"kjax.attention: the Pallas kernel fuses the feature maps {MAPS}; got "
                         f"{feature_map!r}.")
    dtype = dtypes.result_dtype(q, k, v)
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    if feature_map == "favor_positive":
        if w is None:
            raise ValueError("kjax.attention: feature_map='favor_positive' needs `w` of shape (M, D).")
        w = jnp.asarray(w, dtype)
    else:
        w = jnp.zeros((1, 1), dtype)
    return _attention(q, k, v, w, feature_map, bool(normalize), float(eps), int(chunk_size), bool(interpret))

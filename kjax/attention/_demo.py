"""Demo section: causal FAVOR+ attention, chunked == recurrent == quadratic oracle; delta rule; RPE."""

from __future__ import annotations

TITLE = "kjax.attention: causal FAVOR+ linear attention, chunked vs recurrent vs quadratic oracle"


def run() -> bool:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from kjax import attention as A

    b, t, h, d, m = 2, 128, 4, 16, 64
    kq, kk, kv, kw, kb = jax.random.split(jax.random.key(0), 5)
    q = jax.random.normal(kq, (b, t, h, d)) * d**-0.25
    k = jax.random.normal(kk, (b, t, h, d)) * d**-0.25
    v = jax.random.normal(kv, (b, t, h, d))
    w = A.random_projection(kw, m, d, kind="orthogonal")
    pq, pk = A.favor_positive(q, w, stabilize="row"), A.favor_positive(k, w)

    chunked = A.linear_attention(pq, pk, v, chunk_size=64)
    state = A.LinearAttentionState(jnp.zeros((b, h, m, d)), jnp.zeros((b, h, m)))

    def step(s, xs):
        o, s = A.linear_attention_step(s, *xs)
        return s, o

    _, rec = jax.lax.scan(step, state, tuple(jnp.moveaxis(x, 1, 0) for x in (pq, pk, v)))
    rec = jnp.moveaxis(rec, 0, 1)
    # the quadratic oracle, in NumPy float64: masked phi(Q) phi(K)^T V, row-normalised
    a = np.einsum("bthm,bshm->bhts", np.asarray(pq, np.float64), np.asarray(pk, np.float64))
    a *= np.tril(np.ones((t, t)))
    oracle = np.einsum("bhts,bshv->bthv", a, np.asarray(v, np.float64))
    oracle /= a.sum(-1).transpose(0, 2, 1)[..., None] + 1e-6
    err = lambda x, y: float(np.linalg.norm(np.asarray(x, np.float64) - y) / np.linalg.norm(y))
    e_chunk, e_rec = err(chunked, oracle), err(rec, oracle)
    soft = np.asarray(A.softmax_attention_reference(q * d**0.25, k * d**0.25, v), np.float64)
    w_big = A.random_projection(kw, 16 * m, d, kind="orthogonal")
    big = A.kernel_attention(q, k, v, feature_map="favor_positive", feature_params=w_big)
    e_soft, e_big = err(chunked, soft), err(big, soft)
    print(f"B={b} T={t} H={h} D={d}, M={m} orthogonal FAVOR+ features, float32")
    print(f"chunked (C=64) vs quadratic oracle: {e_chunk:.1e}; recurrent step vs oracle: {e_rec:.1e}")
    print(f"FAVOR+ vs exact softmax attention (Monte-Carlo estimates): M={m}: {e_soft:.2f}, "
          f"M={16 * m}: {e_big:.2f}")

    kn = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    beta = jax.nn.sigmoid(jax.random.normal(kb, (b, t, h)))
    dr = A.delta_rule_attention(q, kn, v, beta, chunk_size=32)

    def dstep(s, xs):
        o, s = A.delta_rule_step(s, *xs)
        return s, o

    _, drec = jax.lax.scan(dstep, A.DeltaRuleState(jnp.zeros((b, h, d, d))),
                           tuple(jnp.moveaxis(x, 1, 0) for x in (q, kn, v, beta)))
    e_delta = err(dr, np.asarray(jnp.moveaxis(drec, 0, 1), np.float64))
    print(f"delta rule, chunked WY form vs token recurrence: {e_delta:.1e}")
    return e_chunk < 1e-4 and e_rec < 1e-4 and e_delta < 1e-4 and e_big < e_soft

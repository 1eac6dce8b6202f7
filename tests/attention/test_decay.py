"""Decayed / gated linear attention and the gated delta rule against their NumPy token recurrences
(float64), gradients, strong decays in float32 / bfloat16, and decoding steps.

Shapes are shared between tests (one compilation each): T = 21 tokens with chunk 5 (ragged), and
chunk 20 for per-feature gates (rounded up to 32: two sub-chunks of 16).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kjax import attention as A
from tests.attention import oracle
from tests.conformance import assert_close, check_op

B, T, H, M, DV = 2, 21, 2, 4, 3
RNG = np.random.default_rng(13)
Q = RNG.normal(size=(B, T, H, M))
K = RNG.normal(size=(B, T, H, M))
V = RNG.normal(size=(B, T, H, DV))
KN = K / np.linalg.norm(K, axis=-1, keepdims=True)
BETA = RNG.uniform(0, 2, size=(B, T, H))  # the whole allowed range [0, 2]
DECAYS = {
    "head": -RNG.uniform(0.05, 1.0, size=(H,)),  # retention / lightning
    "scalar": -RNG.uniform(0.05, 1.0, size=(B, T, H)),  # SSD / simple GLA
    "feature": -RNG.uniform(0.05, 3.0, size=(B, T, H, M)),  # GLA
}
S0 = A.LinearAttentionState(RNG.normal(size=(B, H, M, DV)), RNG.uniform(0.5, 1.0, size=(B, H, M)))
CHUNK = {"head": 5, "scalar": 5, "feature": 20}


def _qk(normalize):
    # normalised attention needs positive features (a positive denominator)
    return (np.abs(Q) + 0.1, np.abs(K) + 0.1) if normalize else (Q, K)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("kind", ["head", "scalar", "feature"])
def test_decayed_linear_attention_equals_token_recurrence(kind, normalize):
    q, k = _qk(normalize)
    g = DECAYS[kind]
    out, st = A.linear_attention(q, k, V, decay=g, scale=0.7, normalize=normalize, chunk_size=CHUNK[kind],
                                 initial_state=S0, return_state=True)
    want, s, z = oracle.decayed_linear_attention(0.7 * q, k, V, g, normalize=normalize, s0=S0.kv, z0=S0.k_sum)
    assert_close(out, want, 1e-10, f"{kind} output")
    assert_close(st.kv, s, 1e-10, f"{kind} state")
    assert_close(st.k_sum, z, 1e-10, f"{kind} normaliser")


@pytest.mark.parametrize("chunk_size", [1, 64])
def test_chunk_sizes_one_and_beyond_t(chunk_size):
    g = DECAYS["scalar"]
    out = A.linear_attention(Q, K, V, decay=g, normalize=False, chunk_size=chunk_size)
    want, _, _ = oracle.decayed_linear_attention(Q, K, V, g)
    assert_close(out, want, 1e-10, f"chunk {chunk_size}")


def test_feature_gates_without_sub_chunks():
    """Chunks of at most 16 tokens take the per-feature gates as one masked [C, C, M] tensor."""
    g = DECAYS["feature"]
    out = A.linear_attention(Q, K, V, decay=g, normalize=False, chunk_size=5)
    assert_close(out, oracle.decayed_linear_attention(Q, K, V, g)[0], 1e-10, "feature gates, chunk 5")


@pytest.mark.parametrize("gated", [False, True])
def test_gated_delta_rule_equals_token_recurrence(gated):
    g = DECAYS["scalar"] if gated else None
    s0 = S0.kv
    out, st = A.delta_rule_attention(Q, KN, V, BETA, decay=g, scale=0.5, chunk_size=5,
                                     initial_state=A.DeltaRuleState(s0), return_state=True)
    want, s = oracle.gated_delta_rule(0.5 * Q, KN, V, BETA, g, s0)
    assert_close(out, want, 1e-10, "delta output")
    assert_close(st.kv, s, 1e-10, "delta state")


# ----------------------------------------------------------------------------------- gradients

TG = 7  # tokens of the gradient checks (chunk 3: ragged)


def test_linear_attention_decay_gradients():
    """Per-feature gates here; scalar gates (a fixed decay per head, normalised) below."""
    g = DECAYS["feature"][:, :TG]
    f = jax.jit(lambda q, k, v, g: A.linear_attention(q, k, v, decay=g, normalize=False, chunk_size=3))
    check_grads(f, (Q[:, :TG], K[:, :TG], V[:, :TG], g), order=1, modes=["rev"])


def test_normalized_decay_gradients():
    q, k = _qk(True)
    f = jax.jit(lambda q, k, v, g: A.linear_attention(q, k, v, decay=g, chunk_size=3))
    check_grads(f, (q[:, :TG], k[:, :TG], V[:, :TG], DECAYS["head"]), order=1, modes=["rev"])


def test_gated_delta_rule_gradients():
    f = jax.jit(lambda q, k, v, b, g: A.delta_rule_attention(q, k, v, b, decay=g, chunk_size=3))
    args = (Q[:, :TG], KN[:, :TG], V[:, :TG], BETA[:, :TG] / 2, DECAYS["scalar"][:, :TG])
    check_grads(f, args, order=1, modes=["rev"])


def test_conformance(mesh):
    """jit (no retrace), vmap over the decays, shard_map (gradients: check_grads above)."""

    f = jax.jit(lambda q, k, v, g: A.delta_rule_attention(q, k, v, BETA[:, :TG] / 2, decay=g, chunk_size=3))
    check_op(f, Q[:, :TG], KN[:, :TG], V[:, :TG], DECAYS["scalar"][:, :TG], vmap_argnums=(3,), mesh=mesh)


# ----------------------------------------------------------------------------------- numerics

TS = 128  # strong decay: exp(5 * 64) overflows float32 in a factorised chunk (q e^{G})(k e^{-G})^T


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_strong_decay_stays_finite_and_close(dtype):
    rng = np.random.default_rng(5)
    q, k = rng.normal(size=(2, 1, TS, 1, M))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    v = rng.normal(size=(1, TS, 1, DV))
    g_scalar = np.full((1, TS, 1), -5.0)
    g_feature = -rng.uniform(0.0, 10.0, size=(1, TS, 1, M))
    beta = np.full((1, TS, 1), 0.5)
    cast = lambda x: jnp.asarray(x, dtype)
    tol = 1e-5 if dtype == jnp.float32 else 3e-2
    for g in (g_scalar, g_feature):
        out = A.linear_attention(cast(q), cast(k), cast(v), decay=cast(g), normalize=False)
        assert out.dtype == dtype and bool(jnp.all(jnp.isfinite(out)))
        # the oracle on the values the low-precision call saw
        want = oracle.decayed_linear_attention(*(np.asarray(cast(x), np.float64) for x in (q, k, v, g)))[0]
        assert_close(out, want, tol, f"decay {g.ndim}-d in {jnp.dtype(dtype).name}")
    out = A.delta_rule_attention(cast(q), cast(k), cast(v), cast(beta), decay=cast(g_scalar))
    assert bool(jnp.all(jnp.isfinite(out)))
    want = oracle.gated_delta_rule(*(np.asarray(cast(x), np.float64) for x in (q, k, v, beta, g_scalar)))[0]
    assert_close(out, want, tol, f"gated delta rule in {jnp.dtype(dtype).name}")


# ----------------------------------------------------------------------------------- decoding steps


def _step_decays(kind):
    """Per-token decay_t ([H], [B, H] or [B, H, M]) as scan inputs (time first)."""
    g = DECAYS[kind]
    return g if kind == "head" else np.moveaxis(g, 1, 0)


@pytest.mark.parametrize("kind", ["head", "scalar", "feature"])
def test_linear_attention_steps_equal_chunked(kind):
    """Prefill the first 8 tokens in chunks, decode the rest token by token: equals the full call."""
    q, k = _qk(True)
    g = None if kind is None else DECAYS[kind]
    cut = 8
    full = A.linear_attention(q, k, V, decay=g, scale=0.7, chunk_size=5, initial_state=S0)
    gp = g if kind in (None, "head") else g[:, :cut]
    pre, st = A.linear_attention(q[:, :cut], k[:, :cut], V[:, :cut], decay=gp, scale=0.7, chunk_size=5,
                                 initial_state=S0, return_state=True)

    def body(st, xs):
        qt, kt, vt, gt = xs
        return A.linear_attention_step(st, qt, kt, vt, decay_t=g if kind == "head" else gt, scale=0.7)[::-1]

    gs = None if kind in (None, "head") else _step_decays(kind)[cut:]
    xs = tuple(np.moveaxis(x[:, cut:], 1, 0) for x in (q, k, V)) + (gs,)
    _, outs = jax.jit(lambda st, xs: jax.lax.scan(body, st, xs))(st, xs)
    assert_close(jnp.concatenate([pre, jnp.moveaxis(outs, 0, 1)], axis=1), full, 1e-10, f"steps {kind}")


@pytest.mark.parametrize("gated", [False, True])
def test_delta_rule_steps_equal_chunked(gated):
    g = DECAYS["scalar"] if gated else None
    full, s_full = A.delta_rule_attention(Q, KN, V, BETA, decay=g, scale=0.5, chunk_size=5,
                                          initial_state=A.DeltaRuleState(S0.kv), return_state=True)

    def body(st, xs):
        qt, kt, vt, bt, gt = xs
        return A.delta_rule_step(st, qt, kt, vt, bt, decay_t=gt, scale=0.5)[::-1]

    xs = tuple(np.moveaxis(x, 1, 0) for x in (Q, KN, V, BETA)) + (None if g is None else np.moveaxis(g, 1, 0),)
    st, outs = jax.jit(lambda st, xs: jax.lax.scan(body, st, xs))(A.DeltaRuleState(jnp.asarray(S0.kv)), xs)
    assert_close(jnp.moveaxis(outs, 0, 1), full, 1e-10, "delta steps")
    assert_close(st.kv, s_full.kv, 1e-10, "delta step state")

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kjax import attention as A
from tests.attention import oracle
from tests.conformance import assert_close, check_op, tol

B, T, H, M, DV = 2, 9, 2, 3, 4


def _delta_inputs(seed=0, t=T):
    kq, kk, kv, kb = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(kq, (B, t, H, M), jnp.float64)
    k = jax.random.normal(kk, (B, t, H, M), jnp.float64)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jax.random.normal(kv, (B, t, H, DV), jnp.float64)
    beta = jax.nn.sigmoid(jax.random.normal(kb, (B, t, H), jnp.float64))
    return q, k, v, beta


@pytest.mark.parametrize("chunk_size", [1, 4])
def test_delta_rule_equals_token_recurrence(chunk_size):
    q, k, v, beta = _delta_inputs()
    s0 = np.random.default_rng(0).normal(size=(B, H, M, DV))
    want, s_want = oracle.delta_rule(q, k, v, beta, s0)
    out, st = A.delta_rule_attention(q, k, v, beta, chunk_size=chunk_size,
                                     initial_state=A.DeltaRuleState(jnp.asarray(s0)), return_state=True)
    assert_close(out, want, 1e-12, "delta rule")
    assert_close(st.kv, s_want, 1e-12, "delta rule state")


def test_delta_rule_step_and_beta_one_overwrites():
    q, k, v, beta = _delta_inputs(1)
    full = A.delta_rule_attention(q, k, v, beta, chunk_size=4)
    st = A.DeltaRuleState(jnp.zeros((B, H, M, DV)))
    outs = []
    for t in range(T):
        o, st = A.delta_rule_step(st, q[:, t], k[:, t], v[:, t], beta[:, t])
        outs.append(o)
    assert_close(jnp.stack(outs, 1), full, 1e-12, "delta rule step")
    # beta = 1 and a repeated unit key: the second write replaces the first value
    e = jnp.zeros((1, 2, 1, 3)).at[..., 0].set(1.0)
    vals = jnp.array([1.0, 5.0]).reshape(1, 2, 1, 1) * jnp.ones((1, 2, 1, 2))
    out = A.delta_rule_attention(e, e, vals, jnp.ones((1, 2, 1)))
    np.testing.assert_allclose(out[0, 1, 0], [5.0, 5.0], rtol=1e-12)


def test_delta_rule_gradients_and_conformance(mesh):
    q, k, v, beta = _delta_inputs(2, t=5)
    f = lambda q, k, v, beta: A.delta_rule_attention(q, k, v, beta, chunk_size=2)
    check_grads(jax.jit(f), (q, k, v, beta), order=1, modes=("rev",))
    check_op(f, q, k, v, beta, grad_argnums=(3,), mesh=mesh)


def _rpe_inputs(seed=0):
    kq, kk, kv, kr = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(kq, (B, T, H, M), jnp.float64)
    k = jax.random.normal(kk, (B, T, H, M), jnp.float64)
    v = jax.random.normal(kv, (B, T, H, DV), jnp.float64)
    rpe = 0.5 * jax.random.normal(kr, (H, 2 * T - 1), jnp.float64)
    return q, k, v, rpe


@pytest.mark.parametrize(("causal", "shared"), [(True, False), (False, True)])
def test_rpe_matches_quadratic_formula(causal, shared):
    q, k, v, rpe = _rpe_inputs()
    if shared:
        rpe = rpe[0]
    out = A.rpe_kernel_attention(q, k, v, rpe, feature_map="elu_plus_one", causal=causal)
    i = np.arange(T)
    c = np.exp(np.broadcast_to(np.asarray(rpe), (H, 2 * T - 1)))[:, i[:, None] - i[None, :] + T - 1]
    want = oracle.linear_attention(A.elu_plus_one(q), A.elu_plus_one(k), v, causal=causal, weights=c)
    assert_close(out, want, 1e-11, "rpe")
    # zero biases: plain kernel attention
    zero = A.rpe_kernel_attention(q, k, v, jnp.zeros(2 * T - 1), feature_map="elu_plus_one", causal=causal)
    plain = A.kernel_attention(q, k, v, feature_map="elu_plus_one", causal=causal)
    assert_close(zero, plain, 1e-11, "rpe with zero biases")


def test_rpe_gradients_and_conformance(mesh):
    q, k, v, rpe = _rpe_inputs(1)
    f = lambda q, k, v, rpe: A.rpe_kernel_attention(q, k, v, rpe, feature_map="elu_plus_one")
    check_grads(jax.jit(f), (q, k, v, rpe), order=1, modes=("rev",))
    check_op(f, q, k, v, rpe, grad_argnums=(3,), mesh=mesh)


def _rpe_oracle(q, k, v, rpe, *, causal=True, normalize=True, eps=1e-6):
    i = np.arange(q.shape[1])
    c = np.exp(np.asarray(rpe, np.float64))[:, i[:, None] - i[None, :] + q.shape[1] - 1]
    return oracle.linear_attention(A.elu_plus_one(q), A.elu_plus_one(k), v, causal=causal,
                                   normalize=normalize, eps=eps, weights=c)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_rpe_large_bias_constants_cancel_when_normalised(dtype):
    """A constant added to the biases cancels in normalised attention: no overflow to inf/NaN."""
    q, k, v, rpe = (x.astype(dtype) for x in _rpe_inputs(2))
    f = lambda b, **kw: A.rpe_kernel_attention(q, k, v, b, feature_map="elu_plus_one", **kw)
    base = f(rpe, eps=0.0)
    for c in (200.0, -200.0, 800.0):
        out = f(rpe + c, eps=0.0)
        assert out.dtype == dtype and np.all(np.isfinite(out)), c
        assert_close(out, base, tol(dtype, 10), f"biases + {c}")
    # the default eps: exact formula (eps added to the unshifted denominator)
    assert_close(f(rpe + 200.0), _rpe_oracle(q, k, v, rpe + 200.0), tol(dtype, 10), "eps, + 200")
    assert_close(f(rpe + 3.0, causal=False), _rpe_oracle(q, k, v, rpe + 3.0, causal=False),
                 tol(dtype, 10), "eps, non-causal")
    # causal: biases of negative offsets are ignored, however large; -inf biases mask pairs out
    big = rpe.at[:, : T - 1].set(1e4)
    assert_close(f(big, eps=0.0), base, tol(dtype, 10), "ignored offsets")
    g = jax.grad(lambda b: jnp.sum(f(b + 200.0)))(big)
    assert np.all(np.isfinite(g)) and not np.any(g[:, : T - 1])
    masked = rpe.at[:, T + 1].set(-jnp.inf)
    assert_close(f(masked), _rpe_oracle(q, k, v, masked), tol(dtype, 10), "-inf bias")


def test_rpe_unnormalised_scales_by_exp_constant():
    """Without normalisation the constant scales the output by e^c (exact); intermediate results
    do not overflow where the result itself fits."""
    q, k, v, rpe = _rpe_inputs(3)
    f = lambda b, dt: A.rpe_kernel_attention(*(x.astype(dt) for x in (q, k, v, b)),
                                             feature_map="elu_plus_one", normalize=False)
    want = _rpe_oracle(q, k, v, rpe, normalize=False)
    assert_close(f(rpe, jnp.float64), want, 1e-11, "unnormalised")
    assert_close(f(rpe + 30.0, jnp.float64), np.exp(30.0) * want, 1e-11, "+30")
    out = f(rpe + 80.0, jnp.float32)  # results ~1e36 fit in float32, e^80 * FFT sums do not
    assert np.all(np.isfinite(out))
    assert_close(out / np.exp(80.0), want, 1e-4, "float32, +80")

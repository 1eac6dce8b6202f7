import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kjax import attention as A
from tests.attention import oracle
from tests.conformance import assert_close, check_op

B, T, H, M, DV = 2, 11, 2, 3, 4
SEG = np.array([[0] * 4 + [1] * 5 + [2] * 2, [7] * 11])


def _inputs(seed=0, t=T):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    pq = A.elu_plus_one(jax.random.normal(kq, (B, t, H, M), jnp.float64))
    pk = A.elu_plus_one(jax.random.normal(kk, (B, t, H, M), jnp.float64))
    v = jax.random.normal(kv, (B, t, H, DV), jnp.float64)
    return pq, pk, v


CONFIGS = [  # (causal, normalize, chunk_size, segments)
    (True, True, 1, False), (True, True, 4, False), (True, False, 4, False), (True, True, 64, False),
    (True, True, 1, True), (True, True, 4, True), (True, False, 3, True),
    (False, True, 64, False), (False, False, 64, False), (False, True, 4, True),
]


@pytest.mark.parametrize(("causal", "normalize", "chunk_size", "segments"), CONFIGS)
def test_matches_quadratic_oracle(causal, normalize, chunk_size, segments):
    pq, pk, v = _inputs()
    seg = SEG if segments else None
    out = A.linear_attention(pq, pk, v, causal=causal, normalize=normalize, chunk_size=chunk_size,
                             segment_ids=seg)
    want = oracle.linear_attention(pq, pk, v, causal=causal, normalize=normalize, segment_ids=seg)
    assert_close(out, want, 1e-12, "linear_attention")


@pytest.mark.parametrize("normalize", [True, False])
def test_grouped_causal_form_over_several_steps(normalize):
    # the XLA path runs GROUP chunks per scan step: T = 37 with chunk 3 gives 4 steps of 12 tokens,
    # the last one padded; it must equal the chunk-by-chunk reference and the oracle, state included
    from kjax.attention import _reference as ref
    from kjax.attention._xla import causal_grouped

    pq, pk, v = _inputs(6, t=37)
    rng = np.random.default_rng(1)
    s0 = jnp.asarray(rng.uniform(0.5, 1.0, size=(B, H, M, DV + 1)))
    out, s = causal_grouped(pq, pk, v, s0, chunk_size=3, normalize=normalize, eps=1e-6)
    want, want_s = ref.causal_chunked(pq, pk, ref.augment(v), s0, chunk_size=3)
    assert_close(out, ref.finish(want, normalize, 1e-6), 1e-12, "grouped vs chunked")
    assert_close(s, want_s, 1e-12, "grouped final state")
    plain = A.linear_attention(pq, pk, v, chunk_size=3, normalize=normalize)
    assert_close(plain, oracle.linear_attention(pq, pk, v, causal=True, normalize=normalize), 1e-12,
                 "linear_attention over several steps")


@pytest.mark.parametrize(("causal", "segments"), [(True, False), (True, True), (False, True)])
def test_initial_and_final_state(causal, segments):
    pq, pk, v = _inputs(1)
    seg = SEG if segments else None
    rng = np.random.default_rng(0)
    s0 = A.LinearAttentionState(jnp.asarray(rng.normal(size=(B, H, M, DV))),
                                jnp.asarray(rng.uniform(1, 2, size=(B, H, M))))
    out, st = A.linear_attention(pq, pk, v, causal=causal, chunk_size=4, segment_ids=seg,
                                 initial_state=s0, return_state=True)
    want = oracle.linear_attention(pq, pk, v, causal=causal, segment_ids=seg, s0=s0.kv, z0=s0.k_sum)
    assert_close(out, want, 1e-12, "with initial state")
    # final state: sums over the last segment (plus S0 when that segment is the first one)
    last = np.ones((B, T), bool) if seg is None else SEG == SEG[:, -1:]
    first_is_last = np.all(last, axis=1)[:, None, None]
    kv = np.einsum("bt,bthm,bthv->bhmv", last, pk, v) + first_is_last[..., None] * np.asarray(s0.kv)
    ks = np.einsum("bt,bthm->bhm", last, pk) + first_is_last * np.asarray(s0.k_sum)
    assert_close(st.kv, kv, 1e-12, "final kv")
    assert_close(st.k_sum, ks, 1e-12, "final k_sum")


def test_prompt_then_continue_and_step_decoding():
    pq, pk, v = _inputs(2)
    full = A.linear_attention(pq, pk, v, chunk_size=3)
    first, st = A.linear_attention(pq[:, :6], pk[:, :6], v[:, :6], chunk_size=4, return_state=True)
    rest = A.linear_attention(pq[:, 6:], pk[:, 6:], v[:, 6:], chunk_size=2, initial_state=st)
    assert_close(jnp.concatenate([first, rest], 1), full, 1e-12, "prompt + continuation")
    outs = []
    for t in range(6, T):
        o, st = A.linear_attention_step(st, pq[:, t], pk[:, t], v[:, t])
        outs.append(o)
    assert_close(jnp.stack(outs, 1), full[:, 6:], 1e-12, "recurrent step")


def test_near_zero_denominators():
    # relu features of negative inputs vanish: the denominator is 0 and eps keeps the output finite (0)
    pq, pk, v = _inputs(3)
    q = A.relu_features(-jnp.abs(pq))
    k = A.relu_features(pk - 10.0)
    for causal in (True, False):
        out = A.linear_attention(q, pk, v, causal=causal)
        assert bool(jnp.all(out == 0))
        out = A.linear_attention(pq, k, v, causal=causal)
        assert bool(jnp.all(out == 0))
    g = jax.grad(lambda q: jnp.sum(A.linear_attention(q, k, v)))(pq)
    assert bool(jnp.all(jnp.isfinite(g)))
    # tiny (not zero) denominators: the result matches the oracle with the same eps
    tiny = pk * 1e-9
    out = A.linear_attention(pq, tiny, v, eps=1e-6)
    assert_close(out, oracle.linear_attention(pq, tiny, v, eps=1e-6), 1e-10, "tiny denominators")
    assert bool(jnp.all(jnp.isfinite(A.linear_attention_step(
        A.LinearAttentionState(jnp.zeros((B, H, M, DV)), jnp.zeros((B, H, M))), q[:, 0], k[:, 0], v[:, 0])[0])))


@pytest.mark.parametrize(("causal", "segments"), [(True, True), (True, False), (False, False)])
def test_gradients(causal, segments):
    pq, pk, v = _inputs(4, t=6)
    seg = SEG[:, :6] if segments else None
    f = lambda q, k, v: A.linear_attention(q, k, v, causal=causal, chunk_size=4, segment_ids=seg)
    check_grads(jax.jit(f), (pq, pk, v), order=1, modes=("rev",))


def test_conformance(mesh):
    pq, pk, v = _inputs(5, t=7)
    f = lambda q, k, v: A.linear_attention(q, k, v, chunk_size=4)
    check_op(f, pq, pk, v, grad_argnums=(0,), vmap_argnums=(1,), mesh=mesh)
    s = A.LinearAttentionState(jnp.ones((B, H, M, DV)), jnp.ones((B, H, M)))
    check_op(lambda q, k, v: A.linear_attention_step(s, q, k, v)[0], pq[:, 0], pk[:, 0], v[:, 0],
             grad_argnums=(0,), mesh=mesh)


def test_dtype_float32():
    pq, pk, v = (x.astype(jnp.float32) for x in _inputs(6))
    out, st = A.linear_attention(pq, pk, v, return_state=True)
    assert out.dtype == jnp.float32 and st.kv.dtype == jnp.float32
    want = oracle.linear_attention(pq, pk, v)
    assert_close(out, want, 1e-5, "float32")


@pytest.mark.parametrize("name", ["elu_plus_one", "relu", "taylor2", "favor_positive", "favor_trig", "dpfp",
                                  "hedgehog", "learned_spectral", "callable"])
def test_kernel_attention_named_maps(name):
    q, k, v = jax.random.normal(jax.random.key(7), (3, B, T, H, 4), jnp.float64) * 0.5
    params = {
        "favor_positive": A.random_projection(jax.random.key(8), 6, 4, dtype=np.float64),
        "favor_trig": A.random_projection(jax.random.key(8), 6, 4, dtype=np.float64),
        "dpfp": 2,
        "hedgehog": A.init_hedgehog(jax.random.key(8), 4, 5),
        "learned_spectral": A.init_learned_spectral(jax.random.key(8), 4, 5),
    }.get(name)
    fmap = {
        "elu_plus_one": A.elu_plus_one, "relu": A.relu_features, "taylor2": A.taylor2,
        "favor_positive": lambda x: A.favor_positive(x, params, stabilize=None),
        "favor_trig": lambda x: A.favor_trig(x, params), "dpfp": lambda x: A.dpfp(x, nu=2),
        "hedgehog": lambda x: A.hedgehog(params, x), "learned_spectral": lambda x: A.learned_spectral(params, x),
        "callable": lambda x: jnp.exp(x),
    }[name]
    arg = (lambda x: jnp.exp(x)) if name == "callable" else name
    # favor_positive's query stabiliser rescales each query, which cancels exactly when eps = 0
    eps = 0.0 if name == "favor_positive" else 1e-6
    out = A.kernel_attention(q, k, v, feature_map=arg, feature_params=params, chunk_size=4, eps=eps)
    assert_close(out, oracle.linear_attention(fmap(q), fmap(k), v, eps=eps), 1e-12, name)


def test_favor_approximates_softmax():
    q, k, v = jax.random.normal(jax.random.key(9), (3, 1, 16, 1, 4), jnp.float64)
    q, k = q * 0.5, k * 0.5  # moderate logits: the estimator variance grows like exp(|q + k|^2) / M
    w = A.random_projection(jax.random.key(10), 8192, 4, kind="orthogonal", dtype=np.float64)
    approx = A.kernel_attention(q, k, v, feature_map="favor_positive", feature_params=w)
    exact = A.softmax_attention_reference(q, k, v, scale=1.0)
    assert_close(exact, oracle.softmax_attention(q, k, v, scale=1.0), 1e-12, "softmax reference")
    assert_close(approx, exact, 0.05, "FAVOR+ vs softmax")


def test_softmax_reference_segments_and_conformance(mesh):
    q, k, v = jax.random.normal(jax.random.key(11), (3, B, T, H, 4), jnp.float64)
    out = A.softmax_attention_reference(q, k, v, segment_ids=SEG)
    for b in range(B):
        for s in np.unique(SEG[b]):
            idx = np.where(SEG[b] == s)[0]
            want = oracle.softmax_attention(q[b:b + 1, idx], k[b:b + 1, idx], v[b:b + 1, idx])
            assert_close(out[b:b + 1, idx], want, 1e-12, "segment")
    check_op(lambda q, k, v: A.softmax_attention_reference(q, k, v), q, k, v, grad_argnums=(0,), mesh=mesh)


def test_kernel_attention_conformance(mesh):
    q, k, v = jax.random.normal(jax.random.key(12), (3, B, 6, H, 4), jnp.float64) * 0.5
    w = A.random_projection(jax.random.key(13), 5, 4, dtype=np.float64)
    f = lambda q, k, v, w: A.kernel_attention(q, k, v, feature_map="favor_positive", feature_params=w,
                                              chunk_size=4)
    check_op(f, q, k, v, w, grad_argnums=(3,), mesh=mesh)


def test_eps_zero_gradients_are_finite_for_ragged_lengths():
    # regression: with eps=0 the padded tokens of the grouped causal path divided 0 by 0 and put
    # NaN into the gradients of k and v whenever T was not a multiple of 4 x chunk_size
    pq, pk, v = _inputs(3, t=37)
    g = jax.grad(lambda k, v: jnp.sum(A.linear_attention(pq, k, v, chunk_size=4, eps=0.0)), argnums=(0, 1))(pk, v)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in g)
    want = jax.grad(lambda k, v: jnp.sum(A.linear_attention(pq, k, v, chunk_size=37, eps=0.0)), argnums=(0, 1))(pk, v)
    for a, b in zip(g, want, strict=True):
        assert_close(a, b, 1e-10, "eps=0 gradient")

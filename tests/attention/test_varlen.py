"""Variable-length batches (cu_seqlens with a state per sequence, segment_ids with a state per row)
against the sequences run one by one through the NumPy token recurrences, and the bad inputs of
decays, gates, packing and states."""

import jax.numpy as jnp
import numpy as np
import pytest

from kjax import attention as A
from kjax._src.errors import KjaxError, KjaxTypeError
from tests.attention import oracle
from tests.conformance import assert_close

T, H, M, DV = 23, 2, 4, 3
CU = np.array([0, 5, 6, 17, 23])  # lengths 5, 1, 11, 6
N = len(CU) - 1
RNG = np.random.default_rng(7)
Q = np.abs(RNG.normal(size=(1, T, H, M))) + 0.1
K = np.abs(RNG.normal(size=(1, T, H, M))) + 0.1
KN = K / np.linalg.norm(K, axis=-1, keepdims=True)
V = RNG.normal(size=(1, T, H, DV))
BETA = RNG.uniform(0, 1, size=(1, T, H))
G = {None: None, "scalar": -RNG.uniform(0.05, 1.0, size=(1, T, H)),
     "feature": -RNG.uniform(0.05, 1.0, size=(1, T, H, M))}
S0 = A.LinearAttentionState(RNG.normal(size=(N, H, M, DV)), RNG.uniform(0.5, 1, size=(N, H, M)))
SEG = np.repeat(np.arange(N), np.diff(CU))[None]


def _sl(x, n):
    return None if x is None else x[:, CU[n]:CU[n + 1]]


@pytest.mark.parametrize("kind", [None, "scalar", "feature"])
def test_packed_linear_attention_equals_one_by_one(kind):
    out, st = A.linear_attention(Q, K, V, decay=G[kind], cu_seqlens=CU, chunk_size=4, initial_state=S0,
                                 return_state=True)
    assert st.kv.shape == (N, H, M, DV) and st.k_sum.shape == (N, H, M)
    for n in range(N):
        want, s, z = oracle.decayed_linear_attention(_sl(Q, n), _sl(K, n), _sl(V, n), _sl(G[kind], n),
                                                     normalize=True, s0=S0.kv[n:n + 1], z0=S0.k_sum[n:n + 1])
        assert_close(_sl(out, n), want, 1e-10, f"sequence {n}")
        assert_close(st.kv[n], s[0], 1e-10, f"state {n}")
        assert_close(st.k_sum[n], z[0], 1e-10, f"normaliser {n}")


@pytest.mark.parametrize("gated", [False, True])
def test_packed_delta_rule_equals_one_by_one(gated):
    g = G["scalar"] if gated else None
    s0 = A.DeltaRuleState(S0.kv)
    out, st = A.delta_rule_attention(Q, KN, V, BETA, decay=g, cu_seqlens=CU, chunk_size=4, initial_state=s0,
                                     return_state=True)
    for n in range(N):
        want, s = oracle.gated_delta_rule(_sl(Q, n), _sl(KN, n), _sl(V, n), _sl(BETA, n), _sl(g, n),
                                          S0.kv[n:n + 1])
        assert_close(_sl(out, n), want, 1e-10, f"sequence {n}")
        assert_close(st.kv[n], s[0], 1e-10, f"state {n}")


@pytest.mark.parametrize("form", ["linear", "delta"])
def test_segment_ids_with_decay_match_per_segment_recurrence(form):
    """segment_ids: the row's state starts its first segment and is returned for its last."""
    g = G["scalar"]
    if form == "linear":
        s0 = A.LinearAttentionState(S0.kv[:1], S0.k_sum[:1])
        out, st = A.linear_attention(Q, K, V, decay=g, segment_ids=SEG, chunk_size=4, initial_state=s0,
                                     return_state=True)
    else:
        s0 = A.DeltaRuleState(S0.kv[:1])
        out, st = A.delta_rule_attention(Q, KN, V, BETA, decay=g, segment_ids=SEG, chunk_size=4,
                                         initial_state=s0, return_state=True)
    for n in range(N):
        first = n == 0
        if form == "linear":
            want, s, _ = oracle.decayed_linear_attention(_sl(Q, n), _sl(K, n), _sl(V, n), _sl(g, n),
                                                         normalize=True, s0=s0.kv if first else None,
                                                         z0=s0.k_sum if first else None)
        else:
            want, s = oracle.gated_delta_rule(_sl(Q, n), _sl(KN, n), _sl(V, n), _sl(BETA, n), _sl(g, n),
                                              s0.kv if first else None)
        assert_close(_sl(out, n), want, 1e-10, f"segment {n}")
    assert_close(st.kv, s, 1e-10, "state of the last segment")


def test_implementation_falls_back_for_decay():
    """The Pallas kernels declare no support for per-feature decays / cu_seqlens: a list falls
    through to XLA, a single name raises."""
    out = A.linear_attention(Q, K, V, decay=G["feature"], chunk_size=4, implementation=["pallas_interpret", "xla"])
    assert_close(out, A.linear_attention(Q, K, V, decay=G["feature"], chunk_size=4), 1e-14, "fallback")
    with pytest.raises(ValueError, match="decay"):
        A.linear_attention(Q, K, V, decay=G["feature"], implementation="pallas_interpret")
    with pytest.raises(ValueError, match="cu_seqlens"):
        A.linear_attention(Q, K, V, cu_seqlens=CU, implementation="pallas_interpret")


# ----------------------------------------------------------------------------------- bad inputs

LA = "kjax.attention.linear_attention"
DR = "kjax.attention.delta_rule_attention"


def _raises(fn_name, arg, call, cls=KjaxError, match=""):
    with pytest.raises(cls, match=rf"{fn_name}: `{arg}` must {match}"):
        call()


def test_bad_decay():
    _raises(LA, "decay", lambda: A.linear_attention(Q, K, V, decay=np.zeros((1, T))), match="have shape")
    _raises(LA, "decay", lambda: A.linear_attention(Q, K, V, decay=np.full((H,), 0.1)), match=r"be <= 0")
    _raises(LA, "decay", lambda: A.linear_attention(Q, K, V, decay=-np.ones(H), causal=False),
            match="come with causal=True")
    _raises(DR, "decay", lambda: A.delta_rule_attention(Q, KN, V, BETA, decay=G["feature"]), match="have shape")
    _raises(DR, "decay", lambda: A.delta_rule_attention(Q, KN, V, BETA, decay=-G["scalar"]), match=r"be <= 0")
    st = A.LinearAttentionState(S0.kv[:1], S0.k_sum[:1])
    step = "kjax.attention.linear_attention_step"
    _raises(step, "decay_t", lambda: A.linear_attention_step(st, Q[:, 0], K[:, 0], V[:, 0], decay_t=np.zeros(3)),
            match="have shape")
    _raises(step, "decay_t", lambda: A.linear_attention_step(st, Q[:, 0], K[:, 0], V[:, 0], decay_t=np.ones(H)),
            match=r"be <= 0")
    ds = A.DeltaRuleState(S0.kv[:1])
    dstep = "kjax.attention.delta_rule_step"
    _raises(dstep, "decay_t", lambda: A.delta_rule_step(ds, Q[:, 0], KN[:, 0], V[:, 0], BETA[:, 0],
                                                        decay_t=np.ones((1, H))), match=r"be <= 0")
    _raises(dstep, "decay_t", lambda: A.delta_rule_step(ds, Q[:, 0], KN[:, 0], V[:, 0], BETA[:, 0],
                                                        decay_t=-np.ones(H)), match="have shape")


def test_beta_outside_zero_two():
    _raises(DR, "beta", lambda: A.delta_rule_attention(Q, KN, V, BETA + 2.5), match=r"lie in \[0, 2\]")
    _raises(DR, "beta", lambda: A.delta_rule_attention(Q, KN, V, -BETA - 0.1), match=r"lie in \[0, 2\]")
    ds = A.DeltaRuleState(S0.kv[:1])
    _raises("kjax.attention.delta_rule_step", "beta_t",
            lambda: A.delta_rule_step(ds, Q[:, 0], KN[:, 0], V[:, 0], np.full((1, H), 3.0)), match=r"lie in \[0, 2\]")


@pytest.mark.parametrize("bad", [[0, 6, 5, 23], [0, 5, 5, 23], [0, 5, 22], [1, 5, 23], [0, 5, 30]])
def test_cu_seqlens_not_increasing_or_not_ending_at_t(bad):
    _raises(LA, "cu_seqlens", lambda: A.linear_attention(Q, K, V, cu_seqlens=np.array(bad)),
            match="increase strictly from 0 to T = 23")
    _raises(DR, "cu_seqlens", lambda: A.delta_rule_attention(Q, KN, V, BETA, cu_seqlens=np.array(bad)),
            match="increase strictly")


def test_cu_seqlens_other_misuse():
    _raises(LA, "cu_seqlens", lambda: A.linear_attention(Q, K, V, cu_seqlens=CU.astype(float)),
            cls=KjaxTypeError, match="be an integer array")
    _raises(LA, "cu_seqlens", lambda: A.linear_attention(Q, K, V, cu_seqlens=np.array([0])), match="have shape")
    q2 = np.concatenate([Q, Q])
    _raises(LA, "cu_seqlens", lambda: A.linear_attention(q2, q2, np.concatenate([V, V]), cu_seqlens=CU),
            match="come with inputs of batch B = 1")
    _raises(LA, "cu_seqlens", lambda: A.linear_attention(Q, K, V, cu_seqlens=CU, segment_ids=SEG),
            match="not be given with")
    _raises(LA, "cu_seqlens", lambda: A.linear_attention(Q, K, V, cu_seqlens=CU, causal=False),
            match="come with causal=True")


def test_state_batch_differs_from_number_of_sequences():
    one = A.LinearAttentionState(S0.kv[:1], S0.k_sum[:1])
    _raises(LA, "initial_state", lambda: A.linear_attention(Q, K, V, cu_seqlens=CU, initial_state=one),
            match=r"have kv of shape \(4, 2, 4, 3\).*N = len\(cu_seqlens\) - 1 = 4")
    _raises(DR, "initial_state", lambda: A.delta_rule_attention(Q, KN, V, BETA, cu_seqlens=CU,
                                                                initial_state=A.DeltaRuleState(S0.kv[:2])),
            match=r"be a DeltaRuleState with kv of shape \(4, 2, 4, 3\)")


def test_complex_states_and_bad_scale():
    st = A.LinearAttentionState(S0.kv[:1].astype(complex), S0.k_sum[:1])
    _raises("kjax.attention.linear_attention_step", "state",
            lambda: A.linear_attention_step(st, Q[:, 0], K[:, 0], V[:, 0]), cls=KjaxTypeError, match="hold real")
    ds = A.DeltaRuleState(S0.kv[:1].astype(complex))
    _raises("kjax.attention.delta_rule_step", "state",
            lambda: A.delta_rule_step(ds, Q[:, 0], KN[:, 0], V[:, 0], BETA[:, 0]), cls=KjaxTypeError,
            match="hold real")
    _raises(LA, "scale", lambda: A.linear_attention(Q, K, V, scale=np.ones(2)), match="be a scalar")
    _raises(DR, "scale", lambda: A.delta_rule_attention(Q, KN, V, BETA, scale=float("inf")), match="be finite")
    assert jnp.isfinite(A.linear_attention(Q, K, V, scale=0.5)).all()

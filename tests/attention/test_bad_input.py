import jax.numpy as jnp
import numpy as np
import pytest

from kjax import attention as A
from tests.conformance import assert_close

q = jnp.ones((1, 5, 2, 3))
v = jnp.ones((1, 5, 2, 4))


def test_qk_feature_sizes_differ():
    with pytest.raises(ValueError, match=r"linear_attention: `k` must have the feature size of `q` \(M=3\)"):
        A.linear_attention(q, jnp.ones((1, 5, 2, 4)), v)
    with pytest.raises(ValueError, match="kernel_attention: `k` must have the feature size"):
        A.kernel_attention(q, jnp.ones((1, 5, 2, 4)), v, feature_map="elu_plus_one")


def test_v_with_other_time():
    with pytest.raises(ValueError, match=r"`v` must have the batch, time and head sizes \[B, T, H\] = \(1, 5, 2\).*got shape \(1, 6, 2, 4\)"):
        A.linear_attention(q, q, jnp.ones((1, 6, 2, 4)))
    with pytest.raises(ValueError, match="delta_rule_attention: `v` must have"):
        A.delta_rule_attention(q, q, jnp.ones((1, 6, 2, 4)), jnp.ones((1, 5, 2)))


def test_rank():
    with pytest.raises(ValueError, match=r"`q` must have rank 4 \[B, T, H, M\]"):
        A.linear_attention(q[0], q[0], v[0])
    with pytest.raises(ValueError, match=r"kernel_attention: `q` must have rank 4 \[B, T, H, D\]"):
        A.kernel_attention(q[0], q[0], v[0], feature_map="relu")


@pytest.mark.parametrize("c", [0, -3])
def test_chunk_size(c):
    with pytest.raises(ValueError, match=f"linear_attention: `chunk_size` must be >= 1; got {c}"):
        A.linear_attention(q, q, v, chunk_size=c)
    with pytest.raises(ValueError, match="delta_rule_attention: `chunk_size` must be >= 1"):
        A.delta_rule_attention(q, q, v, jnp.ones((1, 5, 2)), chunk_size=c)
    with pytest.raises(TypeError, match="`chunk_size` must be a Python int"):
        A.linear_attention(q, q, v, chunk_size=4.0)


def test_segment_ids():
    with pytest.raises(ValueError, match=r"`segment_ids` must have shape \[B, T\] = \(1, 5\); got shape \(5,\)"):
        A.linear_attention(q, q, v, segment_ids=jnp.zeros(5, jnp.int32))
    with pytest.raises(TypeError, match="`segment_ids` must be an integer array"):
        A.linear_attention(q, q, v, segment_ids=jnp.zeros((1, 5)))


def test_eps_and_states():
    with pytest.raises(ValueError, match="`eps` must be >= 0; got -1.0"):
        A.linear_attention(q, q, v, eps=-1.0)
    bad = A.LinearAttentionState(jnp.zeros((1, 2, 3, 5)), jnp.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"`initial_state` must have kv of shape \(1, 2, 3, 4\)"):
        A.linear_attention(q, q, v, initial_state=bad)
    with pytest.raises(TypeError, match="`initial_state` must be a LinearAttentionState"):
        A.linear_attention(q, q, v, initial_state=(1, 2))
    with pytest.raises(ValueError, match="delta_rule_attention: `initial_state` must be a DeltaRuleState"):
        A.delta_rule_attention(q, q, v, jnp.ones((1, 5, 2)), initial_state=A.DeltaRuleState(jnp.zeros(3)))


def test_beta_and_rpe_shapes():
    with pytest.raises(ValueError, match=r"`beta` must have shape \[B, T, H\] = \(1, 5, 2\)"):
        A.delta_rule_attention(q, q, v, jnp.ones((1, 5)))
    with pytest.raises(ValueError, match=r"rpe_kernel_attention: `rpe` must have shape \[H, 2T - 1\] = \(2, 9\)"):
        A.rpe_kernel_attention(q, q, v, jnp.ones((2, 5)))


def test_feature_map_names():
    with pytest.raises(ValueError, match="`feature_map` must be a callable or one of"):
        A.kernel_attention(q, q, v, feature_map="softmax")
    with pytest.raises(ValueError, match="`feature_params` must be given for feature_map='favor_positive'"):
        A.kernel_attention(q, q, v, feature_map="favor_positive")


def test_implementations():
    with pytest.raises(ValueError, match=r"linear_attention: implementation 'pallas' cannot serve this call on "
                       r"cpu: it lowers on cuda, tpu, not on cpu"):
        A.linear_attention(q, q, v, implementation="pallas")
    # a configuration the named kernel does not support: the error names the argument
    with pytest.raises(ValueError, match=r"implementation 'pallas_interpret' cannot serve this call on cpu: "
                       r"`causal=False` is served by the XLA path"):
        A.linear_attention(q, q, v, implementation="pallas_interpret", causal=False)
    big = jnp.ones((1, 5, 2, 257))
    with pytest.raises(ValueError, match=r"kernel_attention: implementation 'pallas_tpu_interpret' cannot serve "
                       r"this call on cpu: feature sizes \(D, M, Dv\) of `q`, `k`, `v` above 256"):
        A.kernel_attention(big, big, v, feature_map="relu", implementation="pallas_tpu_interpret")
    # maps the kernels do not fuse reach them as precomputed features
    out = A.kernel_attention(q, q, v, feature_map="taylor2", implementation="pallas_tpu_interpret")
    assert_close(out, A.kernel_attention(q, q, v, feature_map="taylor2"), 1e-12)
    with pytest.raises(ValueError, match="`implementation` must be None, one of"):
        A.linear_attention(q, q, v, implementation="cuda")
    with pytest.raises(ValueError, match=r"none of the implementations \['pallas'\] can run here \(cpu\)"):
        A.linear_attention(q, q, v, implementation=["pallas"])
    # a list falls through to the next implementation that supports the call
    out = A.linear_attention(q, q, v, implementation=["pallas", "xla"])
    assert out.shape == v.shape and np.all(np.isfinite(out))
    out = A.linear_attention(q, q, v, causal=False, implementation=["pallas_interpret", "xla"])
    assert_close(out, A.linear_attention(q, q, v, causal=False), 1e-12)


def test_step_shapes():
    s = A.LinearAttentionState(jnp.zeros((1, 2, 3, 4)), jnp.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"linear_attention_step: `k_t` must have the shape of `q_t` \(1, 2, 3\)"):
        A.linear_attention_step(s, q[:, 0], jnp.ones((1, 2, 4)), v[:, 0])
    with pytest.raises(ValueError, match="linear_attention_step: `state` must have kv of shape"):
        A.linear_attention_step(s, q[:, 0], q[:, 0], jnp.ones((1, 2, 5)))


def _raises(exc, msg, call):
    with pytest.raises(exc) as info:
        call()
    assert msg in str(info.value), str(info.value)


def test_empty_inputs_named():
    z, zv = jnp.ones((1, 0, 2, 3)), jnp.ones((1, 0, 2, 4))
    calls = {
        "linear_attention": lambda q, k, v: A.linear_attention(q, k, v),
        "kernel_attention": lambda q, k, v: A.kernel_attention(q, k, v, feature_map="elu_plus_one"),
        "delta_rule_attention": lambda q, k, v: A.delta_rule_attention(q, k, v, jnp.ones(q.shape[:3])),
        "rpe_kernel_attention": lambda q, k, v: A.rpe_kernel_attention(q, k, v, jnp.zeros(max(2 * q.shape[1] - 1, 0))),
        "softmax_attention_reference": lambda q, k, v: A.softmax_attention_reference(q, k, v),
    }
    for name, f in calls.items():
        _raises(ValueError, f"kjax.attention.{name}: `q` must have T >= 1 in [B, T, H, ", lambda: f(z, z, zv))
        _raises(ValueError, "]; got shape (1, 0, 2, 3).", lambda: f(z, z, zv))
        _raises(ValueError, f"kjax.attention.{name}: `q` must have B >= 1", lambda: f(q[:0], q[:0], v[:0]))
        _raises(ValueError, f"kjax.attention.{name}: `v` must have Dv >= 1", lambda: f(q, q, v[..., :0]))
    _raises(ValueError, "linear_attention: `q` must have H >= 1", lambda: A.linear_attention(q[:, :, :0], q[:, :, :0], v[:, :, :0]))
    _raises(ValueError, "linear_attention: `q` must have M >= 1", lambda: A.linear_attention(q[..., :0], q[..., :0], v))
    s = A.LinearAttentionState(jnp.zeros((0, 2, 3, 4)), jnp.zeros((0, 2, 3)))
    _raises(ValueError, "kjax.attention.linear_attention_step: `q_t` must have B >= 1",
            lambda: A.linear_attention_step(s, q[:0, 0], q[:0, 0], v[:0, 0]))
    _raises(ValueError, "kjax.attention.delta_rule_step: `q_t` must have B >= 1",
            lambda: A.delta_rule_step(A.DeltaRuleState(s.kv), q[:0, 0], q[:0, 0], v[:0, 0], jnp.ones((0, 2))))


def test_step_states_named():
    s = A.LinearAttentionState(jnp.zeros((1, 2, 3, 5)), jnp.zeros((1, 2, 3)))
    _raises(ValueError, "kjax.attention.linear_attention_step: `state` must have kv of shape (1, 2, 3, 4)",
            lambda: A.linear_attention_step(s, q[:, 0], q[:, 0], v[:, 0]))
    _raises(TypeError, "kjax.attention.linear_attention_step: `state` must be a LinearAttentionState",
            lambda: A.linear_attention_step((1, 2), q[:, 0], q[:, 0], v[:, 0]))
    _raises(TypeError, "kjax.attention.delta_rule_step: `state` must be a DeltaRuleState",
            lambda: A.delta_rule_step((1, 2), q[:, 0], q[:, 0], v[:, 0], jnp.ones((1, 2))))
    st = A.DeltaRuleState(jnp.zeros((1, 2, 3, 4)))
    _raises(ValueError, "kjax.attention.delta_rule_step: `q_t` must have rank 3 [B, H, M]",
            lambda: A.delta_rule_step(st, q[0, 0], q[:, 0], v[:, 0], jnp.ones((1, 2))))


def test_softmax_scale():
    want = A.softmax_attention_reference(q, q, v, scale=0.5)
    # array scales work, also traced ones (no static hashing)
    assert_close(A.softmax_attention_reference(q, q, v, scale=jnp.float32(0.5)), want, 1e-6)
    import jax
    assert_close(jax.jit(lambda s: A.softmax_attention_reference(q, q, v, scale=s))(0.5), want, 1e-6)
    _raises(ValueError, "kjax.attention.softmax_attention_reference: `scale` must be finite; got nan",
            lambda: A.softmax_attention_reference(q, q, v, scale=float("nan")))
    _raises(ValueError, "`scale` must be a scalar", lambda: A.softmax_attention_reference(q, q, v, scale=jnp.ones(2)))


def test_feature_params_named_by_kernel_attention():
    ka = lambda **kw: A.kernel_attention(q, q, v, **kw)
    _raises(ValueError, "kjax.attention.kernel_attention: `feature_params` must have M >= 1",
            lambda: ka(feature_map="favor_positive", feature_params=jnp.ones((0, 3))))
    _raises(ValueError, "kjax.attention.kernel_attention: `feature_params` must have shape (M, 3)",
            lambda: ka(feature_map="favor_trig", feature_params=jnp.ones((4, 2))))
    _raises(TypeError, "kjax.attention.kernel_attention: `feature_params` must be a Python int",
            lambda: ka(feature_map="dpfp", feature_params=2.5))
    _raises(TypeError, "kjax.attention.kernel_attention: `feature_params` must be a HedgehogParams",
            lambda: ka(feature_map="hedgehog", feature_params=jnp.ones(3)))
    _raises(TypeError, "kjax.attention.kernel_attention: `feature_params` must be a LearnedSpectralParams",
            lambda: ka(feature_map="learned_spectral", feature_params=(1, 2)))
    _raises(ValueError, "kjax.attention.kernel_attention: `feature_map` must map [B, T, H, D] to [B, T, H, M]",
            lambda: ka(feature_map=lambda x: x[..., 0]))
    _raises(ValueError, "kjax.attention.rpe_kernel_attention: `feature_params` must have shape (M, 3)",
            lambda: A.rpe_kernel_attention(q, q, v, jnp.zeros(9), feature_map="favor_positive",
                                           feature_params=jnp.ones((4, 2))))


def test_flags_must_be_bools():
    import jax

    _raises(TypeError, "kjax.attention.linear_attention: `causal` must be a Python bool; got 'no'",
            lambda: A.linear_attention(q, q, v, causal="no"))
    _raises(TypeError, "kjax.attention.kernel_attention: `normalize` must be a Python bool",
            lambda: A.kernel_attention(q, q, v, feature_map="relu", normalize=None))
    _raises(TypeError, "kjax.attention.rpe_kernel_attention: `causal` must be a Python bool",
            lambda: jax.jit(lambda c: A.rpe_kernel_attention(q, q, v, jnp.zeros(9), causal=c))(True))
    _raises(TypeError, "kjax.attention.delta_rule_attention: `return_state` must be a Python bool",
            lambda: A.delta_rule_attention(q, q, v, jnp.ones((1, 5, 2)), return_state=1))
    _raises(TypeError, "kjax.attention.softmax_attention_reference: `causal` must be a Python bool",
            lambda: A.softmax_attention_reference(q, q, v, causal=0))
    assert A.linear_attention(q, q, v, causal=np.bool_(False)).shape == v.shape  # NumPy bools are bools

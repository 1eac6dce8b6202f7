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
    with pytest.raises(ValueError, match=r"`q` must have rank 4 \[B, T, H, D\]"):
        A.linear_attention(q[0], q[0], v[0])


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
    with pytest.raises(ValueError, match="linear_attention_step: `initial_state` must have kv of shape"):
        A.linear_attention_step(s, q[:, 0], q[:, 0], jnp.ones((1, 2, 5)))

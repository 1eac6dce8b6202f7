"""The lowering matrix: the public attention functions with their DEFAULT implementation, exported for
cuda and tpu from this CPU-only machine, must lower and reach the Pallas kernels.

``jax.export`` lowers for the target platform without a device: it runs the Triton lowering (its
power-of-two rules) and the Mosaic TPU lowering (its (8, 128) block rules), and the dispatcher's
``platform_dependent`` keeps only the target's branch. Nothing is compiled for the device, so this
is cheap; it says nothing about speed or about the device compiler's own limits (registers, VMEM).
Each export holds every configuration of one (platform, dtype, D) cell, forward and forward +
backward, and the test counts the kernels' custom calls in the module: one per forward, three per
forward + backward (forward, the dq scan and the reverse dk/dv scan).
"""

import functools

import jax
import jax.numpy as jnp
import pytest

from kjax import attention as A
from kjax.attention import _pallas_triton

B, T, H = 2, 4096, 8
MAPS = ["identity", "elu_plus_one", "relu", "favor_positive"]
CALL = {"cuda": "__gpu$xla.gpu.triton", "tpu": "tpu_custom_call"}
DISABLED = [jax.export.DisabledSafetyCheck.custom_call(CALL["cuda"])]


def _attend(fmap, with_state, q, k, v, w, kv, ks):
    state = A.LinearAttentionState(kv, ks) if with_state else None
    if fmap == "identity":
        out = A.linear_attention(q, k, v, initial_state=state, return_state=with_state)
    else:
        out = A.kernel_attention(q, k, v, feature_map=fmap, feature_params=w if fmap == "favor_positive" else None,
                                 initial_state=state, return_state=with_state)
    return jax.tree.map(lambda x: jnp.sum(x.astype(jnp.float32)), out)


def _cases(q, k, v, w, kv, kvf, ks, ksf):
    """Every map, with and without state; forward outputs and the gradients of their sums."""
    outs = []
    for fmap in MAPS:
        for with_state in (False, True):
            s = (kvf, ksf) if fmap == "favor_positive" else (kv, ks)
            f = functools.partial(_attend, fmap, with_state)
            outs.append(f(q, k, v, w, *s))
            loss = lambda *a, f=f: sum(jax.tree.leaves(f(*a)))
            outs.append(jax.grad(loss, argnums=(0, 1, 2, 3, 4, 5))(q, k, v, w, *s))
    return outs


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
# D = 64 is padded on TPU (lanes of 128) and D = 128 is not; each dtype meets both paths across the
# two cases and the other lowering tests (all four combinations took twice the time for no new path)
@pytest.mark.parametrize("d,dtype", [(64, jnp.bfloat16), (128, jnp.float32)])
def test_default_implementation_lowers_to_the_kernels(platform, dtype, d):
    m = 2 * d  # FAVOR+ features
    S = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
    args = (S(B, T, H, d), S(B, T, H, d), S(B, T, H, d), S(m, d), S(B, H, d, d), S(B, H, m, d), S(B, H, d),
            S(B, H, m))
    exp = jax.export.export(jax.jit(_cases), platforms=[platform], disabled_checks=DISABLED)(*args)
    text = exp.mlir_module()
    n_configs = len(MAPS) * 2
    assert text.count(CALL[platform]) == n_configs * (1 + 3), platform


def test_triton_kernels_pad_ragged_shapes_to_powers_of_two():
    # the Triton variant on its own: a ragged T and feature sizes that are not powers of two
    plan = _pallas_triton.plan(4000, 48, 48, 80, 64)
    assert (plan.dp, plan.mp, plan.bv, plan.c) == (64, 64, 64, 64) and plan.tp % plan.c == 0
    S = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.bfloat16)
    args = (S(B, 4000, H, 48), S(B, 4000, H, 48), S(B, 4000, H, 80))

    # the explicit Triton kernels lower for cuda through the platform-dependent "pallas" entry
    g = lambda q, k, v: A.kernel_attention(q, k, v, feature_map="elu_plus_one", implementation=["pallas", "xla"])
    text = jax.export.export(jax.jit(g), platforms=["cuda"], disabled_checks=DISABLED)(*args).mlir_module()
    assert text.count(CALL["cuda"]) == 1 and "num_warps" in text


# --------------------------------------------------------------------- decayed attention and the delta rule

DT, DD = 512, 64  # tokens and feature size of the decay / delta-rule exports (B = 1, H = 2)


def _decay_cases(q, k, v, beta, g, kv, ks, kvd):
    """Decayed linear attention (forward; forward + backward with state) and the delta rule, plain
    and gated (forward + backward: ``value_and_grad``, so the forward kernel's output is used)."""
    def la(q, k, v, g, kv, ks):
        out, st = A.linear_attention(q, k, v, decay=g, initial_state=A.LinearAttentionState(kv, ks),
                                     return_state=True, normalize=False)
        return sum(jnp.sum(x.astype(jnp.float32)) for x in (out, st.kv, st.k_sum))

    def delta(q, k, v, beta, g, kv):
        out, st = A.delta_rule_attention(q, k, v, beta, decay=g, initial_state=A.DeltaRuleState(kv),
                                         return_state=True)
        return jnp.sum(out.astype(jnp.float32)) + jnp.sum(st.kv.astype(jnp.float32))

    return [A.linear_attention(q, k, v, decay=g),
            jax.value_and_grad(la, argnums=(0, 1, 2, 3, 4, 5))(q, k, v, g, kv, ks),
            jax.value_and_grad(delta, argnums=(0, 1, 2, 3, 5))(q, k, v, beta, None, kvd),
            jax.value_and_grad(delta, argnums=(0, 1, 2, 3, 4, 5))(q, k, v, beta, g, kvd)]


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_decay_and_delta_rule_lower_to_the_kernels(platform, dtype):
    S = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
    qkv = S(1, DT, 2, DD)
    args = (qkv, qkv, qkv, S(1, DT, 2), S(1, DT, 2), S(1, 2, DD, DD), S(1, 2, DD), S(1, 2, DD, DD))
    exp = jax.export.export(jax.jit(_decay_cases), platforms=[platform], disabled_checks=DISABLED)(*args)
    text = exp.mlir_module()
    # linear attention: 1 forward + (forward, dq, dkv); the delta rule: one forward each (its backward
    # is the VJP of the XLA path: no kernel)
    assert text.count(CALL[platform]) == 1 + 3 + 1 + 1, platform
    for name in ("kjax_linear_attention_fwd_identity_decay", "kjax_linear_attention_bwd_dkv",
                 "kjax_delta_rule_fwd", "kjax_gated_delta_rule_fwd"):
        assert name in text, name

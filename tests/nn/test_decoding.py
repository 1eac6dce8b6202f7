"""Decoding layers of kjax.nn: ShortConv, KernelAttention's init_state / prefill / step, and the gated
layers (GatedLinearAttention, GatedDeltaNet, Mamba2). Token-by-token decoding must equal the
full-sequence output (float64), a prefill then steps too; errors name the layer and the argument."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kjax import attention, ssm
from kjax.nn import (
    GatedDeltaNet,
    GatedLinearAttention,
    KernelAttention,
    Mamba2,
    RecurrentLayerState,
    ShortConv,
    ShortConvState,
)
from tests.conformance import assert_close

F64 = jnp.float64
# one input for every layer test (shared shapes: B=2, T=7, D=8)
X = np.random.default_rng(0).normal(size=(2, 7, 8))


_STEP = nnx.jit(lambda m, x_t, s: m.step(x_t, s))  # compiled once per layer configuration


def _decode(layer, x, t0=0, state=None, jit=True):
    """Steps over ``x[:, t0:]`` from ``state`` (default: ``init_state``); outputs ``[B, T - t0, ...]``."""
    state = layer.init_state(x.shape[0], F64) if state is None else state
    ys = []
    for t in range(t0, x.shape[1]):
        y_t, state = (_STEP if jit else type(layer).step)(layer, x[:, t], state)
        ys.append(y_t[:, None])
    return jnp.concatenate(ys, axis=1), state


def _check_decoding(layer, x, tol, what, continued=True):
    """Full output == steps from zeros == steps after a prefill of 3 tokens (== a call continued from
    the prefill's state, if ``continued``); the states agree too."""
    y, s_full = layer(x, return_state=True)
    steps, state = _decode(layer, x)
    assert_close(steps, y, tol, f"{what}: steps vs full")
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(s_full), strict=True):
        assert_close(a, b, tol, f"{what}: state after steps vs prefill state")
    y3, s3 = layer(x[:, :3], return_state=True)
    assert_close(y3, y[:, :3], tol, f"{what}: prefill")
    assert_close(_decode(layer, x, 3, s3)[0], y[:, 3:], tol, f"{what}: prefill + steps")
    if continued:
        assert_close(layer(x[:, 3:], initial_state=s3), y[:, 3:], tol, f"{what}: initial_state continues")
    return y, state


# ------------------------------------------------------------------------------------------ ShortConv


def test_short_conv_matches_numpy_and_decodes():
    conv = ShortConv(3, 4, use_bias=True, param_dtype=F64, rngs=nnx.Rngs(0))
    conv.bias[...] = jnp.array([0.1, -0.2, 0.3])
    x = X[..., :3]
    w, b = np.asarray(conv.weight[...]), np.asarray(conv.bias[...])
    xp = np.concatenate([np.zeros((2, 3, 3)), x], axis=1)
    pre = np.stack([sum(w[j] * xp[:, t + j] for j in range(4)) for t in range(7)], axis=1) + b
    ref = pre / (1 + np.exp(-pre))  # silu
    assert_close(conv(x), ref, 1e-13, "short conv vs numpy")
    _, state = _check_decoding(conv, x, 1e-13, "short conv")
    np.testing.assert_array_equal(state.cache, x[:, -3:])
    lin = ShortConv(3, 2, activation=None, param_dtype=F64, rngs=nnx.Rngs(1))
    w = np.asarray(lin.weight[...])
    assert_close(lin(x), w[1] * x + w[0] * np.concatenate([np.zeros((2, 1, 3)), x[:, :-1]], 1), 1e-13, "width 2")


SHORT_CONV_ERRORS = [
    (lambda c: c(jnp.ones((7, 3))), ValueError, "kjax.nn.ShortConv: `x` must have rank 3"),
    (lambda c: c(jnp.ones((1, 7, 4))), ValueError, "kjax.nn.ShortConv: `x` must have in_features=3"),
    (lambda c: c(jnp.ones((1, 7, 3)), initial_state=ShortConvState(jnp.zeros((1, 2, 3)))), ValueError,
     "kjax.nn.ShortConv: `initial_state` must have cache (1, 3, 3)"),
    (lambda c: c.step(jnp.ones((2, 3)), ShortConvState(jnp.zeros((1, 3, 3)))), ValueError,
     "kjax.nn.ShortConv.step: `state` must have cache (2, 3, 3)"),
    (lambda c: c.step(jnp.ones((2, 3)), jnp.zeros((2, 3, 3))), TypeError,
     "kjax.nn.ShortConv.step: `state` must be a ShortConvState"),
    (lambda c: c.step(jnp.ones((2, 7, 3)), c.init_state(2)), ValueError, "kjax.nn.ShortConv.step: `x_t` must have rank 2"),
    (lambda c: c.init_state(0), ValueError, "kjax.nn.ShortConv.init_state: `batch_size` must be >= 1"),
    (lambda c: ShortConv(3, 0, rngs=nnx.Rngs(0)), ValueError, "kjax.nn.ShortConv: `width` must be >= 1"),
    (lambda c: ShortConv(3, activation="gelu", rngs=nnx.Rngs(0)), ValueError, "kjax.nn.ShortConv: `activation` must be one of"),
]


def _raises(obj, cases, prefix=""):
    for call, exc, msg in cases:
        with pytest.raises(exc) as info:
            call(obj)
        assert prefix in str(info.value) and msg in str(info.value), (msg, str(info.value))


def test_short_conv_errors():
    _raises(ShortConv(3, rngs=nnx.Rngs(0)), SHORT_CONV_ERRORS)


# ------------------------------------------------------------------------------------------ KernelAttention


@pytest.mark.parametrize("fmap", ["favor_positive"])  # query/key stabilisers differ: the subtle map
def test_kernel_attention_decodes(fmap):
    layer = KernelAttention(8, 2, feature_map=fmap, chunk_size=3, param_dtype=F64, rngs=nnx.Rngs(0))
    _, state = _check_decoding(layer, X, 1e-12, fmap, continued=False)
    assert state.kv.shape == (2, 2, layer.state_features, 4)


def test_kernel_attention_state_is_attention_state():
    layer = KernelAttention(8, 2, feature_map="relu", rngs=nnx.Rngs(0))
    s = layer.init_state(3)
    assert isinstance(s, attention.LinearAttentionState) and s.kv.dtype == jnp.float32
    assert s.kv.shape == (3, 2, 4, 4) and s.k_sum.shape == (3, 2, 4)
    assert list(inspect.signature(layer).parameters) == ["x", "segment_ids", "initial_state", "return_state"]


KA_ERRORS = [
    (lambda m: m.step(jnp.ones((2, 8)), m.init_state(1)), ValueError,
     "kjax.nn.KernelAttention.step: `state` must have kv (2, 2, 4, 4), k_sum (2, 2, 4)"),
    (lambda m: m.step(jnp.ones((2, 8)), attention.DeltaRuleState(jnp.zeros((2, 2, 4, 4)))), TypeError,
     "kjax.nn.KernelAttention.step: `state` must be a LinearAttentionState"),
    (lambda m: m.step(jnp.ones((2, 6)), m.init_state(2)), ValueError,
     "kjax.nn.KernelAttention.step: `x_t` must have in_features=8"),
    (lambda m: m.step(jnp.ones((2, 8), jnp.complex64), m.init_state(2)), TypeError,
     "kjax.nn.KernelAttention.step: `x_t` must be a real array"),
    (lambda m: m(jnp.ones((2, 5, 8)), initial_state=m.init_state(1)), ValueError,
     "kjax.nn.KernelAttention: `initial_state` must have kv (2, 2, 4, 4)"),
    (lambda m: m(jnp.ones((2, 5, 8)), return_state=1), TypeError, "kjax.nn.KernelAttention: `return_state` must be a Python bool"),
    (lambda m: m.init_state(2.0), TypeError, "kjax.nn.KernelAttention.init_state: `batch_size` must be a Python int"),
]


def test_kernel_attention_decode_errors():
    _raises(KernelAttention(8, 2, feature_map="elu_plus_one", rngs=nnx.Rngs(0)), KA_ERRORS)


def test_non_causal_cannot_decode():
    layer = KernelAttention(8, 2, feature_map="elu_plus_one", causal=False, rngs=nnx.Rngs(0))
    for call, fn in ((lambda: layer.init_state(1), "init_state"), (lambda: layer(X, return_state=True), None),
                     (lambda: layer.step(X[:, 0], None), "step")):
        with pytest.raises(ValueError) as info:
            call()
        name = "kjax.nn.KernelAttention" + (f".{fn}" if fn else "")
        assert f"{name}: `causal` must be True" in str(info.value), str(info.value)


# ------------------------------------------------------------------------------------------ gated layers

_HAS_DECAY = "decay" in inspect.signature(attention.linear_attention).parameters and hasattr(ssm, "selective_scan")
gated = pytest.mark.skipif(not _HAS_DECAY, reason="kjax.attention decays / kjax.ssm.selective_scan not in yet")

LAYERS = {
    "gla": lambda **kw: GatedLinearAttention(8, 2, gate_low_rank_dim=4, chunk_size=3, param_dtype=F64,
                                             rngs=nnx.Rngs(0), **kw),
    "gla_conv": lambda **kw: GatedLinearAttention(8, 2, use_short_conv=True, use_output_gate=False,
                                                  gate_logit_normalizer=2.0, clamp_min=-3.0, gate_low_rank_dim=4,
                                                  chunk_size=3, param_dtype=F64, rngs=nnx.Rngs(0), **kw),
    "gdn": lambda **kw: GatedDeltaNet(8, 2, chunk_size=3, param_dtype=F64, rngs=nnx.Rngs(0), **kw),
    "mamba2": lambda **kw: Mamba2(8, state_size=4, head_dim=4, chunk_size=3, param_dtype=F64, rngs=nnx.Rngs(0),
                                  **kw),
    "mamba2_groups": lambda **kw: Mamba2(8, state_size=3, head_dim=2, expand=1, n_groups=2, chunk_size=3,
                                         param_dtype=F64, rngs=nnx.Rngs(0), **kw),
}


@gated
@pytest.mark.parametrize("name", ["gla_conv", "gdn", "mamba2_groups"])  # the others: errors below (cost)
def test_gated_layer_decodes(name):
    layer = LAYERS[name]()
    # continued=False: ``initial_state`` of a call is the pure function's (tested there); the steps
    # after a prefill check that the layer hands its state over (compilations cost seconds each)
    y, state = _check_decoding(layer, X, 1e-10, name, continued=False)
    assert y.shape == X.shape and y.dtype == F64 and bool(jnp.all(jnp.isfinite(y)))
    assert float(jnp.abs(y).max()) > 1e-3  # not a vanishing output that any decoding would match
    assert isinstance(state, RecurrentLayerState)


@gated
def test_gated_layer_grads_finite():
    # one layer (compiling a gradient costs seconds; Mamba-2's the least); the recurrences' gradients
    # are checked against their token recurrences in tests/attention and tests/ssm
    layer = LAYERS["mamba2_groups"]()
    grads = nnx.grad(lambda m: jnp.mean(m(X) ** 2))(layer)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


GATED_ERRORS = [
    (lambda m: m(jnp.ones((7, 8))), ValueError, "`x` must have rank 3"),
    (lambda m: m(jnp.ones((1, 7, 6))), ValueError, "`x` must have in_features=8"),
    (lambda m: m(jnp.ones((1, 0, 8))), ValueError, "`x` must have T >= 1"),
    (lambda m: m(jnp.ones((1, 7, 8), jnp.complex64)), TypeError, "`x` must be a real array"),
    (lambda m: m(jnp.ones((2, 7, 8)), initial_state=m.init_state(1)), ValueError,
     "`initial_state` must match the layer's state for batch B=2"),
    (lambda m: m.step(jnp.ones((2, 8)), m.init_state(3)), ValueError, ".step: `state` must match the layer's state"),
    (lambda m: m.step(jnp.ones((2, 8)), (1, 2)), TypeError, ".step: `state` must be a RecurrentLayerState"),
    (lambda m: m.step(jnp.ones((2, 5)), m.init_state(2)), ValueError, ".step: `x_t` must have in_features=8"),
    (lambda m: m.init_state(-1), ValueError, ".init_state: `batch_size` must be >= 1"),
]


@gated
@pytest.mark.parametrize("name", ["gla", "gdn", "mamba2"])
def test_gated_layer_errors(name):
    layer = LAYERS[name]()
    _raises(layer, GATED_ERRORS, f"kjax.nn.{type(layer).__name__}")


GATED_CONFIGS = [
    (lambda: GatedLinearAttention(8, 3, rngs=nnx.Rngs(0)), ValueError,
     "kjax.nn.GatedLinearAttention: `expand_k` must make hidden_size * expand_k = 4 a positive multiple of num_heads=3"),
    (lambda: GatedLinearAttention(8, 2, clamp_min=1.0, rngs=nnx.Rngs(0)), ValueError,
     "kjax.nn.GatedLinearAttention: `clamp_min` must be None or a number <= 0"),
    (lambda: GatedLinearAttention(8, 2, gate_logit_normalizer=0.0, rngs=nnx.Rngs(0)), ValueError,
     "`gate_logit_normalizer` must be > 0"),
    (lambda: GatedDeltaNet(8, 2, expand_v=0.3, rngs=nnx.Rngs(0)), ValueError,
     "kjax.nn.GatedDeltaNet: `expand_v` must be > 0 with head_dim * expand_v an integer"),
    (lambda: GatedDeltaNet(8, 2, use_gate="yes", rngs=nnx.Rngs(0)), TypeError, "`use_gate` must be a Python bool"),
    (lambda: GatedDeltaNet(8, 0, rngs=nnx.Rngs(0)), ValueError, "kjax.nn.GatedDeltaNet: `num_heads` must be >= 1"),
    (lambda: Mamba2(8, head_dim=5, rngs=nnx.Rngs(0)), ValueError,
     "kjax.nn.Mamba2: `expand` must make hidden_size * expand = 16 a positive multiple of head_dim=5"),
    (lambda: Mamba2(8, head_dim=4, n_groups=3, rngs=nnx.Rngs(0)), ValueError, "kjax.nn.Mamba2: `n_groups` must divide"),
    (lambda: Mamba2(8, head_dim=4, dt_min=0.5, dt_max=0.1, rngs=nnx.Rngs(0)), ValueError,
     "kjax.nn.Mamba2: `dt_min` must be <="),
    (lambda: Mamba2(8, rngs=0), TypeError, "kjax.nn.Mamba2: `rngs` must be an nnx.Rngs"),
]


def test_gated_layer_bad_config():
    _raises(None, [(lambda _, make=make: make(), exc, msg) for make, exc, msg in GATED_CONFIGS])


def test_signatures():
    for cls, first in ((GatedLinearAttention, "hidden_size"), (GatedDeltaNet, "hidden_size"), (Mamba2, "hidden_size"),
                       (ShortConv, "channels")):
        params = inspect.signature(cls).parameters
        assert list(params)[0] == first and "rngs" in params and "args" not in params
        assert "Example:" in cls.__doc__ and "Raises:" in cls.__doc__

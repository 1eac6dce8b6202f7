import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kjax import attention as A
from kjax.nn import KernelAttention
from kjax.nn._attention import RandomFeatures
from tests.conformance import assert_close


def _manual(layer, x, fmap):
    b, t, _ = x.shape
    h, d = layer.num_heads, layer.head_dim
    q = (x @ layer.q_proj.kernel[...]).reshape(b, t, h, d)
    k = (x @ layer.k_proj.kernel[...]).reshape(b, t, h, d)
    v = (x @ layer.v_proj.kernel[...]).reshape(b, t, h, d)
    out = A.linear_attention(fmap(q), fmap(k), v, causal=layer.causal)
    return out.reshape(b, t, h * d) @ layer.o_proj.kernel[...]


def test_matches_pure_functions():
    x = jax.random.normal(jax.random.key(0), (2, 7, 8), jnp.float64)
    layer = KernelAttention(8, 2, feature_map="elu_plus_one", param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert_close(layer(x), _manual(layer, x, A.elu_plus_one), 1e-12, "layer")
    full = KernelAttention(8, 2, feature_map="elu_plus_one", causal=False, param_dtype=jnp.float64,
                           rngs=nnx.Rngs(0))
    assert_close(full(x), _manual(full, x, A.elu_plus_one), 1e-12, "non-causal layer")


def test_random_features_redrawn_only_by_key():
    x = jax.random.normal(jax.random.key(1), (1, 6, 8))
    layer = KernelAttention(8, 2, num_features=16, rngs=nnx.Rngs(0))
    w = layer.random_features[...]
    assert w.shape == (16, 4)
    y1, y2 = layer(x), layer(x)
    np.testing.assert_array_equal(y1, y2)
    # not trainable: nnx.Param filters leave the random features out
    params = nnx.state(layer, nnx.Param)
    assert all(not isinstance(v, RandomFeatures) for v in jax.tree.leaves(params, is_leaf=lambda v: isinstance(v, nnx.Variable)))
    layer.redraw(jax.random.key(5))
    assert not np.allclose(layer.random_features[...], w)
    layer.redraw(jax.random.key(5))
    w5 = layer.random_features[...]
    layer.redraw(jax.random.key(5))
    np.testing.assert_array_equal(layer.random_features[...], w5)


@pytest.mark.parametrize("fmap", ["hedgehog", "learned_spectral"])
def test_learnable_maps_train(fmap):
    x = jax.random.normal(jax.random.key(2), (1, 5, 8))
    layer = KernelAttention(8, 2, feature_map=fmap, rngs=nnx.Rngs(0))
    # the layer hands the map its NamedTuple of parameters (no deprecated dict on the way)
    assert isinstance(layer._params(), {"hedgehog": A.HedgehogParams, "learned_spectral": A.LearnedSpectralParams}[fmap])
    loss = lambda m: jnp.mean(m(x) ** 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        grads = nnx.grad(loss)(layer)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    if fmap == "hedgehog":
        assert float(jnp.abs(grads.hedgehog_w[...]).max()) > 0


def test_bad_config():
    with pytest.raises(ValueError, match="kjax.nn.KernelAttention: `feature_map` must be one of"):
        KernelAttention(8, 2, feature_map="softmax", rngs=nnx.Rngs(0))


def test_signatures_and_docs():
    import inspect
    import pydoc

    sig = inspect.signature(KernelAttention)
    assert list(sig.parameters)[:3] == ["in_features", "num_heads", "head_dim"] and "rngs" in sig.parameters
    assert "KernelAttention(in_features" in pydoc.render_doc(KernelAttention, renderer=pydoc.plaintext)
    layer = KernelAttention(8, 2, feature_map="relu", rngs=nnx.Rngs(0))
    assert list(inspect.signature(layer).parameters) == ["x", "segment_ids", "initial_state", "return_state"]
    for text in (KernelAttention.__doc__, KernelAttention.__call__.__doc__):
        assert "[B, T, in_features]" in text and "Raises:" in text


def _layer(**kw):
    return KernelAttention(**{"in_features": 8, "num_heads": 2, "feature_map": "elu_plus_one", "rngs": nnx.Rngs(0),
                              **kw})


BAD_CALLS = [
    (lambda m: m(jnp.ones((7, 8))), ValueError, "kjax.nn.KernelAttention: `x` must have rank 3 [B, T, in_features]; got shape (7, 8)"),
    (lambda m: m(jnp.ones((1, 7, 6))), ValueError, "kjax.nn.KernelAttention: `x` must have in_features=8 in its last axis"),
    (lambda m: m(jnp.ones((1, 0, 8))), ValueError, "kjax.nn.KernelAttention: `x` must have T >= 1"),
    (lambda m: m(jnp.ones((1, 7, 8), jnp.complex64)), TypeError, "kjax.nn.KernelAttention: `x` must be a real array"),
    (lambda m: m(jnp.ones((1, 7, 8)), segment_ids=jnp.zeros(7, jnp.int32)), ValueError,
     "kjax.nn.KernelAttention: `segment_ids` must have shape [B, T] = (1, 7)"),
    (lambda m: m(jnp.ones((1, 7, 8)), segment_ids=jnp.zeros((1, 7))), TypeError,
     "kjax.nn.KernelAttention: `segment_ids` must be an integer array"),
    (lambda m: m.redraw(3), TypeError, "`key` must be a PRNG key"),
]


@pytest.mark.parametrize("call,exc,msg", BAD_CALLS, ids=[b[2][-45:] for b in BAD_CALLS])
def test_bad_calls_named(call, exc, msg):
    layer = _layer()
    with pytest.raises(exc) as info:
        call(layer)
    assert msg in str(info.value), str(info.value)


BAD_CONFIGS = [
    (dict(num_heads=3), ValueError, "kjax.nn.KernelAttention: `num_heads` must divide in_features=8 (or pass head_dim); got 3"),
    (dict(num_heads=0), ValueError, "`num_heads` must be >= 1"),
    (dict(projection_kind="gaussian"), ValueError, "`projection_kind` must be one of"),
    (dict(chunk_size=0), ValueError, "kjax.nn.KernelAttention: `chunk_size` must be >= 1"),
    (dict(eps=-1.0), ValueError, "kjax.nn.KernelAttention: `eps` must be >= 0"),
    (dict(out_features=0), ValueError, "`out_features` must be >= 1"),
    (dict(num_features=0), ValueError, "`num_features` must be >= 1"),
    (dict(causal="yes"), TypeError, "`causal` must be a Python bool"),
    (dict(implementation="cuda"), ValueError, "kjax.nn.KernelAttention: `implementation` must be None, one of"),
    (dict(param_dtype=jnp.int32), TypeError, "kjax.nn.KernelAttention: `param_dtype` must be a real floating dtype"),
    (dict(dtype="complex64"), TypeError, "`dtype` must be a real floating dtype"),
    (dict(rngs=0), TypeError, "`rngs` must be an nnx.Rngs"),
]


@pytest.mark.parametrize("kw,exc,msg", BAD_CONFIGS, ids=[b[2][-40:] for b in BAD_CONFIGS])
def test_bad_config_named(kw, exc, msg):
    with pytest.raises(exc) as info:
        _layer(**kw)
    assert msg in str(info.value), str(info.value)


def test_head_dim_and_integer_input():
    layer = KernelAttention(8, 3, head_dim=4, feature_map="relu", out_features=5, rngs=nnx.Rngs(0))
    y = layer(jnp.arange(2 * 6 * 8).reshape(2, 6, 8) % 3)
    assert y.shape == (2, 6, 5) and jnp.issubdtype(y.dtype, jnp.floating)


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
    loss = lambda m: jnp.mean(m(x) ** 2)
    grads = nnx.grad(loss)(layer)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    if fmap == "hedgehog":
        assert float(jnp.abs(grads.hedgehog_w[...]).max()) > 0


def test_bad_config():
    with pytest.raises(ValueError, match="kjax.nn.KernelAttention: `feature_map` must be one of"):
        KernelAttention(8, 2, feature_map="softmax", rngs=nnx.Rngs(0))

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from kjax import ssm
from kjax.nn import S4D, STU, Hyena
from tests.conformance import assert_close

RNG = np.random.default_rng(4)


def test_s4d_layer_is_the_pure_functions_and_streams():
    layer = S4D(3, 8, init="legs", rngs=nnx.Rngs(0))
    u = jnp.asarray(RNG.normal(size=(2, 20, 3)), jnp.float32)
    y = layer(u)
    ref = ssm.fftconv(u, ssm.s4d_filter(layer.params, 20)) + u
    assert_close(y, ref, 1e-6, "S4D layer")
    state = layer.initial_state(2)
    ys = []
    for t in range(20):
        state, y_t = layer.step(state, u[:, t])
        ys.append(y_t)
    assert_close(jnp.stack(ys, 1), y, 1e-4, "S4D step")


def test_stu_layer_matches_numpy():
    layer = STU(2, 3, num_filters=4, rngs=nnx.Rngs(1))
    u = RNG.normal(size=(1, 24, 2))
    y = layer(jnp.asarray(u))
    phi = np.asarray(ssm.stu_filters(24, 4))
    m, ms = np.asarray(layer.m[...]), np.asarray(layer.m_skip[...])
    ref = u @ ms
    for k in range(4):
        feats = np.stack([np.convolve(u[0, :, d], phi[:, k])[:24] for d in range(2)], -1)
        ref = ref + feats @ m[k]
    assert_close(y, ref, 1e-10, "STU layer")


def test_hyena_is_causal_and_trainable():
    layer = Hyena(4, emb_dim=5, width=8, depth=1, rngs=nnx.Rngs(2))
    u = jnp.asarray(RNG.normal(size=(1, 32, 4)))
    u2 = u.at[:, 20:].set(0.0)
    fwd = nnx.jit(lambda m, x: m(x))
    y, y2 = fwd(layer, u), fwd(layer, u2)
    np.testing.assert_allclose(y[:, :20], y2[:, :20], atol=1e-12)
    assert float(jnp.max(jnp.abs(y[:, 20:] - y2[:, 20:]))) > 1e-6

    def loss(model):
        return jnp.mean(model(u) ** 2)

    grads = nnx.jit(nnx.grad(loss))(layer)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
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
        y_t, state = layer.step(state, u[:, t])  # (output, new_state), as every step
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


def test_layers_show_their_signatures():
    """help() / inspect showed ``(*args, **kwargs)`` (nnx's metaclass); now the real signatures, while
    an instance still shows ``__call__``'s."""
    assert list(inspect.signature(S4D).parameters) == ["d_model", "state_size", "init", "discretization", "rngs"]
    assert list(inspect.signature(Hyena).parameters) == ["d_model", "emb_dim", "width", "depth", "short_len", "rngs"]
    assert list(inspect.signature(STU).parameters) == ["d_in", "d_out", "num_filters", "rngs"]
    assert list(inspect.signature(STU(2, 2, num_filters=2, rngs=nnx.Rngs(0))).parameters) == ["u"]


def test_hyena_promotes_integer_input():
    """Regression: integer input failed inside fftconv, blaming its `k` (the filter cast to int)."""
    layer = Hyena(4, emb_dim=5, width=8, depth=1, rngs=nnx.Rngs(2))
    u = RNG.integers(-2, 3, size=(1, 12, 4))
    y = layer(jnp.asarray(u, jnp.int32))
    assert jnp.issubdtype(y.dtype, jnp.floating)
    assert_close(y, layer(jnp.asarray(u, y.dtype)), 1e-12, "int vs float input")


_S4D = S4D(3, 4, rngs=nnx.Rngs(0))
_HYENA = Hyena(3, emb_dim=5, width=4, depth=1, rngs=nnx.Rngs(0))
_STU = STU(3, 2, num_filters=4, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: _S4D(jnp.ones((2, 8))), ValueError, r"kjax.nn.S4D: `u` must have rank 3 \[B, L, D\]"),
    (lambda: _S4D(jnp.ones((2, 8, 4))), ValueError, r"kjax.nn.S4D: `u` must have 3 channels.*got shape \(2, 8, 4\)"),
    (lambda: _S4D(jnp.ones((2, 0, 3))), ValueError, r"kjax.nn.S4D: `u` must have a sequence length L >= 1"),
    (lambda: _S4D(jnp.ones((2, 8, 3), jnp.complex64)), TypeError, r"kjax.nn.S4D: `u` must be a real array"),
    (lambda: _S4D.step(_S4D.initial_state(2), jnp.ones((2, 4))), ValueError,
     r"kjax.nn.S4D.step: `u_t` must have shape \[B, 3\]"),
    (lambda: _S4D.step(_S4D.initial_state(2), jnp.ones((5, 3))), ValueError, r"kjax.ssm.s4d_step: `state` must have"),
    (lambda: _S4D.initial_state(0), ValueError, r"kjax.nn.S4D.initial_state: `batch_size` must be >= 1"),
    (lambda: _HYENA(jnp.ones((1, 8, 2))), ValueError, r"kjax.nn.Hyena: `u` must have 3 channels"),
    (lambda: _HYENA(jnp.ones((1, 0, 3))), ValueError, r"kjax.nn.Hyena: `u` must have a sequence length L >= 1"),
    (lambda: _STU(jnp.ones((1, 8, 2))), ValueError, r"kjax.nn.STU: `u` must have 3 channels"),
    (lambda: _STU(jnp.ones((1, 3, 3))), ValueError, r"kjax.nn.STU: `u` must have a sequence length L >= 4"),
    (lambda: S4D(2, 5, rngs=nnx.Rngs(0)), ValueError, r"kjax.nn.S4D: `state_size` must be even"),
    (lambda: S4D(0, 4, rngs=nnx.Rngs(0)), ValueError, r"kjax.nn.S4D: `d_model` must be >= 1"),
    (lambda: S4D(2, 4, discretization="euler", rngs=nnx.Rngs(0)), ValueError, r"kjax.nn.S4D: `discretization` must be"),
    (lambda: Hyena(2, emb_dim=4, rngs=nnx.Rngs(0)), ValueError, r"kjax.nn.Hyena: `emb_dim` must be odd"),
    (lambda: Hyena(2, short_len=0, rngs=nnx.Rngs(0)), ValueError, r"kjax.nn.Hyena: `short_len` must be >= 1"),
    (lambda: STU(2, 0, rngs=nnx.Rngs(0)), ValueError, r"kjax.nn.STU: `d_out` must be >= 1"),
])
def test_layer_input_errors_name_the_layer(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()

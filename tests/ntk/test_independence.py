"""kjax.ntk._independence: deciding from the jaxpr whether a model keeps examples independent.

Only tracing (make_jaxpr), nothing compiles. Each "no" case names the primitive in its reason.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kjax.ntk._independence import rows_independent

X = jnp.ones((5, 3))
W = {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}
IDS = jnp.zeros((5, 7), jnp.int32)
TABLE = {"t": jnp.ones((10, 6))}


def mlp(p, x):
    return jax.nn.gelu(jnp.tanh(x @ p["w"] + p["b"]) * 2.0 + jnp.arange(4.0))


def seq_model(p, ids):
    h = p["t"][ids]  # embedding lookup: [n, L, 6]
    a = jax.nn.softmax(jnp.einsum("nld,nmd->nlm", h, h), -1)  # attention within each example
    h = jnp.einsum("nlm,nmd->nld", a, h)

    def step(c, xt):
        c = jnp.tanh(c + xt)
        return c, c

    c, ys = jax.lax.scan(step, jnp.zeros((ids.shape[0], 6)), jnp.swapaxes(h, 0, 1))  # over time
    c = jax.lax.cond(True, lambda c: c * 2, lambda c: c, c)
    c = jax.lax.fori_loop(0, 3, lambda i, c: jnp.sin(c), c)
    return c + ys.mean(0) + jnp.cumsum(c, axis=1)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.LayerNorm()(x.reshape((x.shape[0], -1)))
        return nn.Dense(3)(x)


class BN(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.BatchNorm(use_running_average=False)(nn.Dense(3)(x))


XI = jnp.ones((4, 8, 8, 2))
CNN_P = CNN().init(jax.random.key(0), XI)
BN_P = BN().init(jax.random.key(0), X)


class NNX(nnx.Module):
    def __init__(self):
        self.l = nnx.Linear(3, 2, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return jax.nn.softmax(self.l(x), axis=-1)


_NNX = NNX()

INDEPENDENT = {
    "mlp": (mlp, W, X),
    "embedding-attention-scan-cond-while": (seq_model, TABLE, IDS),
    "take": (lambda p, ids: jnp.take(p["t"], ids, axis=0).sum(1), TABLE, IDS),
    "linen-cnn-pool-layernorm": (lambda p, x: CNN().apply(p, x), CNN_P, XI),
    "nnx": (lambda p, x: _NNX(x), None, X),
    "vmapped-inside": (lambda p, x: jax.vmap(lambda r: r @ p["w"])(x), W, X),
}

DEPENDENT = {
    "batch-norm": (lambda p, x: (x - x.mean(0)) / x.std(0), None, X, "`reduce_sum` reduces over the batch"),
    "linen-batch-norm": (lambda p, x: BN().apply(p, x, mutable=["batch_stats"])[0], BN_P, X, "reduce"),
    "iota-over-batch": (lambda p, x: x + jnp.arange(5.0)[:, None], None, X, "per-row constant"),
    "per-row-data": (lambda p, x: x + np.ones((5, 3)), None, X, "per-row constant"),
    "softmax-over-batch": (lambda p, x: jax.nn.softmax(x, axis=0), None, X, "over the batch axis"),
    "attention-across-examples": (lambda p, x: jax.nn.softmax(x @ x.T) @ x, None, X, "across examples"),
    "cumsum-over-batch": (lambda p, x: jnp.cumsum(x, axis=0), None, X, "`cumsum` accumulates along the batch"),
    "sort-over-batch": (lambda p, x: jnp.sort(x, axis=0), None, X, "`sort` sorts along the batch"),
    "transposed-output": (lambda p, x: x.T, None, X, "keeps the batch on another axis"),
    "scan-over-batch": (lambda p, x: jax.lax.scan(lambda c, r: (c + r, c), jnp.zeros(3), x)[1], None, X,
                        "`scan` iterates over the batch axis"),
    "reshape-merging-batch": (lambda p, x: x.reshape(-1)[:5, None], None, X, "`reshape` merges"),
    "cond-on-batch": (lambda p, x: jax.lax.cond(x[0, 0] > 0, lambda v: v, lambda v: -v, x), None, X, "slice"),
}


@pytest.mark.parametrize("name", list(INDEPENDENT))
def test_independent_models_are_recognised(name):
    f, p, x = INDEPENDENT[name]
    assert rows_independent(f, p, x) == (True, "")


@pytest.mark.parametrize("name", list(DEPENDENT))
def test_models_that_mix_examples_are_refused_with_a_reason(name):
    f, p, x, why = DEPENDENT[name]
    ok, reason = rows_independent(f, p, x)
    assert not ok and why in reason, reason


def test_abstract_inputs_and_single_examples():
    spec = jax.ShapeDtypeStruct((6, 3), jnp.float32)
    assert rows_independent(mlp, W, spec) == (True, "")
    assert rows_independent(mlp, W, X[:1])[0] is False  # one example proves nothing


def test_the_default_vmap_axes_follows_the_analysis(caplog):
    from kjax._src.errors import KjaxError
    from kjax.ntk import empirical_ntk_fn

    rng = np.random.default_rng(0)
    p = {"w": rng.normal(size=(3, 4)), "b": np.zeros(4)}
    x = rng.normal(size=(5, 3))
    bn = lambda p, x: (lambda h: (h - h.mean(0)) / h.std(0))(mlp(p, x))
    # implementation=1 (Jacobian contraction): the cheapest to trace; the decision is the same for all
    with caplog.at_level("INFO", logger="kjax.ntk"):
        for f, want in ((mlp, 0), (bn, None)):
            got = empirical_ntk_fn(f, implementation=1)(x, x[:2], p)
            np.testing.assert_allclose(got, empirical_ntk_fn(f, vmap_axes=want, implementation=1)(x, x[:2], p), rtol=1e-12, atol=1e-12)
    assert "vmap_axes=0 (examples are independent" in caplog.text
    assert "vmap_axes=None (`reduce_sum` reduces over the batch axis)" in caplog.text
    # mixing examples: the per-example path would be wrong (here NaN: the std of one example), so
    # the default is not it
    assert not np.allclose(empirical_ntk_fn(bn, vmap_axes=0, implementation=1)(x, None, p), empirical_ntk_fn(bn, implementation=1)(x, None, p))
    with pytest.raises(KjaxError, match="`vmap_axes` must be 'auto'"):
        empirical_ntk_fn(mlp, vmap_axes="yes")(x, None, p)

"""empirical_ntk (dataset form), projected_ntk and the flax adapters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax.ntk import empirical_ntk, empirical_ntk_fn, from_linen, from_nnx, projected_ntk
from tests.conformance import assert_close
from tests.ntk.models import MODELS, inputs, params

P = params()
F, PM = MODELS["mlp"], P["mlp"]
X = inputs("mlp", 11, key=3)
Y = inputs("mlp", 6, key=4)


def reference(mode, x1, x2, f=F, p=PM):
    axes = {"full": ((), ()), "trace": ((-1,), ()), "diagonal": ((), (-1,))}[mode]
    return empirical_ntk_fn(f, *axes, vmap_axes=0, implementation="jacobian_contraction")(x1, x2, p)


@pytest.mark.parametrize("mode", ["full", "trace", "diagonal"])
def test_blockwise_equals_nt_api(mode, mesh):
    ref_sym, ref = reference(mode, X, X), reference(mode, X, Y)
    assert_close(empirical_ntk(F, PM, X, mode=mode, block_size=4), ref_sym, 1e-11)
    assert_close(empirical_ntk(F, PM, X, Y, mode=mode, block_size=4), ref, 1e-11)
    assert_close(empirical_ntk(F, PM, X, mode=mode, block_size=3, mesh=mesh), ref_sym, 1e-11)
    sym = np.asarray(empirical_ntk(F, PM, X, mode=mode, block_size=4))
    mirrored = np.swapaxes(sym, 0, 1)
    if mode == "full":
        mirrored = np.swapaxes(mirrored, 2, 3)
    np.testing.assert_array_equal(sym, mirrored)  # exactly symmetric


def test_cnn_blocks_and_implementations():
    f, p = MODELS["cnn"], P["cnn"]
    x = inputs("cnn", 5)
    ref = reference("trace", x, x, f, p)
    for impl in ["structured", "ntk_vector_products", None]:
        assert_close(empirical_ntk(f, p, x, block_size=2, implementation=impl), ref, 1e-11)


def test_stream_to_memmap_with_progress(tmp_path, mesh):
    path = tmp_path / "k.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(11, 11))
    res = empirical_ntk(F, PM, X, block_size=4, out=out, progress=True, mesh=mesh)
    assert res is out
    assert_close(np.load(path), reference("trace", X, X), 1e-11)


def test_pntk_definition():
    """pNTK = eNTK of sum_o f_o / sqrt(O) = (1/O) sum_{o,o'} Theta_{o o'}."""
    full = reference("full", X, Y)
    want = full.sum(axis=(2, 3)) / full.shape[-1]
    assert_close(empirical_ntk(F, PM, X, Y, mode="pntk", block_size=5), want, 1e-11)


def test_per_layer_sums_to_total_and_params_filter():
    parts = empirical_ntk(F, PM, X, per_layer=True)
    assert sorted(parts) == ["b1", "b2", "w1", "w2"]
    assert_close(sum(parts.values()), reference("trace", X, X), 1e-11)
    last = empirical_ntk(F, PM, X, params_filter=lambda path: path.endswith("2"))
    assert_close(last, parts["w2"] + parts["b2"], 1e-11)
    # the last-layer-only kernel of a linear readout is h h^T + bias term, by hand:
    h = jnp.tanh(X @ (1.5 / jnp.sqrt(5.0) * PM["w1"]) + PM["b1"])
    assert_close(parts["w2"], h @ h.T, 1e-11)


def test_projected_ntk_is_unbiased_and_converges():
    exact = reference("trace", X, Y)
    errs = []
    for k in [20, 2000]:
        est = projected_ntk(jax.random.key(0), F, PM, X, Y, num_projections=k)
        errs.append(np.linalg.norm(est - exact) / np.linalg.norm(exact))
    assert errs[1] < errs[0] and errs[1] < 0.08
    full = projected_ntk(jax.random.key(1), F, PM, X, num_projections=3, mode="full")
    assert full.shape == (11, 11, 3, 3)


def _nnx_mlp():
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(5, 16, rngs=rngs, param_dtype=jnp.float64)
            self.l2 = nnx.Linear(16, 3, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    return MLP(nnx.Rngs(0))


def test_nnx_mlp_matches_pure_function():
    from flax import nnx

    model = _nnx_mlp()
    f, p = from_nnx(model)
    pure = {"w1": model.l1.kernel[...], "b1": model.l1.bias[...],
            "w2": model.l2.kernel[...], "b2": model.l2.bias[...]}

    def g(q, x):
        return jax.nn.relu(x @ q["w1"] + q["b1"]) @ q["w2"] + q["b2"]

    for mode in ["trace", "full"]:
        assert_close(empirical_ntk(f, p, X, mode=mode), empirical_ntk(g, pure, X, mode=mode), 1e-11)
    # nnx filter: last layer only
    f2, p2 = from_nnx(model, nnx.All(nnx.Param, nnx.PathContains("l2")))
    h = jax.nn.relu(X @ pure["w1"] + pure["b1"])
    assert_close(empirical_ntk(f2, p2, X), h @ h.T + 1.0, 1e-11)


def test_nnx_cnn_matches_pure_function():
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.c = nnx.Conv(2, 4, (3, 3), rngs=rngs, param_dtype=jnp.float64)
            self.d = nnx.Linear(6 * 6 * 4, 2, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            y = jax.nn.relu(self.c(x))
            return self.d(y.reshape(y.shape[0], -1))

    model = CNN(nnx.Rngs(1))
    f, p = from_nnx(model)
    pure = {"k": model.c.kernel[...], "kb": model.c.bias[...], "w": model.d.kernel[...],
            "b": model.d.bias[...]}

    def g(q, x):
        y = jax.lax.conv_general_dilated(x, q["k"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = jax.nn.relu(y + q["kb"])
        return y.reshape(y.shape[0], -1) @ q["w"] + q["b"]

    x = inputs("cnn", 4)
    assert_close(empirical_ntk(f, p, x, mode="full"), empirical_ntk(g, pure, x, mode="full"), 1e-11)


def test_linen():
    import flax.linen as nn

    mlp = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(2)])
    variables = mlp.init(jax.random.key(0), X[:1])
    f, p = from_linen(mlp, variables)
    q = variables["params"]

    def g(q, x):
        h = jnp.tanh(x @ q["layers_0"]["kernel"] + q["layers_0"]["bias"])
        return h @ q["layers_2"]["kernel"] + q["layers_2"]["bias"]

    assert_close(empirical_ntk(f, p, X), empirical_ntk(g, q, X), 1e-11)


BAD = [
    (lambda: empirical_ntk(F, PM, X, mode="nngp"), ValueError, "kjax.ntk.empirical_ntk: `mode` must be one of ('full', 'trace', 'diagonal', 'pntk')"),
    (lambda: empirical_ntk(F, PM, X, jnp.ones((3, 4))), ValueError, "kjax.ntk.empirical_ntk: `x2` must have the per-example shape of `x1`"),
    (lambda: empirical_ntk(F, PM, X, out=np.zeros((11, 10))), ValueError, "`out` must have shape (11, 11)"),
    (lambda: empirical_ntk(F, PM, X, out=np.zeros((11, 11), np.float32)), ValueError, "`out` must have dtype float64"),
    (lambda: empirical_ntk(F, PM, X, per_layer=True, out=np.zeros((11, 11))), ValueError, "`per_layer` must be False when `out` is given"),
    (lambda: empirical_ntk(F, PM, X, params_filter=lambda p: False), ValueError, "`params_filter` must select at least one parameter"),
    (lambda: projected_ntk(jax.random.key(0), F, PM, X, num_projections=0), ValueError, "`num_projections` must be >= 1"),
    (lambda: from_nnx(object()), TypeError, "kjax.ntk.from_nnx: `model` must be a flax.nnx.Module"),
    (lambda: from_linen(None, {"batch_stats": {}}), ValueError, "`variables` must contain the collection 'params'"),
]


@pytest.mark.parametrize("call,exc,msg", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_input(call, exc, msg):
    with pytest.raises(exc) as info:
        call()
    assert msg in str(info.value)

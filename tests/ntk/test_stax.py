"""kjax.ntk.stax against neural-tangents' stored outputs, closed forms, and its error messages."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src.errors import KjaxError
from kjax.kernels import arccos
from kjax.ntk import stax
from tests.conformance import assert_close, check_op
from tests.ntk.stax_archs import architectures

DATA = os.path.join(os.path.dirname(__file__), "data", "nt_stax_reference.npz")
REF = np.load(DATA)
ARCHS = architectures(stax)
# NT computes the same formulas in another order; the diagonal of a kernel passes through a
# sqrt of a rounding-level difference (an FMA can leave 1e-16 where 0 is exact), so agreement
# is ~1e-9, inside the 1e-6 asked for.
RTOL = 1e-7


@pytest.mark.parametrize("name", list(ARCHS))
def test_kernel_matches_neural_tangents(name):
    _, _, kernel_fn = ARCHS[name][0]
    x1, x2 = REF[f"{name}/x1"], REF[f"{name}/x2"]
    k = kernel_fn(x1, x2)
    assert isinstance(k, stax.Kernel)
    for field in ("nngp", "ntk", "cov1", "cov2"):
        assert_close(getattr(k, field), REF[f"{name}/{field}"], RTOL, f"{name} {field}")
    k11 = kernel_fn(x1, None, ("nngp", "ntk"))
    assert_close(k11.nngp, REF[f"{name}/nngp11"], RTOL, f"{name} nngp(x1, None)")
    assert_close(k11.ntk, REF[f"{name}/ntk11"], RTOL, f"{name} ntk(x1, None)")


@pytest.mark.parametrize("name", list(ARCHS))
def test_init_and_apply_match_neural_tangents(name):
    init_fn, apply_fn, _ = ARCHS[name][0]
    x1 = REF[f"{name}/x1"]
    shapes = []

    def init(key):  # abstract evaluation: the parameter tree without running the initialiser
        out_shape, params = init_fn(key, x1.shape)
        shapes.append(out_shape)
        return params

    params = jax.eval_shape(init, jax.random.key(0))
    out_shape = shapes[0]
    leaves, treedef = jax.tree.flatten(params)
    nt_leaves = [REF[f"{name}/params/{j}"] for j in range(len(leaves))]
    assert not any(k.startswith(f"{name}/params/{len(leaves)}") for k in REF.files), "leaf count"
    assert [leaf.shape for leaf in leaves] == [leaf.shape for leaf in nt_leaves]
    nt_params = jax.tree.unflatten(treedef, [jnp.asarray(leaf, jnp.float64) for leaf in nt_leaves])
    y = jax.jit(apply_fn)(nt_params, jnp.asarray(x1))
    assert y.shape == tuple(out_shape) == REF[f"{name}/apply"].shape
    assert_close(y, REF[f"{name}/apply"], 1e-12, f"{name} apply_fn")


def test_relu_layer_is_the_arccos_kernel():
    """One ReLU layer: NNGP = k_1 / (2d), NTK of Dense-Relu-Dense = k_1/(2d) + (x.y/d) k_0 / 2."""
    x1 = np.random.default_rng(1).standard_normal((6, 5))
    x2 = np.random.default_rng(2).standard_normal((4, 5))
    d = x1.shape[1]
    _, _, kernel_fn = stax.serial(stax.Dense(10), stax.Relu())
    assert_close(kernel_fn(x1, x2, "nngp"), arccos(x1, x2, order=1) / (2 * d), 1e-12, "nngp")
    _, _, kernel_fn = stax.serial(stax.Dense(10), stax.Relu(), stax.Dense(1))
    ntk = arccos(x1, x2, order=1) / (2 * d) + (x1 @ x2.T / d) * arccos(x1, x2, order=0) / 2
    assert_close(kernel_fn(x1, x2, "ntk"), ntk, 1e-12, "ntk")


def test_get_returns_what_neural_tangents_returns():
    _, _, kernel_fn = ARCHS["mlp_relu"][0]
    x1, x2 = REF["mlp_relu/x1"], REF["mlp_relu/x2"]
    out = kernel_fn(x1, x2, ("ntk", "nngp"))
    assert type(out).__name__ == "AnalyticKernel" and out._fields == ("ntk", "nngp")
    np.testing.assert_array_equal(kernel_fn(x1, x2, "ntk"), out.ntk)
    np.testing.assert_array_equal(kernel_fn(x1, x2, "NNGP"), out.nngp)
    assert kernel_fn(x1, None).cov2 is None
    assert kernel_fn(x1, x2, ("cov1",)).cov1.shape == (x1.shape[0],)


def test_conformance_jit_vmap_grad_shard_map(mesh):
    _, _, kernel_fn = ARCHS["mlp_relu"][0]
    x1, x2 = jnp.asarray(REF["mlp_relu/x1"]), jnp.asarray(REF["mlp_relu/x2"])

    def f(a, b):
        return kernel_fn(a, b, ("nngp", "ntk"))

    check_op(f, x1, x2, grad_argnums=(0,), vmap_argnums=(0,), mesh=mesh)


def test_dtype_follows_input():
    _, _, kernel_fn = ARCHS["cnn_flatten"][0]
    x = jnp.asarray(REF["cnn_flatten/x1"], jnp.float32)
    out = kernel_fn(x, None, "ntk")
    assert out.dtype == jnp.float32
    assert_close(out, REF["cnn_flatten/ntk11"], 1e-4, "float32")


# ------------------------------------------------------------------------------------------
# bad input: each error names the function and the argument


def _raises(match, f, *a, **kw):
    with pytest.raises((KjaxError, TypeError), match=match):
        f(*a, **kw)


def test_conv_wrong_rank():
    _, _, kernel_fn = stax.serial(stax.Conv(4, (3, 3)), stax.Relu())
    _raises(r"kjax\.ntk\.stax\.Conv kernel_fn: `x1` must have rank 4 \[n, H, W, C\].*got shape \(3, 5\)",
            kernel_fn, np.ones((3, 5)))
    _, apply_fn, _ = stax.Conv(4, (3,))
    _raises(r"Conv apply_fn: `inputs` must have rank 3", apply_fn, (jnp.ones((3, 4, 4)), None),
            jnp.ones((2, 5, 5, 4)))


def test_incompatible_layer_shapes():
    _, _, kernel_fn = stax.serial(stax.Conv(4, (2, 2)), stax.Flatten(), stax.Conv(4, (2, 2)))
    _raises(r"Conv kernel_fn: `x1` must have rank 4", kernel_fn, np.ones((2, 4, 4, 3)))
    _, _, kernel_fn = stax.serial(stax.FanOut(2), stax.parallel(stax.Conv(4, (2, 2)), stax.Identity()),
                                  stax.FanInSum())
    _raises(r"FanInSum: `branches` must have equal shapes", kernel_fn, np.ones((2, 4, 4, 3)))
    _, apply_fn, _ = stax.Dense(3)
    _raises(r"Dense apply_fn: `inputs` must have 4 channels", apply_fn,
            (jnp.ones((4, 3)), None), jnp.ones((2, 5)))
    _, _, kernel_fn = stax.Dense(3)
    _raises(r"`x2` must have the same non-batch shape", kernel_fn, np.ones((2, 5)), np.ones((2, 4)))
    _, _, kernel_fn = stax.serial(stax.Dense(3), stax.FanOut(2), stax.Relu())
    _raises(r"Relu.*must be a single branch", kernel_fn, np.ones((2, 5)))


def test_unknown_get():
    _, _, kernel_fn = stax.Dense(3)
    _raises(r"kernel_fn: `get` must be None, one of \('nngp', 'ntk', 'cov1', 'cov2', .*'ntks'",
            kernel_fn, np.ones((2, 3)), None, "ntks")
    _raises(r"`get` must be None", kernel_fn, np.ones((2, 3)), None, ())


def test_negative_std_and_bad_options():
    _raises(r"kjax\.ntk\.stax\.Dense: `W_std` must be >= 0; got -1\.0", stax.Dense, 3, W_std=-1.0)
    _raises(r"kjax\.ntk\.stax\.Conv: `b_std` must be >= 0; got -0\.1", stax.Conv, 3, (2,), b_std=-0.1)
    _raises(r"Dense: `parameterization` must be one of \('ntk', 'standard'\)", stax.Dense, 3,
            parameterization="mup")
    _raises(r"Conv: `padding` must be one of", stax.Conv, 3, (2,), padding="FULL")
    _raises(r"FanInConcat: `axis` must be an int", stax.FanInConcat, 1.0)


def test_nonlinearity_needs_gaussian_input():
    _, _, kernel_fn = stax.Relu()
    _raises(r"kjax\.ntk\.stax\.Relu: the input of a nonlinearity must be Gaussian", kernel_fn,
            np.ones((2, 3)))
    _, _, kernel_fn = stax.serial(stax.Dense(3), stax.LayerNorm(axis=0))
    _raises(r"LayerNorm kernel_fn: `axis` must contain the channel axis", kernel_fn, np.ones((2, 3)))


@pytest.mark.parametrize("layer,arg", [
    (lambda: stax.Conv(4, (5, 2)), r"Conv kernel_fn: `filter_shape` must fit in the input's "
     r"spatial shape \(4, 4\) with padding 'VALID'.*got \(5, 2\)"),
    (lambda: stax.AvgPool((2, 5), strides=(2, 2)), r"AvgPool kernel_fn: `window_shape` must fit "
     r"in the input's spatial shape \(4, 4\) with padding 'VALID'.*got \(2, 5\)"),
])
def test_window_larger_than_input(layer, arg):
    """Regression: a VALID window larger than its input failed inside _kernel.py (lax slicing) or
    returned an empty-spatial kernel; neural-tangents raises when a spatial size drops below 1."""
    _, _, kernel_fn = stax.serial(stax.Conv(3, (1, 1)), layer(), stax.Relu(), stax.Flatten(),
                                  stax.Dense(1))
    _raises(arg, kernel_fn, np.ones((2, 4, 4, 1)))
    init_fn = stax.serial(stax.Conv(3, (1, 1)), layer())[0]
    _raises(arg.replace("kernel_fn", "init_fn"), init_fn, jax.random.key(0), (2, 4, 4, 1))
    # SAME padding keeps the size: a window larger than the input is fine there
    _, _, kernel_fn = stax.serial(stax.Conv(3, (5, 5), padding="SAME"), stax.Relu(),
                                  stax.AvgPool((5, 5), padding="SAME"), stax.Flatten())
    assert np.all(np.isfinite(kernel_fn(np.ones((2, 3, 3, 1)), None, "ntk")))

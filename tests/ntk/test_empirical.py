"""empirical_ntk_fn: every implementation against the brute-force Jacobian product in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax.ntk import choose_implementation, empirical_kernel_fn, empirical_nngp_fn, empirical_ntk_fn
from kjax.ntk._axes import canonical_axes
from tests.conformance import assert_close
from tests.ntk.models import MODELS, inputs, params

P = params()


def brute_force_ntk(f, params, x1, x2, trace, diag):
    """J1 J2^T from the Jacobian with respect to the raveled parameters (forward mode)."""
    from jax.flatten_util import ravel_pytree

    from kjax.ntk._axes import trace_and_diagonal

    flat, unravel = ravel_pytree(params)
    j1 = jax.jacfwd(lambda q: f(unravel(q), x1))(flat)
    j2 = jax.jacfwd(lambda q: f(unravel(q), x2))(flat)
    full = jnp.tensordot(j1, j2, axes=((j1.ndim - 1,), (j2.ndim - 1,)))
    return trace_and_diagonal(full, trace, diag)
AXES = [((-1,), ()), ((), ()), ((), (-1,)), ((), (0,)), ((-1, 0), ())]
IMPLS = ["jacobian_contraction", "ntk_vector_products", "structured", None]


CASES = [  # (model, axes, vmap_axes): every axis setting on the MLP, the rest spread out
    *[("mlp", a, v) for a in AXES for v in (None, 0)],
    ("cnn", AXES[0], 0), ("cnn", AXES[1], None), ("cnn", AXES[2], 0), ("cnn", AXES[3], 0),
    ("shared", AXES[0], 0), ("shared", AXES[1], None),
]


@pytest.mark.parametrize("name,axes,vmap_axes", CASES)
def test_all_implementations_equal_brute_force(name, axes, vmap_axes):
    f, p = MODELS[name], P[name]
    x1 = inputs(name, 4, key=1)
    x2 = x1 if 0 in axes[0] + axes[1] else inputs(name, 3, key=2)
    t, d = canonical_axes("test", *axes, 2)
    ref = brute_force_ntk(f, p, x1, x2, t, d)
    for impl in IMPLS:
        got = jax.jit(empirical_ntk_fn(f, *axes, vmap_axes, impl))(x1, x2, p)
        assert got.shape == ref.shape, (impl, got.shape, ref.shape)
        assert_close(got, ref, 1e-10, f"{name} {impl}")


def test_x2_none_and_nt_integer_implementations():
    f, p, x = MODELS["mlp"], P["mlp"], inputs("mlp", 5)
    ref = empirical_ntk_fn(f, vmap_axes=0)(x, x, p)
    for impl in [0, 1, 2, 3]:
        assert_close(empirical_ntk_fn(f, vmap_axes=0, implementation=impl)(x, None, p), ref, 1e-12)


def test_jit_and_grad_through_the_kernel():
    f, p, x = MODELS["mlp"], P["mlp"], inputs("mlp", 3)
    ntk = empirical_ntk_fn(f, vmap_axes=0, implementation="structured")
    assert_close(jax.jit(ntk)(x, None, p), ntk(x, None, p), 1e-12)
    g = jax.grad(lambda xx: jnp.sum(ntk(xx, None, p)))(x)
    gj = jax.grad(lambda xx: jnp.sum(empirical_ntk_fn(f, vmap_axes=0, implementation=1)(xx, None, p)))(x)
    assert_close(g, gj, 1e-10)


def test_pytree_inputs_and_kwargs_pairs():
    def f(p, x, scale=1.0):
        return (x["a"] @ p["w"] + jnp.sin(x["b"]) @ p["v"]) * scale

    p = {"w": jnp.ones((3, 2)), "v": 0.5 * jnp.ones((4, 2))}
    x = {"a": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones((2, 4))}
    base = empirical_ntk_fn(f, vmap_axes=0)(x, None, p)
    scaled = empirical_ntk_fn(f, vmap_axes=0)(x, None, p, scale=(2.0, 3.0))
    assert_close(scaled, 6.0 * base, 1e-12)


def test_integer_leaves_are_held_fixed():
    def f(p, x):
        return x @ p["w"] * p["n"]

    p = {"w": jnp.ones((3, 2)), "n": jnp.asarray(2)}
    got = empirical_ntk_fn(f, vmap_axes=0)(jnp.eye(3), None, p)
    assert_close(got, 4.0 * np.eye(3), 1e-12)


def test_nngp_and_kernel_fn():
    f = lambda p, x: x @ p
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)))
    nngp = empirical_nngp_fn(f)(x, None, w)
    assert_close(nngp, (x @ w) @ (x @ w).T / 5, 1e-12)
    out = empirical_kernel_fn(f, vmap_axes=0)(x, None, ("nngp", "ntk"), w)
    assert_close(out.ntk, x @ x.T, 1e-12)  # trace over the 5 outputs of J J^T = x x^T
    with pytest.raises(ValueError, match="`get` must be None, 'ntk', 'nngp'"):
        empirical_kernel_fn(f)(x, None, "gp", w)


def test_cost_model_prefers_structured_for_wide_mlp_and_is_documented():
    f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
    p = {"w1": jnp.ones((64, 512)), "w2": jnp.ones((512, 10))}
    name, costs = choose_implementation(f, p, jnp.ones((32, 64)), trace_axes=())
    assert name == "structured"
    assert costs["structured"] < costs["jacobian_contraction"]


BAD = [
    (dict(trace_axes=(2,)), "kjax.ntk.empirical_ntk_fn: `trace_axes` must be axes of the output of rank 2"),
    (dict(trace_axes=(-1,), diagonal_axes=(1,)), "`diagonal_axes` must not overlap `trace_axes` (1,)"),
    (dict(implementation="fastest"), "`implementation` must be None, one of ('jacobian_contraction'"),
]


@pytest.mark.parametrize("kw,msg", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_arguments(kw, msg):
    f, p, x = MODELS["mlp"], P["mlp"], inputs("mlp", 2)
    with pytest.raises(ValueError) as info:
        empirical_ntk_fn(f, **kw)(x, None, p)
    assert msg in str(info.value)


def test_a_repeated_axis_counts_once_as_in_neural_tangents():
    # NT's canonicalize_axis drops repeats (NT's predict_test.testPredictND passes trace_axes=(0, 0, -3));
    # kjax raised until 2026-12-02
    f, p, x = MODELS["mlp"], P["mlp"], inputs("mlp", 2)
    assert_close(empirical_ntk_fn(f, trace_axes=(1, -1))(x, None, p),
                 empirical_ntk_fn(f, trace_axes=(-1,))(x, None, p), 1e-15)


def test_bad_inputs():
    f, p, x = MODELS["mlp"], P["mlp"], inputs("mlp", 2)
    with pytest.raises(ValueError, match="`x2` must have the per-example shape of `x1`"):
        empirical_ntk_fn(f)(x, jnp.ones((2, 4)), p)
    with pytest.raises(ValueError, match="`params` must contain at least one floating-point leaf"):
        empirical_ntk_fn(f)(x, None, {"n": jnp.asarray(3)})
    with pytest.raises(TypeError, match="`f` must be a callable"):
        empirical_ntk_fn("mlp")(x, None, p)


@pytest.mark.parametrize("vmap_axes", [None, 0])
def test_batch_axis_in_trace_axes_follows_neural_tangents(vmap_axes):
    """neural-tangents 0.6.5 treats the batch axis like any other output axis: trace_axes=(0,)
    averages Theta(x1[i], x2[i]) over i (x1 and x2 of equal size) and keeps [O, O]."""
    f, p = MODELS["mlp"], P["mlp"]
    x1, x2 = inputs("mlp", 4, key=1), inputs("mlp", 4, key=2)
    full = np.asarray(brute_force_ntk(f, p, x1, x2, (), ()))  # [N1, N2, O, O]
    want = np.mean([full[i, i] for i in range(4)], axis=0)
    for impl in IMPLS[:3]:
        got = empirical_ntk_fn(f, (0,), (), vmap_axes, impl)(x1, x2, p)
        assert got.shape == (3, 3)
        assert_close(got, want, 1e-10, f"{impl}")
    assert_close(empirical_nngp_fn(f, (0,))(x1, x2, p), np.mean(
        np.einsum("no,np->nop", f(p, x1), f(p, x2)), axis=0), 1e-10)


@pytest.mark.parametrize("kernel", ["ntk", "nngp"])
def test_batch_axis_in_trace_axes_needs_equal_batches(kernel):
    f, p = MODELS["mlp"], P["mlp"]
    fn = empirical_ntk_fn(f, (0,), ()) if kernel == "ntk" else empirical_nngp_fn(f, (0,))
    with pytest.raises(ValueError, match=rf"kjax\.ntk\.empirical_{kernel}_fn: `x2` must have as "
                                         r"many examples as `x1` \(4\) when `trace_axes` .*got 3"):
        fn(inputs("mlp", 4), inputs("mlp", 3), p)
    with pytest.raises(ValueError, match=r"`x2` must have as many examples as `x1` \(4\) when "
                                         r"`diagonal_axes`"):
        empirical_ntk_fn(f, (), (0,))(inputs("mlp", 4), inputs("mlp", 3), p)

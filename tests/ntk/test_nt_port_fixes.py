"""The kjax-side fixes found by running neural-tangents' own suite under kjax (issue #14).

Oracles: NT 0.6.5's stored outputs (tests/nt_compat/peer_values/nt_port_fixes_reference.py ->
nt_port_fixes.npz) for ``FanInConcat`` along the batch axis and for nested parallel inputs; exact
identities for the rest (``x2=(None, None)`` is ``x2=None``; a batched kernel equals the unbatched
one, ``x1_is_x2`` included). Convolutions that change the layout (NT's stored outputs, and the
same network in the default layout on transposed inputs); the empirical kernel with NT's general
``vmap_axes`` and inputs without a common batch axis (brute-force Jacobians contracted with
``numpy.einsum``). float64 throughout, tiny shapes.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src.errors import KjaxError
from kjax.ntk import batch, empirical_kernel_fn, empirical_ntk_fn, monte_carlo_kernel_fn, stax
from tests.nt_compat.peer_values.nt_port_fixes_reference import (
    concat_inputs,
    concat_net,
    nested_inputs,
    nested_net,
    reorder_inputs,
    reorder_net,
)

REF = np.load(os.path.join(os.path.dirname(__file__), "..", "nt_compat", "peer_values",
                           "nt_port_fixes.npz"))


@pytest.fixture(scope="module")
def concat_kernel_fn():
    return concat_net(stax)[2]


@pytest.mark.parametrize("case", ["none", "mask"])  # the npz also has "x2", "mask_none"
def test_fan_in_concat_batch_axis_matches_neural_tangents(concat_kernel_fn, case):
    x1, x2, mc = concat_inputs()[case]
    k = concat_kernel_fn(jnp.asarray(x1), None if x2 is None else jnp.asarray(x2), ("nngp", "ntk"),
                         mask_constant=mc)
    for name in ("nngp", "ntk"):
        want = REF[f"concat/{case}/{name}"]
        assert np.asarray(getattr(k, name)).shape == want.shape
        # NT's arccos on the diagonal (x2=None) differs from kjax's at ~1e-8
        np.testing.assert_allclose(getattr(k, name), want, rtol=1e-7, atol=1e-7)


def test_fan_in_concat_batch_axis_blocks_and_errors():
    x = jnp.asarray(np.cos(np.arange(12.0).reshape(3, 4)))
    one = stax.serial(stax.Dense(4, 1.3, 0.2), stax.Relu(), stax.Dense(4, 0.7, 0.1))
    two = stax.serial(stax.Dense(4, 0.8), stax.Erf(), stax.Dense(4, 1.1, 0.3))
    init_fn, apply_fn, kernel_fn = stax.serial(stax.FanOut(2), stax.parallel(one, two),
                                               stax.FanInConcat(0))
    k = kernel_fn(x, x[:2], ("nngp", "ntk"))
    k1, k2 = (f[2](x, x[:2], ("nngp", "ntk")) for f in (one, two))
    for name in ("nngp", "ntk"):
        got = np.asarray(getattr(k, name))
        assert got.shape == (6, 4)
        # branch b's examples against branch b's: that branch's kernel; across branches: zero
        np.testing.assert_allclose(got[:3, :2], getattr(k1, name), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got[3:, 2:], getattr(k2, name), rtol=1e-12, atol=1e-12)
        assert not got[:3, 2:].any() and not got[3:, :2].any()
    assert apply_fn(init_fn(jax.random.key(0), (3, 4))[1], x).shape == (6, 4)
    relu = stax.serial(stax.Dense(4), stax.Relu())
    _, _, relu_fn = stax.serial(stax.FanOut(2), stax.parallel(relu, relu), stax.FanInConcat(0))
    with pytest.raises(KjaxError, match="FanInConcat kernel_fn: `axis` must not be the batch axis "
                                        "0 unless every branch is Gaussian"):
        relu_fn(x, None)


def test_x2_all_none_is_x2_none():
    """NT's tests pass ``x2=(None, None)`` for parallel inputs with x2 = x1 (``utils.all_none``)."""
    x1 = (jnp.asarray(np.cos(np.arange(8.0).reshape(4, 2))),
          jnp.asarray(np.sin(np.arange(12.0).reshape(4, 3))))
    init_fn, apply_fn, kernel_fn = stax.serial(stax.parallel(stax.Dense(8), stax.Dense(8)),
                                               stax.FanInSum(), stax.Dense(1))
    want = kernel_fn(x1, None, "ntk")
    np.testing.assert_array_equal(kernel_fn(x1, (None, None), "ntk"), want)
    params = init_fn(jax.random.key(0), ((4, 2), (4, 3)))[1]
    emp = empirical_kernel_fn(apply_fn, vmap_axes=((0, 0), 0, {}), implementation=1)
    np.testing.assert_array_equal(emp(x1, (None, None), "ntk", params), emp(x1, None, "ntk", params))


def test_monte_carlo_pytree_outputs_and_out_axes():
    """NT's ``vmap_axes=(in_axes, out_axes, {})`` with a pytree ``out_axes`` for a pytree output
    (one kernel per output leaf), and ``x2=(None, None)``: the same kernels as without vmap."""
    x1 = (jnp.asarray(np.cos(np.arange(8.0).reshape(4, 2))),
          jnp.asarray(np.sin(np.arange(12.0).reshape(4, 3))))
    init_fn, apply_fn, _ = stax.parallel(stax.Dense(3), stax.Dense(2))
    key = jax.random.key(1)
    got = monte_carlo_kernel_fn(init_fn, apply_fn, key, 1, vmap_axes=((0, 0), [0, 0], {}))(
        x1, (None, None), "ntk")
    want = monte_carlo_kernel_fn(init_fn, apply_fn, key, 1, vmap_axes=None)(x1, None, "ntk")
    assert isinstance(got, list) and len(got) == 2
    for g, w in zip(got, want, strict=True):
        assert g.shape == (4, 4)
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


def test_empirical_vmap_axes_one_value_for_pytree_inputs_and_outputs():
    """NT's ``vmap_axes=(0, 0)`` (not a triple): ``in_axes = out_axes = (0, 0)`` for a pair input
    and a pair output (NT's empirical_test.test_parallel_in_out)."""
    x1 = (jnp.asarray(np.cos(np.arange(8.0).reshape(4, 2))),
          jnp.asarray(np.sin(np.arange(12.0).reshape(4, 3))))
    init_fn, apply_fn, _ = stax.parallel(stax.Dense(3), stax.Dense(2))
    params = init_fn(jax.random.key(0), ((4, 2), (4, 3)))[1]
    got = empirical_ntk_fn(apply_fn, vmap_axes=(0, 0), implementation=1)(x1, None, params)
    assert len(got) == 2
    for g, x in zip(got, x1, strict=True):  # Dense without bias, NTK parameterization: x x'^T / d
        np.testing.assert_allclose(g, x @ x.T / x.shape[1], rtol=1e-12, atol=1e-12)


def test_batch_x1_is_x2_is_that_of_the_whole_inputs():
    """NT's nt.batch reports the first block's x1_is_x2, True when x2's first rows equal x1's."""
    x = jnp.asarray(np.cos(np.arange(8.0).reshape(4, 2)))
    batched = batch(stax.Dense(1)[2], 2)
    # the first rows of x2 equal x1's (jax >= 0.5's random.normal(key, (2, ...)) is a prefix of
    # random.normal(key, (8, ...)): NT's batching_test.testAnalyticKernelComposeAutomatic)
    assert not bool(batched(x, x[:2]).x1_is_x2)


@pytest.mark.parametrize("case", ["x2", "none"])
def test_nested_parallel_inputs_match_neural_tangents(case):
    x1, x2 = nested_inputs()[case]
    readin, readout = nested_net(stax, 16)[2], nested_net(stax, 1)[2]
    out = readout(readin(x1, x2), get=("nngp", "ntk"))
    got = jax.tree.leaves(out)
    assert len(got) == 6
    for i, a in enumerate(got):
        np.testing.assert_allclose(a, REF[f"nested/{case}/{i}"], rtol=1e-12, atol=1e-12)
    # nested Kernels through nt.batch are passed to kernel_fn (the blocking is on inputs)
    passed = batch(readout, 2)(readin(x1, x2), get=("nngp", "ntk"))
    for a, b in zip(got, jax.tree.leaves(passed), strict=True):
        np.testing.assert_array_equal(b, a)


def test_nested_parallel_inputs_errors():
    x1, x2 = nested_inputs()["x2"]
    kernel_fn = nested_net(stax, 1)[2]
    with pytest.raises(KjaxError, match=r"kernel_fn: `x2\[1\]` must be None or nested like `x1`"):
        kernel_fn(x1, (x2[0], x2[1][0]))
    with pytest.raises(KjaxError, match=r"`x1\[1\]` must be a non-empty list"):
        kernel_fn((x1[0], ()), None)


def test_index_refusals_are_not_implemented_errors():
    """NT's IndexTest expects NotImplementedError for an int on the batch axis or any index of the
    channel axis; kjax's errors are both KjaxError and NotImplementedError."""
    x = np.ones((2, 5, 3))
    for idx, match in ((stax.Slice[-1], "`idx` must index the batch axis 0 with a slice"),
                       (stax.Slice[..., 1], "`idx` must not index the channel axis 2")):
        kernel_fn = stax.serial(stax.Conv(2, (2,)), stax.Index(idx))[2]
        for cls in (KjaxError, NotImplementedError):
            with pytest.raises(cls, match=match):
                kernel_fn(x)


def test_relu_kernel_gradient_at_zero_inputs_is_zero():
    """NT's issue #123 (elementwise_test.AutodiffTest): at zero inputs the ReLU kernel's angle is
    pi/2 by convention; its reverse-mode gradient was NaN (arctan2 at (0, 0)), NT's is zero."""
    _, _, kernel_fn = stax.serial(stax.Dense(2, 1.0, 0.0), stax.ABRelu(-0.2, 0.4), stax.Dense(1))
    x = jnp.zeros((1, 3))
    # reverse mode (the ntk's computation includes the nngp's)
    grad = jax.grad(lambda a: kernel_fn(a, a, "ntk")[0, 0])(x)
    np.testing.assert_array_equal(grad, np.zeros_like(x))


def test_example_keyword_pairs_through_batch_predict_and_empirical():
    """NT's predict_test.PredictKwargsTest: ``pattern=(pattern1, pattern2)`` (per-example arrays)
    is split into blocks by ``batch``, and ``gradient_descent_mse_ensemble`` calls the test-train
    kernel with ``(test pattern, train pattern)``; with ``x2=None`` the empirical kernel uses x1's
    keywords (``rng=(key, None)`` is ``rng=key``)."""
    from kjax.ntk import predict

    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(size=(4, 3, 2)), rng.normal(size=(2, 3, 2))
    p_tr, p_te = rng.normal(size=(4, 3, 3)), rng.normal(size=(2, 3, 3))
    y = rng.normal(size=(4, 1))
    init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(4), stax.Relu(), stax.Aggregate(),
                                               stax.GlobalAvgPool(), stax.Dense(1))
    k_td = kernel_fn(x_te, x_tr, ("nngp", "ntk"), pattern=(p_te, p_tr))
    kb = batch(kernel_fn, 2)(x_te, x_tr, ("nngp", "ntk"), pattern=(p_te, p_tr))
    np.testing.assert_allclose(kb.ntk, k_td.ntk, rtol=1e-12, atol=1e-12)
    k_dd = kernel_fn(x_tr, None, ("nngp", "ntk"), pattern=(p_tr, p_tr))
    want = predict.gp_inference(k_dd, y, diag_reg=1e-4)("ntk", k_td)
    got = predict.gradient_descent_mse_ensemble(kernel_fn, x_tr, y, diag_reg=1e-4,
                                                pattern=(p_tr, p_tr))(
        None, x_te, "ntk", pattern=(p_te, p_te))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    _, apply_fn, _ = stax.serial(stax.Dense(3), stax.Dropout(0.5))
    params = stax.serial(stax.Dense(3), stax.Dropout(0.5))[0](jax.random.key(0), (4, 2))[1]
    emp = empirical_ntk_fn(apply_fn, implementation=1)
    x = jnp.asarray(x_tr[:, 0])
    key = jax.random.key(3)
    np.testing.assert_array_equal(emp(x, None, params, rng=(key, None)), emp(x, None, params, rng=key))


@pytest.mark.parametrize("case", ["x2", "none", "mask"])
def test_conv_output_layout_reorders_kernel_axes_as_neural_tangents(case):
    """``Conv(dimension_numbers=(lhs, rhs, out))`` with ``out`` reordering the spatial axes (NT's
    empirical_test.test_vmap_axes): NT's stored kernels, and the default-layout network on
    transposed inputs ``[N, H, W, C]`` with its kernels' spatial pairs permuted (exact)."""
    x1, x2, mc = reorder_inputs()[case]
    second = ("NHWC", "HWIO", "NHWC") if mc is not None else ("NHWC", "HWIO", "NWCH")
    init_fn, apply_fn, kernel_fn = reorder_net(stax, second)
    k = kernel_fn(x1, x2, ("nngp", "ntk"), mask_constant=mc)
    for name in ("nngp", "ntk"):
        np.testing.assert_allclose(getattr(k, name), REF[f"reorder/{case}/{name}"], rtol=1e-9,
                                   atol=1e-12, err_msg=name)
    # oracle: default layouts on [N, H, W, C] inputs (first filter (2, 3) is H x W there too)
    plain = stax.serial(stax.Conv(3, (2, 3), padding="SAME", W_std=1.3, b_std=0.1), stax.Relu(),
                        stax.Conv(2, (2, 2), padding="VALID", W_std=0.9, b_std=0.2), stax.Erf())[2]
    t = lambda x: None if x is None else np.transpose(x, (0, 3, 2, 1))
    want = plain(t(x1), t(x2), ("nngp", "ntk"), mask_constant=mc)
    for name in ("nngp", "ntk"):  # [N, N', H, H', W, W'] -> the output's order W, H
        w = getattr(want, name)
        w = w if mc is not None else np.transpose(w, (0, 1, 4, 5, 2, 3))
        np.testing.assert_allclose(getattr(k, name), w, rtol=1e-12, atol=1e-14, err_msg=name)
    # the finite network: outputs in the out layouts; its init shape is the output's
    out_shape, params = init_fn(jax.random.key(0), x1.shape)
    y = apply_fn(params, x1)
    assert y.shape == out_shape == ((3, 4, 2, 3) if mc is None else (3, 3, 4, 2))


def _brute_ntk(f, params, x1, x2, trace_axes):
    """NT's definition by full Jacobians: sum_p J1[o1.., p] J2[o2.., p], zipped, traced axes
    averaged."""
    def jac(x):
        j = jax.jacobian(lambda p: f(p, x))(params)
        return np.concatenate([np.asarray(a).reshape(np.shape(f(params, x)) + (-1,))
                               for a in jax.tree.leaves(j)], axis=-1)

    j1, j2 = jac(x1), jac(x2)
    nd = j1.ndim - 1
    l1 = "abcdefgh"[:nd]
    l2 = "".join(c if i in trace_axes else c.upper() for i, c in enumerate(l1))
    res = "".join(c + c.upper() for i, c in enumerate(l1) if i not in trace_axes)
    size = np.prod([j1.shape[i] for i in trace_axes]) if trace_axes else 1
    return np.einsum(f"{l1}z,{l2}z->{res}", j1, j2) / size


def test_empirical_ntk_general_vmap_axes_and_batchless_inputs():
    """NT's ``vmap_axes=(in_axes, out_axes, kwargs_axes)``: batch axes anywhere in the inputs (a
    pytree prefix), the output's batch at ``out_axes``, per-example keywords; and, with
    ``vmap_axes=None``, inputs with no common leading axis. Every implementation equals NT's
    definition (brute-force Jacobians) in NT's zipped layout of the output's own axes."""
    rng = np.random.default_rng(5)
    params = {"w": rng.normal(size=(3, 4)), "v": rng.normal(size=(2, 3))}

    def f(p, x, scale):  # x = (a [n, 3], b [2, n]); scale [n]; output [2, n, 4]
        a, b = x
        h = jnp.tanh(a @ p["w"]) * scale[:, None]  # [n, 4]
        return jnp.einsum("cn,nk->cnk", jnp.sin(b * p["v"][:, :1]), h)

    x1 = (rng.normal(size=(3, 3)), rng.normal(size=(2, 3)))
    x2 = (rng.normal(size=(4, 3)), rng.normal(size=(2, 4)))
    s1, s2 = rng.normal(size=3), rng.normal(size=4)
    axes = ((0, 1), 1, {"scale": 0})
    # every implementation on the default trace; the other traces (the kernel's axis order with
    # the batch not first) on structured derivatives and the whole-batch Jacobian contraction
    for trace, impls, whole_impls in [((-1,), (1, 2, 3), (1, 3)), ((), (3,), (1,)), ((0,), (3,), (1,))]:
        tr = tuple(t % 3 for t in trace)
        want = _brute_ntk(lambda p, x: f(p, x[0], x[1]), params, (x1, s1), (x2, s2), tr)
        for impl in impls:
            got = empirical_ntk_fn(f, trace, (), axes, impl)(x1, x2, params, scale=(s1, s2))
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12, err_msg=f"{trace} {impl}")
        for impl in whole_impls:
            whole = empirical_ntk_fn(f, trace, (), None, impl)(x1, x2, params, scale=(s1, s2))
            np.testing.assert_allclose(whole, want, rtol=1e-10, atol=1e-12, err_msg=f"{trace} {impl}")
    got = empirical_kernel_fn(f, (-1,), (), axes)(x1, x2, ("ntk", "nngp"), params, scale=(s1, s2))
    assert got.ntk.shape == (2, 2, 3, 4) and got.nngp.shape == (2, 2, 3, 4)
    np.testing.assert_allclose(got.nngp, np.einsum("cnk,dmk->cdnm", f(params, x1, s1),
                                                   f(params, x2, s2)) / 4, rtol=1e-12)


def test_empirical_ntk_vmap_axes_errors():
    f = lambda p, x: x @ p
    p, x = jnp.ones((3, 2)), jnp.ones((4, 3))
    with pytest.raises(KjaxError, match=r"empirical_ntk_fn: `vmap_axes` must have in_axes that "
                                        r"match the tree of `x1`"):
        empirical_ntk_fn(f, vmap_axes=((0, 0), 0, {}))(x, None, p)
    with pytest.raises(KjaxError, match=r"`vmap_axes` must have in_axes within the rank"):
        empirical_ntk_fn(f, vmap_axes=(2, 0, {}))(x, None, p)
    with pytest.raises(KjaxError, match=r"`vmap_axes` must have an output axis of f's output"):
        empirical_ntk_fn(f, vmap_axes=(0, 2, {}))(x, None, p)
    with pytest.raises(KjaxError, match=r"`vmap_axes` must have an int output axis"):
        empirical_ntk_fn(f, vmap_axes=(0, "0", {}))(x, None, p)
    with pytest.raises(KjaxError, match=r"`vmap_axes` must have a dict"):
        empirical_ntk_fn(f, vmap_axes=(0, 0, [0]))(x, None, p)
    with pytest.raises(KjaxError, match=r"`x2` must give an output of f of rank 2 with the sizes"):
        empirical_ntk_fn(lambda p, x: jnp.tanh(x[1]) * p.sum(), vmap_axes=None)(
            (x, x), (jnp.ones((4, 3)), jnp.ones((2, 5))), jnp.ones((3, 2)))
    with pytest.raises(KjaxError, match=r"`x2` must have the tree structure of `x1`"):
        empirical_ntk_fn(f, vmap_axes=None)(x, (x,), p)


def test_custom_layer_sees_no_ntk_when_the_call_asks_for_none():
    """NT computes no NTK for ``get="nngp"``: a ``stax.layer`` kernel_fn sees ``Kernel.ntk`` None
    (NT's elementwise_test builds an RBF layer that raises on an NTK), and one with the NTK when
    asked."""
    seen = []

    @stax.layer
    def Probe():
        def kernel_fn(k, **kwargs):
            seen.append(k.ntk is None)
            return k
        return (lambda key, s: (s, ())), (lambda p, x, **kw: x), kernel_fn

    kernel_fn = stax.serial(stax.Dense(2), Probe(), stax.Relu(), stax.Dense(1))[2]
    x = np.ones((2, 3))
    for get, none in [("nngp", True), (("nngp", "cov1"), True), ("ntk", False), (None, False)]:
        seen.clear()
        kernel_fn(x, None, get)
        assert seen and all(s == none for s in seen), (get, seen)


@pytest.mark.parametrize("layer", ["ConvLocal", "ConvTranspose"])
def test_other_convolutions_reorder_output_layouts(layer):
    """``ConvLocal`` / ``ConvTranspose`` with ``out`` reordering the spatial axes: the
    default-layout layer on transposed inputs, kernels permuted (exact); ``apply_fn``'s output
    has ``init_fn``'s shape and equals the default layer's output transposed for the same
    weights (rhs transposed to the default ``HWIO``)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 2, 5, 4))  # N C W H
    make = getattr(stax, layer)
    init_r, apply_r, kernel_r = make(3, (2, 3), padding="SAME", b_std=0.1,
                                     dimension_numbers=("NCWH", "OIHW", "NHWC"))
    init_d, apply_d, kernel_d = make(3, (2, 3), padding="SAME", b_std=0.1)
    xt = np.transpose(x, (0, 3, 2, 1))  # N H W C
    k, want = kernel_r(x, None, ("nngp", "ntk")), kernel_d(xt, None, ("nngp", "ntk"))
    for name in ("nngp", "ntk"):  # both already in the output's order H, W
        np.testing.assert_allclose(getattr(k, name), getattr(want, name), rtol=1e-12, atol=1e-14)
    shape_r, (W, b) = init_r(jax.random.key(0), x.shape)
    shape_d, _ = init_d(jax.random.key(0), xt.shape)
    assert apply_r((W, b), x).shape == shape_r == shape_d
    if layer == "ConvTranspose":
        Wd = np.transpose(W, (2, 3, 1, 0))  # OIHW -> HWIO
        np.testing.assert_allclose(apply_r((W, b), x), apply_d((Wd, b), xt), rtol=1e-12)

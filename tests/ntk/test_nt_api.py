"""kjax.ntk's neural-tangents names and semantics (issue #14, part D2).

Oracles: NT 0.6.5's own outputs stored by benchmarks/peers/nt_monte_carlo_reference.py
(Monte Carlo samples from the same key, the ODE predictor, max_learning_rate), closed forms
(Taylor series, the MSE flow), and kjax's unbatched kernels for nt.batch. float64 throughout.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kjax.ntk as nt
from kjax._src.errors import KjaxError
from kjax.ntk import predict, stax

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "nt_monte_carlo_reference.npz"))


def _mc_net():
    return stax.serial(stax.Dense(16, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1))


@pytest.fixture(scope="module")
def mc_estimates():
    init_fn, apply_fn, _ = _mc_net()
    gen = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(7), (1, 3, 5))
    return list(gen(REF["mc/x1"], REF["mc/x2"], ("nngp", "ntk")))


def test_monte_carlo_same_key_same_samples_as_nt(mc_estimates):
    # same key -> the same parameters as NT (NT's split order, pre-0.5 threefry): equal to 1e-12
    for n, k in zip((1, 3, 5), mc_estimates, strict=True):
        np.testing.assert_allclose(k.nngp, REF[f"mc/{n}/nngp"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(k.ntk, REF[f"mc/{n}/ntk"], rtol=1e-12, atol=1e-12)
    assert mc_estimates[0]._fields == ("nngp", "ntk")


def test_monte_carlo_running_estimate_equals_n_sample_estimate(mc_estimates):
    init_fn, apply_fn, _ = _mc_net()
    five = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(7), 5)(REF["mc/x1"], REF["mc/x2"], "ntk")
    # NT's guarantee: bitwise equal, not just close
    assert np.array_equal(np.asarray(five), np.asarray(mc_estimates[2].ntk))
    np.testing.assert_allclose(five, REF["mc/5s/ntk"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["momentum", "plain"])
def test_gradient_descent_ode_matches_nt(kind):
    xent = lambda fx, yh: -jnp.mean(jax.nn.log_softmax(fx) * yh)
    mom = 0.9 if kind == "momentum" else None
    pf = predict.gradient_descent(xent, REF["gd/ktt"], REF["gd/y"], 0.5, mom)
    f_t, g_t = pf(REF["gd/ts"], REF["gd/fx0"], REF["gd/gx0"], REF["gd/kst"])
    np.testing.assert_allclose(f_t, REF[f"gd/{kind}/fx"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g_t, REF[f"gd/{kind}/gx"], rtol=1e-6, atol=1e-8)


def test_gradient_descent_mse_loss_equals_closed_form_and_ode_state():
    ktt, kst, y = REF["gd/ktt"], REF["gd/kst"], REF["gd/y"]
    mse = lambda fx, yh: 0.5 * jnp.mean((fx - yh) ** 2)
    pf = predict.gradient_descent(mse, ktt, y, 0.5)
    closed = predict.gradient_descent_mse(ktt, y, 0.5)(REF["gd/ts"], REF["gd/fx0"], REF["gd/gx0"], kst)
    ode = pf(REF["gd/ts"], REF["gd/fx0"], REF["gd/gx0"], kst)
    for a, b in zip(ode, closed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    state = pf(2.0, predict.ODEState(REF["gd/fx0"], REF["gd/gx0"]), None, kst)
    assert isinstance(state, predict.ODEState) and state.qx_train is None
    np.testing.assert_allclose(state.fx_train, closed[0][1], rtol=1e-6, atol=1e-8)
    with pytest.raises(KjaxError, match=r"gradient_descent predict_fn: `fx_train_or_state_0` must carry no "
                                        r"momentum"):
        pf(1.0, predict.ODEState(REF["gd/fx0"], None, REF["gd/fx0"]))


def test_max_learning_rate_matches_nt():
    lr = predict.max_learning_rate(REF["gd/ktt"], REF["gd/y"].size, 0.5)
    assert isinstance(lr, float)
    np.testing.assert_allclose(lr, REF["mlr"], rtol=1e-12)
    with pytest.raises(KjaxError, match=r"max_learning_rate: `ntk_train_train` must be a square kernel"):
        predict.max_learning_rate(np.ones((2, 3)))


# ---------------------------------------------------------------------------- predict semantics


@pytest.fixture(scope="module")
def kernels():
    _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    rng = np.random.default_rng(0)
    x, xt, y = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal((4, 2))
    return kernel_fn, x, xt, y


def test_gp_inference_ntk_covariance_without_nngp_raises(kernels):
    kernel_fn, x, xt, y = kernels
    ntk_dd, ntk_td, nngp_tt = kernel_fn(x, None, "ntk"), kernel_fn(xt, x, "ntk"), kernel_fn(xt, None, "nngp")
    pf = predict.gp_inference(ntk_dd, y, diag_reg=1e-4)
    # was a silent, 55%-off covariance (the NTK taken for the NNGP); NT raises
    with pytest.raises(KjaxError, match=r"gp_inference predict_fn: `get` must not contain 'ntk' when "
                                        r"`k_test_test` is given and `k_train_train` has no `nngp` field"):
        pf("ntk", ntk_td, nngp_tt)
    assert pf("ntk", ntk_td).shape == (2, 2)  # the mean alone needs no NNGP
    both = predict.gp_inference(kernel_fn(x, None, ("nngp", "ntk")), y, diag_reg=1e-4)
    assert both("NTK", kernel_fn(xt, x, ("nngp", "ntk")), nngp_tt).covariance.shape == (2, 2)


def test_ensemble_get_is_case_insensitive_and_float32_at_any_t(kernels):
    kernel_fn, x, xt, y = kernels
    ens = predict.gradient_descent_mse_ensemble(kernel_fn, x, y.astype(np.float32), diag_reg=1e-3)
    lower = ens(1.0, xt, "ntk")
    np.testing.assert_array_equal(ens(1.0, xt, "NTK"), lower)
    # NT's rule (issue #14): the outputs carry the kernel's dtype, here float64 (x is float64),
    # whatever the targets' dtype; the same dtype at every t
    for t in (None, jnp.inf, 1.0):
        assert ens(t, xt, "ntk").dtype == jnp.float64, t
    np.testing.assert_allclose(ens(jnp.inf, xt, "ntk"), ens(None, xt, "ntk"), rtol=1e-5, atol=1e-6)
    # (a float32 kernel giving float32 at every t: tests/ntk/test_predict.py's dtype test)
    with pytest.raises(KjaxError, match=r"predict_fn: `get` must be None, one of \('nngp', 'ntk'\)"):
        ens(1.0, xt, "ntkgp")
    with pytest.raises(KjaxError, match=r"`get` must name each kernel once"):
        ens(1.0, xt, ("ntk", "NTK"))


def test_ensemble_passes_kernel_fn_keywords(kernels):
    _, x, xt, y = kernels
    seen = []

    def kernel_fn(x1, x2, get, mask_constant=None):
        seen.append(mask_constant)
        return stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))[2](x1, x2, get)

    ens = predict.gradient_descent_mse_ensemble(kernel_fn, x, y, mask_constant=10.0)
    ens(None, xt, "nngp", mask_constant=10.0)
    assert seen and all(m == 10.0 for m in seen)
    with pytest.raises(KjaxError, match=r"predict_fn: `mask_constant` must equal its train-time value"):
        ens(None, xt, "nngp", mask_constant=3.0)


def test_gradient_descent_mse_untraced_output_axes():
    # trace_axes=(): the kernel [N, N, O, O]; with K (x) I it equals the traced flow
    ktt, kst, y = REF["gd/ktt"], REF["gd/kst"], REF["gd/y"]
    o = y.shape[1]
    full = lambda k: np.einsum("ij,ab->ijab", k, np.eye(o))
    traced = predict.gradient_descent_mse(ktt, y, 0.5)
    untraced = predict.gradient_descent_mse(full(ktt), y, 0.5, trace_axes=())
    for t in (None, REF["gd/ts"]):
        for a, b in zip(untraced(t, REF["gd/fx0"], REF["gd/gx0"], full(kst)),
                        traced(t, REF["gd/fx0"], REF["gd/gx0"], kst), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # an [N, N] kernel fits the default trace_axes=(-1,), so the error names `trace_axes` (issue #14:
    # any NT trace_axes is accepted now, and the kernel's shape must match it)
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `trace_axes` must match `k_train_train`"):
        predict.gradient_descent_mse(ktt, y, trace_axes=())
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `k_train_train` must have shape"):
        predict.gradient_descent_mse(ktt[:, :3], y, trace_axes=())


# ---------------------------------------------------------------------------- top-level names


def test_linearize_and_taylor_expand_closed_forms():
    f = lambda p, x: {"a": jnp.exp(p["w"] * x), "b": p["w"] ** 3 * x}
    p0, p1, x = {"w": jnp.array(0.3)}, {"w": jnp.array(0.5)}, jnp.array(2.0)
    d = 0.2
    lin = nt.linearize(f, p0)(p1, x)
    np.testing.assert_allclose(lin["a"], np.exp(0.6) * (1 + 2 * d), rtol=1e-12)
    np.testing.assert_allclose(lin["b"], 2 * (0.3 ** 3 + 3 * 0.3 ** 2 * d), rtol=1e-12)
    t3 = nt.taylor_expand(f, p0, 3)(p1, x)
    series = np.exp(0.6) * sum((2 * d) ** k / math.factorial(k) for k in range(4))
    np.testing.assert_allclose(t3["a"], series, rtol=1e-12)
    np.testing.assert_allclose(t3["b"], 2 * 0.5 ** 3, rtol=1e-12)  # a cubic is its own 3rd-order series
    np.testing.assert_allclose(nt.taylor_expand(f, p0, 0)(p1, x)["a"], np.exp(0.6), rtol=1e-12)
    with pytest.raises(KjaxError, match=r"kjax.ntk.taylor_expand: `degree` must be >= 0"):
        nt.taylor_expand(f, p0, -1)
    with pytest.raises(KjaxError, match=r"kjax.ntk.linearize: `f` must be a function"):
        nt.linearize(3.0, p0)


def test_empirical_ntk_vp_fn_matches_the_kernel():
    rng = np.random.default_rng(1)
    f = lambda p, x: jnp.tanh(x @ p["w"]) @ p["v"]
    p = {"w": jnp.asarray(rng.standard_normal((3, 4))), "v": jnp.asarray(rng.standard_normal((4, 2)))}
    x1, x2 = jnp.asarray(rng.standard_normal((5, 3))), jnp.asarray(rng.standard_normal((3, 3)))
    v = jnp.asarray(rng.standard_normal((3, 2)))
    ntk = nt.empirical_ntk_fn(f, trace_axes=())(x1, x2, p)  # [5, 3, 2, 2]
    np.testing.assert_allclose(nt.empirical_ntk_vp_fn(f, x1, x2, p)(v), np.einsum("ijab,jb->ia", ntk, v),
                               rtol=1e-12, atol=1e-12)


def test_ntk_implementation_enum_is_accepted():
    f = lambda p, x: jnp.tanh(x @ p)
    p, x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 2))), jnp.ones((2, 3))
    ref = nt.empirical_ntk_fn(f, implementation="jacobian_contraction")(x, None, p)
    for impl in nt.NtkImplementation:
        np.testing.assert_allclose(nt.empirical_ntk_fn(f, implementation=impl)(x, None, p), ref, rtol=1e-12)
    assert [int(i) for i in nt.NtkImplementation] == [0, 1, 2, 3]
    assert nt.Kernel is stax.Kernel


def test_empirical_kernel_fn_get_semantics_and_pytree_outputs():
    rng = np.random.default_rng(3)
    f = lambda p, x: {"a": jnp.tanh(x @ p), "b": (x @ p) ** 2}
    p, x = jnp.asarray(rng.standard_normal((3, 2))), jnp.asarray(rng.standard_normal((4, 3)))
    fa = lambda p, x: f(p, x)["a"]
    kfa = nt.empirical_kernel_fn(fa)
    all_ = kfa(x, None, None, p)
    assert type(all_).__name__ == "EmpiricalKernel" and all_._fields == ("nngp", "ntk")
    assert kfa(x, None, ("NTK",), p)._fields == ("ntk",)
    tree = nt.empirical_kernel_fn(f)(x, None, ("ntk", "nngp"), p)
    np.testing.assert_allclose(tree["a"].ntk, all_.ntk, rtol=1e-12)
    np.testing.assert_allclose(tree["b"].nngp, nt.empirical_nngp_fn(lambda p, x: f(p, x)["b"])(x, None, p),
                               rtol=1e-12)
    with pytest.raises(KjaxError, match=r"empirical_kernel_fn: `get` must be None, 'ntk', 'nngp'"):
        kfa(x, None, "cov1", p)
    with pytest.raises(KjaxError, match=r"empirical_kernel_fn: `get` must name each kernel once"):
        kfa(x, None, ("ntk", "NTK"), p)


# ---------------------------------------------------------------------------- nt.batch


def test_batch_wraps_stax_kernel_fn_with_nt_defaults():
    _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    rng = np.random.default_rng(4)
    x1, x2 = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    ref = kernel_fn(x1, x2)
    for kw in (dict(batch_size=2, device_count=0), dict(batch_size=3, device_count=2)):
        k = nt.batch(kernel_fn, **kw)(x1, x2)  # NT's default get=None: the whole Kernel
        assert isinstance(k, stax.Kernel), kw
        for name in ("nngp", "ntk", "cov1", "cov2"):
            np.testing.assert_allclose(getattr(k, name), getattr(ref, name), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name} {kw}")
    host = nt.batch(kernel_fn, 4, store_on_device=False)(x1, None, ("nngp", "ntk"))
    assert isinstance(host.ntk, np.ndarray)
    np.testing.assert_allclose(host.ntk, kernel_fn(x1, None, "ntk"), rtol=1e-12)
    with pytest.raises(KjaxError, match=r"kjax.ntk.batch: `batch_size` must be >= 0"):
        nt.batch(kernel_fn, -1)


def test_batch_wraps_empirical_kernel_fns():
    rng = np.random.default_rng(5)
    f = lambda p, x: jnp.tanh(x @ p)
    p, x1, x2 = (jnp.asarray(rng.standard_normal(s)) for s in ((3, 2), (6, 3), (4, 3)))
    kfn = nt.empirical_kernel_fn(f, trace_axes=())
    ref = kfn(x1, x2, ("nngp", "ntk"), p)
    out = nt.batch(kfn, batch_size=2, device_count=-1)(x1, x2, ("nngp", "ntk"), p)
    np.testing.assert_allclose(out.ntk, ref.ntk, rtol=1e-12)
    np.testing.assert_allclose(out.nngp, ref.nngp, rtol=1e-12)
    ntk_fn = nt.empirical_ntk_fn(f)
    np.testing.assert_allclose(nt.batch(ntk_fn, 3)(x1, None, p), ntk_fn(x1, None, p), rtol=1e-12)

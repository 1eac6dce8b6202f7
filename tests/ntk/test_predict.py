"""kjax.ntk.predict against neural-tangents' stored outputs and closed forms (scipy expm, solves)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from kjax._src.errors import KjaxError
from kjax._src.status import status_name
from kjax.ntk import predict, stax
from tests.conformance import assert_close
from tests.ntk.stax_archs import architectures

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "nt_stax_reference.npz"))
P = "predict"
# the NTK of the reference MLP on 8 points is ill-conditioned (eigenvalues down to ~1e-8 of the
# largest), so NT's and our eigen-solvers agree to ~1e-9, not to machine precision
RTOL = 1e-7


@pytest.fixture(scope="module")
def problem():
    _, _, kernel_fn = architectures(stax)["mlp_relu"][0]
    d = {k: REF[f"{P}/{k}"] for k in ("x_train", "x_test", "y_train", "ts", "fx_train_0", "fx_test_0")}
    d["kernel_fn"] = kernel_fn
    d["ktt"] = kernel_fn(d["x_train"], None, ("nngp", "ntk"))
    d["kst"] = kernel_fn(d["x_test"], d["x_train"], ("nngp", "ntk"))
    d["kss"] = kernel_fn(d["x_test"], None, "nngp")
    return d


@pytest.mark.parametrize("lr,reg", [(1.0, 0.0), (0.5, 0.1)])
def test_gradient_descent_mse_matches_nt(problem, lr, reg):
    p, tag = problem, f"{P}/gd_lr{lr}_reg{reg}"
    pf = predict.gradient_descent_mse(p["ktt"].ntk, p["y_train"], learning_rate=lr, diag_reg=reg)
    tr, te = pf(p["ts"], p["fx_train_0"], p["fx_test_0"], p["kst"].ntk)
    assert tr.shape == (4, 8, 2) and te.shape == (4, 4, 2)
    assert_close(tr, REF[f"{tag}/train"], RTOL, "train")
    assert_close(te, REF[f"{tag}/test"], RTOL, "test")
    tr, te = pf(None, p["fx_train_0"], p["fx_test_0"], p["kst"].ntk)
    assert_close(tr, REF[f"{tag}/train_inf"], RTOL, "train t=inf")
    assert_close(te, REF[f"{tag}/test_inf"], RTOL, "test t=inf")
    assert_close(pf(p["ts"], p["fx_train_0"]), REF[f"{tag}/train_only"], RTOL, "train only")
    # the iterative path gives the same infinite-time predictions
    pf_cg = predict.gradient_descent_mse(p["ktt"].ntk, p["y_train"], learning_rate=lr, diag_reg=reg,
                                         solver="cg")
    _, te_cg = pf_cg(None, p["fx_train_0"], p["fx_test_0"], p["kst"].ntk)
    assert_close(te_cg, REF[f"{tag}/test_inf"], RTOL, "cg")


def test_gradient_descent_mse_closed_form():
    """f_t(X) = Y + expm(-eta K t / (N O)) (f_0 - Y), checked with scipy's expm; large t -> None."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6))
    k = a @ a.T + 0.5 * np.eye(6)
    y, f0 = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    kst = rng.standard_normal((3, 6))
    g0 = rng.standard_normal((3, 2))
    pf = predict.gradient_descent_mse(k, y, learning_rate=2.0)
    for t in (0.0, 0.7, 5.0):
        e = scipy.linalg.expm(-2.0 * k * t / y.size)
        tr, te = pf(t, f0, g0, kst)
        assert_close(tr, y + e @ (f0 - y), 1e-10, f"train t={t}")
        assert_close(te, g0 + kst @ np.linalg.solve(k, (np.eye(6) - e) @ (y - f0)), 1e-10, f"test t={t}")
    tr_inf, te_inf = pf(None, f0, g0, kst)
    tr_big, te_big = pf(1e6, f0, g0, kst)
    assert_close(te_big, te_inf, 1e-8, "t -> inf")
    assert_close(tr_inf, y, 1e-14, "train at t = inf")
    # a matvec function and CG: the iterative path for problems too large to factor
    pf_cg = predict.gradient_descent_mse(lambda v: jnp.asarray(k) @ v, y, solver="cg")
    assert_close(pf_cg(None, f0, g0, kst)[1], te_inf, 1e-8, "cg matvec")


def test_gp_inference_matches_nt(problem):
    p = problem
    g = predict.gp_inference(p["ktt"].nngp, p["y_train"], diag_reg=0.01)("nngp", p["kst"].nngp, p["kss"])
    assert isinstance(g, predict.Gaussian)
    assert_close(g.mean, REF[f"{P}/gp_mean"], 1e-10, "mean")
    assert_close(g.covariance, REF[f"{P}/gp_cov"], 1e-10, "cov")
    mean = predict.gp_inference(p["ktt"], p["y_train"], diag_reg=0.01)("nngp", p["kst"])
    assert_close(mean, REF[f"{P}/gp_mean_only"], 1e-10, "mean only")
    # closed form with numpy
    k, ks = np.asarray(p["ktt"].nngp), np.asarray(p["kst"].nngp)
    kr = k + 0.01 * np.trace(k) / 8 * np.eye(8)
    assert_close(g.mean, ks @ np.linalg.solve(kr, p["y_train"]), 1e-10, "numpy mean")


@pytest.mark.parametrize("t_name", ["t", "inf"])
def test_ensemble_matches_nt(problem, t_name):
    p = problem
    ens = predict.gradient_descent_mse_ensemble(p["kernel_fn"], p["x_train"], p["y_train"],
                                                learning_rate=1.0, diag_reg=0.01)
    out = ens(p["ts"] if t_name == "t" else None, p["x_test"], ("nngp", "ntk"), compute_cov=True)
    assert out._fields == ("nngp", "ntk")
    for g in ("nngp", "ntk"):
        assert_close(getattr(out, g).mean, REF[f"{P}/ens_{t_name}_{g}_mean"], RTOL, f"{g} mean")
        assert_close(getattr(out, g).covariance, REF[f"{P}/ens_{t_name}_{g}_cov"], RTOL, f"{g} cov")
    if t_name == "t":
        assert_close(ens(p["ts"], None, "ntk"), REF[f"{P}/ens_train_ntk_mean"], RTOL, "train mean")


def test_predict_errors(problem):
    k, y = problem["ktt"].ntk, problem["y_train"]
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `k_train_train` must be a square matrix"):
        predict.gradient_descent_mse(k[:3], y)
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `y_train` must have shape \[N\] or \[N, O\]"):
        predict.gradient_descent_mse(k, y[:3])
    pf = predict.gradient_descent_mse(k, y)
    with pytest.raises(KjaxError, match=r"`k_test_train` must be given"):
        pf(1.0, 0.0, problem["fx_test_0"])
    with pytest.raises(KjaxError, match=r"gp_inference predict_fn: `get` must be None, one of"):
        predict.gp_inference(k, y)("ntks", k)
    with pytest.raises(KjaxError, match=r"`solver` must be one of \('cholesky', 'cg'\)"):
        predict.gradient_descent_mse(k, y, solver="lu")


def _linear_problem():
    """A rank-deficient (linear) kernel: K = X X^T with X [6, 3], test kernel Xt X^T."""
    rng = np.random.default_rng(5)
    x, xt = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    y, w0 = rng.standard_normal((6, 2)), rng.standard_normal((3, 2))
    return x, xt, y, w0


def test_gp_inference_singular_kernel_is_finite_and_reported():
    # regression: a singular kernel at the default diag_reg=0 gave all NaN
    x, xt, y, _ = _linear_problem()
    k, kst, ktt = x @ x.T, xt @ x.T, xt @ xt.T
    pf = predict.gp_inference(k, y)
    g = pf("nngp", kst, ktt)
    kinv = np.linalg.pinv(k, rcond=1e-10)
    assert_close(g.mean, kst @ kinv @ y, 1e-9, "pseudo-inverse mean")
    # X has full column rank, so the test points lie in the span: the posterior covariance vanishes
    assert np.max(np.abs(np.asarray(g.covariance))) < 1e-9 * np.max(np.abs(ktt))
    _, code = pf("nngp", kst, ktt, return_status=True)
    assert int(code) == 6 and status_name(code).startswith("singular")
    # a positive-definite kernel: the Cholesky path, status 0
    _, code = predict.gp_inference(k + np.eye(6), y)("nngp", kst, return_status=True)
    assert int(code) == 0


def test_gradient_descent_mse_rank_deficient_kernel_matches_parameter_space_flow():
    # regression: t=None on a zero eigenvalue gave NaN (Cholesky of a singular kernel), and the training
    # outputs jumped to y_train instead of keeping their initial values on the null space
    x, xt, y, w0 = _linear_problem()
    lr, size = 0.7, y.size
    h, w_star = x.T @ x, np.linalg.lstsq(x, y, rcond=None)[0]
    pf = predict.gradient_descent_mse(x @ x.T, y, learning_rate=lr)
    f0, g0, kst = x @ w0, xt @ w0, xt @ x.T
    for t in (0.5, 3.0, 40.0):
        # the linear model's gradient flow in parameter space: w_t = w* + expm(-lr H t / size)(w0 - w*)
        w_t = w_star + scipy.linalg.expm(-lr * h * t / size) @ (w0 - w_star)
        tr, te = pf(t, f0, g0, kst)
        assert_close(tr, x @ w_t, 1e-9, f"train t={t}")
        assert_close(te, xt @ w_t, 1e-9, f"test t={t}")
    tr, te = pf(None, f0, g0, kst)
    assert_close(tr, x @ w_star, 1e-9, "train t=inf: the least-squares fit, not y_train")
    assert_close(te, xt @ w_star, 1e-9, "test t=inf")
    assert int(pf(None, f0, g0, kst, return_status=True)[1]) == 6


def test_gradient_descent_mse_zero_and_negative_eigenvalues_stay_finite():
    # regression: NaN at a finite t on an exactly zero eigenvalue (0/0), and on an indefinite kernel
    y = np.arange(4.0)[:, None]
    psd = np.diag([1.0, 2.0, 0.5, 0.0])
    pf = predict.gradient_descent_mse(psd, y)
    t = 2.0
    s = t / y.size
    tr, te = pf(t, 0.0, 0.0, psd)
    lam = np.diag(psd)
    want = np.where(lam > 0, -np.expm1(-lam * s), 0.0)[:, None] * y  # train: y (1 - e^{-lam s})
    assert_close(tr, want, 1e-12, "train, zero eigenvalue keeps f0 = 0")
    assert_close(te, lam[:, None] * want / np.where(lam > 0, lam, 1.0)[:, None], 1e-12, "test")
    assert int(pf(t, 0.0, 0.0, psd, return_status=True)[1]) == 0
    indefinite = np.diag([1.0, -1.0, 0.5, 0.0])
    pf = predict.gradient_descent_mse(indefinite, y)
    for tt in (t, None):
        tr, te = pf(tt, 0.0, 0.0, indefinite)
        assert np.all(np.isfinite(np.asarray(tr))) and np.all(np.isfinite(np.asarray(te)))
        assert int(pf(tt, 0.0, 0.0, indefinite, return_status=True)[1]) == 2  # clipped, reported
    # the negative direction is frozen (clipped to zero): it keeps its initial value at t = inf
    assert float(tr[1, 0]) == 0.0 and float(tr[0, 0]) == pytest.approx(0.0) and float(tr[2, 0]) == pytest.approx(2.0)
    ens = predict.gradient_descent_mse_ensemble(lambda a, b, get: _Kernels(np.diag([1.0, 0.0]), np.diag([1.0, 0.0])),
                                                np.zeros((2, 1)), np.ones((2, 1)))
    out, code = ens(t=np.array([1.0]), get="ntk", compute_cov=True, return_status=True)
    assert np.all(np.isfinite(np.asarray(out.mean))) and np.all(np.isfinite(np.asarray(out.covariance)))


class _Kernels(tuple):
    """A minimal kernel_fn result with nngp / ntk fields."""

    def __new__(cls, nngp, ntk):
        return super().__new__(cls, (nngp, ntk))

    nngp = property(lambda self: self[0])
    ntk = property(lambda self: self[1])


def test_cg_solver_reports_its_status(problem):
    k, y = np.asarray(problem["ktt"].ntk), problem["y_train"]
    kst = problem["kst"].ntk
    pf = predict.gradient_descent_mse(k, y, solver="cg", cg_maxiter=2)
    (_, te), code = pf(None, 0.0, 0.0, kst, return_status=True)
    assert int(code) == 4 and np.all(np.isfinite(np.asarray(te)))
    _, code = predict.gp_inference(k, y, diag_reg=0.1, solver="cg")("ntk", kst, return_status=True)
    assert int(code) == 0
    # a predict_fn used under jit first, then outside: nothing traced is cached between the calls
    for solver in ("cg", "cholesky"):
        pf = predict.gp_inference(k, y, diag_reg=0.1, solver=solver)
        inside = jax.jit(lambda a, pf=pf: pf("ntk", a))(kst)
        assert_close(pf("ntk", kst), inside, 1e-9, f"{solver}: jit, then eager")


def test_predict_out_of_domain_values_and_shapes(problem):
    # regression: gradient_descent_mse(learning_rate=-1) was silently accepted
    k, y = problem["ktt"].ntk, problem["y_train"]
    for bad in (-1.0, 0.0):
        with pytest.raises(KjaxError, match=r"gradient_descent_mse: `learning_rate` must be > 0"):
            predict.gradient_descent_mse(k, y, learning_rate=bad)
        with pytest.raises(KjaxError, match=r"gradient_descent_mse_ensemble: `learning_rate` must be > 0"):
            predict.gradient_descent_mse_ensemble(problem["kernel_fn"], problem["x_train"], y, learning_rate=bad)
    with pytest.raises(KjaxError, match=r"gp_inference: `diag_reg` must be >= 0; got -0.1"):
        predict.gp_inference(k, y, diag_reg=-0.1)
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `cg_maxiter` must be >= 1"):
        predict.gradient_descent_mse(k, y, solver="cg", cg_maxiter=0)
    pf = predict.gradient_descent_mse(k, y)
    with pytest.raises(KjaxError, match=r"predict_fn: `t` must be >= 0 \(training time"):
        pf(-1.0)
    with pytest.raises(KjaxError, match=r"predict_fn: `k_test_train` must have shape \[M, N\] with N = 8"):
        pf(1.0, 0.0, problem["fx_test_0"], np.ones((4, 3)))
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `k_train_train` must have at least one"):
        predict.gradient_descent_mse(np.zeros((0, 0)), np.zeros((0, 1)))
    kn = np.array(k)
    kn[0, 0] = np.nan
    with pytest.raises(KjaxError, match=r"gp_inference: `k_train_train` must contain only finite values"):
        predict.gp_inference(kn, y)("nngp", problem["kst"].nngp)


def test_gp_inference_takes_whole_stax_kernels():
    """NT's README feeds kernel_fn(x1, x2) results (Kernel objects) straight to gp_inference."""
    from kjax.ntk import predict, stax

    _, _, kf = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    rng = np.random.default_rng(0)
    x, y, xt = rng.normal(size=(6, 3)), rng.normal(size=(6, 1)), rng.normal(size=(2, 3))
    whole = predict.gp_inference(kf(x, None), y, diag_reg=1e-3)("ntk", kf(xt, x), kf(xt, None))
    parts = predict.gp_inference(kf(x, None, ("nngp", "ntk")), y, diag_reg=1e-3)(
        "ntk", kf(xt, x, ("nngp", "ntk")), kf(xt, None, ("nngp", "ntk")))
    np.testing.assert_allclose(whole.mean, parts.mean, rtol=1e-12)
    np.testing.assert_allclose(whole.covariance, parts.covariance, rtol=1e-12, atol=1e-15)

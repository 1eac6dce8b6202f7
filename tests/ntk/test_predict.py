"""kjax.ntk.predict against neural-tangents' stored outputs and closed forms (scipy expm, solves)."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from kjax._src.errors import KjaxError
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
    with pytest.raises(KjaxError, match=r"gp_inference predict_fn: `get` must be one of"):
        predict.gp_inference(k, y)("ntks", k)
    with pytest.raises(KjaxError, match=r"`solver` must be one of \('cholesky', 'cg'\)"):
        predict.gradient_descent_mse(k, y, solver="lu")

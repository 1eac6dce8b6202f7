"""krr_fit(solver="pcg") (RPCholesky-preconditioned CG) against the Cholesky solve, logistic Falkon
against scikit-learn's LogisticRegression on Nystrom features, SGPR against the exact GP and
stored GPJax numbers."""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from kjax import kernels
from kjax import regression as R
from kjax._src.errors import KjaxError
from kjax.regression import _krr
from kjax.regression._rpcholesky import block_rpcholesky_core
from tests.conformance import assert_close
from tests.regression.conftest import KERN

DATA = Path(__file__).with_name("data")


@pytest.fixture(scope="module")
def chol(data):
    x, y, _ = data
    return R.krr_fit(KERN, x, y, ridge=1e-3, solver="cholesky")


# ---- krr_fit(solver="pcg") ---------------------------------------------------------------------


def test_pcg_equals_cholesky(data, chol):
    x, y, xt = data
    assert int(chol.status) == 0 and int(chol.iterations) == 0 and float(chol.residual) < 1e-12
    st = R.krr_fit(KERN, x, y, ridge=1e-3, solver="pcg", tol=1e-12, preconditioner_rank=60)
    assert int(st.status) == 0, R.status_name(st.status)
    assert 0 < int(st.iterations) < 60 and float(st.residual) <= 1e-12
    # the residual reported is the true one: recompute it from K
    k = np.asarray(KERN(x))
    true = np.linalg.norm(k @ st.coef + 1e-3 * st.coef - y, axis=0) / np.linalg.norm(y, axis=0)
    assert float(np.max(true)) < 1e-11
    assert_close(st.coef, chol.coef, 1e-8, "pcg vs cholesky coefficients")
    assert_close(R.krr_predict(st, xt), R.krr_predict(chol, xt), 1e-10, "pcg vs cholesky predictions")


def test_pcg_blockwise_on_a_mesh_and_auto_rule(data, chol, mesh, monkeypatch):
    x, y, xt = data
    # a mesh takes the blockwise (never formed) matvec, split over the 8 devices
    st = R.krr_fit(KERN, x, y, ridge=1e-3, solver="pcg", tol=1e-12, preconditioner_rank=60, mesh=mesh,
                   block_size=(16, 32))
    assert int(st.status) == 0
    assert_close(st.coef, chol.coef, 1e-8, "blockwise pcg on a mesh")
    # auto: Cholesky up to PCG_MIN_N points, PCG above (and the eigendecomposition for a path)
    assert int(R.krr_fit(KERN, x, y, ridge=1e-3).iterations) == 0
    monkeypatch.setattr(_krr, "PCG_MIN_N", 50)
    auto = R.krr_fit(KERN, x, y, ridge=1e-3, tol=1e-12, preconditioner_rank=60)
    assert int(auto.iterations) > 0
    assert_close(auto.coef, st.coef, 1e-8, "auto above PCG_MIN_N is pcg")
    path = R.krr_fit(KERN, x, y, ridge=jnp.array([1e-4, 1e-2, 1.0]))  # test_krr's shapes
    assert int(path.iterations) == 0 and float(path.residual) < 1e-10


def test_pcg_preconditioner_reduces_iterations_and_maxiter_status(data):
    x, y, _ = data
    kw = dict(ridge=1e-3, solver="pcg", tol=1e-12, key=jax.random.key(3))
    weak = R.krr_fit(KERN, x, y, preconditioner_rank=1, **kw)
    strong = R.krr_fit(KERN, x, y, preconditioner_rank=60, **kw)  # test_pcg_equals_cholesky's program
    assert int(weak.status) == 0 and int(strong.status) == 0
    assert int(strong.iterations) * 3 < int(weak.iterations), (int(strong.iterations), int(weak.iterations))
    # maxiter too small: "stopped at maxiter before tol", with the residual reached
    short = R.krr_fit(KERN, x, y, preconditioner_rank=1, maxiter=3, **kw)
    assert int(short.status) == 4 and int(short.iterations) == 3
    assert R.status_name(short.status) == "stopped at maxiter before reaching tol"
    assert float(short.residual) > 1e-12 and np.isfinite(float(short.residual))


def test_pcg_float32_reports_the_true_residual_and_a_ridge_below_its_precision():
    """float32: the state's residual is recomputed (CG's recurrence drifts); at a ridge near
    eps32 * lambda_max(K) the preconditioner is indefinite in floating point and the status says
    so (it said "ok" with a relative residual of 13 before 2026-12-02)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = np.sin(x.sum(1)).astype(np.float32)
    k = functools.partial(kernels.rbf, lengthscale=3.0)
    kd = np.asarray(k(x.astype(np.float64)))
    for ridge, ok in ((1e-2, True), (1e-6, False)):
        st = R.krr_fit(k, x, y, ridge=ridge, solver="pcg", preconditioner_rank=40)
        c = np.asarray(st.coef, np.float64)[:, 0]
        true = np.linalg.norm(kd @ c + ridge * c - y) / np.linalg.norm(y)
        assert (int(st.status) == 0) == ok, (ridge, R.status_name(st.status))
        assert st.coef.dtype == np.float32
        # computed in float32 itself, so within a factor 2 of the float64 value (the recurrence
        # had reached tol = 1e-5; the true residual at ridge 1e-2 is 2.2e-5)
        assert 0.5 * true <= float(st.residual) <= 2 * true, (float(st.residual), true)


def test_pcg_nonfinite_kernel_and_input_go_to_status(data):
    x, y, _ = data

    def nan_kernel(a, b=None):
        k = KERN(a, b)
        return jnp.where(k < 0.05, jnp.nan, k)  # NaN entries from finite inputs

    st = R.krr_fit(nan_kernel, x, y, ridge=1e-3, solver="pcg", preconditioner_rank=10, maxiter=20)
    assert int(st.status) == 5, R.status_name(st.status)
    # NaN in traced input: status 1, no error
    xn = jnp.asarray(x).at[0, 0].set(jnp.nan)
    fit = jax.jit(lambda a: R.krr_fit(KERN, a, y, ridge=1e-3, solver="pcg", preconditioner_rank=10,
                                      maxiter=20).status)
    assert int(fit(xn)) == 1


def test_pcg_argument_errors(data):
    x, y, _ = data
    fit = functools.partial(R.krr_fit, KERN, x, y, ridge=1e-3)
    cases = [
        (dict(solver="lu"), "`solver`"),
        (dict(solver="pcg", ridge=jnp.array([1e-3, 1e-2])), "`solver` must be 'auto' or 'cholesky'"),
        (dict(tol=-1.0), "`tol`"),
        (dict(maxiter=0), "`maxiter`"),
        (dict(preconditioner_rank=0), "`preconditioner_rank`"),
        (dict(preconditioner_rank=121), "`preconditioner_rank` must be at most the number of points n=120"),
    ]
    for kw, msg in cases:
        with pytest.raises(KjaxError, match="kjax.regression.krr_fit: " + msg.replace("(", r"\(")):
            fit(**kw)


def test_block_rpcholesky_factor():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(70, 2))
    k = np.asarray(KERN(x))
    # rank n = 70 in two blocks of 35 pivots: the factor reproduces K
    f, status = block_rpcholesky_core(KERN, jnp.asarray(x), jax.random.key(0), 70)
    assert int(status) == 0
    assert_close(f @ f.T, k, 1e-8, "block RPCholesky at full rank")
    # after the first block (rank 35) K - F F^T is PSD and its trace is small
    f1 = np.asarray(f[:, :35])
    resid = k - f1 @ f1.T
    assert np.min(np.linalg.eigvalsh(resid)) > -1e-10
    assert np.trace(resid) < 0.05 * np.trace(k)


# ---- logistic Falkon -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def logistic_data():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(150, 3))
    y = np.where(np.sin(x[:, 0]) + x[:, 1] * x[:, 2] + 0.3 * rng.normal(size=150) > 0, 1.0, 0.0)
    return x, y, x[:30]


@pytest.mark.parametrize("scaling,ridge", [("none", 0.1), ("n", 1e-3)])
def test_logistic_falkon_equals_sklearn_on_nystrom_features(logistic_data, scaling, ridge):
    x, y, z = logistic_data
    n = x.shape[0]
    st = R.falkon_logistic_fit(None, KERN, x, y, ridge=ridge, ridge_scaling=scaling, centers=z, tol=1e-10)
    assert int(st.status) == 0 and float(st.residual) <= 1e-10, (int(st.status), float(st.residual))
    # Nystrom features Phi = K_nM R^-1 (K_MM = R^T R); w = R alpha; C = 1 / alpha_reg
    r = np.linalg.cholesky(np.asarray(KERN(z))).T
    phi = np.asarray(KERN(x, z)) @ np.linalg.inv(r)
    alpha_reg = ridge * (n if scaling == "n" else 1.0)
    lr = LogisticRegression(C=1.0 / alpha_reg, fit_intercept=False, solver="newton-cholesky", tol=1e-12,
                            max_iter=200).fit(phi, y)
    assert_close(r @ np.asarray(st.alpha), lr.coef_[0], 1e-6, "weights vs sklearn")
    assert_close(R.falkon_logistic_predict(st, x), lr.decision_function(phi), 1e-6, "log-odds vs sklearn")
    assert_close(R.falkon_logistic_predict_proba(st, x), lr.predict_proba(phi)[:, 1], 1e-6, "proba")
    # the objectives decrease
    objs = np.asarray(st.objectives)[: int(st.iterations)]
    assert np.all(np.diff(objs) <= 1e-9 * abs(objs[0]))


def test_logistic_falkon_status_and_errors(logistic_data):
    x, y, z = logistic_data
    st = R.falkon_logistic_fit(None, KERN, x, y, ridge=1e-3, centers=z, newton_steps=1)
    assert int(st.status) == 4 and int(st.iterations) == 1 and float(st.residual) > 1e-9
    assert R.falkon_logistic_predict(st, x[:0]).shape == (0,)
    fit = functools.partial(R.falkon_logistic_fit, None, KERN, x)
    with pytest.raises(KjaxError, match="kjax.regression.falkon_logistic_fit: `y` must be"):
        fit(np.stack([y, y], 1), ridge=1e-3, centers=z)
    with pytest.raises(KjaxError, match="kjax.regression.falkon_logistic_fit: `newton_steps`"):
        fit(y, ridge=1e-3, centers=z, newton_steps=0)
    with pytest.raises(KjaxError, match="kjax.regression.falkon_logistic_fit: `num_centers`"):
        fit(y, ridge=1e-3)
    with pytest.raises(KjaxError, match="kjax.regression.falkon_logistic_predict_proba: `x_new`"):
        R.falkon_logistic_predict_proba(st, x[:, :2])


# ---- SGPR ----------------------------------------------------------------------------------------


def test_sgpr_with_all_centres_is_the_exact_gp():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 2))
    y = np.stack([np.sin(x[:, 0]), np.cos(x[:, 1])], 1)
    xt = rng.normal(size=(5, 2))
    kern = functools.partial(kernels.rbf, lengthscale=0.5)  # K well conditioned: the bound is exact
    st = R.sgpr_fit(kern, x, y, x, ridge=0.05)
    assert int(st.status) == 0
    lml = R.gp_log_marginal_likelihood(kern, x, y, ridge=0.05)
    assert abs(float(st.elbo) - float(lml)) < 1e-9 * abs(float(lml))
    mean, var = R.sgpr_predict(st, xt)
    post = R.gp_posterior(kern, x, y, xt, ridge=0.05)
    assert_close(mean, post.mean, 1e-8, "SGPR mean vs exact GP")
    assert_close(var, post.variance, 1e-7, "SGPR variance vs exact GP")


def test_sgpr_equals_stored_gpjax():
    d = np.load(DATA / "gpjax_sgpr.npz")
    assert float(d["variance"]) == 1.0  # kjax's rbf has unit variance
    kern = functools.partial(kernels.rbf, lengthscale=float(d["lengthscale"]))
    st = R.sgpr_fit(kern, d["x"], d["y"], d["z"], ridge=float(d["noise"]), block_size=16)
    assert abs(float(st.elbo) - float(d["elbo"])) < 1e-8 * abs(float(d["elbo"]))
    mean, var = R.sgpr_predict(st, d["xt"])
    assert_close(mean, d["mean"], 1e-8, "SGPR mean vs GPJax")
    assert_close(var, d["var"], 1e-8, "SGPR variance vs GPJax")
    # and the closed form of Titsias (2009) in NumPy; a lower bound of the exact evidence
    x, y, z, s2 = d["x"], d["y"], d["z"], float(d["noise"])
    n = x.shape[0]
    k, knm, kmm = np.asarray(kern(x)), np.asarray(kern(x, z)), np.asarray(kern(z))
    q = knm @ np.linalg.solve(kmm, knm.T)
    cov = q + s2 * np.eye(n)
    oracle = (-0.5 * y @ np.linalg.solve(cov, y) - 0.5 * np.linalg.slogdet(cov)[1] - 0.5 * n * np.log(2 * np.pi)
              - 0.5 / s2 * np.trace(k - q))
    assert abs(float(st.elbo) - oracle) < 1e-8 * abs(oracle)
    exact = -0.5 * y @ np.linalg.solve(k + s2 * np.eye(n), y) - 0.5 * np.linalg.slogdet(k + s2 * np.eye(n))[1]
    assert float(st.elbo) < exact - 0.5 * n * np.log(2 * np.pi)


def test_sgpr_errors_and_status():
    x = np.linspace(0, 1, 10)[:, None]
    y = np.sin(x[:, 0])
    with pytest.raises(KjaxError, match="kjax.regression.sgpr_fit: `ridge`"):
        R.sgpr_fit(KERN, x, y, x[:3], ridge=0.0)
    with pytest.raises(KjaxError, match="kjax.regression.sgpr_fit: `centers`"):
        R.sgpr_fit(KERN, x, y, np.ones((3, 2)), ridge=0.1)
    st = R.sgpr_fit(KERN, x, y, x[:3], ridge=0.1)
    with pytest.raises(KjaxError, match="kjax.regression.sgpr_predict: `block_size`"):
        R.sgpr_predict(st, x, block_size=0)
    m, v = R.sgpr_predict(st, x[:0])
    assert m.shape == (0,) and v.shape == (0,)
    # a kernel that is not positive definite: status 3 and elbo -inf (the bad-input suite's non-PSD
    # case of sgpr_fit checks it)

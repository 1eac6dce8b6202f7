"""kjax.regression.sklearn: the estimators against scikit-learn (values, check_estimator, errors).

Oracles: scikit-learn's KernelRidge (every kernel name, sample weights, per-target alpha,
precomputed, alpha = 0), sklearn.metrics.pairwise for the kernels, scikit-learn's
GaussianProcessRegressor (log marginal likelihood and its gradient, predictions, std, cov, samples,
the optimum), and exact KRR for Falkon with every point a centre.
"""

import functools
import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor as SkGP
from sklearn.gaussian_process.kernels import RBF, WhiteKernel
from sklearn.gaussian_process.kernels import ConstantKernel as C
from sklearn.kernel_ridge import KernelRidge as SkKRR
from sklearn.metrics.pairwise import pairwise_kernels
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import check_estimator

from kjax import kernels
from kjax.kernels import Kernel, Scale
from kjax.regression import eigenpro_fit, eigenpro_predict
from kjax.regression import sklearn as S
from tests.conformance import assert_close

FULL_CHECKS = os.environ.get("KJAX_SKLEARN_FULL_CHECKS") == "1"


@pytest.fixture(scope="module")
def tab():
    """30 x 3 non-negative training points (chi2 needs them), 2 targets, 7 test points."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(30, 3)))
    y = np.stack([np.sin(x).sum(1), np.cos(x[:, 0]) * x[:, 1]], axis=1) + 0.1 * rng.normal(size=(30, 2))
    return x, y, np.abs(rng.normal(size=(7, 3))), rng.uniform(0.1, 2.0, 30)


# --------------------------------------------------------------------------------------------
# KernelRidge against scikit-learn

NAMES = ["linear", "rbf", "poly", "polynomial", "laplacian", "sigmoid", "cosine", "chi2", "additive_chi2"]
PSD = [n for n in NAMES if n not in ("sigmoid", "additive_chi2")]  # sklearn solves these per target


@pytest.mark.parametrize("name", NAMES)
def test_kernel_ridge_equals_sklearn_every_kernel(tab, name):
    x, y, xt, sw = tab
    kw = dict(kernel=name, gamma=None if name == "additive_chi2" else 0.3, degree=2, coef0=0.5)
    # the kernel itself, against sklearn.metrics.pairwise
    k = S._resolve_kernel(S.KernelRidge(**kw), "test", 3)
    ref = pairwise_kernels(xt, x, metric=name, filter_params=True, gamma=kw["gamma"], degree=2, coef0=0.5)
    assert_close(np.asarray(k(xt, x)), ref, 1e-12, f"{name} kernel")
    alphas = [0.5] + ([np.array([0.1, 2.0])] if name in PSD else [])
    for alpha in alphas:
        for weights in (None, sw):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the indefinite kernels' lstsq fallback
                want = SkKRR(alpha=alpha, **kw).fit(x, y, sample_weight=weights).predict(xt)
                got = S.KernelRidge(alpha=alpha, **kw).fit(x, y, sample_weight=weights).predict(xt)
            assert_close(got, want, 1e-10, f"{name} alpha={alpha} weights={weights is not None}")


def test_kernel_ridge_precomputed_single_output_and_kjax_kernels(tab):
    x, y, xt, sw = tab
    gamma = 0.3
    kfit, kpred = pairwise_kernels(x, metric="rbf", gamma=gamma), pairwise_kernels(xt, x, metric="rbf", gamma=gamma)
    for alpha in (0.5, np.array([0.1, 2.0])):
        want = SkKRR(alpha=alpha, kernel="precomputed").fit(kfit, y, sample_weight=sw).predict(kpred)
        got = S.KernelRidge(alpha=alpha, kernel="precomputed").fit(kfit, y, sample_weight=sw)
        assert got.__sklearn_tags__().input_tags.pairwise
        assert_close(got.predict(kpred), want, 1e-10, f"precomputed alpha={alpha}")
    # one target: [n] coefficients and predictions, as sklearn
    sk1 = SkKRR(alpha=0.5, kernel="rbf", gamma=gamma).fit(x, y[:, 0])
    m1 = S.KernelRidge(alpha=0.5, kernel="rbf", gamma=gamma).fit(x, y[:, 0])
    assert m1.dual_coef_.shape == (30,) and m1.predict(xt).shape == (7,)
    assert_close(m1.dual_coef_, sk1.dual_coef_, 1e-10, "dual_coef_")
    # kjax kernels: a pytree Kernel, a partial of a kernel function, a function + kernel_params
    ls = 1.0 / np.sqrt(2 * gamma)
    for kernel, params in ((Kernel(kernels.rbf, lengthscale=ls), None),
                           (functools.partial(kernels.rbf, lengthscale=ls), None),
                           (kernels.rbf, {"lengthscale": ls})):
        m = S.KernelRidge(alpha=0.5, kernel=kernel, kernel_params=params).fit(x, y[:, 0])
        assert_close(m.predict(xt), sk1.predict(xt), 1e-10, f"kjax kernel {kernel!r}")
    # float32 on request, float64 by default
    assert m1.predict(xt).dtype == np.float64
    m32 = S.KernelRidge(alpha=0.5, kernel="rbf", gamma=gamma, dtype="float32").fit(x, y[:, 0])
    assert m32.dual_coef_.dtype == np.float32
    assert_close(m32.predict(xt), sk1.predict(xt), 1e-4, "float32")


def test_kernel_ridge_alpha_zero_falls_back_to_least_squares(tab):
    x, y, xt, _ = tab
    # linear kernel, n = 30 > d = 3: K is singular, sklearn's Cholesky fails and it uses lstsq
    with pytest.warns(UserWarning, match="Singular matrix"):
        want = SkKRR(alpha=0.0).fit(x, y).predict(xt)
    with pytest.warns(UserWarning, match=r"KernelRidge.fit: the matrix \(K \+ alpha I\) is singular"):
        m = S.KernelRidge(alpha=0.0).fit(x, y)
    assert m.status_ == 6  # Status.SINGULAR
    assert_close(m.predict(xt), want, 1e-8, "alpha=0 least squares")
    # a positive definite K with alpha = 0 is solved directly (no warning), as sklearn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = S.KernelRidge(alpha=0.0, kernel="rbf", gamma=0.3).fit(x, y).predict(xt)
    assert_close(got, SkKRR(alpha=0.0, kernel="rbf", gamma=0.3).fit(x, y).predict(xt), 1e-6, "alpha=0 rbf")


@pytest.mark.skipif(not S._krr_fit_has("solver"), reason="krr_fit has no solver= argument")
def test_kernel_ridge_pcg_goes_through_krr_fit(tab):
    x, y, xt, _ = tab
    m = S.KernelRidge(alpha=0.5, kernel="rbf", gamma=0.3, solver="pcg", tol=1e-12).fit(x, y)
    want = SkKRR(alpha=0.5, kernel="rbf", gamma=0.3).fit(x, y).predict(xt)
    assert m.status_ == 0
    assert_close(m.predict(xt), want, 1e-8, "solver='pcg'")


def test_kernel_ridge_sparse_input(tab):
    x, y, xt, sw = tab
    xs = x.copy()
    xs[xs < 0.7] = 0.0
    want = SkKRR(alpha=0.5, kernel="rbf", gamma=0.3).fit(xs, y, sample_weight=sw).predict(xt)
    for fmt in (sp.csr_matrix, sp.csc_array, sp.coo_matrix):
        m = S.KernelRidge(alpha=0.5, kernel="rbf", gamma=0.3).fit(fmt(xs), y, sample_weight=sw)
        assert_close(m.predict(sp.csr_matrix(xt)), want, 1e-10, f"sparse {fmt.__name__}")
    # wrong shapes: the feature count at predict, the rows against y at fit
    with pytest.raises(ValueError, match="X has 4 features, but KernelRidge is expecting 3"):
        m.predict(sp.csr_matrix(np.ones((2, 4))))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        S.KernelRidge().fit(sp.csr_matrix(xs[:20]), y)
    # blockwise densification
    dense = S._densify(sp.random(10, 4, density=0.5, format="csc", random_state=0))
    assert isinstance(dense, np.ndarray) and dense.shape == (10, 4)


@pytest.mark.parametrize("case, match", [
    (dict(fit=dict(sample_weight=-np.ones(30))), r"KernelRidge.fit: `sample_weight` must be non-negative"),
    (dict(fit=dict(sample_weight=np.ones(29))), r"KernelRidge.fit: `sample_weight` must be a scalar or have shape \(30,\)"),
    (dict(fit=dict(sample_weight=np.zeros(30))), r"`sample_weight` must have at least one positive weight"),
    (dict(fit=dict(sample_weight=np.full(30, np.nan))), r"`sample_weight` must be finite"),
    (dict(est=dict(kernel="gaussian")), r"KernelRidge.fit: `kernel` must be a kjax kernel or one of"),
    (dict(est=dict(kernel=3)), r"`kernel` must be a kjax kernel"),
    (dict(est=dict(alpha=[1.0, 2.0, 3.0])), r"`alpha` must be a scalar or have shape \(2,\)"),
    (dict(est=dict(alpha=-1.0)), r"`alpha` must be finite and >= 0"),
    (dict(est=dict(kernel="rbf", gamma=0.0)), r"`gamma` must be > 0"),
    (dict(est=dict(kernel="poly", degree=0)), r"`degree` must be an int >= 1"),
    (dict(est=dict(kernel="poly", coef0=-1.0)), r"`coef0` must be >= 0"),
    (dict(est=dict(solver="lu")), r"`solver` must be one of"),
    (dict(est=dict(solver="pcg"), fit=dict(sample_weight=np.ones(30))), r"`solver` must be 'auto' or 'cholesky'"),
    (dict(est=dict(dtype="float16")), r"`dtype` must be None"),
    (dict(est=dict(kernel="chi2"), x=-1.0), r"`X` must be non-negative for kernel='chi2'"),
    (dict(est=dict(kernel="precomputed"), x="rect"), r"`X` must be a square \[n, n\] kernel matrix"),
    (dict(est=dict(kernel=Kernel(kernels.rbf) + Kernel(kernels.linear), kernel_params={"variance": 1.0})),
     r"`kernel_params` must be None for a combined kernel"),
])
def test_kernel_ridge_bad_input(tab, case, match):
    x, y, _, _ = tab
    if case.get("x") == "rect":
        x = np.ones((30, 29))
    elif "x" in case:
        x = x * case["x"]
    with pytest.raises((ValueError, TypeError), match=match):
        S.KernelRidge(**case.get("est", {})).fit(x, y, **case.get("fit", {}))


def test_kernel_ridge_precomputed_wrong_width_at_predict(tab):
    x, y, _, _ = tab
    m = S.KernelRidge(kernel="precomputed").fit(x @ x.T + np.eye(30), y)
    with pytest.raises(ValueError, match=r"KernelRidge.predict: `X` must have 30 columns .* got shape \(4, 29\)"):
        m.predict(np.ones((4, 29)))
    with pytest.raises(ValueError, match=r"`X` must be non-negative"):
        S.KernelRidge(kernel="chi2").fit(x, y).predict(-x)


def test_grid_search_does_not_recompile(tab):
    """A grid over gamma and alpha compiles per data shape, never per grid point."""
    x, y, _, _ = tab
    count = {"on": False, "n": 0}

    def listener(event, duration, **kw):
        if count["on"] and event == "/jax/core/compile/backend_compile_duration":
            count["n"] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        grid = {"gamma": [0.1, 0.3, 1.0, 3.0], "alpha": [0.1, 1.0]}
        GridSearchCV(S.KernelRidge(kernel="rbf"), grid, cv=3).fit(x, y)  # warm: 20-row folds
        count["on"] = True
        grid2 = {"gamma": [0.05, 0.2, 0.7, 2.0], "alpha": [0.01, 5.0]}
        gs = GridSearchCV(S.KernelRidge(kernel="rbf"), grid2, cv=3).fit(x, y)
        # a pytree Kernel in the grid compiles once too
        ks = [Kernel(kernels.rbf, lengthscale=v) for v in (0.5, 1.0, 2.0)]
        GridSearchCV(S.KernelRidge(), {"kernel": ks}, cv=3).fit(x, y)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert count["n"] == 0, f"{count['n']} compilations in a grid search over new hyperparameter values"
    sk = GridSearchCV(SkKRR(kernel="rbf"), grid2, cv=3).fit(x, y)
    assert gs.best_params_ == sk.best_params_
    np.testing.assert_allclose(gs.cv_results_["mean_test_score"], sk.cv_results_["mean_test_score"], rtol=1e-8)


# --------------------------------------------------------------------------------------------
# Falkon and EigenPro


def test_falkon_with_every_point_a_centre_is_exact_krr(tab):
    x, y, xt, _ = tab
    lam, n = 1e-3, x.shape[0]
    m = S.FalkonRegressor(penalty=lam, M=100, gamma=0.3, maxiter=200, tol=1e-13, random_state=0).fit(x, y)
    assert m.centers_.shape == (30, 3) and m.alpha_.shape == (30, 2)
    want = SkKRR(alpha=n * lam, kernel="rbf", gamma=0.3).fit(x, y).predict(xt)
    assert_close(m.predict(xt), want, 1e-7, "Falkon with M = n against exact KRR")
    # stopping short says so: status 4 (stopped at maxiter before tol), the residual and a warning
    with pytest.warns(ConvergenceWarning, match=r"FalkonRegressor.fit: CG \(`maxiter`\) stopped"):
        short = S.FalkonRegressor(penalty=1e-9, M=10, gamma=0.3, maxiter=2, random_state=0).fit(x, y)
    assert short.status_ == 4 and short.residual_ > 1e-7 and short.n_iter_ == 2
    for kw, match in ((dict(penalty=0.0), r"FalkonRegressor.fit: `penalty` must be > 0"),
                      (dict(M=0), r"`M` must be an int >= 1"), (dict(maxiter=0), r"`maxiter` must be an int >= 1")):
        with pytest.raises(ValueError, match=match):
            S.FalkonRegressor(**kw).fit(x, y)


def test_eigenpro_matches_the_functional_api(tab):
    x, y, xt, _ = tab
    m = S.EigenProRegressor(n_epoch=3, n_components=4, subsample_size=20, gamma=0.3, random_state=0).fit(x, y)
    key = S._seed(0)
    st = eigenpro_fit(key, Kernel(kernels.rbf, lengthscale=1 / np.sqrt(0.6)), np.pad(x, ((0, 0), (0, 1))), y,
                      epochs=3, num_eigen=4, subsample_size=20)
    assert_close(m.predict(xt), eigenpro_predict(st, np.pad(xt, ((0, 0), (0, 1)))), 1e-10, "EigenPro estimator")
    assert m.n_iter_ == 3 and m.status_ == 0 and 0 < m.residual_ < 1
    with pytest.raises(ValueError, match="EigenProRegressor.fit: `X` must have at least 2 samples.*1 sample"):
        S.EigenProRegressor().fit(x[:1], y[:1])
    with pytest.raises(ValueError, match=r"`subsample_size` must be an int >= 2"):
        S.EigenProRegressor(subsample_size=1).fit(x, y)


# --------------------------------------------------------------------------------------------
# GaussianProcessRegressor against scikit-learn


@pytest.fixture(scope="module")
def gp_data():
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, size=(24, 2))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.normal(size=24)
    return x, y, rng.uniform(-2, 2, size=(6, 2))  # test points: none is a training point


def _kj_kernel(c, ls, v):
    return Scale(Kernel(kernels.rbf, lengthscale=ls), c) + Kernel(kernels.white_noise, variance=v)


def _sk_kernel(c, ls, v, fixed=False):
    b = "fixed" if fixed else (1e-5, 1e5)
    return C(c, b) * RBF(ls, b) + WhiteKernel(v, b)


def test_gp_equals_sklearn(gp_data):
    x, y, xt = gp_data
    y2 = np.stack([y, np.cos(x[:, 0])], axis=1)
    for yy, norm, alpha in ((y, False, 1e-6), (y2, True, 1e-4 * np.linspace(1, 2, 24))):
        sk = SkGP(_sk_kernel(1.5, 0.7, 0.05), alpha=alpha, optimizer=None, normalize_y=norm).fit(x, yy)
        kj = S.GaussianProcessRegressor(_kj_kernel(1.5, 0.7, 0.05), alpha=alpha, optimizer=None,
                                        normalize_y=norm).fit(x, yy)
        tag = f"targets={yy.ndim} normalize_y={norm}"
        assert kj.log_marginal_likelihood_value_ == pytest.approx(sk.log_marginal_likelihood_value_, rel=1e-10)
        # LML and its gradient at another theta; kjax's theta is log(leaves) = [ls, c, v], sklearn's [c, ls, v]
        th = np.log([0.9, 2.0, 0.1])
        v, g = kj.log_marginal_likelihood(th, eval_gradient=True)
        sv, sg = sk.log_marginal_likelihood(th[[1, 0, 2]], eval_gradient=True)
        assert v == pytest.approx(sv, rel=1e-10), tag
        assert_close(g[[1, 0, 2]], sg, 1e-8, f"LML gradient {tag}")
        mean, std = kj.predict(xt, return_std=True)
        smean, sstd = sk.predict(xt, return_std=True)
        assert mean.shape == smean.shape and std.shape == sstd.shape
        assert_close(mean, smean, 1e-9, f"mean {tag}")
        assert_close(std, sstd, 1e-8, f"std {tag}")
        cov, scov = kj.predict(xt, return_cov=True)[1], sk.predict(xt, return_cov=True)[1]
        assert_close(cov, scov, 1e-8, f"cov {tag}")
        assert_close(kj.sample_y(xt, 3, random_state=2), sk.sample_y(xt, 3, random_state=2), 1e-6, f"sample_y {tag}")
    # before fit: the prior of the default kernel, as sklearn
    p_mean, p_std = S.GaussianProcessRegressor().predict(xt, return_std=True)
    s_mean, s_std = SkGP().predict(xt, return_std=True)
    assert_close(p_mean + 1, s_mean + 1, 1e-12, "prior mean")
    assert_close(p_std, s_std, 1e-12, "prior std")
    with pytest.raises(RuntimeError, match="at most one of `return_std` and `return_cov`"):
        kj.predict(xt, return_std=True, return_cov=True)


def test_gp_optimizer_reaches_sklearns_optimum(gp_data):
    x, y, xt = gp_data
    sk = SkGP(_sk_kernel(1.0, 1.0, 0.1), n_restarts_optimizer=1, random_state=0).fit(x, y)
    kj = S.GaussianProcessRegressor(_kj_kernel(1.0, 1.0, 0.1), n_restarts_optimizer=1, random_state=0).fit(x, y)
    assert kj.log_marginal_likelihood_value_ >= sk.log_marginal_likelihood_value_ - 1e-5
    assert kj.log_marginal_likelihood_value_ == pytest.approx(sk.log_marginal_likelihood_value_, abs=1e-3)
    ls, c, v = (kj.kernel_.fn.k1.k.hyperparameters["lengthscale"], kj.kernel_.fn.k1.c,
                kj.kernel_.fn.k2.hyperparameters["variance"])
    np.testing.assert_allclose([c, ls, v], np.exp(sk.kernel_.theta), rtol=2e-2)
    assert_close(kj.predict(xt), sk.predict(xt), 1e-3, "predictions at the optimum")
    # the default kernel (None) is sklearn's C(1.0) * RBF(1.0), optimised
    d, sd = S.GaussianProcessRegressor(alpha=1e-2).fit(x, y), SkGP(alpha=1e-2).fit(x, y)
    assert d.log_marginal_likelihood_value_ == pytest.approx(sd.log_marginal_likelihood_value_, abs=1e-3)
    assert_close(d.predict(xt), sd.predict(xt), 1e-3, "default kernel")
    with pytest.raises(ValueError, match=r"GaussianProcessRegressor.fit: `alpha` must be a scalar or have shape \(24,\)"):
        S.GaussianProcessRegressor(alpha=np.ones(3)).fit(x, y)
    with pytest.raises(ValueError, match=r"`hyperparameter_bounds` must be 'fixed' or a pair"):
        S.GaussianProcessRegressor(_kj_kernel(1.0, 1.0, 0.1), hyperparameter_bounds=(1.0, 0.1)).fit(x, y)
    with pytest.raises(ValueError, match=r"log_marginal_likelihood: `theta` must have shape \(3,\)"):
        kj.log_marginal_likelihood(np.zeros(2))


# --------------------------------------------------------------------------------------------
# scikit-learn's own checks

ESTIMATORS = [S.KernelRidge(), S.GaussianProcessRegressor(), S.FalkonRegressor(), S.EigenProRegressor()]


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_check_estimator(est):
    """Every check of ``check_estimator`` passes (``WAIVED_CHECKS`` lists the waived ones: none).

    The GP runs with ``optimizer=None`` unless ``KJAX_SKLEARN_FULL_CHECKS=1`` (see below).

    Falkon and EigenPro compile their solvers once per number of samples (2-3 s each; the checks fit
    about 20 sizes, which the exact padding of KernelRidge and the GP cannot serve for them), so
    they run with ``KJAX_SKLEARN_FULL_CHECKS=1`` only; the validation, tags and fitted-attribute
    plumbing they share with the other two runs on every test run."""
    name = type(est).__name__
    if name in ("FalkonRegressor", "EigenProRegressor") and not FULL_CHECKS:
        pytest.skip("about 25 s of solver compilations: run with KJAX_SKLEARN_FULL_CHECKS=1")
    if name == "GaussianProcessRegressor" and not FULL_CHECKS:
        # the optimiser's objective at n = 200 costs ~0.8 s per evaluation under the tests' XLA
        # optimisation level 0 (40 s for the checks); test_gp_optimizer_reaches_sklearns_optimum
        # covers the optimiser, KJAX_SKLEARN_FULL_CHECKS=1 checks the default instance
        est = S.GaussianProcessRegressor(optimizer=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = check_estimator(est, expected_failed_checks=S.WAIVED_CHECKS[name], on_fail=None,
                                  on_skip=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert not failed, failed
    assert len(results) >= 50


def test_import_is_optional():
    """``import kjax.regression`` does not import scikit-learn; without scikit-learn,
    ``import kjax.regression.sklearn`` names the extra to install."""
    code = ("import sys; import kjax.regression; assert 'sklearn' not in sys.modules, 'sklearn imported'\n"
            "sys.modules['sklearn'] = None\n"
            "try:\n    import kjax.regression.sklearn\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr
    assert "pip install 'kjax[sklearn]'" in out.stdout


def eigenpro_components_demo():
    """Prints EigenProRegressor's training R^2 after its default 2 epochs with n_components = s / 4
    (the clamp) and s - 1, on scikit-learn's check data (200 x 10; quoted in the user guide)."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.estimator_checks import _regression_dataset

    x, y = _regression_dataset()
    x, y = StandardScaler().fit_transform(x[:200]), StandardScaler().fit_transform(y[:200, None])[:, 0]
    for q in (50, 199):
        est = S.EigenProRegressor(n_components=q, random_state=0)
        est.fit(x, y) if q == 50 else _fit_unclamped(est, x, y)
        print(f"n_components={q}: train R^2 {est.score(x, y):.2f}")


def _fit_unclamped(est, x, y):
    key, kern = S._seed(est.random_state), Kernel(kernels.rbf, lengthscale=float(np.sqrt(x.shape[1] / 2)))
    st = eigenpro_fit(key, kern, x, y, epochs=est.n_epoch, num_eigen=est.n_components, subsample_size=200)
    est.fit(x, y)  # the fitted attributes, then the unclamped coefficients
    est.dual_coef_ = np.asarray(st.alpha)[:, 0]

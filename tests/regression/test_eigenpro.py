"""EigenPro 2 converges towards the exact kernel interpolant."""

import functools

import jax
import numpy as np
import pytest

from kjax import kernels
from kjax import regression as R
from tests.conformance import rel_err

KL = functools.partial(kernels.laplace, lengthscale=3.0)


def test_eigenpro_converges_to_interpolant(data):
    x, y, xt = data
    exact = R.krr_predict(R.krr_fit(KL, x, y, ridge=1e-10), xt)
    errs = []
    for ep in (2, 30):
        st = R.eigenpro_fit(jax.random.key(0), KL, x, y, epochs=ep, num_eigen=30, subsample_size=100)
        assert int(st.status) == 0 and st.train_errors.shape == (ep,)
        errs.append(rel_err(R.eigenpro_predict(st, xt), exact))
    tr = np.asarray(st.train_errors)
    assert tr[-1] < 1e-2 * tr[0]
    assert errs[1] < 0.2 * errs[0] and errs[1] < 0.05, errs
    # preconditioning: the automatic step is far larger than plain SGD's 1/beta = 1
    assert float(st.step_size) > 10


def test_eigenpro_errors(data):
    x, y, _ = data
    with pytest.raises(ValueError, match=r"eigenpro_fit: `num_eigen` must be smaller than the subsample size "
                                         r"min\(subsample_size, n\) = 50; got 60"):
        R.eigenpro_fit(jax.random.key(0), KL, x, y, num_eigen=60, subsample_size=50)
    with pytest.raises(ValueError, match=r"eigenpro_fit: `y` must have 120 rows"):
        R.eigenpro_fit(jax.random.key(0), KL, x, y[:7])
    with pytest.raises(ValueError, match=r"eigenpro_fit: `max_batch_size` must be >= 1; got 0"):
        R.eigenpro_fit(jax.random.key(0), KL, x, y, max_batch_size=0)
    with pytest.raises(ValueError, match=r"eigenpro_fit: `tol` must be >= 0"):
        R.eigenpro_fit(jax.random.key(0), KL, x, y, tol=-1.0)


def _reference_eigenpro2(k, y, q, eta, epochs):
    """EigenPro 2 (Ma & Belkin's reference code) with one full batch and the whole data as the
    subsample: alpha <- alpha - eta/n (g - E D E^T K g), g = K alpha - y; relative residual per epoch."""
    n = k.shape[0]
    lam, e = np.linalg.eigh(k / n)
    lam, e = lam[::-1], e[:, ::-1]
    d = (1 - lam[q] / lam[:q]) / (n * lam[:q])
    a, res = np.zeros_like(y), []
    for _ in range(epochs):
        g = k @ a - y
        a = a - (eta / n) * (g - e[:, :q] @ (d[:, None] * (e[:, :q].T @ (k @ g))))
        res.append(np.linalg.norm(k @ a - y) / np.linalg.norm(y))
    return a, np.array(res), lam


def test_eigenpro_step_is_the_reference_one_over_beta_per_sample(data):
    # regression: the step was m / (beta + (m - 1) lambda_{q+1}), about 0.5 / beta per sample at the
    # critical batch size, where EigenPro 2's code takes m / beta (1 / beta per sample): ~2x slower
    x, y, _ = data
    n, epochs = x.shape[0], 8
    k = np.asarray(KL(x))
    beta = float(k.diagonal().max())
    lam = np.linalg.eigvalsh(k / n)[::-1]
    q = int(np.sum(lam >= beta / (n - 1)))  # lambda_{q+1} just below beta / (n - 1): batch n is critical
    want, res_ref, _ = _reference_eigenpro2(k, y, q, n / beta, epochs)
    _, res_old, _ = _reference_eigenpro2(k, y, q, n / (beta + (n - 1) * lam[q]), epochs)
    assert res_old[-1] > 2 * res_ref[-1]  # the expectation below tells the two steps apart
    st = R.eigenpro_fit(jax.random.key(0), KL, x, y, epochs=epochs, num_eigen=q, subsample_size=n,
                        batch_size=n)
    assert float(st.step_size) == pytest.approx(n / beta)
    assert rel_err(st.alpha, want) < 1e-9
    assert float(st.residual) == pytest.approx(res_ref[-1], rel=1e-8)
    assert int(st.iterations) == epochs and int(st.status) == 0


def test_eigenpro_negative_definite_kernel_reports_not_psd(data):
    # regression: eigenpro_fit reported status 0 for a negative-definite kernel (krr, falkon, gp: 2/3)
    x, y, xt = data

    def neg(a, b=None):
        return -KL(a, b)

    for fit in (lambda: R.eigenpro_fit(jax.random.key(0), neg, x, y, epochs=1, num_eigen=4, subsample_size=20),
                lambda: R.eigenpro3_fit(jax.random.key(0), neg, x, y, centers=x[:20], epochs=1, num_eigen=4,
                                        subsample_size=20)):
        st = fit()
        assert int(st.status) == 3, int(st.status)
        # nothing is fitted (a zero step), and nothing is NaN
        assert np.all(np.asarray(st.alpha) == 0) and np.all(np.isfinite(np.asarray(st.train_errors)))


def test_eigenpro_tol_stops_early_and_reports_the_residual(data):
    x, y, xt = data
    kw = dict(num_eigen=30, subsample_size=120)
    st = R.eigenpro_fit(jax.random.key(0), KL, x, y, epochs=40, tol=1e-2, **kw)
    its = int(st.iterations)
    assert int(st.status) == 0 and float(st.residual) <= 1e-2 and its < 40
    errs = np.asarray(st.train_errors)
    assert np.all(np.isfinite(errs[:its])) and np.all(np.isnan(errs[its:]))
    st = R.eigenpro_fit(jax.random.key(0), KL, x, y, epochs=2, tol=1e-12, **kw)
    assert int(st.status) == 4 and float(st.residual) > 1e-12 and int(st.iterations) == 2
    assert R.eigenpro_predict(st, xt[:0]).shape == (0, 2)


def test_eigenpro3_converges_to_nystrom_least_squares(data):
    x, y, xt = data
    z = x[::3]
    knz = np.asarray(KL(x, z))
    a = np.linalg.lstsq(knz, y, rcond=None)[0]
    want = np.asarray(KL(xt, z)) @ a
    errs = []
    for ep in (2, 20):
        st = R.eigenpro3_fit(jax.random.key(0), KL, x, y, centers=z, epochs=ep, num_eigen=20,
                             subsample_size=40)
        assert int(st.status) == 0 and st.x.shape == z.shape
        errs.append(rel_err(R.eigenpro_predict(st, xt), want))
    tr = np.asarray(st.train_errors)
    assert np.all(np.diff(tr) < 1e-12) and errs[1] < 0.5 * errs[0], (errs, tr)
    with pytest.raises(ValueError, match=r"eigenpro3_fit: `centers` must match `x` in the feature dimension"):
        R.eigenpro3_fit(jax.random.key(0), KL, x, y, centers=z[:, :2])

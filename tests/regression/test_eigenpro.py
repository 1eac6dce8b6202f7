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
    with pytest.raises(ValueError, match=r"eigenpro_fit: `num_eigen` must be smaller than the subsample size 50; got 60"):
        R.eigenpro_fit(jax.random.key(0), KL, x, y, num_eigen=60, subsample_size=50)
    with pytest.raises(ValueError, match=r"eigenpro_fit: `y` must have 120 rows"):
        R.eigenpro_fit(jax.random.key(0), KL, x, y[:7])


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

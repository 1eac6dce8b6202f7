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

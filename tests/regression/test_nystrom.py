"""Leverage scores, dictionaries, RPCholesky, Nystrom centres and random Fourier features."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax import kernels
from kjax import regression as R
from tests.conformance import assert_close
from tests.regression.conftest import KERN, np_rbf


def _clustered(n=300, seed=0):
    """A dense cluster plus a sparse spread: leverage is concentrated on the spread points."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(scale=0.3, size=(n - 30, 2))
    spread = rng.uniform(-6, 6, size=(30, 2))
    return np.concatenate([dense, spread])


def test_exact_rls_and_effective_dimension_vs_numpy():
    x = _clustered(200)
    n, lam = x.shape[0], 1e-3
    k = np_rbf(x, x)
    want = np.diag(k @ np.linalg.inv(k + n * lam * np.eye(n)))
    got = R.ridge_leverage_scores(KERN, x, ridge=lam, ridge_scaling="n")
    assert_close(got, want, 1e-9, "exact RLS")
    assert_close(R.ridge_leverage_scores(KERN, x, ridge=n * lam, ridge_scaling="sklearn"), want, 1e-9,
                 "sklearn scaling")
    d = R.effective_dimension(KERN, x, ridge=jnp.array([lam, 1e-1]), ridge_scaling="n")
    # the default scaling is "none": ridge = n * lambda
    assert_close(R.effective_dimension(KERN, x, ridge=n * jnp.array([lam, 1e-1])), d, 1e-12, "none")
    assert abs(float(d[0]) - want.sum()) < 1e-8 * want.sum()
    assert float(d[1]) < float(d[0])


@pytest.mark.parametrize("method", ["bless", "squeak"])
def test_dictionary_size_tracks_effective_dimension(method):
    x = _clustered(300)
    sizes, deffs = [], []
    for lam in (1e-2, 1e-3, 1e-4):
        deff = float(R.effective_dimension(KERN, x, ridge=lam, ridge_scaling="n"))
        dic = R.leverage_dictionary(jax.random.key(1), KERN, x, ridge=lam, ridge_scaling="n", method=method)
        sizes.append(int(dic.indices.shape[0]))
        deffs.append(deff)
        assert 0.5 * deff <= sizes[-1] <= 6 * deff + 10, (method, lam, sizes[-1], deff)
        # the estimate of d_eff and the approximate scores are within a constant factor
        assert 0.5 * deff <= float(dic.effective_dimension) <= 3 * deff
        exact = np.asarray(R.ridge_leverage_scores(KERN, x, ridge=lam, ridge_scaling="n"))
        ratio = np.asarray(dic.scores) / exact
        assert np.median(ratio) < 5 and np.min(ratio) > 0.3
    assert sizes[0] < sizes[1] < sizes[2] and deffs[0] < deffs[1] < deffs[2]


def test_rls_sampling_prefers_high_leverage_points():
    x = _clustered(300)
    lam = 1e-3
    spread = np.arange(270, 300)
    counts = {}
    for method in ("uniform", "rls", "bless"):
        idx = [np.asarray(R.nystrom_centers(jax.random.key(s), KERN, x, 30, method=method, ridge=lam,
                                            ridge_scaling="n"))
               for s in range(4)]
        assert all(len(np.unique(i)) == 30 for i in idx)
        counts[method] = np.mean([np.isin(i, spread).sum() for i in idx])
    # uniform: about 30 * 30/300 = 3 spread points; leverage sampling picks many more
    assert counts["uniform"] < 8
    assert counts["rls"] > 2 * counts["uniform"] and counts["bless"] > 2 * counts["uniform"]


def test_rpcholesky_residual_trace():
    x = _clustered(200)
    st = R.rpcholesky(jax.random.key(0), KERN, x, 40)
    tr = np.asarray(st.residual_trace)
    assert np.all(np.diff(tr) <= 1e-9) and tr[-1] < 0.2 * tr[0]
    k = np_rbf(x, x)
    f = np.asarray(st.factor)
    assert abs(np.trace(k - f @ f.T) - tr[-1]) < 1e-8 * np.trace(k)
    assert len(np.unique(np.asarray(st.indices))) == 40
    # the pivots span: K - F F^T vanishes on the pivot rows
    piv = np.asarray(st.indices)
    assert np.max(np.abs((k - f @ f.T)[piv][:, piv])) < 1e-8
    assert int(st.status) == 0
    idx = R.nystrom_centers(jax.random.key(0), KERN, x, 40, method="rpcholesky")
    np.testing.assert_array_equal(np.asarray(idx), piv)
    with pytest.raises(ValueError, match=r"rpcholesky: `m` must be at most the number of points n=200; got 201"):
        R.rpcholesky(jax.random.key(0), KERN, x, 201)


def test_out_of_domain_values_and_non_psd_kernels_are_rejected():
    # regression: leverage_dictionary(oversampling=-1) was silently accepted
    x = _clustered(60)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"leverage_dictionary: `oversampling` must be > 0; got -1"):
        R.leverage_dictionary(key, KERN, x, ridge=1e-2, oversampling=-1)
    with pytest.raises(ValueError, match=r"leverage_dictionary: `chunk_size` must be >= 1; got 0"):
        R.leverage_dictionary(key, KERN, x, ridge=1e-2, method="squeak", chunk_size=0)
    with pytest.raises(ValueError, match=r"leverage_dictionary: `jitter` must be > 0"):
        R.leverage_dictionary(key, KERN, x, ridge=1e-2, jitter=-1e-3)
    with pytest.raises(ValueError, match=r"nystrom_centers: `ridge_scaling` must be one of"):
        R.nystrom_centers(key, KERN, x, 5, method="rls", ridge=1e-2, ridge_scaling="falkon")

    def neg(a, b=None):
        return -KERN(a, b)

    for call in (lambda: R.ridge_leverage_scores(neg, x, ridge=1e-2),
                 lambda: R.effective_dimension(neg, x, ridge=1e-2),
                 lambda: R.leverage_dictionary(key, neg, x, ridge=1e-2),
                 lambda: R.leverage_dictionary(key, neg, x, ridge=1e-2, method="squeak"),
                 lambda: R.nystrom_centers(key, neg, x, 5, method="rls", ridge=1e-2),
                 lambda: R.nystrom_centers(key, neg, x, 5, method="rpcholesky")):
        with pytest.raises(ValueError, match=r"kjax.regression.\w+: `kernel` must be positive definite"):
            call()
    assert int(R.rpcholesky(key, neg, x, 5).status) == 3


_RBF = functools.partial(kernels.rbf, lengthscale=1.5)


@pytest.mark.parametrize("kernel,kind", [
    (_RBF, "iid"), (_RBF, "orthogonal"), (_RBF, "simplex"),
    (functools.partial(kernels.laplace, lengthscale=2.0), "iid"),
    (functools.partial(kernels.matern, lengthscale=1.5, nu=2.5, variance=2.0), "orthogonal"),
])
def test_rff_gram_converges_to_kernel(kernel, kind):
    x = jax.random.normal(jax.random.key(0), (60, 3))
    k = np.asarray(kernel(x))
    errs = []
    for m in (32, 2048):
        e = [np.linalg.norm(np.asarray((p := R.random_fourier_features(
            jax.random.key(s), x, kernel=kernel, num_features=m, kind=kind)) @ p.T) - k)
            / np.linalg.norm(k) for s in range(3)]
        errs.append(np.mean(e))
    # Monte Carlo rate 1/sqrt(M): 64x more features, about 8x smaller error
    assert errs[1] < errs[0] / 4, errs
    assert errs[1] < 0.08, errs


def test_rff_errors():
    x = jnp.ones((4, 2))
    with pytest.raises(TypeError, match=r"random_fourier_features: `kernel` must be kjax.kernels.rbf, laplace or matern"):
        R.random_fourier_features(jax.random.key(0), x, kernel=kernels.polynomial, num_features=8)
    with pytest.raises(ValueError, match=r"random_fourier_features: `kind` must be one of"):
        R.random_fourier_features(jax.random.key(0), x, kernel=kernels.rbf, num_features=8, kind="qmc")
    with pytest.raises(ValueError, match=r"random_fourier_features: `num_features` must be >= 1"):
        R.random_fourier_features(jax.random.key(0), x, kernel=kernels.rbf, num_features=0)

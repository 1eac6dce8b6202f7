"""GP posterior and log marginal likelihood against scikit-learn's GaussianProcessRegressor."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, Matern

from kjax import kernels
from kjax import regression as R
from tests.conformance import assert_close


@pytest.mark.parametrize("which", ["rbf", "matern52"])
def test_gp_equals_sklearn(data, which):
    x, y, xt = data
    if which == "rbf":
        sk_k, k = RBF(0.9), functools.partial(kernels.rbf, lengthscale=0.9)
    else:
        sk_k, k = Matern(1.1, nu=2.5), functools.partial(kernels.matern, lengthscale=1.1, nu=2.5)
    g = GaussianProcessRegressor(sk_k, alpha=0.05, optimizer=None).fit(x, y[:, 0])
    mean, std = g.predict(xt, return_std=True)
    post = R.gp_posterior(k, x, y[:, 0], xt, ridge=0.05)
    assert int(post.status) == 0
    assert_close(post.mean, mean, 1e-10, "mean")
    assert_close(jnp.sqrt(post.variance), std, 1e-8, "std")
    lml = R.gp_log_marginal_likelihood(k, x, y[:, 0], ridge=0.05)
    assert abs(float(lml) - g.log_marginal_likelihood_value_) <= 1e-9 * abs(g.log_marginal_likelihood_value_)


def test_lml_gradient_vs_sklearn_and_optax(data):
    x, y, _ = data
    x, y = x[:60], y[:60, 0]
    ls, noise = 0.9, 0.05

    def lml(log_ls, log_noise):
        k = functools.partial(kernels.rbf, lengthscale=jnp.exp(log_ls))
        return R.gp_log_marginal_likelihood(k, x, y, ridge=jnp.exp(log_noise))

    g = GaussianProcessRegressor(RBF(ls), alpha=noise, optimizer=None).fit(x, y)
    _, grad_sk = g.log_marginal_likelihood(np.log([ls]), eval_gradient=True)
    vg = jax.jit(jax.value_and_grad(lml, argnums=(0, 1)))
    _, grad = vg(jnp.log(ls), jnp.log(noise))
    assert abs(float(grad[0]) - grad_sk[0]) <= 1e-7 * max(1.0, abs(grad_sk[0]))
    # noise gradient against central finite differences
    e = 1e-6
    fd = (vg(jnp.log(ls), jnp.log(noise) + e)[0] - vg(jnp.log(ls), jnp.log(noise) - e)[0]) / (2 * e)
    assert abs(float(grad[1] - fd)) <= 1e-5 * max(1.0, abs(float(fd)))

    # a few optax steps (the guide's worked example) increase the marginal likelihood
    import optax

    opt = optax.adam(0.1)

    @jax.jit
    def step(p, s):
        value, gr = vg(p[0], p[1])
        upd, s = opt.update(-jnp.stack(gr), s)
        return optax.apply_updates(p, upd), s, value

    params = jnp.array([0.0, jnp.log(0.5)])
    state = opt.init(params)
    values = []
    for _ in range(30):
        params, state, value = step(params, state)
        values.append(float(value))
    assert values[-1] > values[0] + 1.0


def test_gp_errors(data):
    x, y, xt = data
    with pytest.raises(ValueError, match=r"gp_posterior: `ridge` must be > 0; got 0.0"):
        R.gp_posterior(kernels.rbf, x, y, xt, ridge=0.0)
    with pytest.raises(ValueError, match=r"gp_posterior: `ridge` must be given"):
        R.gp_posterior(kernels.rbf, x, y, xt)
    with pytest.raises(ValueError, match=r"gp_log_marginal_likelihood: `y` must have 120 rows"):
        R.gp_log_marginal_likelihood(kernels.rbf, x, y[:3], ridge=0.1)


def test_noise_is_a_deprecated_alias_of_ridge(data):
    x, y, xt = data
    new = R.gp_posterior(kernels.rbf, x, y, xt, ridge=0.05)
    with pytest.warns(DeprecationWarning, match=r"gp_posterior: `noise` is deprecated; pass the same number "
                                                r"as `ridge`"):
        old = R.gp_posterior(kernels.rbf, x, y, xt, noise=0.05)
    np.testing.assert_array_equal(old.mean, new.mean)
    with pytest.warns(DeprecationWarning, match=r"gp_log_marginal_likelihood: `noise` is deprecated"):
        lml = R.gp_log_marginal_likelihood(kernels.rbf, x, y, noise=0.05)
    assert float(lml) == float(R.gp_log_marginal_likelihood(kernels.rbf, x, y, ridge=0.05))
    with pytest.raises(ValueError, match=r"gp_posterior: `noise` must not be given together with `ridge`"):
        R.gp_posterior(kernels.rbf, x, y, xt, ridge=0.05, noise=0.05)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"gp_posterior: `noise` must be > 0"):
        R.gp_posterior(kernels.rbf, x, y, xt, noise=-1.0)


def test_gp_posterior_nan_x_new_is_an_error_or_a_status(data):
    # regression: NaN in a concrete x_new gave a NaN mean with status 0
    x, y, xt = data
    bad = xt.copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"gp_posterior: `x_new` must contain only finite values.*got 1"):
        R.gp_posterior(kernels.rbf, x, y[:, 0], bad, ridge=0.1)
    post = jax.jit(lambda a: R.gp_posterior(kernels.rbf, x, y[:, 0], a, ridge=0.1))(bad)
    assert int(post.status) == 1 and R.status_name(post.status) == "non-finite input"
    mean = np.asarray(post.mean)
    assert np.isnan(mean[4]) and np.all(np.isfinite(np.delete(mean, 4)))

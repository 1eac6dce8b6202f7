"""GPJax's collapsed SGPR (Titsias 2009) on fixed data: the stored oracle of
tests/regression/test_sgpr.py.

    python -m venv benchmarks/.peers/gpjax && benchmarks/.peers/gpjax/bin/pip install gpjax  # 1.0.0
    benchmarks/.peers/gpjax/bin/python benchmarks/peers/gpjax_sgpr_reference.py

Writes tests/regression/data/gpjax_sgpr.npz: the data (x, y, inducing inputs z, test points xt),
the hyperparameters (RBF lengthscale and variance, noise variance) and GPJax's collapsed ELBO
and predictive latent mean / variance at xt. GPJax's jitter is set to 1e-12 so that it does not
shift the numbers beyond the comparison's tolerance.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

import gpjax as gpx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "regression", "data", "gpjax_sgpr.npz")
LENGTHSCALE, VARIANCE, NOISE = 0.8, 1.0, 0.05
JITTER = 1e-12


def data():
    rng = np.random.default_rng(16)
    x = rng.uniform(-3.0, 3.0, size=(80, 2))
    y = np.sin(x[:, 0]) * np.cos(0.5 * x[:, 1]) + 0.2 * rng.normal(size=80)
    z = x[::4]  # 20 inducing points
    xt = rng.uniform(-3.0, 3.0, size=(7, 2))
    return x, y, z, xt


def main():
    x, y, z, xt = data()
    d = gpx.Dataset(X=jnp.asarray(x), y=jnp.asarray(y)[:, None])
    kernel = gpx.kernels.RBF(lengthscale=LENGTHSCALE, variance=VARIANCE)
    prior = gpx.gps.Prior(mean_function=gpx.mean_functions.Zero(), kernel=kernel, jitter=JITTER)
    lik = gpx.likelihoods.Gaussian(obs_stddev=float(np.sqrt(NOISE)))
    q = gpx.variational_families.CollapsedVariationalGaussian(prior * lik, inducing_inputs=jnp.asarray(z))
    elbo = float(gpx.objectives.collapsed_elbo(q, d))
    pred = q.predict(jnp.asarray(xt), train_data=d)
    mean, var = np.asarray(pred.mean).reshape(-1), np.asarray(pred.variance).reshape(-1)
    np.savez(OUT, x=x, y=y, z=z, xt=xt, lengthscale=LENGTHSCALE, variance=VARIANCE, noise=NOISE,
             elbo=elbo, mean=mean, var=var, gpjax_version=gpx.__version__)
    print(f"gpjax {gpx.__version__}: ELBO {elbo:.10f}, mean[:3] {mean[:3]}, var[:3] {var[:3]} -> {OUT}")


if __name__ == "__main__":
    main()

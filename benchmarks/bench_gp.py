"""GP log marginal likelihood and its gradient w.r.t. the hyperparameters: kjax vs scikit-learn vs tinygp.

    python benchmarks/bench_gp.py [--sizes 1000 5000] [--repeats 5]

One evaluation of ``(log p(y | X, theta), d log p / d theta)`` for an RBF kernel with a lengthscale,
a signal variance and a noise variance (theta in log space, as scikit-learn optimises it), float64,
``d = 4``, the same data for all three:

* kjax: ``jax.jit(jax.value_and_grad(f))`` with ``f(theta) = gp_log_marginal_likelihood(variance *
  Kernel(rbf, lengthscale), X, y, ridge=noise)`` (the kernel is a pytree; no recompilation per theta);
* scikit-learn: ``GaussianProcessRegressor(kernel=C * RBF + WhiteKernel).log_marginal_likelihood(theta,
  eval_gradient=True)`` (analytic gradient, LAPACK through SciPy);
* tinygp: ``jax.jit(jax.value_and_grad(...))`` of ``GaussianProcess(C * ExpSquared(l), X,
  diag=noise).log_probability(y)``.

Values and gradients are compared first (all three agree to ~1e-9 relative), then each is timed
(median of ``--repeats`` after a warm-up). The ratios are ``peer time / kjax time``.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import header, time_median

jax.config.update("jax_enable_x64", True)

from kjax import kernels, regression  # noqa: E402


def data(n: int, d: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, size=(n, d))
    y = np.sin(x @ rng.normal(size=d)) + 0.1 * rng.normal(size=n)
    return x, y


THETA = np.log(np.array([1.3, 1.7, 0.05]))  # lengthscale, signal variance, noise variance


def kjax_fn(x, y):
    def lml(theta):
        ls, var, noise = jnp.exp(theta)
        k = var * kernels.Kernel(kernels.rbf, lengthscale=ls)
        return regression.gp_log_marginal_likelihood(k, x, y, ridge=noise)
    return jax.jit(jax.value_and_grad(lml))


def sklearn_fn(x, y):
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process import kernels as skk

    kern = skk.ConstantKernel(1.0) * skk.RBF(1.0) + skk.WhiteKernel(1.0)
    gp = GaussianProcessRegressor(kern, alpha=0.0, optimizer=None, normalize_y=False).fit(x, y)
    # scikit-learn orders theta as (constant, lengthscale, noise)
    order = [1, 0, 2]

    def call(theta):
        v, g = gp.log_marginal_likelihood(theta[order], eval_gradient=True)
        out = np.empty(3)
        out[order] = g
        return v, out
    return call


def tinygp_fn(x, y):
    try:
        import tinygp
    except ImportError:
        return None

    def lml(theta):
        ls, var, noise = jnp.exp(theta)
        gp = tinygp.GaussianProcess(var * tinygp.kernels.ExpSquared(scale=ls), x, diag=noise)
        return gp.log_probability(y)
    return jax.jit(jax.value_and_grad(lml))


def rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    header("GP log marginal likelihood + gradient (RBF, 3 hyperparameters, float64, d=4)")
    rows = []
    for n in args.sizes:
        x, y = data(n)
        fns = {"kjax": kjax_fn(jnp.asarray(x), jnp.asarray(y)), "scikit-learn": sklearn_fn(x, y)}
        tg = tinygp_fn(jnp.asarray(x), jnp.asarray(y))
        if tg is not None:
            fns["tinygp"] = tg
        theta = {k: (jnp.asarray(THETA) if k != "scikit-learn" else THETA) for k in fns}
        vals = {k: f(theta[k]) for k, f in fns.items()}
        v0, g0 = (np.asarray(t) for t in vals["kjax"])
        for k, (v, g) in vals.items():
            ev, eg = rel(v, v0), rel(g, g0)
            print(f"n={n} {k}: log p = {float(v):.6f}, grad = {np.round(np.asarray(g), 4)}, "
                  f"vs kjax: value {ev:.1e}, grad {eg:.1e}")
            if ev > 1e-7 or eg > 1e-6:
                print(f"ABORT: {k} disagrees with kjax at n={n}")
                return 1
        times = {k: time_median(f, theta[k], repeats=args.repeats) for k, f in fns.items()}
        rows.append((n, times))
    names = ["kjax", "scikit-learn", "tinygp"]
    print("\n| n | " + " | ".join(f"{k} (s)" for k in names) + " | scikit-learn / kjax | tinygp / kjax |")
    print("| --- " * (len(names) + 3) + "|")
    for n, t in rows:
        cells = [f"{t[k]:.3f}" if k in t else "-" for k in names]
        r_sk = f"{t['scikit-learn'] / t['kjax']:.2f}x"
        r_tg = f"{t['tinygp'] / t['kjax']:.2f}x" if "tinygp" in t else "-"
        print(f"| {n} | " + " | ".join(cells) + f" | {r_sk} | {r_tg} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

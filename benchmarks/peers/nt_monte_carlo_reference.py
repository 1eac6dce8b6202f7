"""Store neural-tangents' Monte Carlo kernels, predict and empirical outputs for kjax's #14 tests.

Runs IN the neural-tangents peer environment (jax 0.4.23; see setup_nt.sh) and writes
tests/ntk/data/nt_monte_carlo_reference.npz, which kjax's tests read without NT:

    NT_PY=${NT_PY:-benchmarks/.peers/nt/bin/python}
    JAX_PLATFORMS=cpu $NT_PY benchmarks/peers/nt_monte_carlo_reference.py

Stored: ``mc/x1``, ``mc/x2`` (NumPy-drawn inputs), ``mc/<n>/nngp`` and ``mc/<n>/ntk``: NT's
``monte_carlo_kernel_fn`` of Dense(16, 1.5, 0.1)-Relu-Dense(1, 1.5, 0.1) with
``jax.random.PRNGKey(7)`` and ``n_samples=(1, 3, 5)`` (the running estimates of one generator) and
``mc/5s/ntk`` (``n_samples=5`` alone); ``gd/...`` NT's ``predict.gradient_descent`` (ODE) on
cross-entropy with momentum; ``mlr`` NT's ``max_learning_rate``.
"""

from __future__ import annotations

import os

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import predict, stax  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "ntk", "data", "nt_monte_carlo_reference.npz")


def main() -> None:
    rng = np.random.default_rng(14)
    out = {}
    x1, x2 = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    out["mc/x1"], out["mc/x2"] = x1, x2
    init_fn, apply_fn, _ = stax.serial(stax.Dense(16, 1.5, 0.1), stax.Relu(), stax.Dense(1, 1.5, 0.1))
    mc = nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(7), (1, 3, 5))
    gen = mc(x1, x2, ("nngp", "ntk"))
    for n, k in zip((1, 3, 5), gen, strict=True):
        out[f"mc/{n}/nngp"], out[f"mc/{n}/ntk"] = np.asarray(k.nngp), np.asarray(k.ntk)
    out["mc/5s/ntk"] = np.asarray(nt.monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.PRNGKey(7), 5)(
        x1, x2, "ntk"))

    n, m, o = 4, 3, 2
    a = rng.standard_normal((n + m, 5))
    k = a @ a.T / 5
    ktt, kst = k[:n, :n], k[n:, :n]
    y = rng.standard_normal((n, o))
    fx0, gx0 = 0.1 * rng.standard_normal((n, o)), 0.1 * rng.standard_normal((m, o))
    ts = np.array([0.5, 2.0])
    out.update({"gd/ktt": ktt, "gd/kst": kst, "gd/y": y, "gd/fx0": fx0, "gd/gx0": gx0, "gd/ts": ts})
    xent = lambda fx, yh: -jnp.mean(jax.nn.log_softmax(fx) * yh)
    f_t, g_t = predict.gradient_descent(xent, ktt, y, 0.5, 0.9)(ts, fx0, gx0, kst)
    out["gd/momentum/fx"], out["gd/momentum/gx"] = np.asarray(f_t), np.asarray(g_t)
    f_t, g_t = predict.gradient_descent(xent, ktt, y, 0.5)(ts, fx0, gx0, kst)
    out["gd/plain/fx"], out["gd/plain/gx"] = np.asarray(f_t), np.asarray(g_t)
    out["mlr"] = np.asarray(predict.max_learning_rate(ktt, y.size, 0.5))
    np.savez(OUT, **out)
    print(f"wrote {OUT} ({len(out)} arrays)")


if __name__ == "__main__":
    main()

"""Ridge-leverage-score Nystrom centres vs uniform ones (Rudi et al. 2018; Calandriello et al. 2017).

Claims checked:

1. Nystrom KRR with centres drawn by ridge leverage scores (exact RLS and BLESS) reaches a given
   test error (within 10% of exact KRR's) with fewer centres than uniformly drawn centres, on data
   whose density is very uneven (a dense cluster plus sparse, far-away points where the target
   varies).
2. The size of the BLESS / SQUEAK dictionary tracks the effective dimension d_eff(lambda) as
   lambda varies (it stays within a constant factor of d_eff).

    python experiments/rls_sampling.py        # a few minutes on 2 CPU cores
"""

import functools
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np

from kjax import kernels, regression

FIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "figures", "rls_sampling.png")
KERN = functools.partial(kernels.rbf, lengthscale=0.5)


def make(n, seed):
    rng = np.random.default_rng(seed)
    n_far = n // 10
    dense = rng.normal(scale=0.3, size=(n - n_far, 2))
    far = rng.uniform(-4, 4, size=(n_far, 2))
    x = np.concatenate([dense, far])
    y = np.sin(2 * x[:, 0]) * np.cos(2 * x[:, 1]) + 0.05 * rng.normal(size=n)
    return x, y


def nystrom_mse(x, y, xte, yte, idx, lam):
    n = len(x)
    z = x[np.asarray(idx)]
    knm, kmm = np.asarray(KERN(x, z)), np.asarray(KERN(z))
    a = np.linalg.lstsq(knm.T @ knm + n * lam * kmm, knm.T @ y, rcond=1e-12)[0]
    return float(np.mean((np.asarray(KERN(xte, z)) @ a - yte) ** 2))


def main() -> int:
    n, lam = 2000, 1e-5
    x, y = make(n, 0)
    xte, yte = make(2000, 1)
    exact = regression.krr_fit(KERN, x, y, ridge=lam, ridge_scaling="n")
    exact_mse = float(np.mean((np.asarray(regression.krr_predict(exact, xte)) - yte) ** 2))
    deff = float(regression.effective_dimension(KERN, x, ridge=lam, ridge_scaling="n"))
    print(f"n={n}, lambda={lam}: exact KRR test MSE {exact_mse:.4f}, d_eff {deff:.1f}")
    ms = [20, 40, 80, 160, 320]
    methods = ["uniform", "rls", "bless"]
    curves = {m: [] for m in methods}
    for method in methods:
        for m in ms:
            errs = [nystrom_mse(x, y, xte, yte, regression.nystrom_centers(
                jax.random.key(s), KERN, x, m, method=method, ridge=lam, ridge_scaling="n"), lam)
                for s in range(3)]
            curves[method].append(float(np.median(errs)))
        print(f"{method:8s} test MSE for M={ms}: " + " ".join(f"{e:.4f}" for e in curves[method]),
              flush=True)
    target = 1.1 * exact_mse

    def needed(method):
        ok = [m for m, e in zip(ms, curves[method], strict=True) if e <= target]
        return ok[0] if ok else np.inf

    need = {m: needed(m) for m in methods}
    print(f"centres needed to reach 1.1 x exact KRR error ({target:.4f}): {need}")
    claim1 = need["rls"] < need["uniform"] and need["bless"] < need["uniform"]

    lams = [1e-2, 1e-3, 1e-4, 1e-5]
    xs, _ = make(1000, 2)
    rows = []
    for lm in lams:
        d = float(regression.effective_dimension(KERN, xs, ridge=lm, ridge_scaling="n"))
        sizes = [int(regression.leverage_dictionary(jax.random.key(3), KERN, xs, ridge=lm,
                                                    ridge_scaling="n", method=meth).indices.shape[0])
                 for meth in ("bless", "squeak")]
        rows.append((lm, d, *sizes))
        print(f"lambda={lm:.0e}: d_eff {d:6.1f}, BLESS dictionary {sizes[0]:4d}, SQUEAK {sizes[1]:4d}",
              flush=True)
    ratios = np.array([[r[2] / r[1], r[3] / r[1]] for r in rows])
    monotone = all(rows[i][2] < rows[i + 1][2] and rows[i][3] < rows[i + 1][3]
                   for i in range(len(rows) - 1))
    claim2 = monotone and np.all((ratios > 0.5) & (ratios < 6))
    print(f"dictionary size / d_eff: {np.round(ratios, 2).tolist()}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for method in methods:
        axs[0].loglog(ms, curves[method], "o-", label=method)
    axs[0].axhline(exact_mse, color="k", ls="--", lw=0.8, label="exact KRR")
    axs[0].set_xlabel("centres M")
    axs[0].set_ylabel("test MSE")
    axs[0].legend(fontsize=7)
    d_eff = [r[1] for r in rows]
    axs[1].loglog(d_eff, [r[2] for r in rows], "o-", label="BLESS")
    axs[1].loglog(d_eff, [r[3] for r in rows], "s-", label="SQUEAK")
    axs[1].loglog(d_eff, d_eff, "k--", lw=0.8, label="d_eff")
    axs[1].set_xlabel("d_eff(lambda)")
    axs[1].set_ylabel("dictionary size")
    axs[1].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(FIG), exist_ok=True)
    fig.savefig(FIG)
    print(f"figure: {FIG}")
    print(f"claim 1 (RLS/BLESS centres reach the error with fewer centres than uniform): "
          f"{'HELD' if claim1 else 'NOT HELD'}")
    print(f"claim 2 (dictionary size tracks d_eff): {'HELD' if claim2 else 'NOT HELD'}")
    return 0 if (claim1 and claim2) else 1


if __name__ == "__main__":
    sys.exit(main())

"""pNTK approaches the eNTK as the network widens (Mohamadi, Bae, Sutherland, ICML 2023).

Claim (their Theorem 1 and Figure 1): for an O-output network, the pseudo-NTK
pNTK(x, x') = (1/O) (d sum_o f_o(x) / d theta)(d sum_o f_o(x') / d theta)^T, times I_O, approximates
the full eNTK Theta(x, x') in [O, O] blocks, with relative error that shrinks as width grows
(O(n^{-1/2})), while costing one backward pass per example instead of O.

We measure, on scikit-learn digits (O = 10 classes), for MLPs 64 -> n -> n -> 10 at init with the
standard (NTK) parameterisation, the relative Frobenius error of pNTK (x) I_O against the full eNTK
and the time of each, and check that (1) the error decreases with width and (2) a fit of the
error against width has slope near -1/2 on a log-log plot (we accept slope < -0.25), and (3) pNTK
is cheaper than the full eNTK at the largest width.

    python experiments/pntk_vs_entk.py            # a minute or two on 2 CPU cores
"""

from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", False)

from kjax.ntk import empirical_ntk  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def mlp(p, x):
    h = x
    for i in range(len(p) - 1):
        w = p[f"w{i}"]
        h = jax.nn.relu(h @ w / np.sqrt(w.shape[0]))
    w = p[f"w{len(p) - 1}"]
    return h @ w / np.sqrt(w.shape[0])


def init(key, widths):
    ks = jax.random.split(key, len(widths) - 1)
    return {f"w{i}": jax.random.normal(k, (widths[i], widths[i + 1]))
            for i, k in enumerate(ks)}


def timed(fn):
    jax.block_until_ready(fn())
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t0


def main(n_points: int = 64, widths=(32, 64, 128, 256, 512, 1024), seeds=3) -> bool:
    from sklearn.datasets import load_digits

    x, _ = load_digits(return_X_y=True)
    x = jnp.asarray((x[:n_points] - x.mean(0)) / (x.std(0) + 1e-6), jnp.float32)
    errs, t_full, t_pntk = [], [], []
    for n in widths:
        e = []
        for s in range(seeds):
            p = init(jax.random.key(s), (64, n, n, 10))
            full, tf = timed(lambda p=p: empirical_ntk(mlp, p, x, mode="full"))
            pntk, tp = timed(lambda p=p: empirical_ntk(mlp, p, x, mode="pntk"))
            approx = jnp.einsum("ij,ab->ijab", pntk, jnp.eye(10))
            e.append(float(jnp.linalg.norm(approx - full) / jnp.linalg.norm(full)))
        errs.append(np.mean(e))
        t_full.append(tf)
        t_pntk.append(tp)
        print(f"width {n:5d}: relative error {errs[-1]:.4f}  time full {tf:.3f} s, "
              f"pNTK {tp:.3f} s ({tf / tp:.1f}x)", flush=True)
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    decreasing = all(b < a for a, b in zip(errs, errs[1:], strict=False))
    cheaper = t_pntk[-1] < t_full[-1]
    held = decreasing and slope < -0.25 and cheaper
    print(f"\nlog-log slope of error vs width: {slope:.2f} (theory: -0.5)")
    print(f"error decreases with width: {decreasing}; pNTK cheaper at width {widths[-1]}: "
          f"{cheaper} ({t_full[-1] / t_pntk[-1]:.1f}x)")
    print(f"CLAIM {'HELD' if held else 'DID NOT HOLD'}: pNTK approaches the eNTK as width grows, "
          "at a fraction of the cost")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].loglog(widths, errs, "o-", label="measured")
    ax[0].loglog(widths, errs[0] * (np.array(widths) / widths[0]) ** -0.5, "k--",
                 label="width$^{-1/2}$")
    ax[0].set(xlabel="width", ylabel="relative error of pNTK $\\otimes I$", title="pNTK vs eNTK")
    ax[0].legend()
    ax[1].loglog(widths, t_full, "o-", label="full eNTK")
    ax[1].loglog(widths, t_pntk, "s-", label="pNTK")
    ax[1].set(xlabel="width", ylabel="seconds (64 digits)", title="cost")
    ax[1].legend()
    fig.tight_layout()
    os.makedirs(os.path.join(HERE, "figures"), exist_ok=True)
    path = os.path.join(HERE, "figures", "pntk_vs_entk.png")
    fig.savefig(path, dpi=90)
    print(f"figure: {path}")
    return held


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

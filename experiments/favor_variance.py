"""Softmax-kernel estimation error of positive random features versus the number of features.

Claim (Choromanski et al., ICLR 2021, Theorem 2; Reid et al., *Simplex Random Features*, ICML 2023,
Theorem 4.3): for the positive random features of FAVOR+, coupling the projection rows lowers the
mean squared error of the estimate of exp(x^T y): simplex <= orthogonal < iid, at every number of
features M.

    .venv/bin/python experiments/favor_variance.py

Prints the MSE (with standard errors) per M and kind, whether the claim held, and saves
experiments/figures/favor_variance.png.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from kjax.attention import favor_positive, random_projection

D = 16
M_LIST = [16, 32, 64, 128, 256]
KINDS = ["iid", "orthogonal", "simplex"]
DRAWS = 3000  # independent projections per (M, kind)
PAIRS = 32


def main():
    rng = np.random.default_rng(0)
    # pairs on the sphere of radius 1 (logits in [-1, 1], the regime of scaled attention)
    x = rng.normal(size=(PAIRS, D))
    y = rng.normal(size=(PAIRS, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    x, y = jnp.asarray(x), jnp.asarray(y)
    exact = jnp.exp(jnp.sum(x * y, -1))

    def sq_errors(keys, m, kind):
        def one(key):
            w = random_projection(key, m, D, kind=kind, dtype=np.float64)
            est = jnp.sum(favor_positive(x, w, stabilize=None) * favor_positive(y, w, stabilize=None), -1)
            return (est - exact) ** 2
        return jax.vmap(one)(keys)

    results = {}
    for m in M_LIST:
        keys = jax.random.split(jax.random.key(m), DRAWS)  # the same keys for every kind
        for kind in KINDS:
            se = np.asarray(jax.jit(sq_errors, static_argnums=(1, 2))(keys, m, kind)).mean(1)
            results[kind, m] = (se.mean(), se.std() / np.sqrt(DRAWS))
    print(f"D={D}, |x|=|y|=1, {PAIRS} pairs, {DRAWS} independent draws per point; MSE of exp(x.y) estimates")
    print("M     " + "".join(f"{k:>22}" for k in KINDS))
    held = True
    for m in M_LIST:
        print(f"{m:<6}" + "".join(f"{results[k, m][0]:>13.3e} +- {results[k, m][1]:.0e}" for k in KINDS))
        iid, orth, simp = (results[k, m][0] for k in KINDS)
        held &= orth < iid and simp <= orth
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for k in KINDS:
            ax.errorbar(M_LIST, [results[k, m][0] for m in M_LIST],
                        yerr=[2 * results[k, m][1] for m in M_LIST], label=k, marker="o", capsize=3)
        ax.set(xscale="log", yscale="log", xlabel="number of features M", ylabel="MSE of exp(x.y) estimate",
               title=f"FAVOR+ positive features, D={D}")
        ax.legend()
        fig.tight_layout()
        out = os.path.join(os.path.dirname(__file__), "figures", "favor_variance.png")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fig.savefig(out, dpi=90)
        print(f"figure: {out}")
    except ImportError:
        print("matplotlib not installed: no figure")
    print(f"claim (MSE: simplex <= orthogonal < iid at every M): {'HELD' if held else 'DID NOT HOLD'}")
    return held


if __name__ == "__main__":
    main()

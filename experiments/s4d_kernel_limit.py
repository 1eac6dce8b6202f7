"""S4D-LegS approaches S4-LegS as the state grows (Gu, Gupta, Goel & Re, NeurIPS 2022, Sec. 4 / Fig. 2).

Claim: the diagonal SSM built from the *normal part* of the HiPPO-LegS matrix, with input matrix
B / 2, has basis kernels K_n(t) = (e^{t A_normal} B / 2)_n that converge to the full (normal plus
low-rank) S4-LegS kernels (e^{t A} B)_n as the state size N grows.

Both sides are discretised with zero-order hold at the same step; the diagonal side is computed
with kjax.ssm.s4d_filter (its channels are the basis functions n = 0..7), the full side with a
dense matrix exponential in float64. We report the relative error of the first 8 basis kernels
for N in {16, ..., 512} and say whether it decreases towards zero.

    python experiments/s4d_kernel_limit.py
"""

from __future__ import annotations

import os

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import matplotlib
import numpy as np
import scipy.linalg

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from kjax.ssm import S4DParams, s4d_filter

NB, DT, L = 8, 1e-2, 800  # basis functions compared, step, samples (t in [0, 8))


def legs(n):
    q = np.arange(n)
    r = np.sqrt(2 * q + 1.0)
    a = -np.where(q[:, None] > q[None, :], r[:, None] * r[None, :], np.diag(q + 1.0))
    return a, r.copy(), np.sqrt(q + 0.5)


def full_kernels(n):
    a, b, _ = legs(n)
    da = scipy.linalg.expm(DT * a)
    db = np.linalg.solve(a, (da - np.eye(n)) @ b)
    out, x = np.zeros((L, NB)), db
    for ell in range(L):
        out[ell] = x[:NB]
        x = da @ x
    return out


def diagonal_kernels(n):
    a, b, p = legs(n)
    s = a + np.outer(p, p)  # normal part: -1/2 I + skew-symmetric
    w, v = np.linalg.eigh(-1j * (s + 0.5 * np.eye(n)))
    keep = w > 0
    bv = (v.conj().T @ (b / 2))[keep]
    m = int(keep.sum())
    c = v[:NB][:, keep]  # channel n reads basis function n: C = V[n, kept]
    params = S4DParams(
        log_dt=jnp.full((NB,), np.log(DT)), log_a_real=jnp.full((NB, m), np.log(0.5)),
        a_imag=jnp.broadcast_to(jnp.asarray(w[keep]), (NB, m)),
        b_re=jnp.broadcast_to(jnp.asarray(bv.real), (NB, m)),
        b_im=jnp.broadcast_to(jnp.asarray(bv.imag), (NB, m)),
        c_re=jnp.asarray(c.real), c_im=jnp.asarray(c.imag))
    return np.asarray(s4d_filter(params, L))


def main() -> bool:
    sizes = [16, 32, 64, 128, 256, 512]
    errs, curves = [], {}
    for n in sizes:
        kf, kd = full_kernels(n), diagonal_kernels(n)
        err = np.linalg.norm(kd - kf) / np.linalg.norm(kf)
        errs.append(err)
        curves[n] = (kf, kd)
        print(f"N={n:4d}: relative error of the first {NB} basis kernels, S4D-LegS vs S4-LegS: {err:.3e}")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    t = DT * np.arange(L)
    kf, kd = curves[sizes[-1]]
    for j in range(4):
        ax[0].plot(t, kf[:, j] / DT, lw=2, alpha=0.5, color=f"C{j}",
                   label="S4-LegS K_0..K_3" if j == 0 else None)
        ax[0].plot(t, kd[:, j] / DT, "--", color=f"C{j}", label="S4D-LegS" if j == 0 else None)
    ax[0].set(xlabel="t", title=f"basis kernels 0-3, N={sizes[-1]}")
    ax[0].legend()
    ax[1].loglog(sizes, errs, "o-")
    ax[1].set_xticks(sizes, [str(n) for n in sizes])
    ax[1].minorticks_off()
    ax[1].set(xlabel="state size N", ylabel="relative error (first 8 kernels)", title="S4D-LegS -> S4-LegS")
    fig.tight_layout()
    path = os.path.join(os.path.dirname(__file__), "figures", "s4d_kernel_limit.png")
    fig.savefig(path, dpi=80)
    slope = np.polyfit(np.log(sizes[2:]), np.log(errs[2:]), 1)[0]
    held = all(b < a for a, b in zip(errs, errs[1:], strict=False)) and errs[-1] < 0.1
    print(f"figure: {path}")
    print(f"log-log slope of the error for N >= {sizes[2]}: {slope:.2f} (about 1/N)")
    print(f"claim (error decreases monotonically in N, below 10% at N={sizes[-1]}): "
          f"{'HELD' if held else 'NOT HELD'}")
    return held


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)

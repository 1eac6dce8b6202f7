"""kjax.kernels.kernel_matvec vs a dense jnp product: RBF, d=3, float32 (the KeOps README shape).

    python benchmarks/bench_kernels.py                 # n = 1e4, 2e4, 1e5, 3e5
    python benchmarks/bench_kernels.py --sizes 10000 20000

Each size runs in a fresh process so its peak RSS is its own. Values are checked before timing
on 64 random rows computed directly in float64, one row at a time (O(n) memory).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

DENSE_MAX = 20_000  # the dense [n, n] float32 matrix is 1.6 GB at 2e4


def child(n: int, impl: str, block: str) -> None:
    import functools

    import jax
    import jax.numpy as jnp
    import numpy as np

    from kjax import kernels

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(n,)), jnp.float32)
    kern = functools.partial(kernels.rbf, lengthscale=1.0)
    bs = tuple(int(b) for b in block.split(","))
    if impl == "kjax":
        f = jax.jit(lambda a, b: kernels.kernel_matvec(kern, a, None, b, block_size=bs))
    else:
        f = jax.jit(lambda a, b: kern(a) @ b)
    out = np.asarray(f(x, v))
    # value check first, one row at a time (O(n) memory, so it does not inflate the peak RSS)
    idx = rng.choice(n, 64, replace=False)
    x64, v64 = np.asarray(x, np.float64), np.asarray(v, np.float64)
    ref = np.array([np.exp(-0.5 * ((x64 - x64[i]) ** 2).sum(-1)) @ v64 for i in idx])
    err = float(np.linalg.norm(out[idx] - ref) / np.linalg.norm(ref))
    t = _common.time_median(f, x, v, repeats=5 if n <= 50_000 else 2, max_seconds=120)
    rss = _common.peak_rss_mb()
    print(json.dumps({"n": n, "impl": impl, "seconds": t, "rel_err": err,
                      "evals_per_s": n * n / t, "peak_rss_mb": rss}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 20_000, 100_000, 300_000])
    ap.add_argument("--block", default="256,4096")
    args = ap.parse_args()
    m = _common.header("kernel_matvec: RBF, d=3, float32, v: [n]")
    rows = []
    for n in args.sizes:
        impls = ["kjax", "dense"] if n <= DENSE_MAX else ["kjax"]
        res = {}
        for impl in impls:
            code = (f"import sys; sys.path.insert(0, 'benchmarks'); import bench_kernels; "
                    f"bench_kernels.child({n}, {impl!r}, {args.block!r})")
            res[impl] = _common.run_child(code)
            r = res[impl]
            assert r["rel_err"] < 1e-4, f"{impl} at n={n}: relative error {r['rel_err']:.2e}"
        k = res["kjax"]
        row = {"n": f"{n:.0e}", "kjax time (s)": f"{k['seconds']:.3f}",
               "kjax evals/s": f"{k['evals_per_s']:.2e}",
               "kjax peak RSS (MB)": f"{k['peak_rss_mb']:.0f}",
               "rel. error": f"{k['rel_err']:.1e}"}
        if "dense" in res:
            d = res["dense"]
            row.update({"dense time (s)": f"{d['seconds']:.3f}",
                        "dense peak RSS (MB)": f"{d['peak_rss_mb']:.0f}",
                        "kjax / dense throughput": f"{d['seconds'] / k['seconds']:.2f}"})
        rows.append(row)
        print(json.dumps(row), flush=True)
    cols = ["n", "kjax time (s)", "kjax evals/s", "kjax peak RSS (MB)", "dense time (s)",
            "dense peak RSS (MB)", "kjax / dense throughput", "rel. error"]
    print()
    print(_common.table(rows, cols))
    print(f"\nmachine: {m}")


if __name__ == "__main__":
    main()

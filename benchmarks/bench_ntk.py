"""Empirical NTK: kjax's default call and automatic choice vs neural-tangents 0.6.5 (implementations 1, 2, 3).

    python benchmarks/bench_ntk.py              # creates the NT peer env if missing
    python benchmarks/bench_ntk.py --no-large   # skip the 10k-point trace eNTK

Same parameters and inputs for both (drawn with NumPy, float32). NT runs in its own environment
(jax 0.4.23, benchmarks/peers/setup_nt.sh) through benchmarks/peers/nt_bench_worker.py; its outputs
come back and kjax's values are checked against them (relative Frobenius error < 1e-5) before kjax
is timed. Times are medians of compiled calls after warm-up. Both use vmap_axes=0 (per-example
evaluation) unless the row says NT's default vmap_axes=None; "kjax default" is
`empirical_ntk_fn(f, trace_axes=...)` with no other argument (vmap_axes="auto").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import ntk_models  # noqa: E402

NT_PY = os.environ.get("NT_PY", os.path.join(_common.ROOT, "benchmarks", ".peers", "nt", "bin",
                                             "python"))


def ensure_nt() -> None:
    if not os.path.exists(NT_PY):
        subprocess.run(["bash", os.path.join(_common.ROOT, "benchmarks", "peers", "setup_nt.sh")],
                       check=True)


def large_child(path: str, block: int) -> None:
    """kjax's 10k trace eNTK of model (a), streamed to a host array, in a fresh process."""
    import time

    import numpy as np

    from kjax.ntk import empirical_ntk

    data = dict(np.load(path))
    p, x = ntk_models.params(data, "mlp"), data["large_x"]
    n = x.shape[0]
    out = np.empty((n, n), np.float32)
    # warm-up compile on a small slice, not counted (NT's compile is inside its time too, but
    # is under a second for this model)
    empirical_ntk(ntk_models.mlp, p, x[: 2 * block], block_size=block, out=np.empty(
        (2 * block, 2 * block), np.float32))
    t0 = time.perf_counter()
    empirical_ntk(ntk_models.mlp, p, x, block_size=block, out=out)
    t = time.perf_counter() - t0
    np.save(path + ".rows.npy", out[:64])
    print(json.dumps({"seconds": t, "peak_rss_mb": _common.peak_rss_mb()}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--large-block", type=int, default=1000)
    args = ap.parse_args()
    import jax
    import numpy as np

    from kjax.ntk import choose_implementation, empirical_ntk_fn

    m = _common.header("empirical NTK: kjax (automatic choice) vs neural-tangents 0.6.5")
    ensure_nt()
    tmp = tempfile.mkdtemp()
    data_path, nt_out = os.path.join(tmp, "data.npz"), os.path.join(tmp, "nt_out.npz")
    data = ntk_models.make()
    np.savez(data_path, **data)
    cmd = [NT_PY, os.path.join(_common.ROOT, "benchmarks", "peers", "nt_bench_worker.py"),
           data_path, nt_out] + ([] if args.no_large else ["--large",
                                                            "--large-batch", str(args.large_block)])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"NT worker failed:\n{res.stderr[-3000:]}")
    nt_res = json.loads(res.stdout.strip().splitlines()[-1])
    nt_times, nt_vals = nt_res["times"], dict(np.load(nt_out))
    print(f"# peer: neural-tangents {nt_res['nt']} on jax {nt_res['jax']}")

    rows = []
    for name, n in (("mlp", 128), ("cnn", 32)):
        f, p, x = ntk_models.MODELS[name], ntk_models.params(data, name), data[f"{name}_x"]
        for mode, ta in (("full", ()), ("trace", (-1,))):
            fn = jax.jit(empirical_ntk_fn(f, trace_axes=ta, vmap_axes=0))
            got = np.asarray(fn(x, None, p))
            ref = nt_vals[f"{name}/{mode}/impl3/vmap0"]
            err = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            assert err < 1e-5, f"{name}/{mode}: kjax differs from NT, relative error {err:.2e}"
            t = _common.time_median(fn, x, None, p, repeats=7)
            # the default call (vmap_axes="auto": kjax reads the jaxpr and picks the path)
            fn_def = jax.jit(empirical_ntk_fn(f, trace_axes=ta))
            err_def = float(np.linalg.norm(np.asarray(fn_def(x, None, p)) - ref) / np.linalg.norm(ref))
            assert err_def < 1e-5, f"{name}/{mode}: kjax default differs from NT ({err_def:.2e})"
            t_def = _common.time_median(fn_def, x, None, p, repeats=7)
            choice = choose_implementation(f, p, x, trace_axes=ta)[0]
            row = {"model": f"({'a' if name == 'mlp' else 'b'}) {name.upper()}, N={n}",
                   "mode": mode, "kjax auto (s)": f"{t:.4f}", "kjax picks": choice,
                   "rel. err vs NT": f"{err:.1e}", "kjax default (s)": f"{t_def:.4f}",
                   "NT 3 / kjax default": f"{nt_times[f'{name}/{mode}/impl3/vmap0'] / t_def:.2f}"}
            for impl in (1, 2, 3):
                nt_t = nt_times[f"{name}/{mode}/impl{impl}/vmap0"]
                row[f"NT {impl} (s)"] = f"{nt_t:.4f}"
                row[f"NT {impl} / kjax"] = f"{nt_t / t:.1f}"
            nt_def = nt_times[f"{name}/{mode}/impl1/vmapNone"]
            row["NT default (impl 1, vmap None) (s)"] = f"{nt_def:.3f}"
            row["NT default / kjax"] = f"{nt_def / t:.0f}"
            rows.append(row)
            print(json.dumps(row), flush=True)
    cols = ["model", "mode", "kjax default (s)", "NT 3 / kjax default", "kjax auto (s)", "kjax picks",
            "NT 1 (s)", "NT 2 (s)", "NT 3 (s)",
            "NT 3 / kjax", "NT 1 / kjax", "NT default (impl 1, vmap None) (s)", "NT default / kjax",
            "rel. err vs NT"]
    print()
    print(_common.table(rows, cols))

    if not args.no_large:
        code = (f"import sys; sys.path.insert(0, 'benchmarks'); import bench_ntk; "
                f"bench_ntk.large_child({data_path!r}, {args.large_block})")
        k = _common.run_child(code, timeout=3600)
        rows_k = np.load(data_path + ".rows.npy")
        err = float(np.linalg.norm(rows_k - nt_vals["large/rows"]) /
                    np.linalg.norm(nt_vals["large/rows"]))
        assert err < 1e-5, f"10k trace eNTK differs from NT: {err:.2e}"
        nt_t = nt_times["large/impl3"]
        print("\n| trace eNTK of (a), 10,000 x 10,000 | time (s) | peak RSS (MB) |")
        print("|---|---|---|")
        print(f"| kjax `empirical_ntk(..., out=host array)`, blocks of {args.large_block} | "
              f"{k['seconds']:.1f} | {k['peak_rss_mb']:.0f} |")
        print(f"| NT impl 3 through `nt.batch` (batch {args.large_block}, store_on_device=False) | "
              f"{nt_t:.1f} | {nt_times['large/peak_rss_mb']:.0f} |")
        print(f"\nNT / kjax time ratio: {nt_t / k['seconds']:.2f}; rows checked against NT: "
              f"relative error {err:.1e}")
    print(f"\nmachine: {m}")


if __name__ == "__main__":
    main()

"""Matrix-free eNTK analysis at scale: trace, Frobenius norm, effective rank and label alignment
estimators, and the top eigenpairs by Lanczos, of an MLP's full eNTK on n = 50,000 points, where
the kernel ([n*O, n*O] = 500,000^2 entries) cannot be formed.

    .venv/bin/python benchmarks/bench_ntk_matfree.py --n 50000            # the docs' table
    .venv/bin/python benchmarks/bench_ntk_matfree.py --n 2000 --check-n 300 # a quick run

Values are checked before anything is timed: at ``--check-n`` points the dense eNTK
(``kjax.ntk.empirical_ntk(mode="full")``) gives the exact trace, norm, effective rank, alignment
and top eigenvalues, and every estimator must lie within 3 of its stated standard errors (Lanczos:
1e-6 relative). At ``--n`` the exact trace is still computable (the squared norms of the
per-example Jacobians, in blocks) and is reported beside the estimates; the Frobenius norm is
not, so its estimates are compared with each other.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from kjax.ntk import analysis as A  # noqa: E402
from kjax.ntk import empirical_ntk  # noqa: E402


def mlp(p, x):
    h = jnp.tanh(x @ p["w1"] / jnp.sqrt(x.shape[-1]))
    h = jnp.tanh(h @ p["w2"] / jnp.sqrt(h.shape[-1]))
    return h @ p["w3"] / jnp.sqrt(h.shape[-1])


def make(n: int, d: int, width: int, out: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {"w1": rng.normal(size=(d, width)), "w2": rng.normal(size=(width, width)),
              "w3": rng.normal(size=(width, out))}
    x = rng.normal(size=(n, d))
    y = np.eye(out)[np.argmax(x[:, :out] + 0.3 * rng.normal(size=(n, out)), axis=1)]
    return jax.tree.map(jnp.asarray, params), jnp.asarray(x), jnp.asarray(y)


def exact_trace(params, x, block: int = 500) -> float:
    """tr(J J^T) = sum over examples and outputs of |grad f_o(x_i)|^2, per-example Jacobians in blocks."""
    jac = jax.jit(jax.vmap(jax.jacrev(lambda p, xi: mlp(p, xi[None])[0]), in_axes=(None, 0)))
    total = 0.0
    for i in range(0, x.shape[0], block):
        g = jac(params, x[i:i + block])
        total += float(sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(g)))
    return total


def estimators(params, x, y, key, s, block):
    out = {}
    for method in ("reverse", "forward", "hutch++"):
        for name, fn in (("trace", A.ntk_trace), ("fro", A.ntk_frobenius_norm),
                         ("rank", A.ntk_effective_rank)):
            t0 = time.perf_counter()
            est = fn(mlp, params, x, key=key, num_samples=s, method=method, block_size=block)
            out[(name, method)] = (float(est.value), float(est.std_error), est.num_passes,
                                   time.perf_counter() - t0)
        t0 = time.perf_counter()
        est = A.ntk_label_alignment(mlp, params, x, y, key=key, num_samples=s, method=method,
                                    block_size=block)
        out[("align", method)] = (float(est.value), float(est.std_error), est.num_passes,
                                  time.perf_counter() - t0)
    return out


def lanczos(params, x, k, iters, block):
    n = x.shape[0]
    mv = A.ntk_matvec(mlp, params, x, block_size=block)
    o = jax.eval_shape(lambda: mlp(params, x[:1])).shape[-1]
    t0 = time.perf_counter()
    vals, _, status = A.lanczos_top_k(jax.random.key(1), lambda v: mv(v.reshape(n, o)).reshape(-1), n * o, k,
                                      num_iters=iters, return_status=True)
    vals = np.asarray(vals)
    return vals, int(status), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--check-n", type=int, default=400)
    ap.add_argument("--d", type=int, default=10)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--out", type=int, default=10)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--block", type=int, default=2048)
    args = ap.parse_args()
    _common.header("matrix-free eNTK analysis (kjax.ntk.analysis)")
    key = jax.random.key(0)

    # 1. check against the dense eNTK at check-n
    params, x, y = make(args.check_n, args.d, args.width, args.out)
    n, o = x.shape[0], args.out
    k = np.asarray(empirical_ntk(mlp, params, x, mode="full")).transpose(0, 2, 1, 3).reshape(n * o, n * o)
    yc = np.asarray(y) - np.asarray(y).mean(0)
    c = np.kron(np.eye(n) - 1.0 / n, np.eye(o))
    exact = {"trace": np.trace(k), "fro": np.linalg.norm(k), "rank": np.trace(k) ** 2 / np.sum(k**2),
             "align": yc.ravel() @ k @ yc.ravel() / (np.linalg.norm(c @ k @ c) * np.sum(yc**2))}
    est = estimators(params, x, y, key, args.samples, min(args.block, n))
    print(f"\n## check at n = {n} (dense eNTK {n * o} x {n * o}), {args.samples} probes")
    print("| quantity | method | estimate | std error | exact | |error| / std error |")
    print("| --- | --- | --- | --- | --- | --- |")
    ok = True
    for (name, method), (v, se, _, _) in est.items():
        z = abs(v - exact[name]) / se
        ok &= z <= 3
        print(f"| {name} | {method} | {v:.6g} | {se:.3g} | {exact[name]:.6g} | {z:.2f} |")
    vals, status, _ = lanczos(params, x, args.k, min(args.iters, n * o), min(args.block, n))
    ref = np.sort(np.linalg.eigvalsh(k))[::-1][: args.k]
    lz = np.max(np.abs(vals - ref) / ref)
    print(f"Lanczos top-{args.k}: max relative error {lz:.2e}, status {status}")
    ok &= lz < 1e-6
    if not ok:
        sys.exit("values do not match the dense eNTK: not timing")

    # 2. scale
    params, x, y = make(args.n, args.d, args.width, args.out)
    n = x.shape[0]
    nparams = sum(leaf.size for leaf in jax.tree.leaves(params))
    print(f"\n## n = {n}, O = {o} (eNTK {n * o} x {n * o}, never formed), MLP {args.d}-{args.width}-"
          f"{args.width}-{o} ({nparams} parameters), float64, {args.samples} probes, blocks of {args.block}")
    t0 = time.perf_counter()
    tr = exact_trace(params, x)
    t_exact = time.perf_counter() - t0
    print(f"exact trace (per-example Jacobians): {tr:.6g} in {t_exact:.1f} s")
    est = estimators(params, x, y, key, args.samples, args.block)
    print("| quantity | method | estimate | std error | passes over the data | time (s) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (name, method), (v, se, passes, t) in est.items():
        print(f"| {name} | {method} | {v:.6g} | {se:.3g} | {passes} | {t:.1f} |")
    vals, status, t = lanczos(params, x, args.k, args.iters, args.block)
    print(f"Lanczos top-{args.k} eigenvalues ({args.iters} iterations, {2 * args.iters} passes): "
          f"{np.array2string(vals, precision=5)}; status {status} (0 = converged); {t:.1f} s")


if __name__ == "__main__":
    main()

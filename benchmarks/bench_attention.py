"""Causal linear attention on CPU/GPU: kjax chunked vs per-token scan vs materialised chunk states vs
softmax attention (``jax.nn.dot_product_attention``).

    .venv/bin/python benchmarks/bench_attention.py [--lengths 1024 4096 16384 65536] [--chunks 32 64 128 256]

Also times forward + backward (the gradient of a scalar loss) for the chunked form and the token
scan up to ``--grad-max-t``: the cost of a training step, where the token scan's saved per-token
states make it slow and memory-hungry.

Shapes: causal, B=1, H=8, D=Dv=64, M=64 features (elu+1 of Gaussian inputs), float32. Values are
checked against each other (and against the quadratic form at T <= 4096) before anything is timed;
times are medians of compiled calls after a warm-up, with ``block_until_ready``; memory is the
compiled program's temporary + output bytes from XLA's ``memory_analysis``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from kjax import attention as A

B, H, D, M = 1, 8, 64, 64


def token_scan(pq, pk, v):
    """Performer's causal form: a lax.scan over tokens with an outer-product state update."""
    b, t, h, m = pq.shape

    def step(carry, xs):
        s, z = carry
        q, k, vv = xs
        s = s + k[..., :, None] * vv[..., None, :]
        z = z + k
        return (s, z), jnp.einsum("bhm,bhmv->bhv", q, s) / (jnp.einsum("bhm,bhm->bh", q, z)[..., None] + 1e-6)

    init = (jnp.zeros((b, h, m, v.shape[-1]), pq.dtype), jnp.zeros((b, h, m), pq.dtype))
    _, out = jax.lax.scan(step, init, tuple(jnp.moveaxis(x, 1, 0) for x in (pq, pk, v)))
    return jnp.moveaxis(out, 0, 1)


def materialised(pq, pk, v, chunk=64):
    """Chunked form that materialises every chunk's prefix state ``[B, N, H, M, Dv]`` (cumsum)."""
    b, t, h, m = pq.shape
    n = t // chunk
    va = jnp.concatenate([v, jnp.ones_like(v[..., :1])], -1)
    qc, kc, vc = (x.reshape(b, n, chunk, h, -1) for x in (pq, pk, va))
    kv = jnp.einsum("bnchm,bnchf->bnhmf", kc, vc)
    states = jnp.cumsum(kv, axis=1) - kv  # exclusive prefix sums
    a = jnp.einsum("bnchm,bnshm->bnhcs", qc, kc) * jnp.tril(jnp.ones((chunk, chunk), pq.dtype))
    out = jnp.einsum("bnhcs,bnshf->bnchf", a, vc) + jnp.einsum("bnchm,bnhmf->bnchf", qc, states)
    out = out.reshape(b, t, h, -1)
    return out[..., :-1] / (out[..., -1:] + 1e-6)


def quadratic(pq, pk, v):
    a = jnp.einsum("bthm,bshm->bhts", pq, pk) * jnp.tril(jnp.ones((pq.shape[1],) * 2, pq.dtype))
    return jnp.einsum("bhts,bshv->bthv", a, v) / (a.sum(-1).transpose(0, 2, 1)[..., None] + 1e-6)


def softmax(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True)


def mem_bytes(compiled) -> float:
    try:
        ma = compiled.memory_analysis()
        return float(ma.temp_size_in_bytes + ma.output_size_in_bytes)
    except Exception:  # backends without memory analysis
        return float("nan")


def available_bytes() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def timed(fn, args, reps):
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), mem_bytes(compiled), compiled


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    ap.add_argument("--chunks", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--chunk", type=int, default=None, help="chunk size of the main table (default: tuned)")
    ap.add_argument("--softmax-max-t", type=int, default=16384)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--grad-max-t", type=int, default=16384, help="largest T for the fwd+bwd columns")
    args = ap.parse_args()
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        commit = "unknown"
    print(f"machine: {platform.machine()} {platform.processor() or ''} {platform.node()}, "
          f"nproc {os.cpu_count()}, "
          f"jax {jax.__version__}, backend {jax.default_backend()}, commit {commit}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"causal, B={B}, H={H}, D=Dv={D}, M={M}, float32")

    def inputs(t, seed=0):
        kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
        pq = A.elu_plus_one(jax.random.normal(kq, (B, t, H, M), jnp.float32))
        pk = A.elu_plus_one(jax.random.normal(kk, (B, t, H, M), jnp.float32))
        v = jax.random.normal(kv, (B, t, H, D), jnp.float32)
        return pq, pk, v

    # chunk-size tuning at the largest T <= 16384
    t_tune = max(t for t in args.lengths if t <= 16384)
    xs = inputs(t_tune)
    tune = {}
    for c in args.chunks:
        tune[c], _, _ = timed(lambda q, k, v, c=c: A.linear_attention(q, k, v, chunk_size=c), xs, args.reps)
    best = args.chunk or min(tune, key=tune.get)
    tuned = ", ".join(f"C={c}: {1e3 * s:.1f} ms" for c, s in tune.items())
    print(f"\nchunk_size tuning at T={t_tune}: {tuned} -> C={best}")

    rows = []
    for t in args.lengths:
        pq, pk, v = xs = inputs(t)
        chunked = lambda q, k, v: A.linear_attention(q, k, v, chunk_size=best)
        ref = jax.jit(token_scan)(*xs)
        checks = {"chunked": rel(jax.jit(chunked)(*xs), ref),
                  "materialised": rel(jax.jit(materialised)(*xs), ref)}
        if t <= 4096:
            checks["scan_vs_quadratic"] = rel(ref, jax.jit(quadratic)(*xs))
        assert all(e < 1e-4 for e in checks.values()), checks
        row = {"T": t}
        for name, fn in (("chunked", chunked), ("scan", token_scan), ("materialised", materialised)):
            row[name], row[name + "_mem"], _ = timed(fn, xs, args.reps)
        # training cost: forward + backward (gradient of a scalar loss w.r.t. q, k, v), checked first
        if t <= args.grad_max_t:
            loss = lambda f: (lambda q, k, v: jnp.sum(f(q, k, v) * v))
            gc = jax.jit(jax.grad(loss(chunked), argnums=(0, 1, 2)))(*xs)
            gs = jax.jit(jax.grad(loss(token_scan), argnums=(0, 1, 2)))(*xs)
            checks["grad"] = max(rel(a, b) for a, b in zip(gc, gs, strict=True))
            assert checks["grad"] < 1e-4, checks
            for name, fn in (("chunked", chunked), ("scan", token_scan)):
                gfn = jax.grad(loss(fn), argnums=(0, 1, 2))
                row[name + "_grad"], row[name + "_grad_mem"], _ = timed(gfn, xs, max(1, args.reps // 2))
        q = jax.random.normal(jax.random.key(1), (B, t, H, D), jnp.float32)
        sm_args = (q, q, v)
        if t <= args.softmax_max_t:
            compiled = jax.jit(softmax).lower(*sm_args).compile()
            need = mem_bytes(compiled)
            if need < 0.6 * available_bytes():
                if t <= 1024:  # check softmax against the quadratic jnp formula
                    s = jnp.einsum("bthd,bshd->bhts", q, q) / np.sqrt(D)
                    s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
                    want = jnp.einsum("bhts,bshv->bthv", jax.nn.softmax(s, -1), v)
                    assert rel(compiled(*sm_args), want) < 1e-4
                reps = args.reps if t <= 4096 else 1
                row["softmax"], row["softmax_mem"], _ = timed(softmax, sm_args, reps)
            else:
                row["softmax"] = row["softmax_mem"] = None
                print(f"T={t}: softmax skipped, needs {need / 2**30:.1f} GiB")
        else:
            row["softmax"] = row["softmax_mem"] = None
        rows.append(row)
        print(f"T={t}: checked {', '.join(f'{k} {v:.1e}' for k, v in checks.items())}", flush=True)

    fmt_t = lambda s: "skipped" if s is None else f"{1e3 * s:.1f} ms"
    fmt_m = lambda b: "-" if b is None or np.isnan(b) else f"{b / 2**20:.0f} MiB"
    print(f"\n| T | kjax chunked (C={best}) | per-token scan | materialised chunk states "
          "| softmax (dot_product_attention) | scan / chunked | softmax / chunked |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        sm_ratio = "-" if r["softmax"] is None else f"{r['softmax'] / r['chunked']:.0f}x"
        print(f"| {r['T']} | {fmt_t(r['chunked'])}, {fmt_m(r['chunked_mem'])} | {fmt_t(r['scan'])}, "
              f"{fmt_m(r['scan_mem'])} | {fmt_t(r['materialised'])}, {fmt_m(r['materialised_mem'])} | "
              f"{fmt_t(r['softmax'])}, {fmt_m(r['softmax_mem'])} | {r['scan'] / r['chunked']:.1f}x "
              f"| {sm_ratio} |")
    print("\nforward + backward (gradient w.r.t. q, k, v of sum(out * v)):\n")
    print("| T | kjax chunked | per-token scan | scan / chunked |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        if "chunked_grad" in r:
            print(f"| {r['T']} | {fmt_t(r['chunked_grad'])}, {fmt_m(r['chunked_grad_mem'])} | "
                  f"{fmt_t(r['scan_grad'])}, {fmt_m(r['scan_grad_mem'])} | "
                  f"{r['scan_grad'] / r['chunked_grad']:.1f}x |")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

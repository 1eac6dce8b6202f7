"""Causal linear attention on CPU/GPU: kjax chunked vs per-token scan vs materialised chunk states vs
softmax attention (``jax.nn.dot_product_attention``).

    .venv/bin/python benchmarks/bench_attention.py [--lengths 1024 4096 16384 65536] [--chunks 32 64 128 256]
    .venv/bin/python benchmarks/bench_attention.py --only-gated --gated-lengths 256 1024 4096

Also times forward + backward (the gradient of a scalar loss) for the chunked form and the token
scan up to ``--grad-max-t``: the cost of a training step, where the token scan's saved per-token
states make it slow and memory-hungry.

Gated forms (``--gated-lengths``; ``--only-gated`` skips the tables above): the decayed recurrences
of :func:`kjax.attention.linear_attention` with a scalar log-decay per step and head (Mamba-2 SSD /
simple GLA, ``decay [B, T, H]``) and a log-decay per key feature (GLA, ``decay [B, T, H, M]``), and
the gated delta rule (:func:`kjax.attention.delta_rule_attention` with ``decay [B, T, H]``), each
chunked vs a ``jax.lax.scan`` over its ``*_step`` (the token recurrence), forward and forward +
backward, values and gradients checked against each other before timing. Inputs as
flash-linear-attention's benchmarks: L2-normalised ``q, k``, ``log a = logsigmoid(x)`` (``/16`` per
feature, GLA's normaliser), ``beta = sigmoid(x)``, no normaliser.

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


def step_scan(step, state, *xs, **kw):
    """The token recurrence: ``jax.lax.scan`` of ``step(state, *x_t, **kw) -> (o_t, state)`` over T."""

    def body(s, x):
        o, new = step(s, *x, **kw)
        return jax.tree.map(lambda a, b: a.astype(b.dtype), new, s), o  # the carry keeps its dtype

    _, out = jax.lax.scan(body, state, tuple(jnp.moveaxis(x, 1, 0) for x in xs))
    return jnp.moveaxis(out, 0, 1)


def gated_inputs(t, seed=0):
    """L2-normalised q, k, values, a scalar and a per-feature log-decay, and beta (float32)."""
    ks = jax.random.split(jax.random.key(seed), 6)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    q = unit(jax.random.normal(ks[0], (B, t, H, M), jnp.float32))
    k = unit(jax.random.normal(ks[1], (B, t, H, M), jnp.float32))
    v = jax.random.normal(ks[2], (B, t, H, D), jnp.float32)
    g_scalar = jax.nn.log_sigmoid(jax.random.normal(ks[3], (B, t, H), jnp.float32) + 3.0)
    g_feature = jax.nn.log_sigmoid(jax.random.normal(ks[4], (B, t, H, M), jnp.float32)) / 16
    beta = jax.nn.sigmoid(jax.random.normal(ks[5], (B, t, H), jnp.float32))
    return q, k, v, g_scalar, g_feature, beta


def gated_forms(chunk):
    """name -> (chunked fn, token-scan fn), both ``(q, k, v, g_scalar, g_feature, beta) -> out``."""
    zeros_la = lambda q, v: A.LinearAttentionState(jnp.zeros((B, H, M, D), q.dtype),
                                                   jnp.zeros((B, H, M), q.dtype))
    zeros_dr = lambda q, v: A.DeltaRuleState(jnp.zeros((B, H, M, D), q.dtype))
    return {
        "scalar decay (SSD) [B,T,H]": (
            lambda q, k, v, gs, gf, b: A.linear_attention(q, k, v, decay=gs, normalize=False,
                                                          chunk_size=chunk),
            lambda q, k, v, gs, gf, b: step_scan(lambda s, *x: A.linear_attention_step(
                s, *x[:3], decay_t=x[3], normalize=False), zeros_la(q, v), q, k, v, gs)),
        "per-feature decay (GLA) [B,T,H,M]": (
            lambda q, k, v, gs, gf, b: A.linear_attention(q, k, v, decay=gf, normalize=False,
                                                          chunk_size=chunk),
            lambda q, k, v, gs, gf, b: step_scan(lambda s, *x: A.linear_attention_step(
                s, *x[:3], decay_t=x[3], normalize=False), zeros_la(q, v), q, k, v, gf)),
        "gated delta rule [B,T,H]": (
            lambda q, k, v, gs, gf, b: A.delta_rule_attention(q, k, v, b, decay=gs, chunk_size=chunk),
            lambda q, k, v, gs, gf, b: step_scan(lambda s, *x: A.delta_rule_step(
                s, *x[:4], decay_t=x[4]), zeros_dr(q, v), q, k, v, b, gs)),
    }


def bench_gated(lengths, chunk, reps, grad_max_t):
    """Rows of the gated forms: chunked vs token scan, forward and forward + backward."""
    print(f"\ngated forms: causal, B={B}, H={H}, M=Dv={M}, float32, chunk_size={chunk}, no normaliser")
    rows = []
    for t in lengths:
        xs = gated_inputs(t)
        for name, (chunked, scan) in gated_forms(chunk).items():
            err = rel(jax.jit(chunked)(*xs), jax.jit(scan)(*xs))
            assert err < 1e-4, (name, t, err)
            row = {"form": name, "T": t, "err": err}
            row["chunked"], _, _ = timed(chunked, xs, reps)
            row["scan"], _, _ = timed(scan, xs, reps)
            if t <= grad_max_t:
                loss = lambda f: (lambda *a: jnp.sum(f(*a) * a[2]))
                g = [jax.jit(jax.grad(loss(f), argnums=(0, 1, 2)))(*xs) for f in (chunked, scan)]
                row["grad_err"] = max(rel(a, b) for a, b in zip(*g, strict=True))
                assert row["grad_err"] < 1e-3, (name, t, row["grad_err"])
                for key, f in (("chunked_grad", chunked), ("scan_grad", scan)):
                    row[key], _, _ = timed(jax.grad(loss(f), argnums=(0, 1, 2)), xs, max(1, reps // 2))
            rows.append(row)
            print(f"T={t} {name}: checked chunked vs scan {err:.1e}"
                  + (f", grads {row['grad_err']:.1e}" if "grad_err" in row else ""), flush=True)
    ms = lambda s: f"{1e3 * s:.1f} ms"
    print("\n| form | T | chunked | token scan | scan / chunked | fwd+bwd chunked | fwd+bwd scan "
          "| scan / chunked |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        grad = (f"{ms(r['chunked_grad'])} | {ms(r['scan_grad'])} | {r['scan_grad'] / r['chunked_grad']:.1f}x"
                if "chunked_grad" in r else "- | - | -")
        print(f"| {r['form']} | {r['T']} | {ms(r['chunked'])} | {ms(r['scan'])} | "
              f"{r['scan'] / r['chunked']:.1f}x | {grad} |")
    return rows


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
    ap.add_argument("--gated-lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--gated-chunk", type=int, default=64)
    ap.add_argument("--only-gated", action="store_true", help="only the rows of the gated forms")
    args = ap.parse_args()
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        commit = "unknown"
    print(f"machine: {platform.machine()} {platform.processor() or ''} {platform.node()}, "
          f"nproc {os.cpu_count()}, "
          f"jax {jax.__version__}, backend {jax.default_backend()}, commit {commit}, "
          f"load average {os.getloadavg()[0]:.2f}")
    if args.only_gated:
        bench_gated(args.gated_lengths, args.gated_chunk, args.reps, args.grad_max_t)
        print(f"\nload average after: {os.getloadavg()}")
        return
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
    bench_gated(args.gated_lengths, args.gated_chunk, args.reps, args.grad_max_t)
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

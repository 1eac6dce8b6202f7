"""One-command GPU benchmark of kjax's Pallas kernels against kjax's XLA paths and softmax attention.

    python benchmarks/bench_gpu.py                        # the full set, < 10 min on one H100 / H200
    python benchmarks/bench_gpu.py --quick                # a smoke run (D=64, T and L in {1k, 4k})
    python benchmarks/bench_gpu.py --only attention --reps 20 --json results.json
    python benchmarks/bench_gpu.py --allow-cpu --quick    # tiny shapes on CPU, Pallas in interpret mode

Measured (causal everywhere, forward and forward+backward, the latter the ``jax.grad`` of
``sum(output)`` in float32 w.r.t. every array input):

* attention, ``[B, T, H, D]`` with B=2, H=8, D=Dv in {64, 128}, T in {1k, 4k, 16k, 64k}, bfloat16 and
  float32: ``kjax.attention.linear_attention`` on elu+1 features (mapped before the call) and
  ``kjax.attention.kernel_attention(feature_map="elu_plus_one")`` (map fused into the Pallas kernel),
  each with ``implementation="pallas"`` and ``"xla"``, chunk C=64; softmax attention
  ``jax.nn.dot_product_attention(is_causal=True, implementation="cudnn")`` in bfloat16 (XLA when
  cuDNN refuses, said in the row; skipped when its memory estimate exceeds 40 GB). The gated forms
  on L2-normalised ``q, k``: ``linear_attention(decay=...)`` with a scalar log-decay ``[B, T, H]``
  (Mamba-2 SSD) and a per-feature one ``[B, T, H, D]`` (GLA), and the gated delta rule
  ``delta_rule_attention(decay=...)`` (and the delta rule without decay), chunked with the Pallas
  kernels (scalar decay, delta rule: ``implementation="pallas"``, the delta rule's backward being
  the VJP of the XLA path) and with ``"xla"`` (per-feature decay: ``implementation=None``, XLA)
  against a ``jax.lax.scan`` over its ``*_step`` (the token recurrence); all checked against the
  chunked XLA form.
* fftconv, ``kjax.ssm.fftconv(u, k, gate=g, skip=s)``, ``u, g: [B, L, D]``, ``k: [L, D]``, ``s: [D]``
  with B=4, D=256, L in {1k, 4k, 16k, 64k}, float32 and bfloat16, ``implementation="pallas"`` vs
  ``"xla"``.

Values first: every kjax row's output (forward) or gradients (forward+backward) are compared with
kjax's XLA path run on the same values cast to float32 under ``jax.default_matmul_precision("highest")``
(relative Frobenius error, the max over gradients); a row above its tolerance is aborted, not timed,
and the script exits 1. Softmax rows are checked against XLA's softmax the same way up to T=4096.
Times are medians of compiled calls after a blocked warm-up (``_common.time_median``); a call under
2 ms is repeated back to back inside one timed sample (``inner``) so launch overhead does not dominate.

FLOP models (useful work; forward+backward counts 3x the forward, no recomputation counted):

* chunked linear / kernel attention: ``2 B H T (C D + C Dv + 2 D Dv)`` forward (chunk scores, their
  product with V, the query-state product and the state update; C = min(chunk, T)); the elementwise
  feature map and normaliser are not counted. The XLA path does the same algebra, so its rows use it too.
* softmax attention, causal: ``2 B H T^2 (D + Dv) / 2`` forward.
* fftconv: FFT length N = 2L (both paths, L a power of two); a real FFT of length N counts
  2.5 N log2 N (half a complex FFT's 5 N log2 N); forward = ``B D (2 * 2.5 N log2 N + 3 N)`` (rfft of u,
  irfft, N/2 complex products at 6 flops) + ``D * 2.5 N log2 N`` (the filter's rfft) + ``3 B L D``
  (skip and gate). The Pallas kernel's split-DFT matmuls execute more (``8 N (N1 + 2 N2)`` per (b, d)
  with N = N1 N2); the model counts the FFT-equivalent work of both paths alike.

Byte models (array inputs read once and outputs written once; intermediates not counted):
forward reads the inputs and writes the output; forward+backward reads the inputs and writes one
gradient per input. Attention: ``B T H (D + D + Dv)`` input elements; fftconv: ``2 B L D + L D + D``.

Roofline: per device kind from ``ROOFLINES`` (dense peaks, no sparsity); peak compute is bf16 tensor
cores for bfloat16 attention, TF32 tensor cores for float32 attention (what DEFAULT precision uses in
XLA and in Pallas Triton dots on GPU) and float32 CUDA cores for fftconv (cuFFT; the Pallas kernel's
dots run at HIGHEST precision). "roofline" is ``max(flop / peak, bytes / bandwidth) / time``, with
the binding term named.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

GB = 1e9
SOFTMAX_MEM_LIMIT = 40 * GB  # skip a softmax row whose memory estimate exceeds this
SOFTMAX_CHECK_MAX_T = 4096  # the float32 XLA softmax reference is quadratic in memory
MIN_SAMPLE_S = 2e-3  # on GPU, a timed sample repeats a faster call back to back up to this long
MAX_INNER = 50
TOL = {"bfloat16": 2e-2, "float32": 1e-4}
TOL_F32_TF32 = 5e-3  # float32 attention on GPU: Pallas Triton / XLA dots at DEFAULT precision are TF32

# dense peaks (TFLOP/s) by compute class and HBM bandwidth (TB/s); vendor datasheets, no sparsity
ROOFLINES = {
    "H200": {"bf16": 989.0, "tf32": 494.7, "f32": 66.9, "tbs": 4.8},
    "H100 SXM": {"bf16": 989.0, "tf32": 494.7, "f32": 66.9, "tbs": 3.35},
    "H100 PCIe": {"bf16": 756.0, "tf32": 378.0, "f32": 51.2, "tbs": 2.0},
    "H100 NVL": {"bf16": 835.0, "tf32": 418.0, "f32": 67.0, "tbs": 3.9},
    "A100 80GB": {"bf16": 312.0, "tf32": 156.0, "f32": 19.5, "tbs": 2.0},
    "A100 40GB": {"bf16": 312.0, "tf32": 156.0, "f32": 19.5, "tbs": 1.555},
}


def roofline_name(kind: str) -> str | None:
    k = kind.lower()
    if "gh200" in k:  # Grace Hopper: HBM3 or HBM3e variants, not told apart by the kind string
        return None
    if "h200" in k:
        return "H200"
    if "h100" in k:
        return "H100 PCIe" if "pcie" in k else "H100 NVL" if "nvl" in k else "H100 SXM"
    if "a100" in k:
        return "A100 40GB" if "40gb" in k else "A100 80GB"
    return None


# ----------------------------------------------------------------------------------------- models


def linear_attention_flops(b, h, t, d, dv, chunk):
    c = min(chunk, t)
    return 2.0 * b * h * t * (c * d + c * dv + 2 * d * dv)


def softmax_flops(b, h, t, d, dv):
    return 2.0 * b * h * t * t * (d + dv) / 2


def fftconv_flops(b, L, d):
    n = 2 * L
    rfft = 2.5 * n * math.log2(n)
    return b * d * (2 * rfft + 3 * n) + d * rfft + 3.0 * b * L * d


def softmax_mem_estimate(b, h, t, d, dv, itemsize, impl, backward):
    io = b * t * h * (2 * d + 2 * dv) * itemsize
    if impl == "cudnn":  # flash: O(T) memory, the inputs/outputs plus per-row softmax statistics
        return (3 if backward else 1) * io + b * h * t * 4
    # XLA materialises the [B, H, T, T] scores (f32) and probabilities; the backward their gradients
    return io + b * h * t * t * (16 if backward else 8)


# ----------------------------------------------------------------------------------------- running


@dataclasses.dataclass
class Ctx:
    jax: Any
    jnp: Any
    on_gpu: bool
    pallas: str  # "pallas" on GPU, "pallas_interpret" with --allow-cpu
    reps: int
    chunk: int
    roof: dict | None
    max_row_seconds: float
    rows: list = dataclasses.field(default_factory=list)
    ref_cache: dict = dataclasses.field(default_factory=dict)  # compiled references by (op, pass, shape)


def short_error(e: BaseException, limit: int = 240) -> str:
    msg = " ".join(str(e).split())
    if "RESOURCE_EXHAUSTED" in msg or "out of memory" in msg.lower():
        return f"out of memory ({type(e).__name__})"
    return f"{type(e).__name__}: {msg[:limit]}{'...' if len(msg) > limit else ''}"


def has_pallas_kernel(hlo_text: str) -> bool:
    return any(s in hlo_text for s in ("xla.gpu.triton", "triton_kernel_call", "mosaic_gpu"))


def fwd_bwd(ctx: Ctx, fn: Callable, nargs: int) -> Callable:
    jnp = ctx.jnp
    return ctx.jax.grad(lambda *a: jnp.sum(fn(*a).astype(jnp.float32)), argnums=tuple(range(nargs)))


def rel_err(ctx: Ctx, got, want) -> float:
    """Relative Frobenius error, on device; the max over the leaves of a tuple (the gradients)."""
    jax, jnp = ctx.jax, ctx.jnp
    errs = []
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        a, b = a.astype(jnp.float32), b.astype(jnp.float32)
        errs.append(float(jnp.linalg.norm((a - b).ravel()) / jnp.linalg.norm(b.ravel())))
    return max(errs)


def reference(ctx: Ctx, key, fn: Callable, args):
    """``fn(*args)`` compiled under highest matmul precision (compiled once per ``key``); an
    exception is returned, not raised."""
    try:
        if key not in ctx.ref_cache:
            with ctx.jax.default_matmul_precision("highest"):
                ctx.ref_cache[key] = ctx.jax.jit(fn).lower(*args).compile()
        return ctx.jax.block_until_ready(ctx.ref_cache[key](*args))
    except Exception as e:  # reported in the rows it would have checked
        return e


def measure(ctx: Ctx, compiled, args) -> tuple[float, int]:
    """Median seconds per call and the number of back-to-back calls in one timed sample."""
    jax = ctx.jax
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    first = time.perf_counter() - t0
    inner = 1
    if ctx.on_gpu and first < MIN_SAMPLE_S:
        inner = min(MAX_INNER, max(1, math.ceil(MIN_SAMPLE_S / max(first, 1e-6))))
    fn = compiled if inner == 1 else (lambda *a: [compiled(*a) for _ in range(inner)])
    sec = _common.time_median(fn, *args, repeats=ctx.reps, warmup=1, max_seconds=ctx.max_row_seconds)
    return sec / inner, inner


def run_row(ctx: Ctx, row: dict, fn: Callable, args, ref, tol: float | None, *, flops: float,
            nbytes: float, peak: str, kjax_pallas: bool = False) -> None:
    """Compile, check against ``ref`` (an array/tuple, an exception, or None for unchecked), time."""
    jax = ctx.jax
    row.update(status="ok", flop=flops, bytes=nbytes, peak_class=peak)
    if tol is not None:
        row["tol"] = tol
    notes = [row.pop("note")] if row.get("note") else []
    try:
        lowered = jax.jit(fn).lower(*args)
        if kjax_pallas and ctx.on_gpu and not has_pallas_kernel(lowered.as_text()):
            notes.append("no Pallas kernel in the program: kjax fell back to XLA")
        compiled = lowered.compile()
        out = jax.block_until_ready(compiled(*args))
        if isinstance(ref, Exception):
            row.update(status="aborted")
            notes.append(f"reference failed, not timed: {short_error(ref)}")
            return
        if ref is not None:
            err = rel_err(ctx, out, ref)
            row["err"] = err
            if not err <= tol:  # NaN fails too
                row["status"] = "aborted"
                notes.append(f"WRONG VALUES: rel err {err:.2e} > tol {tol:.0e}; not timed")
                return
        del out
        sec, inner = measure(ctx, compiled, args)
        row.update(ms=1e3 * sec, inner=inner, tflops=flops / sec / 1e12, gbs=nbytes / sec / GB)
        if ctx.roof is not None:
            t_flop = flops / (ctx.roof[peak] * 1e12)
            t_mem = nbytes / (ctx.roof["tbs"] * 1e12)
            row["roofline"] = max(t_flop, t_mem) / sec
            row["bound"] = "compute" if t_flop >= t_mem else "memory"
    except Exception as e:  # a failing kernel is a row, not the end of the run
        row["status"] = "error"
        notes.append(short_error(e))
    finally:
        row["note"] = "; ".join(notes)
        ctx.rows.append(row)
        took = f"{row['ms']:.3f} ms" if "ms" in row else row["status"]
        err = f", err {row['err']:.1e}" if "err" in row else ""
        print(f"  {row['section']} {row.get('T', row.get('L'))} {row['dtype']} {row['pass']} "
              f"{row['method']}: {took}{err} {row['note']}", file=sys.stderr, flush=True)


def skip_row(ctx: Ctx, row: dict, why: str) -> None:
    row.update(status="skipped", note=why)
    ctx.rows.append(row)
    print(f"  {row['section']} {row['dtype']} {row['pass']} {row['method']}: skipped ({why})",
          file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- attention


def attention_group(ctx: Ctx, b: int, h: int, t: int, d: int, dtype: str) -> None:
    import kjax.attention as A

    jax, jnp = ctx.jax, ctx.jnp
    dt, f32 = jnp.dtype(dtype), jnp.float32
    kq, kk, kv = jax.random.split(jax.random.key(1000 * t + d), 3)
    q, k, v = (jax.random.normal(s, (b, t, h, d), f32).astype(dt) for s in (kq, kk, kv))
    pq, pk = A.elu_plus_one(q), A.elu_plus_one(k)  # features of the linear_attention rows, in dtype
    c = ctx.chunk
    base = dict(section="attention", B=b, H=h, T=t, D=d, Dv=d, dtype=dtype, chunk=min(c, t))
    n_in = b * t * h * (2 * d + d)
    n_out = b * t * h * d
    tol = TOL[dtype] if (dtype != "float32" or not ctx.on_gpu) else TOL_F32_TF32
    peak = "bf16" if dtype == "bfloat16" else "tf32"

    def linear(impl):
        return lambda a, b_, v_: A.linear_attention(a, b_, v_, causal=True, chunk_size=c, implementation=impl)

    def kernel(impl):
        return lambda a, b_, v_: A.kernel_attention(a, b_, v_, feature_map="elu_plus_one", causal=True,
                                                    chunk_size=c, implementation=impl)

    families = (("linear_attention(elu+1 features)", linear, (pq, pk, v)),
                ("kernel_attention(elu_plus_one)", kernel, (q, k, v)))
    for pas in ("fwd", "fwd+bwd"):
        mult = 1 if pas == "fwd" else 3
        flops = mult * linear_attention_flops(b, h, t, d, d, c)
        nbytes = dt.itemsize * (n_in + (n_out if pas == "fwd" else n_in))
        for fam, make, args in families:
            wrap = (lambda f: f) if pas == "fwd" else (lambda f: fwd_bwd(ctx, f, 3))
            args32 = tuple(x.astype(f32) for x in args)
            ref = reference(ctx, ("attention", fam, pas, args32[0].shape), wrap(make("xla")), args32)
            for impl in (ctx.pallas, "xla"):
                row = dict(base, **{"pass": pas, "method": f"{fam} {impl}", "family": fam, "impl": impl})
                run_row(ctx, row, wrap(make(impl)), args, ref, tol, flops=flops, nbytes=nbytes, peak=peak,
                        kjax_pallas=impl == ctx.pallas)
            del ref
        gated_rows(ctx, base, q, k, v, pas, mult, tol, peak)
        if dtype == "bfloat16":
            softmax_rows(ctx, base, q, k, v, pas, mult)


def gated_rows(ctx: Ctx, base: dict, q, k, v, pas: str, mult: int, tol: float, peak: str) -> None:
    """The gated forms (scalar decay [B,T,H], per-feature decay [B,T,H,D], gated delta rule), chunked
    (``implementation=None``: the dispatcher's choice) vs a ``lax.scan`` over their ``*_step``; both
    checked against the chunked XLA form in float32 at highest precision. L2-normalised q, k,
    ``log a = logsigmoid``, ``beta = sigmoid``, no normaliser."""
    import kjax.attention as A

    jax, jnp = ctx.jax, ctx.jnp
    b, t, h, d = q.shape
    dt, f32 = q.dtype, jnp.float32
    unit = lambda x: (x.astype(f32) / jnp.linalg.norm(x.astype(f32), axis=-1, keepdims=True)).astype(dt)
    qn, kn = unit(q), unit(k)
    kg = jax.random.split(jax.random.key(7 * t + d), 3)
    g_scalar = jax.nn.log_sigmoid(jax.random.normal(kg[0], (b, t, h), f32) + 3.0)
    g_feature = jax.nn.log_sigmoid(jax.random.normal(kg[1], (b, t, h, d), f32)) / 16
    beta = jax.nn.sigmoid(jax.random.normal(kg[2], (b, t, h), f32))
    c = ctx.chunk

    def scan(step, state, *xs):
        def body(s, x):
            o, new = step(s, *x)
            return jax.tree.map(lambda a, b: a.astype(b.dtype), new, s), o  # the carry keeps its dtype
        _, out = jax.lax.scan(body, state, tuple(jnp.moveaxis(x, 1, 0) for x in xs))
        return jnp.moveaxis(out, 0, 1)

    def zeros_la(a, v_):
        acc = jnp.promote_types(a.dtype, f32)
        return A.LinearAttentionState(jnp.zeros((b, h, d, v_.shape[-1]), acc), jnp.zeros((b, h, d), acc))

    def la(g):
        def make(impl):
            if impl == "scan":
                return lambda a, b_, v_: scan(lambda s, *x: A.linear_attention_step(
                    s, *x[:3], decay_t=x[3], normalize=False), zeros_la(a, v_), a, b_, v_, g).astype(v_.dtype)
            return lambda a, b_, v_: A.linear_attention(a, b_, v_, decay=g, normalize=False, chunk_size=c,
                                                        implementation=impl)
        return make

    def delta(g):
        def make(impl):
            if impl == "scan":
                return lambda a, b_, v_: scan(lambda s, *x: A.delta_rule_step(s, *x[:4], decay_t=x[4]),
                                              A.DeltaRuleState(jnp.zeros((b, h, d, v_.shape[-1]), f32)),
                                              a, b_, v_, beta, g).astype(v_.dtype)
            return lambda a, b_, v_: A.delta_rule_attention(a, b_, v_, beta, decay=g, chunk_size=c,
                                                            implementation=impl)
        return make

    wrap = (lambda f: f) if pas == "fwd" else (lambda f: fwd_bwd(ctx, f, 3))
    n_in, n_out = b * t * h * 3 * d, b * t * h * d
    nbytes = dt.itemsize * (n_in + (n_out if pas == "fwd" else n_in))
    flops = mult * linear_attention_flops(b, h, t, d, d, c)  # the chunked model; the delta rule does more
    # the forms with Pallas kernels (scalar decay, delta rule) run them explicitly and on XLA; the
    # per-feature form has no kernel (the dispatcher's choice is XLA)
    kernels = (ctx.pallas, "xla", "scan")
    for fam, make, impls in (("gated scalar decay [B,T,H]", la(g_scalar), kernels),
                             ("gated per-feature decay [B,T,H,D]", la(g_feature), (None, "scan")),
                             ("gated delta rule [B,T,H]", delta(g_scalar), kernels),
                             ("delta rule (no decay)", delta(None), kernels[:2])):
        args32 = tuple(x.astype(f32) for x in (qn, kn, v))
        ref = reference(ctx, ("gated", fam, pas, args32[0].shape), wrap(make("xla")), args32)
        for impl in impls:
            name = {None: "chunked (dispatch)", "scan": "token scan of *_step"}.get(impl, f"chunked {impl}")
            row = dict(base, **{"pass": pas, "method": f"{fam} {name}", "family": fam,
                                "impl": impl or "auto"})
            run_row(ctx, row, wrap(make(impl)), (qn, kn, v), ref, tol, flops=flops, nbytes=nbytes, peak=peak,
                    kjax_pallas=impl == ctx.pallas)
        del ref


def softmax_rows(ctx: Ctx, base: dict, q, k, v, pas: str, mult: int) -> None:
    jax, jnp = ctx.jax, ctx.jnp
    b, t, h, d = q.shape
    dt = q.dtype

    def softmax(impl):
        return lambda a, b_, v_: jax.nn.dot_product_attention(a, b_, v_, is_causal=True, implementation=impl)

    wrap = (lambda f: f) if pas == "fwd" else (lambda f: fwd_bwd(ctx, f, 3))
    row = dict(base, **{"pass": pas, "family": "softmax"})
    impl, note = "xla", "CPU: no cuDNN"
    if ctx.on_gpu:
        try:
            jax.jit(wrap(softmax("cudnn"))).lower(q, k, v).compile()
            impl, note = "cudnn", ""
        except Exception as e:  # cuDNN refuses some shapes / dtypes / versions
            note = f"cuDNN refused ({short_error(e, 120)}); XLA instead"
    row.update(method=f"dot_product_attention {impl}", impl=impl, note=note)
    need = softmax_mem_estimate(b, h, t, d, d, dt.itemsize, impl, pas != "fwd")
    if need > SOFTMAX_MEM_LIMIT:
        skip_row(ctx, row, f"{note + '; ' if note else ''}memory estimate {need / GB:.0f} GB > "
                           f"{SOFTMAX_MEM_LIMIT / GB:.0f} GB")
        return
    ref, tol = None, None
    if t <= SOFTMAX_CHECK_MAX_T:
        args32 = tuple(x.astype(jnp.float32) for x in (q, k, v))
        ref = reference(ctx, ("softmax", pas, args32[0].shape), wrap(softmax("xla")), args32)
        tol = TOL[str(dt)]
    else:
        row["note"] = f"{note + '; ' if note else ''}unchecked (T > {SOFTMAX_CHECK_MAX_T})"
    nbytes = dt.itemsize * b * t * h * (3 * d + (d if pas == "fwd" else 3 * d))
    run_row(ctx, row, wrap(softmax(impl)), (q, k, v), ref, tol, flops=mult * softmax_flops(b, h, t, d, d),
            nbytes=nbytes, peak="bf16" if dt == jnp.bfloat16 else "tf32")


# ----------------------------------------------------------------------------------------- fftconv


def fftconv_group(ctx: Ctx, b: int, L: int, d: int, dtype: str) -> None:
    from kjax.ssm import fftconv

    jax, jnp = ctx.jax, ctx.jnp
    dt, f32 = jnp.dtype(dtype), jnp.float32
    ks = jax.random.split(jax.random.key(L + d), 4)
    u = jax.random.normal(ks[0], (b, L, d), f32)
    k = jax.random.normal(ks[1], (L, d), f32) * jnp.exp(-4.0 * jnp.arange(L) / L)[:, None]  # a long filter
    g = jax.random.normal(ks[2], (b, L, d), f32)
    s = jax.random.normal(ks[3], (d,), f32)
    args = tuple(x.astype(dt) for x in (u, k, g, s))
    args32 = tuple(x.astype(f32) for x in args)
    base = dict(section="fftconv", B=b, L=L, D=d, dtype=dtype, family="fftconv")
    n_in = 2 * b * L * d + L * d + d

    def conv(impl):
        return lambda u_, k_, g_, s_: fftconv(u_, k_, gate=g_, skip=s_, implementation=impl)

    for pas in ("fwd", "fwd+bwd"):
        mult = 1 if pas == "fwd" else 3
        wrap = (lambda f: f) if pas == "fwd" else (lambda f: fwd_bwd(ctx, f, 4))
        ref = reference(ctx, ("fftconv", pas, args32[0].shape), wrap(conv("xla")), args32)
        nbytes = dt.itemsize * (n_in + (b * L * d if pas == "fwd" else n_in))
        for impl in (ctx.pallas, "xla"):
            row = dict(base, **{"pass": pas, "method": f"fftconv {impl}", "impl": impl})
            run_row(ctx, row, wrap(conv(impl)), args, ref, TOL[dtype], flops=mult * fftconv_flops(b, L, d),
                    nbytes=nbytes, peak="f32", kjax_pallas=impl == ctx.pallas)
        del ref


# ----------------------------------------------------------------------------------------- output


def fmt(x, spec: str, missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


def speedups(rows: list[dict]) -> None:
    """``vs_xla``: time of the kjax XLA row of the same family, shape, dtype and pass / this time."""
    key = lambda r: (r["section"], r["family"], r.get("T", r.get("L")), r["D"], r["dtype"], r["pass"])
    xla = {key(r): r["ms"] for r in rows if r.get("impl") == "xla" and r["family"] != "softmax" and "ms" in r}
    for r in rows:
        if "ms" in r and key(r) in xla and r["family"] != "softmax":
            r["vs_xla"] = xla[key(r)] / r["ms"]


def markdown(rows: list[dict], section: str, roof: bool) -> str:
    size = "T" if section == "attention" else "L"
    cols = [size, "D", "dtype", "pass", "method", "ms", "TFLOP/s", "GB/s", "roofline", "vs kjax xla",
            "check (rel err)", "note"]
    if not roof:
        cols.remove("roofline")
    sel = [r for r in rows if r["section"] == section]
    order = {"fwd": 0, "fwd+bwd": 1}
    sel.sort(key=lambda r: (r["D"], r["dtype"] != "bfloat16", order[r["pass"]], r[size]))
    out = []
    for r in sel:
        roofline = f"{100 * r['roofline']:.1f}% ({r['bound']})" if "roofline" in r else "-"
        check = fmt(r.get("err"), ".1e", "unchecked")
        if r["status"] == "aborted" and "err" not in r:
            check = "-"
        note = r.get("note", "")
        if r["status"] != "ok":
            note = f"{r['status'].upper()}: {note}"
        elif r.get("inner", 1) > 1:
            note = f"{note + '; ' if note else ''}{r['inner']} calls per sample"
        out.append({size: r[size], "D": r["D"], "dtype": r["dtype"], "pass": r["pass"], "method": r["method"],
                    "ms": fmt(r.get("ms"), ".3f"), "TFLOP/s": fmt(r.get("tflops"), ".2f"),
                    "GB/s": fmt(r.get("gbs"), ".1f"), "roofline": roofline,
                    "vs kjax xla": fmt(r.get("vs_xla"), ".2f") + ("x" if "vs_xla" in r else ""),
                    "check (rel err)": check, "note": note.replace("|", "/")})
    return _common.table(out, cols)


def commit_line() -> str:
    import kjax

    where = os.path.dirname(os.path.dirname(os.path.abspath(kjax.__file__)))
    if where != _common.ROOT:
        return f"{_common.git_commit()} (but kjax imported from {where}, not from this checkout)"
    commit = _common.git_commit()
    try:
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "kjax"], cwd=_common.ROOT,
                               stderr=subprocess.DEVNULL).returncode == 1
    except OSError:
        dirty = False
    return commit + (" + uncommitted changes in kjax/" if dirty else "")


# ----------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="a smaller set, for a smoke run")
    ap.add_argument("--only", choices=("attention", "fftconv"), help="run one section")
    ap.add_argument("--reps", type=int, default=None, help="timed samples per row (default 10, quick 5)")
    ap.add_argument("--chunk", type=int, default=64, help="chunk size of the causal linear attention")
    ap.add_argument("--budget", type=float, default=480.0,
                    help="seconds of measuring after which the remaining shapes are skipped (default 480)")
    ap.add_argument("--json", metavar="PATH", help="also write the rows and the run's metadata as JSON")
    ap.add_argument("--allow-cpu", action="store_true",
                    help="without a GPU, run tiny shapes on CPU with implementation='pallas_interpret'")
    args = ap.parse_args(argv)

    import jax
    import jax.numpy as jnp

    on_gpu = jax.default_backend() == "gpu"
    if not on_gpu and not args.allow_cpu:
        print(f"bench_gpu.py: no GPU (jax backend {jax.default_backend()!r}, devices {jax.devices()}); this "
              "benchmark times Pallas GPU kernels. Pass --allow-cpu to check its code paths on CPU with tiny "
              "shapes and implementation='pallas_interpret'.", file=sys.stderr)
        return 2
    try:
        import kjax.attention  # noqa: F401
        import kjax.ssm  # noqa: F401
    except Exception as e:
        print(f"bench_gpu.py: kjax failed to import: {short_error(e, 1000)}", file=sys.stderr)
        return 1

    kind = jax.devices()[0].device_kind
    rname = roofline_name(kind) if on_gpu else None
    roof = ROOFLINES.get(rname) if rname else None
    reps = args.reps or ((5 if args.quick else 10) if on_gpu else 3)
    ctx = Ctx(jax=jax, jnp=jnp, on_gpu=on_gpu, pallas="pallas" if on_gpu else "pallas_interpret", reps=reps,
              chunk=args.chunk, roof=roof, max_row_seconds=10.0)

    if on_gpu:
        att_dims, att_b, att_h = ((64,) if args.quick else (64, 128)), 2, 8
        att_ts = (1024, 4096) if args.quick else (1024, 4096, 16384, 65536)
        conv_b, conv_d = 4, 256
        conv_ls = (1024, 4096) if args.quick else (1024, 4096, 16384, 65536)
    else:  # --allow-cpu: tiny shapes, the code paths only
        att_dims, att_b, att_h = (16,), 1, 2
        att_ts = (64,) if args.quick else (64, 256)
        conv_b, conv_d = 1, 8
        conv_ls = (64,) if args.quick else (64, 256)
        ctx.chunk = min(ctx.chunk, 16)

    m = _common.machine()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = {"device_kind": kind, "devices": len(jax.devices()), "backend": jax.default_backend(),
            "jax": jax.__version__, "commit": commit_line(), "date": date, "host_cpu": m["cpu"],
            "nproc": m["nproc"], "roofline": rname, "roofline_peaks": roof, "reps": reps,
            "chunk": ctx.chunk, "pallas": ctx.pallas, "argv": sys.argv[1:]}
    print("# kjax GPU benchmark: Pallas kernels vs XLA paths vs softmax attention (benchmarks/bench_gpu.py)")
    print(f"# device: {kind} ({len(jax.devices())} device(s), backend {jax.default_backend()}); jax "
          f"{jax.__version__}; commit {meta['commit']}; {date}; host {m['cpu']}, {m['nproc']} cores")
    if roof:
        print(f"# roofline ({rname}, dense): bf16 {roof['bf16']:.0f} TFLOP/s, tf32 {roof['tf32']:.0f}, f32 "
              f"(CUDA cores) {roof['f32']:.1f}, HBM {roof['tbs']} TB/s")
    else:
        print(f"# unknown roofline for {kind!r}: no roofline column")
    print(f"# median of {reps} timed samples after a blocked warm-up; kjax implementations "
          f"{ctx.pallas!r} and 'xla'; chunk C={ctx.chunk}"
          + ("" if on_gpu else "; CPU run (--allow-cpu): interpret-mode Pallas, times mean nothing"))
    f32_att = TOL_F32_TF32 if on_gpu else TOL["float32"]
    print(f"# values checked first against kjax's XLA path in float32 at highest matmul precision "
          f"(relative Frobenius error): tolerance bf16 {TOL['bfloat16']:.0e}; "
          f"f32 fftconv {TOL['float32']:.0e}; f32 attention {f32_att:.0e}"
          + (" (TF32 dots at DEFAULT precision)" if on_gpu else ""))
    print("# FLOP models (fwd+bwd = 3x fwd): chunked linear attention 2*B*H*T*(C*D + C*Dv + 2*D*Dv); "
          "softmax causal 2*B*H*T^2*(D+Dv)/2;\n#   fftconv with N=2L: "
          "B*D*(2*2.5*N*log2 N + 3N) + D*2.5*N*log2 N + 3*B*L*D")
    print("# bytes: inputs read once + outputs (fwd) or one gradient per input (fwd+bwd) written once")
    sys.stdout.flush()

    groups: list[tuple[str, Callable[[], None]]] = []
    for d in att_dims:
        if args.only in (None, "attention"):
            for t in att_ts:
                for dtype in ("bfloat16", "float32"):
                    run = lambda t=t, d=d, dtype=dtype: attention_group(ctx, att_b, att_h, t, d, dtype)
                    groups.append((f"attention T={t} D={d} {dtype}", run))
        if d == att_dims[0] and args.only in (None, "fftconv"):  # fftconv after the first head size
            for L in conv_ls:
                for dtype in ("float32", "bfloat16"):
                    groups.append((f"fftconv L={L} {dtype}",
                                   lambda L=L, dtype=dtype: fftconv_group(ctx, conv_b, L, conv_d, dtype)))

    start = time.perf_counter()
    last: dict[str, float] = {}
    skipped = []
    for name, run in groups:
        section = name.split()[0]
        elapsed = time.perf_counter() - start
        if elapsed + last.get(section, 0.0) > args.budget:
            skipped.append(name)
            print(f"{name}: skipped, the time budget is spent ({elapsed:.0f} s of {args.budget:.0f} s)",
                  file=sys.stderr, flush=True)
            continue
        print(f"{name} (at {elapsed:.0f} s)", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        run()
        last[section] = time.perf_counter() - t0

    rows = ctx.rows
    speedups(rows)
    for section in ("attention", "fftconv"):
        if any(r["section"] == section for r in rows):
            shape = (f"causal, B={att_b}, H={att_h}, D=Dv, elu+1 feature maps" if section == "attention"
                     else f"causal, B={conv_b}, D={conv_d}, k: [L, D], gate and skip")
            print(f"\n## {section} ({shape})\n")
            print(markdown(rows, section, roof is not None))
    total = time.perf_counter() - start
    print(f"\n# {len(rows)} rows in {total:.0f} s")
    if skipped:
        print(f"# skipped for the --budget of {args.budget:.0f} s: {', '.join(skipped)}")
    bad = [r for r in rows if r["status"] in ("aborted", "error")]
    for r in bad:
        print(f"# {r['status'].upper()}: {r['section']} {r.get('T', r.get('L'))} D={r['D']} {r['dtype']} "
              f"{r['pass']} {r['method']}: {r['note']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "tolerances": {**TOL, "float32_attention_gpu": TOL_F32_TF32},
                       "skipped_groups": skipped, "seconds": total, "rows": rows}, fh, indent=1)
        print(f"# rows written to {args.json}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

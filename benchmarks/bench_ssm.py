"""kjax.ssm.fftconv against a direct depthwise convolution, a naive complex-FFT pipeline and a bare
rfft/irfft pair, causal, float32, ``u: [B, L, D]`` with B=4, D=256 (issue 6).

    python benchmarks/bench_ssm.py            # L in {1k, 4k, 16k, 64k}; direct conv at L=1k only
    python benchmarks/bench_ssm.py --quick    # small shapes, a smoke test

Values are checked against the direct convolution (L=1k) and the complex pipeline (every L) before
anything is timed; times are medians of compiled calls after warm-up, with block_until_ready, timed
in interleaved rounds (one call of each method per round) so that a shared machine's drift hits all alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from kjax.ssm import fftconv


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, nproc={os.cpu_count()}, jax {jax.__version__} ({jax.default_backend()}), "
            f"commit {commit}, load average {load:.2f}")


def timeit(f, *args, reps: int) -> float:
    f(*args).block_until_ready()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f(*args).block_until_ready()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def interleaved(calls: dict, reps: int, stat=np.median) -> dict:
    """``stat`` (median by default) of each call's ms, timed in rounds (one call of each per round),
    so that the drift of a shared VM's speed hits every method alike instead of whichever ran
    during a slow spell. With ``stat=None`` the lists of times are returned."""
    for f, args in calls.values():
        f(*args).block_until_ready()
    ts = {name: [] for name in calls}
    for _ in range(reps):
        for name, (f, args) in calls.items():
            t0 = time.perf_counter()
            f(*args).block_until_ready()
            ts[name].append(time.perf_counter() - t0)
    if stat is None:
        return {name: [1e3 * t for t in v] for name, v in ts.items()}
    return {name: 1e3 * float(stat(v)) for name, v in ts.items()}


def complex_pipeline(u, k):
    """What one writes first: complex FFTs of both operands at length 2L, product, inverse, real part."""
    L = u.shape[1]
    U = jnp.fft.fft(u, n=2 * L, axis=1)
    K = jnp.fft.fft(k, n=2 * L, axis=0)
    return jnp.real(jnp.fft.ifft(U * K, axis=1))[:, :L]


def bare_pair(u):
    """The floor: one rfft and one irfft of u at length 2L along L, no filter, no product."""
    L = u.shape[1]
    return jnp.fft.irfft(jnp.fft.rfft(u, n=2 * L, axis=1), n=2 * L, axis=1)[:, :L]


def direct(u, k):
    """Depthwise causal convolution with lax.conv_general_dilated (feature_group_count = D)."""
    L, D = k.shape
    lhs = jnp.transpose(u, (0, 2, 1))  # [B, D, L]
    rhs = k[::-1].T[:, None, :]  # [D, 1, L]: flipped, since conv_general_dilated correlates
    y = jax.lax.conv_general_dilated(lhs, rhs, (1,), [(L - 1, 0)], feature_group_count=D,
                                     precision=jax.lax.Precision.HIGHEST)
    return jnp.transpose(y, (0, 2, 1))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    B, D = (2, 16) if args.quick else (4, 256)
    lengths = [256, 1024] if args.quick else [1024, 4096, 16384, 65536]
    print(machine())
    print(f"B={B}, D={D}, float32, causal, L_k = L; times in ms (median)\n")
    kj = jax.jit(lambda u, k: fftconv(u, k))
    kj_gs = jax.jit(lambda u, k, g, s: fftconv(u, k, gate=g, skip=s))
    cp, bp, dc = jax.jit(complex_pipeline), jax.jit(bare_pair), jax.jit(direct)
    rows = []
    for L in lengths:
        reps = 3 if L >= 65536 else 7
        ks = jax.random.split(jax.random.key(L), 4)
        u = jax.random.normal(ks[0], (B, L, D), jnp.float32)
        k = jax.random.normal(ks[1], (L, D), jnp.float32) * jnp.exp(-jnp.arange(L) / 256.0)[:, None]
        g = jax.random.normal(ks[2], (B, L, D), jnp.float32)
        s = jax.random.normal(ks[3], (D,), jnp.float32)
        y = kj(u, k)
        e_cp = rel(y, cp(u, k))
        assert e_cp < 1e-5, f"L={L}: fftconv vs complex pipeline {e_cp:.2e}"
        assert rel(kj_gs(u, k, g, s), g * (y + s * u)) < 1e-5
        assert rel(bp(u), u) < 1e-5
        t_direct, e_dc = None, None
        if L <= 1024:
            e_dc = rel(y, dc(u, k))
            assert e_dc < 1e-5, f"L={L}: fftconv vs direct {e_dc:.2e}"
            t_direct = timeit(dc, u, k, reps=3)
        raw = interleaved(dict(kjax=(kj, (u, k)), kjax_gs=(kj_gs, (u, k, g, s)), cp=(cp, (u, k)),
                               bp=(bp, (u,))), reps=reps, stat=None)
        t = {name: float(np.median(v)) for name, v in raw.items()}
        t["min"] = {name: float(np.min(v)) for name, v in raw.items()}
        t["direct"] = t_direct
        rows.append((L, t, e_cp, e_dc))
        print(f"L={L}: checked (vs complex {e_cp:.1e}" + (f", vs direct {e_dc:.1e})" if e_dc else ")"),
              flush=True)
    print("\nmedians (ms); the last two columns also from the fastest round of each method (min)\n")
    print("| L | kjax fftconv | kjax fftconv + gate + skip | complex jnp.fft pipeline "
          "| bare rfft/irfft pair | direct conv | complex / kjax (median, min) "
          "| kjax+gate+skip / bare pair (median, min) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for L, t, _, _ in rows:
        dcs = f"{t['direct']:.1f}" if t["direct"] is not None else "not run"
        mn = t["min"]
        print(f"| {L} | {t['kjax']:.1f} | {t['kjax_gs']:.1f} | {t['cp']:.1f} | {t['bp']:.1f} | {dcs} "
              f"| {t['cp'] / t['kjax']:.2f}x, {mn['cp'] / mn['kjax']:.2f}x "
              f"| {t['kjax_gs'] / t['bp']:.2f}x, {mn['kjax_gs'] / mn['bp']:.2f}x |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

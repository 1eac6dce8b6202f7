"""What bounds kjax on XLA:CPU: memory passes, small batched matmuls, LAPACK's Cholesky, triangular solves.

    .venv/bin/python benchmarks/cpu_limits.py

Prints the time of one elementwise pass and one chunk-major transpose over a ``[1, 16384, 8, 64]``
float32 array (the size of q, k or v in bench_attention.py at T=16k), and the throughput of the
batched ``[64, 64] x [64, 65]`` matmuls of the chunk algebra at several batch sizes against one large
matmul; then, in float64 at n = 5000, JAX's Cholesky against SciPy's ``cho_factor`` and the RBF
Gram matrix by one direct kernel call against ``kjax.kernels.gram`` (exact kernel ridge regression);
triangular solves with one right-hand side at m = 5000 (jax, kjax's blocked substitution, SciPy);
then Falkon's product ``K_nM^T K_nM v`` (float32, n = 1e5, M = 5000, d = 10, over the CPU devices)
by two ``kernel_matvec`` calls against one ``kernel_normal_matvec`` at several row-block sizes.
Each result is checked against NumPy / SciPy before it is timed; medians of 7 compiled calls.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time

import jax

jax.config.update("jax_enable_x64", True)  # for the float64 part; the rest is explicitly float32
jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)  # the normal-matvec part shards

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def timed(fn, *args, reps=7):
    f = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), f


def main():
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        commit = "unknown"
    print(f"machine: {platform.machine()}, nproc {os.cpu_count()}, jax {jax.__version__}, "
          f"backend {jax.default_backend()}, commit {commit}, load average {os.getloadavg()[0]:.2f}")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(1, 16384, 8, 64)).astype(np.float32))
    mb = x.size * 4 / 2**20
    chunk_major = lambda x: x.reshape(1, 256, 64, 8, 64).transpose(1, 0, 3, 2, 4)
    for name, fn, want in (("elementwise x * 2", lambda x: x * 2, np.asarray(x) * 2),
                           ("chunk-major transpose", chunk_major, np.asarray(chunk_major(np.asarray(x))))):
        t, f = timed(fn, x)
        np.testing.assert_allclose(np.asarray(f(x)), want, rtol=1e-6)
        print(f"{name} over {mb:.0f} MiB: {1e3 * t:.1f} ms ({2 * mb / 1024 / t:.1f} GiB/s read + write)")
    for batch in (2048, 256, 32, 8):
        a = jnp.asarray(rng.normal(size=(batch, 64, 64)).astype(np.float32))
        b = jnp.asarray(rng.normal(size=(batch, 64, 65)).astype(np.float32))
        t, f = timed(lambda a, b: a @ b, a, b)
        np.testing.assert_allclose(np.asarray(f(a, b)), np.asarray(a) @ np.asarray(b), rtol=1e-3, atol=1e-3)
        gflops = 2 * batch * 64 * 64 * 65 / t / 1e9
        print(f"batched matmul {batch} x [64, 64] x [64, 65]: {gflops:.1f} GFLOP/s")
    a = jnp.asarray(rng.normal(size=(2048, 2048)).astype(np.float32))
    t, f = timed(lambda a: a @ a, a)
    np.testing.assert_allclose(np.asarray(f(a)), np.asarray(a) @ np.asarray(a), rtol=1e-3, atol=1e-2)
    print(f"one matmul [2048, 2048] x [2048, 2048]: {2 * 2048**3 / t / 1e9:.1f} GFLOP/s")
    float64_part(rng)
    triangular_part(rng)
    normal_part(rng)


def triangular_part(rng, m=5000):
    import scipy.linalg

    from kjax._src import linalg

    a = rng.normal(size=(m, m)) / np.sqrt(m)
    low = np.linalg.cholesky(a @ a.T + np.eye(m))
    b = rng.normal(size=(m, 1))
    for dt in (np.float32, np.float64):
        lj, bj = jnp.asarray(low, dt), jnp.asarray(b, dt)
        want = scipy.linalg.solve_triangular(low.astype(dt), b.astype(dt), lower=True)
        t_jax, f = timed(lambda lo, v: jax.scipy.linalg.solve_triangular(lo, v, lower=True), lj, bj)
        np.testing.assert_allclose(np.asarray(f(lj, bj)), want, rtol=1e-3, atol=1e-3)
        t_kj, f = timed(lambda lo, v: linalg.solve_triangular(lo, v), lj, bj)
        np.testing.assert_allclose(np.asarray(f(lj, bj)), want, rtol=1e-3, atol=1e-3)
        ln, bn, ts = low.astype(dt), b.astype(dt), []
        for _ in range(5):
            t0 = time.perf_counter()
            scipy.linalg.solve_triangular(ln, bn, lower=True, check_finite=False)
            ts.append(time.perf_counter() - t0)
        print(f"{np.dtype(dt).name} triangular solve m={m}, one right-hand side: "
              f"jax.scipy.linalg.solve_triangular {1e3 * t_jax:.1f} ms, kjax._src.linalg (blocked) "
              f"{1e3 * t_kj:.1f} ms, scipy.linalg.solve_triangular {1e3 * statistics.median(ts):.1f} ms")


def normal_part(rng, n=100_000, m=5000):
    import functools

    from kjax import kernels

    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    x = jnp.asarray(rng.normal(size=(n, 10)).astype(np.float32))
    z, v = x[:m], jnp.asarray(rng.normal(size=(m, 1)).astype(np.float32))
    kern = functools.partial(kernels.rbf, lengthscale=3.0)

    def two(x, z, v):
        return kernels.kernel_matvec(kern, z, x, kernels.kernel_matvec(kern, x, z, v, mesh=mesh), mesh=mesh)

    t2, f2 = timed(two, x, z, v, reps=5)
    ref = np.asarray(f2(x, z, v), np.float64)
    print(f"K_nM^T K_nM v, float32, n={n}, M={m}, {len(jax.devices())} devices: two kernel_matvec calls "
          f"{t2:.3f} s")
    for rows in (None, 8, 32, 64, 256, 1024):
        t, f = timed(lambda x, z, v, rows=rows: kernels.kernel_normal_matvec(kern, x, z, v, block_size=rows,
                                                                            mesh=mesh), x, z, v, reps=5)
        out = np.asarray(f(x, z, v), np.float64)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())
        label = "default (16)" if rows is None else str(rows)
        print(f"  kernel_normal_matvec, rows per block {label}: {t:.3f} s ({t2 / t:.1f}x)")


def float64_part(rng, n=5000):
    import functools

    import scipy.linalg

    from kjax import kernels

    x = rng.normal(size=(n, 10))
    kern = functools.partial(kernels.rbf, lengthscale=3.0)
    want = np.asarray(kern(jnp.asarray(x), jnp.asarray(x)))
    for name, fn in (("one direct kernel call k(x, x)", lambda a: kern(a, a)),
                     ("kjax.kernels.gram(k, x, x)", lambda a: kernels.gram(kern, a, a)),
                     ("kjax.kernels.gram(k, x) (exactly symmetric)", lambda a: kernels.gram(kern, a))):
        t, f = timed(fn, jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(f(jnp.asarray(x))), want, rtol=1e-10, atol=1e-12)
        print(f"float64 RBF Gram, n={n}, d=10, {name}: {t:.3f} s")
    a = want + 1e-3 * np.eye(n)
    t, f = timed(lambda m: jax.lax.linalg.cholesky(m, symmetrize_input=False), jnp.asarray(a), reps=3)
    low = np.asarray(f(jnp.asarray(a)))
    ts = []
    for _ in range(4):
        t0 = time.perf_counter()
        ref, _ = scipy.linalg.cho_factor(a, lower=True, check_finite=False)
        ts.append(time.perf_counter() - t0)
    np.testing.assert_allclose(low, np.tril(ref), rtol=1e-6, atol=1e-8)
    print(f"float64 Cholesky n={n}: jax.lax.linalg.cholesky {t:.3f} s, "
          f"scipy.linalg.cho_factor {statistics.median(ts[1:]):.3f} s")


if __name__ == "__main__":
    main()

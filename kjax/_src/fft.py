"""FFT machinery shared by kjax.ssm (long convolutions) and kjax.attention (RPE Toeplitz products).

* :func:`next_fast_len`: the smallest 2^a 3^b 5^c 7^d >= n (XLA's FFT is fast on such sizes).
* :func:`fft_linear_conv`: the full linear convolution of two real signals along an axis via real
  FFTs, zero-padded so nothing wraps around.
* :func:`toeplitz_matmul`: ``y[i] = sum_j t[i - j] x[j]`` for a Toeplitz matrix given by its
  ``2T - 1`` diagonals, in ``O(T log T)``.

XLA's ``rfft`` rejects bf16/f16, so inputs are cast to at least float32 around the transform and
the result is cast back to the input dtype (the dtype policy of ``kjax._src.dtypes``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kjax._src import dtypes


@functools.cache
def next_fast_len(n: int) -> int:
    """Smallest integer >= n whose prime factors are all in {2, 3, 5, 7}."""
    if n <= 1:
        return 1
    best = 1 << (n - 1).bit_length()  # a power of two always works
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                m = p3
                while m < n:
                    m *= 2
                best = min(best, m)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def fft_linear_conv(u: jax.Array, k: jax.Array, *, axis: int = -1, out_len: int | None = None,
                    fft_len: int | None = None) -> jax.Array:
    """Linear convolution ``(u * k)[t] = sum_s k[s] u[t - s]`` along ``axis``, first ``out_len`` taps.

    ``u`` and ``k`` broadcast in every other axis. The transform runs in at least float32; the
    result has dtype ``result_type(u, k)``.
    """
    out_dtype = dtypes.result_dtype(u, k)
    acc = dtypes.accum_dtype(out_dtype)
    lu, lk = u.shape[axis], k.shape[axis]
    full = lu + lk - 1
    out_len = full if out_len is None else out_len
    n = fft_len or next_fast_len(full)
    uf = jnp.fft.rfft(u.astype(acc), n=n, axis=axis)
    kf = jnp.fft.rfft(k.astype(acc), n=n, axis=axis)
    y = jnp.fft.irfft(uf * kf, n=n, axis=axis)
    y = jax.lax.slice_in_dim(y, 0, out_len, axis=axis % y.ndim)
    return y.astype(out_dtype)


def toeplitz_matmul(t: jax.Array, x: jax.Array, *, axis: int = -2) -> jax.Array:
    """``y[i] = sum_{j} t[i - j + T - 1] x[j]`` along ``axis`` (length ``T``) of ``x``.

    ``t`` holds the ``2T - 1`` diagonals ordered from offset ``-(T-1)`` to ``T-1`` along the same
    axis (``t[T - 1]`` is the main diagonal), broadcasting with ``x`` in the other axes. A causal
    (lower-triangular) Toeplitz matrix has zeros in ``t[:T-1]``.
    """
    T = x.shape[axis]
    y = fft_linear_conv(x, t, axis=axis, out_len=2 * T - 1)
    return jax.lax.slice_in_dim(y, T - 1, 2 * T - 1, axis=axis % y.ndim)

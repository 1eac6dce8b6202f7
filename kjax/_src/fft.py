"""FFT machinery shared by kjax.ssm (long convolutions) and kjax.attention (RPE Toeplitz products).

* :func:`next_fast_len`: the smallest 2^a 3^b 5^c 7^d >= n (XLA's FFT is fast on such sizes).
* :func:`fft_linear_conv`: the convolution of two real signals along an axis via real FFTs, zero-padded
  so nothing wraps around (or circular at a chosen length), with an optional skip folded into the
  filter's spectrum. It is the only FFT convolution in kjax: ``kjax.ssm.fftconv``'s XLA path and
  :func:`toeplitz_matmul` call it; no pillar re-implements it.
* :func:`toeplitz_matmul`: ``y[i] = sum_j t[i - j] x[j]`` for a Toeplitz matrix given by its
  ``2T - 1`` diagonals, in ``O(T log T)``.

XLA's ``rfft`` rejects bf16/f16, so inputs are cast to at least float32 around the transform and
the result is cast back to the input dtype (the dtype policy of ``kjax._src.dtypes``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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
                    fft_len: int | None = None, skip: jax.Array | None = None,
                    dtype: Any = None) -> jax.Array:
    r"""Convolution ``y[t] = sum_s k[s] u[t - s] (+ skip u[t])`` along ``axis`` via real FFTs.

    The one FFT convolution of kjax: :func:`kjax.ssm.fftconv`'s XLA path, the RPE Toeplitz
    products of kjax.attention (:func:`toeplitz_matmul`) and anything else that convolves long
    signals call it. With ``n = fft_len``:

    .. math:: y = \mathrm{irfft}_n\big(\mathrm{rfft}_n(u) \cdot (\mathrm{rfft}_n(k) + \text{skip})\big)
        [:\text{out\_len}].

    * ``fft_len=None`` (default) takes the smallest fast length ``>= len(u) + len(k) - 1``
      (:func:`next_fast_len`): the full linear convolution, nothing wraps around;
    * a shorter ``fft_len`` (at least ``max(len(u), len(k))``) wraps the tail around: the circular
      convolution of period ``fft_len`` (fftconv's circular mode, ``fft_len = L``, and its
      bidirectional mode, whose two-sided filter is laid out circularly at ``fft_len``).

    ``skip`` adds ``skip * u``: the convolution with ``skip`` at tap 0, whose spectrum is ``skip``
    at every frequency, so it is folded into the filter's spectrum and costs no extra pass over
    ``u``. It must broadcast against ``rfft(k)`` (e.g. ``[D]`` for channels-last ``k``).

    ``u`` and ``k`` broadcast in every other axis. The transforms run in at least float32 (XLA's FFT
    has no half-precision kernel); the result has dtype ``dtype`` (default: ``result_type(u, k)``),
    so a caller that fuses more work after the convolution asks for the accumulation dtype.

    Args:
      u: the signal, length ``len(u)`` along ``axis``.
      k: the filter, length ``len(k)`` along ``axis``.
      axis: the axis to convolve along (the same for ``u`` and ``k``).
      out_len: keep the first ``out_len`` outputs (default: all ``fft_len`` of a circular
        convolution, or ``len(u) + len(k) - 1`` of a linear one).
      fft_len: the transform length (default: a fast length with no wrap-around).
      skip: optional gain on ``u`` (adds ``skip * u``), broadcasting against ``rfft(k)``.
      dtype: the output dtype (default ``result_type(u, k)``).

    Returns:
      ``y`` with ``out_len`` entries along ``axis``, the broadcast shape of ``u`` and ``k`` elsewhere.
    """
    out_dtype = dtypes.result_dtype(u, k) if dtype is None else np.dtype(dtype)
    acc = dtypes.accum_dtype(dtypes.result_dtype(u, k))
    lu, lk = u.shape[axis], k.shape[axis]
    full = lu + lk - 1
    n = next_fast_len(full) if fft_len is None else int(fft_len)
    if out_len is None:
        out_len = min(full, n)
    kf = jnp.fft.rfft(k.astype(acc), n=n, axis=axis)
    if skip is not None:
        kf = kf + skip.astype(acc)
    y = jnp.fft.irfft(jnp.fft.rfft(u.astype(acc), n=n, axis=axis) * kf, n=n, axis=axis)
    if out_len != n:
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

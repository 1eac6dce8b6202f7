"""The production XLA path of :func:`kjax.ssm.fftconv`: the shared real-FFT convolution
(:func:`kjax._src.fft.fft_linear_conv`) at a fast length, skip folded into the filter's spectrum, gate
fused into the epilogue (tuned for CPU; it serves every platform).

Takes validated arrays (see ``_reference.py``): ``u: [B, L, D]``, ``k: [L_k, D]`` (``[2, L_k, D]``
when bidirectional), ``gate: [B, L, D] | None``, ``skip: [D] | None``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kjax._src import dtypes
from kjax._src.fft import fft_linear_conv, next_fast_len


def fft_size(mode: str, L: int, lk: int) -> int:
    """The FFT length used by the XLA path: exact for circular, a fast length >= L + L_k - 1 else."""
    return L if mode == "circular" else next_fast_len(L + lk - 1)


def bidirectional_filter(k: jax.Array, n: int) -> jax.Array:
    """The two-sided filter ``k: [2, L_k, D]`` laid out circularly at length ``n``.

    Offset ``s >= 0`` (weight on ``u[t - s]``) sits at index ``s``, from ``k[0, s]``; offset
    ``-s < 0`` (weight on ``u[t + s]``) sits at index ``n - s``, from ``k[1, s]``. ``k[1, 0]`` is unused.
    """
    lk = k.shape[1]
    f = jnp.zeros((n,) + k.shape[2:], k.dtype)
    f = f.at[:lk].set(k[0])
    if lk > 1:
        f = f.at[n - lk + 1:].set(k[1, :0:-1])
    return f


def filter_spectrum(k: jax.Array, n: int, mode: str, acc) -> jax.Array:
    """``rfft`` of the filter at length ``n`` along axis 0: ``[n // 2 + 1, D]`` complex (the Pallas
    kernels take it as input)."""
    kf = k.astype(acc)
    if mode == "bidirectional":
        kf = bidirectional_filter(kf, n)
    return jnp.fft.rfft(kf, n=n, axis=0)


def fftconv_xla(u, k, gate=None, skip=None, *, mode: str = "causal"):
    """The XLA path: :func:`~kjax._src.fft.fft_linear_conv` along L at a fast FFT length (exactly
    ``L`` when circular; the bidirectional filter laid out circularly at that length), skip folded
    into the filter's spectrum and the gate fused into the epilogue.

    The transforms run along axis 1 of ``[B, L, D]``; moving L last costs two transposes of the
    whole batch, which measured slower on CPU (see benchmarks/bench_ssm.py).
    """
    out_dtype = u.dtype
    acc = dtypes.accum_dtype(dtypes.result_dtype(u, k))
    L = u.shape[1]
    n = fft_size(mode, L, k.shape[-2])
    kf = bidirectional_filter(k, n) if mode == "bidirectional" else k
    y = fft_linear_conv(u, kf[None], axis=1, fft_len=n, out_len=L, skip=skip, dtype=acc)
    if gate is not None:
        y = y * gate.astype(acc)
    return y.astype(out_dtype)

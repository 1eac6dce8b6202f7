"""The production XLA path of :func:`kjax.ssm.fftconv`: real FFTs at a fast length, skip folded into
the filter's spectrum, gate fused into the epilogue (tuned for CPU; it serves every platform).

Takes validated arrays (see ``_reference.py``): ``u: [B, L, D]``, ``k: [L_k, D]`` (``[2, L_k, D]``
when bidirectional), ``gate: [B, L, D] | None``, ``skip: [D] | None``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kjax._src import dtypes
from kjax._src.fft import next_fast_len
from kjax.ssm._reference import bidirectional_filter


def fft_size(mode: str, L: int, lk: int) -> int:
    """The FFT length used by the XLA path: exact for circular, a fast length >= L + L_k - 1 else."""
    return L if mode == "circular" else next_fast_len(L + lk - 1)


def filter_spectrum(k: jax.Array, n: int, mode: str, acc) -> jax.Array:
    """``rfft`` of the filter at length ``n`` along axis 0: ``[n // 2 + 1, D]`` complex."""
    kf = k.astype(acc)
    if mode == "bidirectional":
        kf = bidirectional_filter(kf, n)
    return jnp.fft.rfft(kf, n=n, axis=0)


def fftconv_xla(u, k, gate=None, skip=None, *, mode: str = "causal"):
    """The XLA path: a fast FFT length, real FFTs along L, skip folded into the filter's spectrum
    and the gate fused into the epilogue.

    The transforms run along axis 1 of ``[B, L, D]``; moving L last costs two transposes of the
    whole batch, which measured slower on CPU (see benchmarks/bench_ssm.py).
    """
    out_dtype = u.dtype
    acc = dtypes.accum_dtype(dtypes.result_dtype(u, k))
    L = u.shape[1]
    lk = k.shape[-2]
    n = fft_size(mode, L, lk)
    uf = u.astype(acc)
    K = filter_spectrum(k, n, mode, acc)
    if skip is not None:
        # skip * u is the convolution with skip at tap 0, whose spectrum is skip at every
        # frequency: folded into K it costs nothing, where the epilogue would read u again
        K = K + skip.astype(acc)
    y = jnp.fft.irfft(jnp.fft.rfft(uf, n=n, axis=1) * K, n=n, axis=1)
    if n != L:
        y = y[:, :L]
    if gate is not None:
        y = y * gate.astype(acc)
    return y.astype(out_dtype)

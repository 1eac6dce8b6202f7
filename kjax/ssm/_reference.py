"""The spec of :func:`kjax.ssm.fftconv`: a plain real-FFT pipeline in pure jnp, no tricks.

It is tested in float64 against a NumPy direct convolution in every mode, and every fast path
(the XLA path of ``_xla.py``, the Pallas kernels of ``_pallas_triton.py`` and ``_pallas_tpu.py``)
is tested against it. It imports nothing from the other fftconv modules. It takes already-validated
arrays: ``u: [B, L, D]``, ``k: [L_k, D]`` (``[2, L_k, D]`` when bidirectional),
``gate: [B, L, D] | None``, ``skip: [D] | None``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kjax._src import dtypes


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


def fftconv_reference(u, k, gate=None, skip=None, *, mode: str = "causal"):
    """``y = gate * (k * u + skip * u)`` with one real FFT per operand, at the smallest exact length."""
    out_dtype = u.dtype
    acc = dtypes.accum_dtype(dtypes.result_dtype(u, k))
    L = u.shape[1]
    uf = u.astype(acc)
    if mode == "circular":
        n = L
        kf = k.astype(acc)
    elif mode == "causal":
        n = L + k.shape[0] - 1
        kf = k.astype(acc)
    else:  # bidirectional
        n = L + k.shape[1] - 1
        kf = bidirectional_filter(k.astype(acc), n)
    U = jnp.fft.rfft(uf, n=n, axis=1)
    K = jnp.fft.rfft(kf, n=n, axis=0)
    y = jnp.fft.irfft(U * K[None], n=n, axis=1)[:, :L]
    if skip is not None:
        y = y + skip.astype(acc) * uf
    if gate is not None:
        y = y * gate.astype(acc)
    return y.astype(out_dtype)

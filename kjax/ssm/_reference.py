"""The spec of :func:`kjax.ssm.fftconv`: the convolution sums themselves, in the time domain.

A direct depthwise convolution (``jax.lax.conv_general_dilated`` with one group per channel,
``Precision.HIGHEST``), ``O(L L_k)`` per channel: no FFT, no padding length, no spectrum tricks. It
is deliberately a different formulation from the production paths (the XLA path calls the shared
real-FFT convolution :func:`kjax._src.fft.fft_linear_conv`; the Pallas kernels compute split-DFT
matmuls), so testing them against it is a cross-check of independent implementations, not of one
FFT pipeline against a copy of itself. It is tested in float64 against a NumPy loop over taps in
every mode. It imports nothing from the other fftconv modules and takes already-validated arrays:
``u: [B, L, D]``, ``k: [L_k, D]`` (``[2, L_k, D]`` when bidirectional), ``gate: [B, L, D] | None``,
``skip: [D] | None``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kjax._src import dtypes


def fftconv_reference(u, k, gate=None, skip=None, *, mode: str = "causal"):
    r"""``y = gate * (k * u + skip * u)`` by direct summation over the taps.

    causal :math:`y_t = \sum_{s=0}^{L_k-1} k_s u_{t-s}` (zeros before 0); circular with
    :math:`u_{(t-s) \bmod L}`; bidirectional :math:`\sum_{s \ge 0} k_{0,s} u_{t-s} + \sum_{s \ge 1}
    k_{1,s} u_{t+s}`. Accumulates in at least float32; returns the dtype of ``u``.
    """
    out_dtype = u.dtype
    acc = dtypes.accum_dtype(dtypes.result_dtype(u, k))
    B, L, D = u.shape
    uf, kf = u.astype(acc), k.astype(acc)
    # conv_general_dilated correlates: out[t] = sum_j w[j] x[t + j]; x is u padded so that
    # x[t + j] = u[t + j - (lk - 1)], hence w[j] is the weight of offset s = lk - 1 - j (flipped k)
    if mode == "bidirectional":
        lk = kf.shape[1]
        w = jnp.concatenate([kf[0, ::-1], kf[1, 1:]], axis=0)          # offsets lk-1 .. 0, then -1 .. -(lk-1)
        x = jnp.pad(uf, ((0, 0), (lk - 1, lk - 1), (0, 0)))
    else:
        lk = kf.shape[0]
        w = kf[::-1]
        if mode == "circular":
            x = jnp.concatenate([uf[:, L - (lk - 1):], uf], axis=1)    # u[(t - s) mod L]
        else:
            x = jnp.pad(uf, ((0, 0), (lk - 1, 0), (0, 0)))
    y = jax.lax.conv_general_dilated(x, w[:, None, :], window_strides=(1,), padding="VALID",
                                     dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=D,
                                     precision=jax.lax.Precision.HIGHEST)
    if skip is not None:
        y = y + skip.astype(acc) * uf
    if gate is not None:
        y = y * gate.astype(acc)
    return y.astype(out_dtype)

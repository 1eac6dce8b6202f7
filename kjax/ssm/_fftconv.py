"""Public :func:`fftconv` and its XLA path; the dispatcher picks XLA or the Pallas kernel."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from kjax._src import dispatch, dtypes
from kjax._src.errors import check_in, fail
from kjax._src.fft import next_fast_len
from kjax.ssm import _checks
from kjax.ssm._reference import bidirectional_filter

_FN = "kjax.ssm.fftconv"


def fft_size(mode: str, L: int, lk: int) -> int:
    """The FFT length used by the XLA path: exact for circular, a fast length >= L + L_k - 1 else."""
    return L if mode == "circular" else next_fast_len(L + lk - 1)


def filter_spectrum(k: jax.Array, n: int, mode: str, acc) -> jax.Array:
    """``rfft`` of the filter at length ``n`` along axis 0: ``[n // 2 + 1, D]`` complex."""
    kf = k.astype(acc)
    if mode == "bidirectional":
        kf = bidirectional_filter(kf, n)
    return jnp.fft.rfft(kf, n=n, axis=0)


def fftconv_xla(u, k, *, mode: str = "causal", gate=None, skip=None):
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


def _pallas_fftconv(u, k, *, mode, gate, skip):
    from kjax.ssm import _pallas

    return _pallas.fftconv_pallas(u, k, mode=mode, gate=gate, skip=skip)


# jitted once per implementation (mode static), so eager calls compile one program instead of
# dispatching op by op; under an outer jit these inline.
_IMPLS = (
    dispatch.Implementation("xla", jax.jit(fftconv_xla, static_argnames="mode")),
    dispatch.Implementation("pallas", jax.jit(_pallas_fftconv, static_argnames="mode"),
                            supported=dispatch.gpu_only, auto=False),
)


def fftconv(
    u: Float[ArrayLike, "B L D"],
    k: Float[ArrayLike, "Lk D"] | Float[ArrayLike, "2 Lk D"],
    *,
    mode: str = "causal",
    gate: Float[ArrayLike, "B L D"] | None = None,
    skip: Float[ArrayLike, " D"] | None = None,
    implementation: None | str | Sequence[str] = None,
) -> Float[Array, "B L D"]:
    r"""Depthwise long convolution of sequences with per-channel filters, via real FFTs.

    With ``u: [B, L, D]`` and a filter ``k`` per channel ``d`` (index omitted):

    * ``mode="causal"`` (``k: [L_k, D]``, ``L_k <= L``, zero padding, no wrap-around):
      :math:`y_t = \sum_{s=0}^{\min(t, L_k - 1)} k_s\, u_{t-s}`;
    * ``mode="circular"`` (``k: [L_k, D]``, ``L_k <= L``, shorter filters zero-padded to ``L``):
      :math:`y_t = \sum_{s} k_s\, u_{(t - s) \bmod L}`;
    * ``mode="bidirectional"`` (``k: [2, L_k, D]``, ``L_k <= L``):
      :math:`y_t = \sum_{s \ge 0} k_{0,s}\, u_{t-s} + \sum_{s \ge 1} k_{1,s}\, u_{t+s}`
      (``k[1, 0]`` is unused);

    then ``y <- gate * (y + skip * u)`` when given (the Hyena / H3 gated long convolution).

    The FFT length is the smallest 2^a 3^b 5^c 7^d >= ``L + L_k - 1`` (exactly ``L`` when circular), so
    any ``L`` works. bfloat16 / float16 inputs are cast to float32 around the transforms (XLA's FFT
    rejects them) and the output is cast back: accumulation is float32 and large-magnitude bf16
    inputs do not overflow. The output has the dtype of ``u``. Differentiable in ``u``, ``k``,
    ``gate`` and ``skip``.

    Args:
      u: ``[B, L, D]`` input sequences (batch, length, channels), real floating.
      k: ``[L_k, D]`` filters (``[2, L_k, D]`` when bidirectional: causal and anti-causal halves).
      mode: ``"causal"``, ``"circular"`` or ``"bidirectional"``.
      gate: optional ``[B, L, D]`` multiplicative gate applied to the output.
      skip: optional ``[D]`` per-channel skip (the SSM's ``D`` term), adds ``skip * u``.
      implementation: None (XLA everywhere; the Pallas kernel is opt-in), ``"xla"``, ``"pallas"``
        (GPU only) or a list of them, tried in order.

    Returns:
      ``[B, L, D]`` output with the dtype of ``u``.

    Raises:
      ValueError: wrong ranks, ``L = 0``, channel mismatch, ``L_k > L``, an unknown ``mode``, a
        ``gate`` / ``skip`` of the wrong shape, an implementation that cannot run here.
      TypeError: complex, integer or bool inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ssm import fftconv
      >>> u = jnp.zeros((1, 6, 1)).at[0, 0, 0].set(1.0)      # an impulse
      >>> k = jnp.array([[1.0], [2.0], [3.0]])
      >>> y = fftconv(u, k)                                  # the impulse response is k
      >>> bool(jnp.allclose(y[0, :, 0], jnp.array([1.0, 2, 3, 0, 0, 0]), atol=1e-5))
      True

    References:
      Gu, Goel & Re, *Efficiently Modeling Long Sequences with Structured State Spaces*, ICLR 2022.
      Poli et al., *Hyena Hierarchy: Towards Larger Convolutional Language Models*, ICML 2023.
      Fu et al., *FlashFFTConv: Efficient Convolutions for Long Sequences with Tensor Cores*, 2023.
    """
    u, k, gate, skip = check_fftconv_args(_FN, u, k, mode=mode, gate=gate, skip=skip)
    im = dispatch.select(_FN, implementation, _IMPLS)
    return im.fn(u, k, mode=mode, gate=gate, skip=skip)


def check_fftconv_args(fn, u, k, *, mode, gate, skip):
    """Validate the arguments of fftconv (shared with the Pallas entry point)."""
    check_in(fn, "mode", mode, _checks.MODES)
    u = _checks.seq(fn, "u", u)
    _, L, D = u.shape
    k = _checks.real_float(fn, "k", k)
    if mode == "bidirectional":
        if k.ndim != 3 or k.shape[0] != 2:
            fail(fn, "k", "have shape (2, L_k, D) in bidirectional mode (causal and anti-causal halves)",
                 f"shape {tuple(k.shape)}")
    elif k.ndim != 2:
        fail(fn, "k", f"have rank 2 [L_k, D] in {mode} mode", f"shape {tuple(k.shape)} (rank {k.ndim})")
    lk = k.shape[-2]
    if k.shape[-1] != D:
        fail(fn, "k", f"have D={D} channels in its last axis, matching u of shape {tuple(u.shape)}",
             f"shape {tuple(k.shape)}")
    if lk < 1:
        fail(fn, "k", "have a filter length L_k >= 1", f"shape {tuple(k.shape)}")
    if lk > L:
        fail(fn, "k", f"be no longer than the sequence (L_k <= L={L}) in {mode} mode; truncate it or "
             "pad u", f"L_k={lk} (shape {tuple(k.shape)})")
    if gate is not None:
        gate = _checks.real_float(fn, "gate", gate)
        if tuple(gate.shape) != tuple(u.shape):
            fail(fn, "gate", f"have the shape of u, {tuple(u.shape)}", f"shape {tuple(gate.shape)}")
    if skip is not None:
        skip = _checks.real_float(fn, "skip", skip)
        if tuple(skip.shape) != (D,):
            fail(fn, "skip", f"have shape ({D},) (one per channel)", f"shape {tuple(skip.shape)}")
    return u, k, gate, skip

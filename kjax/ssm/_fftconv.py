"""Public :func:`fftconv`: checks its arguments and dispatches to an implementation.

Implementations (all with the signature ``(u, k, gate, skip, *, mode)`` on validated arrays):

* ``"xla"`` (``_xla.py``): real FFTs in XLA; every platform, the default on CPU;
* ``"pallas"``: the Pallas kernels, lowered on cuda (``_pallas_triton.py``, Triton) and tpu
  (``_pallas_tpu.py``, Mosaic), the default there for the configurations they support;
* ``"pallas_interpret"`` / ``"pallas_tpu_interpret"``: the same kernels in interpret mode on any
  platform, for tests (never chosen by default).

The choice is made per platform when the call is lowered (``kjax._src.dispatch``), so one traced
function runs XLA on CPU and the kernel on a GPU or TPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from kjax._src import dispatch, dtypes
from kjax._src.errors import check_in, fail
from kjax.ssm import _checks
from kjax.ssm._xla import fftconv_xla

_FN = "kjax.ssm.fftconv"


def _config(u, k, mode: str) -> dict:
    """The static description of a call that ``supports`` predicates read."""
    return dict(mode=mode, L=int(u.shape[1]), lk=int(k.shape[-2]),
                dtype=str(np.dtype(dtypes.result_dtype(u, k))), u_dtype=str(np.dtype(u.dtype)))


def _backend(platform: str):
    from kjax.ssm import _pallas_tpu, _pallas_triton

    return _pallas_tpu if platform == "tpu" else _pallas_triton


def _pallas(u, k, gate, skip, *, mode):
    """The Pallas kernels: Triton on cuda, Mosaic on tpu (``platform_dependent`` keeps the branch
    of the platform the call is lowered for); a platform whose kernel does not support the call
    has no branch, so lowering there fails loudly (the dispatcher never routes it here)."""
    config = _config(u, k, mode)
    branches = {p: functools.partial(_backend(p).fftconv, mode=mode)
                for p in dispatch.PALLAS_PLATFORMS if _backend(p).supports(p, config) is None}
    return jax.lax.platform_dependent(u, k, gate, skip, **branches)


def _pallas_supports(platform, config):
    return _backend(platform).supports(platform, config)


def _interpret(platform: str):
    """The kernels of ``platform`` in interpret mode, and what they support (on any platform)."""
    def run(u, k, gate, skip, *, mode):
        return _backend(platform).fftconv(u, k, gate, skip, mode=mode, interpret=True)

    def supports(_, config):
        return _backend(platform).supports(platform, config, interpret=True)

    return dict(fn=run, supports=supports, auto=False)


#: the implementations of :func:`fftconv`, in order of preference for ``implementation=None``;
#: jitted (``mode`` static) so an eager call compiles one program; under an outer jit they inline
IMPLEMENTATIONS = (
    dispatch.Implementation("pallas", jax.jit(_pallas, static_argnames="mode"),
                            platforms=dispatch.PALLAS_PLATFORMS, supports=_pallas_supports),
    dispatch.Implementation("xla", jax.jit(fftconv_xla, static_argnames="mode")),
    dispatch.Implementation("pallas_interpret", **_interpret("cuda")),
    dispatch.Implementation("pallas_tpu_interpret", **_interpret("tpu")),
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

    Numerics. bfloat16 / float16 inputs are computed in float32 and the output is cast back, so
    accumulation is float32 and large-magnitude bf16 inputs do not overflow; float64 works with x64
    on. Integer and bool inputs are promoted to the default float dtype (the package dtype policy).
    The output has the (floating) dtype of ``u``. Differentiable in ``u``, ``k``, ``gate`` and
    ``skip``. An empty batch (``B = 0``) or ``D = 0`` gives an empty output.

    What runs where (``implementation=None``; the choice is made per platform when the call is
    lowered, so one jitted or exported function runs XLA on CPU and the kernel on GPU / TPU):

    * CPU (and ROCm): the XLA path, real FFTs at the smallest 2^a 3^b 5^c 7^d >= ``L + L_k - 1``
      (exactly ``L`` when circular), so any ``L`` works;
    * cuda: the Pallas **Triton** kernel, tpu: the Pallas **Mosaic TPU** kernel. Both compute the
      FFT as split-DFT matmuls at a power-of-two length ``N`` (float32 accumulation), forward and
      backward in Pallas; ``N`` up to 4096 (Triton) / 16384 (TPU) in one kernel, longer (up to
      ``2^18``, so causal ``L + L_k - 1 <= 262144``) with an outer decimation step in XLA. They take
      float32 / bfloat16 (and float16 on cuda); circular mode needs ``L`` a power of two >= 256
      (Triton) / 2048 (TPU). Calls outside that (float64, a longer or non-power-of-two circular
      ``L``) run the XLA path there.

    Args:
      u: ``[B, L, D]`` input sequences (batch, length, channels), real (integers are promoted).
      k: ``[L_k, D]`` filters (``[2, L_k, D]`` when bidirectional: causal and anti-causal halves).
      mode: ``"causal"``, ``"circular"`` or ``"bidirectional"``.
      gate: optional ``[B, L, D]`` multiplicative gate applied to the output.
      skip: optional ``[D]`` per-channel skip (the SSM's ``D`` term), adds ``skip * u``.
      implementation: None (as above), ``"xla"``, ``"pallas"`` (the kernels, on cuda / tpu only),
        ``"pallas_interpret"`` / ``"pallas_tpu_interpret"`` (the Triton / TPU kernel in interpret
        mode on any platform: slow, for tests), or a list of them: on each platform the first
        that supports the call.

    Returns:
      ``[B, L, D]`` output with the (floating) dtype of ``u``.

    Raises:
      ValueError: wrong ranks, ``L = 0``, channel mismatch, ``L_k > L``, an unknown ``mode``, a
        ``gate`` / ``skip`` of the wrong shape; an unknown ``implementation``; a single
        implementation that cannot serve the call here (``"pallas"`` on CPU, or a configuration
        its kernel does not cover: the message names the argument, e.g. ``u`` for a circular
        ``L`` that is not a power of two).
      TypeError: complex inputs.

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
    selection = dispatch.dispatch(_FN, implementation, IMPLEMENTATIONS, _config(u, k, mode))
    if u.shape[0] == 0 or u.shape[2] == 0:  # nothing to convolve: no transform, no kernel launch
        return jnp.zeros(u.shape, u.dtype)
    return selection(u, k, gate, skip, mode=mode)


def check_fftconv_args(fn, u, k, *, mode, gate, skip):
    """Validate the arguments of :func:`fftconv`; returns them as arrays."""
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

"""``kjax.nn.ShortConv``: the short causal depthwise convolution of GLA / Gated DeltaNet / Mamba-2,
with its decode cache."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from kjax._src.errors import check_in, check_int
from kjax.nn._common import (
    InitSignature,
    check_batch_size,
    check_bool,
    check_dtypes,
    check_rngs,
    check_seq,
    check_state,
    check_token,
)

_FN = "kjax.nn.ShortConv"
_ACTIVATIONS = ("silu", None)


class ShortConvState(NamedTuple):
    """Decode cache of :class:`ShortConv`: the last ``width - 1`` inputs, ``cache: [B, width-1, C]``
    (oldest first; zeros before the sequence starts)."""

    cache: jax.Array


class ShortConv(nnx.Module):
    r"""Short causal depthwise convolution, ``x: [B, T, C] -> [B, T, C]``, with a decode cache.

    .. math:: y_{t,c} = \sigma\Big(b_c + \sum_{j=0}^{W-1} w_{j,c}\, x_{t-W+1+j,\,c}\Big)

    with :math:`x_s = 0` for :math:`s < 0` (or the cached inputs of a previous call), ``W = width``
    taps per channel and :math:`\sigma` the SiLU (``activation="silu"``, the default of
    flash-linear-attention's ``ShortConvolution``) or the identity. The full form is ``W`` shifted
    multiply-adds; :meth:`step` keeps the last ``W - 1`` inputs
    (:class:`ShortConvState`, ``cache: [B, W-1, C]``) and equals the full form token by token.

    Args:
      channels: ``C`` (>= 1), the last axis of ``x``.
      width: taps ``W`` (>= 1; 4 in GLA, Gated DeltaNet and Mamba-2).
      activation: ``"silu"`` or None.
      use_bias: add a learned bias per channel.
      dtype: computation dtype (None: from the inputs and parameters).
      param_dtype: a real floating dtype of the parameters.
      rngs: ``nnx.Rngs`` (the weights are uniform in :math:`\pm 1/\sqrt{W}`, as PyTorch's Conv1d).

    Raises:
      ValueError: sizes < 1, an unknown ``activation``; on call, ``x`` not ``[B, T, channels]``
        with ``B, T >= 1``, a state of the wrong shape.
      TypeError: sizes not ints, ``use_bias`` not a bool, a non-floating ``param_dtype``, complex
        inputs, a state that is not a :class:`ShortConvState`.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import ShortConv
      >>> conv = ShortConv(6, rngs=nnx.Rngs(0))
      >>> y, state = conv(jnp.ones((2, 5, 6)), return_state=True)
      >>> y_t, state = conv.step(jnp.ones((2, 6)), state)
      >>> print(y.shape, y_t.shape, state.cache.shape)
      (2, 5, 6) (2, 6) (2, 3, 6)

    References:
      Poli et al., *Hyena Hierarchy*, ICML 2023 (short filters); Yang et al., *Gated Delta
      Networks*, ICLR 2025; Dao & Gu, *Transformers are SSMs*, ICML 2024.
    """

    __signature__ = InitSignature()

    def __init__(self, channels: int, width: int = 4, *, activation: str | None = "silu",
                 use_bias: bool = False, dtype: Any = None, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        channels = check_int(_FN, "channels", channels, minimum=1)
        width = check_int(_FN, "width", width, minimum=1)
        check_in(_FN, "activation", activation, _ACTIVATIONS)
        use_bias = check_bool(_FN, "use_bias", use_bias)
        dtype, param_dtype = check_dtypes(_FN, dtype, param_dtype)
        check_rngs(_FN, rngs)
        self.channels, self.width, self.activation, self.dtype = channels, width, activation, dtype
        self.param_dtype = param_dtype
        bound = width ** -0.5
        self.weight = nnx.Param(jax.random.uniform(rngs.params(), (width, channels), param_dtype,
                                                   -bound, bound))
        self.bias = nnx.Param(jnp.zeros((channels,), param_dtype)) if use_bias else None

    def init_state(self, batch_size: int, dtype: Any = None) -> ShortConvState:
        """The zero cache ``[batch_size, width - 1, channels]`` (``dtype``: default ``param_dtype``)."""
        fn = f"{_FN}.init_state"
        batch_size = check_batch_size(fn, batch_size)
        _, dtype = check_dtypes(fn, None, self.param_dtype if dtype is None else dtype)
        return ShortConvState(jnp.zeros((batch_size, self.width - 1, self.channels), dtype))

    def _finish(self, y, dtype):
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        if self.activation == "silu":
            y = jax.nn.silu(y)
        return y.astype(dtype)

    def _dtype(self, x):
        return jnp.result_type(x, self.weight[...]) if self.dtype is None else self.dtype

    def __call__(self, x: Float[ArrayLike, "B T C"], *, initial_state: ShortConvState | None = None,
                 return_state: bool = False
                 ) -> Float[Array, "B T C"] | tuple[Float[Array, "B T C"], ShortConvState]:
        """Convolve ``x: [B, T, channels]`` causally (after ``initial_state``'s cached inputs).

        Args:
          x: ``[B, T, channels]`` inputs.
          initial_state: a :class:`ShortConvState` (the inputs before ``x``), or None for zeros.
          return_state: also return the cache after ``x`` (for :meth:`step`).

        Returns:
          ``[B, T, channels]`` outputs, and the new :class:`ShortConvState` if ``return_state``.
        """
        x = check_seq(_FN, x, self.channels)
        return_state = check_bool(_FN, "return_state", return_state)
        b = x.shape[0]
        dtype = self._dtype(x)
        if initial_state is None:
            cache = jnp.zeros((b, self.width - 1, self.channels), dtype)
        else:
            cache = check_state(_FN, "initial_state", initial_state, ShortConvState,
                                {"cache": (b, self.width - 1, self.channels)}).cache
        xp = jnp.concatenate([cache.astype(dtype), x.astype(dtype)], axis=1)  # [B, W-1+T, C]
        w, t = self.weight[...].astype(dtype), x.shape[1]
        # W shifted multiply-adds: XLA:CPU's grouped convolution is ~100x slower at these sizes
        y = sum(w[j] * xp[:, j:j + t] for j in range(self.width))
        y = self._finish(y, dtype)
        if not return_state:
            return y
        return y, ShortConvState(xp[:, xp.shape[1] - (self.width - 1):])

    def step(self, x_t: Float[ArrayLike, "B C"], state: ShortConvState
             ) -> tuple[Float[Array, "B C"], ShortConvState]:
        """One token ``x_t: [B, channels] -> (y_t [B, channels], new_state)``; stepping through
        ``x[:, t]`` from :meth:`init_state` gives ``self(x)``."""
        fn = f"{_FN}.step"
        x_t = check_token(fn, x_t, self.channels)
        cache = check_state(fn, "state", state, ShortConvState,
                            {"cache": (x_t.shape[0], self.width - 1, self.channels)}).cache
        dtype = self._dtype(x_t)
        window = jnp.concatenate([cache.astype(dtype), x_t.astype(dtype)[:, None]], axis=1)  # [B, W, C]
        y = jnp.einsum("bwc,wc->bc", window, self.weight[...].astype(dtype))
        return self._finish(y, dtype), ShortConvState(window[:, 1:])

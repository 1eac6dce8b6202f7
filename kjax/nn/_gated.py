"""Gated recurrent layers over kjax's pure functions: ``GatedLinearAttention``, ``GatedDeltaNet`` and
``Mamba2`` (no maths here: projections, gates, norms and wiring; the recurrences are
:func:`kjax.attention.linear_attention`, :func:`kjax.attention.delta_rule_attention` and
:func:`kjax.ssm.selective_scan` and their ``*_step``)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from kjax import attention, ssm
from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, check_int, check_positive, fail, shape_of
from kjax.nn._common import (
    InitSignature,
    check_batch_size,
    check_bool,
    check_dtypes,
    check_rngs,
    check_seq,
    check_token,
)
from kjax.nn._conv import ShortConv, ShortConvState


class RecurrentLayerState(NamedTuple):
    """Decoding state of a gated layer (:class:`GatedLinearAttention`, :class:`GatedDeltaNet`,
    :class:`Mamba2`).

    Attributes:
      conv: the :class:`ShortConvState` of the layer's short convolution (``cache: [B, W-1, C]``),
        or None for a layer without one.
      recurrent: the state of the recurrence: a :class:`kjax.attention.LinearAttentionState`
        (GLA), a :class:`kjax.attention.DeltaRuleState` (Gated DeltaNet) or the state of
        :func:`kjax.ssm.selective_scan` (Mamba-2), batch first.
    """

    conv: ShortConvState | None
    recurrent: Any


def _l2norm(x, eps: float = 1e-6):
    """``x / sqrt(|x|^2 + eps)`` over the last axis (flash-linear-attention's ``l2norm``)."""
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


def _inv_softplus_dt(key, n: int, dt_min: float, dt_max: float, floor: float, dtype):
    """The ``dt_bias`` initialisation of Mamba-2 / Gated DeltaNet: ``softplus(dt_bias)`` is
    log-uniform in ``[dt_min, dt_max]`` (clamped below at ``floor``)."""
    u = jax.random.uniform(key, (n,), jnp.float32)
    dt = jnp.maximum(jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)), floor)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)


class _Recurrent(nnx.Module):
    """Shared decoding plumbing: ``init_state``, state checks, prefill / step entry points.

    Subclasses set ``_FN``, ``hidden_size``, ``conv`` (a :class:`ShortConv` or None),
    ``param_dtype`` and implement ``_recurrent_template(b, dtype)`` (the ShapeDtypeStruct tree of
    the recurrence's state), ``_forward(x, state, return_state)`` and ``_step(x_t, state)``.
    """

    _FN = ""

    def _template(self, b: int, dtype) -> RecurrentLayerState:
        conv = None if self.conv is None else ShortConvState(
            jax.ShapeDtypeStruct((b, self.conv.width - 1, self.conv.channels), dtype))
        return RecurrentLayerState(conv, self._recurrent_template(b, dtype))

    def init_state(self, batch_size: int, dtype: Any = None) -> RecurrentLayerState:
        """The zero decoding state (:class:`RecurrentLayerState`) for ``batch_size`` sequences, in
        ``dtype`` (default ``param_dtype``).

        Raises:
          ValueError: ``batch_size < 1``.
          TypeError: ``batch_size`` not an int; ``dtype`` not a real floating dtype.
        """
        fn = f"{self._FN}.init_state"
        batch_size = check_batch_size(fn, batch_size)
        _, dtype = check_dtypes(fn, None, self.param_dtype if dtype is None else dtype)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self._template(batch_size, dtype))

    def _check_layer_state(self, fn: str, arg: str, state, b: int) -> RecurrentLayerState:
        if not isinstance(state, RecurrentLayerState):
            fail(fn, arg, "be a RecurrentLayerState (from init_state or return_state=True)",
                 type(state).__name__, cls=KjaxTypeError)
        want = self._template(b, jnp.float32)
        shapes = lambda t: jax.tree.map(lambda v: tuple(v.shape) if hasattr(v, "shape") else shape_of(v), t)
        try:
            same = jax.tree.structure(state) == jax.tree.structure(want) and \
                jax.tree.leaves(shapes(state)) == jax.tree.leaves(shapes(want))
        except Exception:  # noqa: BLE001 -- any odd leaf is a mismatch
            same = False
        if not same:
            fail(fn, arg, f"match the layer's state for batch B={b} (shapes {shapes(want)})",
                 f"{shapes(state)}")
        return jax.tree.map(lambda v: dtypes.as_float_array(fn, arg, v), state)

    def __call__(self, x: Float[ArrayLike, "B T hidden_size"], *,
                 initial_state: RecurrentLayerState | None = None, return_state: bool = False
                 ) -> Float[Array, "B T hidden_size"] | tuple[Float[Array, "B T hidden_size"],
                                                              RecurrentLayerState]:
        """Run the layer over ``x: [B, T, hidden_size]`` (the prefill, when it returns its state).

        Args:
          x: ``[B, T, hidden_size]`` inputs (integers are promoted to the default float).
          initial_state: a :class:`RecurrentLayerState` to continue from (from :meth:`init_state`,
            a previous prefill or :meth:`step`), or None for zeros.
          return_state: also return the final :class:`RecurrentLayerState`, for :meth:`step`.

        Returns:
          ``[B, T, hidden_size]`` outputs, and the state if ``return_state``.

        Raises:
          ValueError: ``x`` not ``[B, T, hidden_size]`` with ``B, T >= 1``; a state whose shapes do
            not match ``B`` and the layer.
          TypeError: complex ``x``; ``return_state`` not a bool; ``initial_state`` not a
            :class:`RecurrentLayerState`.
        """
        x = check_seq(self._FN, x, self.hidden_size)
        return_state = check_bool(self._FN, "return_state", return_state)
        if initial_state is not None:
            initial_state = self._check_layer_state(self._FN, "initial_state", initial_state, x.shape[0])
        y, state = self._forward(x, initial_state, return_state)
        return (y, state) if return_state else y

    def step(self, x_t: Float[ArrayLike, "B hidden_size"], state: RecurrentLayerState
             ) -> tuple[Float[Array, "B hidden_size"], RecurrentLayerState]:
        """Decode one token: ``x_t: [B, hidden_size] -> (y_t [B, hidden_size], new_state)``.

        Stepping through ``x[:, t]`` from :meth:`init_state` (or from the state of a prefill of
        ``x[:, :t0]``) gives ``self(x)[:, t]``.

        Raises:
          ValueError: ``x_t`` not ``[B, hidden_size]``; a state whose shapes do not match ``B`` and
            the layer.
          TypeError: complex ``x_t``; ``state`` not a :class:`RecurrentLayerState`.
        """
        fn = f"{self._FN}.step"
        x_t = check_token(fn, x_t, self.hidden_size)
        state = self._check_layer_state(fn, "state", state, x_t.shape[0])
        return self._step(x_t, state)

    # helpers for subclasses
    def _gated_heads_out(self, x, o, norm, gated: bool):
        """``o_proj`` of the normalised heads ``o: [..., H, Dv]``, times ``silu(g_proj(x))`` when
        ``gated`` (the output stage GLA and Gated DeltaNet share)."""
        o = norm(o)
        if gated:
            g = self.g_proj(x)
            o = o * jax.nn.silu(g.reshape(*g.shape[:-1], self.num_heads, self.head_v_dim))
        return self.o_proj(o.reshape(*o.shape[:-2], self.num_heads * self.head_v_dim)).astype(x.dtype)

    def _conv_full(self, z, state, return_state):
        if self.conv is None:
            return z, None
        init = None if state is None else state.conv
        return self.conv(z, initial_state=init, return_state=True) if return_state else (
            self.conv(z, initial_state=init), None)

    def _conv_step(self, z_t, state):
        if self.conv is None:
            return z_t, None
        return self.conv.step(z_t, state.conv)


def _common_config(fn, hidden_size, num_heads, chunk_size, norm_eps, dtype, param_dtype, rngs):
    hidden_size = check_int(fn, "hidden_size", hidden_size, minimum=1)
    num_heads = check_int(fn, "num_heads", num_heads, minimum=1)
    chunk_size = check_int(fn, "chunk_size", chunk_size, minimum=1)
    check_positive(fn, "norm_eps", norm_eps, allow_zero=True)
    dtype, param_dtype = check_dtypes(fn, dtype, param_dtype)
    check_rngs(fn, rngs)
    return hidden_size, num_heads, chunk_size, dtype, param_dtype


def _expanded(fn: str, arg: str, hidden: int, ratio, heads: int, what: str = "num_heads") -> int:
    """``int(hidden * ratio)``, a positive multiple of ``heads`` (named ``what``)."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio > 0:
        fail(fn, arg, "be a positive number", repr(ratio))
    size = hidden * ratio
    if not float(size).is_integer() or size < heads or int(size) % heads:
        fail(fn, arg, f"make hidden_size * {arg} = {size:g} a positive multiple of {what}={heads}",
             repr(ratio))
    return int(size)


# ------------------------------------------------------------------------------------------ GLA


class GatedLinearAttention(_Recurrent):
    r"""Gated linear attention (GLA) as a layer, ``x: [B, T, hidden_size] -> [B, T, hidden_size]``.

    Follows flash-linear-attention's ``GatedLinearAttention`` layer: ``q, k = W_q x, W_k x``
    (``num_heads`` heads of ``head_k_dim = hidden_size * expand_k / num_heads``), ``v = W_v x``
    (``head_v_dim = hidden_size * expand_v / num_heads``), optionally through a short causal
    convolution with SiLU (:class:`ShortConv` over ``[q, k, v]``); a per-key-feature log-decay from a
    low-rank projection,

    .. math:: \log a_t = \operatorname{logsigmoid}\big(W_2 W_1 x_t + b\big) / \text{gate\_logit\_normalizer}
        \in (-\infty, 0]^{H \times d_k},

    then :func:`kjax.attention.linear_attention` with ``decay=log a`` (``[B, T, H, d_k]``),
    ``scale = d_k ** -0.5`` and no normaliser,
    :math:`S_t = S_{t-1}\operatorname{Diag}(a_t) + v_t k_t^\top`, :math:`o_t = S_t\, q_t / \sqrt{d_k}`;
    then an RMSNorm per head times the output gate ``silu(W_g x)`` (fla's ``FusedRMSNormGated``), or
    the RMSNorm alone with ``use_output_gate=False``, and the output projection.

    Decoding: :meth:`init_state`, ``self(x, return_state=True)`` (the prefill) and :meth:`step`
    (:func:`kjax.attention.linear_attention_step`) with a :class:`RecurrentLayerState` that holds
    the convolution cache and the ``[B, H, d_k, d_v]`` state.

    Deviations from fla: no grouped key/value heads (``num_kv_heads``), no ``feature_map``, the
    gate activation is SiLU only.

    Args:
      hidden_size: model width ``D`` (>= 1).
      num_heads: heads ``H`` (>= 1).
      expand_k: key width ratio (``hidden_size * expand_k`` a multiple of ``num_heads``).
      expand_v: value width ratio (likewise).
      use_short_conv: a :class:`ShortConv` with SiLU on ``q, k, v``.
      conv_size: its width (>= 1).
      use_output_gate: multiply the normed output by ``silu(W_g x)``.
      gate_logit_normalizer: divides the log-sigmoid gate (> 0; 16 in GLA).
      gate_low_rank_dim: rank of the gate projection (>= 1).
      clamp_min: a lower bound (<= 0) on the log-decay, or None.
      norm_eps: RMSNorm epsilon (>= 0).
      chunk_size: tokens per chunk of the recurrence (>= 1).
      dtype: computation dtype of the projections (None: from the inputs and parameters).
      param_dtype: a real floating dtype of the parameters.
      rngs: ``nnx.Rngs`` for initialisation.

    Raises:
      ValueError: sizes < 1, expansion ratios that do not give a multiple of ``num_heads``,
        ``gate_logit_normalizer <= 0``, ``clamp_min > 0``, ``norm_eps < 0``.
      TypeError: sizes not ints, flags not bools, non-floating dtypes, ``rngs`` not an ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import GatedLinearAttention
      >>> layer = GatedLinearAttention(8, 2, gate_low_rank_dim=4, rngs=nnx.Rngs(0))
      >>> y, state = layer(jnp.ones((1, 5, 8)), return_state=True)
      >>> y_t, state = layer.step(jnp.ones((1, 8)), state)
      >>> print(y.shape, y_t.shape, state.recurrent.kv.shape)
      (1, 5, 8) (1, 8) (1, 2, 2, 4)

    References:
      Yang et al., *Gated Linear Attention Transformers with Hardware-Efficient Training*, ICML 2024.
    """

    __signature__ = InitSignature()
    _FN = "kjax.nn.GatedLinearAttention"

    def __init__(self, hidden_size: int, num_heads: int = 4, *, expand_k: float = 0.5,
                 expand_v: float = 1.0, use_short_conv: bool = False, conv_size: int = 4,
                 use_output_gate: bool = True, gate_logit_normalizer: float = 16.0,
                 gate_low_rank_dim: int = 16, clamp_min: float | None = None, norm_eps: float = 1e-5,
                 chunk_size: int = 64, dtype: Any = None, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        fn = self._FN
        hidden_size, num_heads, chunk_size, dtype, param_dtype = _common_config(
            fn, hidden_size, num_heads, chunk_size, norm_eps, dtype, param_dtype, rngs)
        key_dim = _expanded(fn, "expand_k", hidden_size, expand_k, num_heads)
        value_dim = _expanded(fn, "expand_v", hidden_size, expand_v, num_heads)
        use_short_conv = check_bool(fn, "use_short_conv", use_short_conv)
        conv_size = check_int(fn, "conv_size", conv_size, minimum=1)
        use_output_gate = check_bool(fn, "use_output_gate", use_output_gate)
        check_positive(fn, "gate_logit_normalizer", gate_logit_normalizer)
        gate_low_rank_dim = check_int(fn, "gate_low_rank_dim", gate_low_rank_dim, minimum=1)
        if clamp_min is not None and not (isinstance(clamp_min, int | float) and clamp_min <= 0):
            fail(fn, "clamp_min", "be None or a number <= 0 (a log-decay)", repr(clamp_min))

        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.head_k_dim, self.head_v_dim = key_dim // num_heads, value_dim // num_heads
        self.use_output_gate, self.gate_logit_normalizer = use_output_gate, float(gate_logit_normalizer)
        self.clamp_min, self.chunk_size, self.param_dtype = clamp_min, chunk_size, param_dtype
        lin = lambda i, o, bias=False: nnx.Linear(i, o, use_bias=bias, dtype=dtype, param_dtype=param_dtype,
                                                  rngs=rngs)
        self.q_proj, self.k_proj = lin(hidden_size, key_dim), lin(hidden_size, key_dim)
        self.v_proj = lin(hidden_size, value_dim)
        self.g_proj = lin(hidden_size, value_dim) if use_output_gate else None
        self.gk_proj_a = lin(hidden_size, gate_low_rank_dim)
        self.gk_proj_b = lin(gate_low_rank_dim, key_dim, True)
        self.o_proj = lin(value_dim, hidden_size)
        self.conv = ShortConv(2 * key_dim + value_dim, conv_size, dtype=dtype, param_dtype=param_dtype,
                              rngs=rngs) if use_short_conv else None
        self.g_norm = nnx.RMSNorm(self.head_v_dim, epsilon=norm_eps, dtype=dtype, param_dtype=param_dtype,
                                  rngs=rngs)

    def _recurrent_template(self, b, dtype):
        return attention.LinearAttentionState(
            jax.ShapeDtypeStruct((b, self.num_heads, self.head_k_dim, self.head_v_dim), dtype),
            jax.ShapeDtypeStruct((b, self.num_heads, self.head_k_dim), dtype))

    def _inputs(self, x, conv_out):
        """Heads of ``q, k, v``, the log-decay ``[..., H, d_k]`` (at least float32) and the gate."""
        kd, h = self.head_k_dim * self.num_heads, self.num_heads
        q, k, v = conv_out[..., :kd], conv_out[..., kd:2 * kd], conv_out[..., 2 * kd:]
        heads = lambda y, d: y.reshape(*y.shape[:-1], h, d)
        gk = self.gk_proj_b(self.gk_proj_a(x))
        gk = jax.nn.log_sigmoid(gk.astype(dtypes.accum_dtype(gk.dtype))) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = jnp.maximum(gk, self.clamp_min)
        return (heads(q, self.head_k_dim), heads(k, self.head_k_dim), heads(v, self.head_v_dim),
                heads(gk, self.head_k_dim))

    def _qkv(self, x):
        return jnp.concatenate([self.q_proj(x), self.k_proj(x), self.v_proj(x)], axis=-1)

    def _output(self, x, o):
        return self._gated_heads_out(x, o, self.g_norm, self.use_output_gate)

    def _forward(self, x, state, return_state):
        z, conv_state = self._conv_full(self._qkv(x), state, return_state)
        q, k, v, gk = self._inputs(x, z)
        out = attention.linear_attention(
            q, k, v, decay=gk, scale=self.head_k_dim ** -0.5, normalize=False, chunk_size=self.chunk_size,
            initial_state=None if state is None else state.recurrent, return_state=return_state)
        o, rec = out if return_state else (out, None)
        return self._output(x, o), (RecurrentLayerState(conv_state, rec) if return_state else None)

    def _step(self, x_t, state):
        z, conv_state = self._conv_step(self._qkv(x_t), state)
        q, k, v, gk = self._inputs(x_t, z)
        o, rec = attention.linear_attention_step(state.recurrent, q, k, v, decay_t=gk,
                                                 scale=self.head_k_dim ** -0.5, normalize=False)
        return self._output(x_t, o), RecurrentLayerState(conv_state, rec)


# ------------------------------------------------------------------------------------------ Gated DeltaNet


class GatedDeltaNet(_Recurrent):
    r"""Gated DeltaNet as a layer, ``x: [B, T, hidden_size] -> [B, T, hidden_size]``.

    Follows Yang et al. (ICLR 2025) and flash-linear-attention's ``GatedDeltaNet`` layer:
    ``q, k, v = silu(conv(W_q x, W_k x, W_v x))`` (a :class:`ShortConv` of width ``conv_size``),
    ``q, k`` L2-normalised per head, :math:`\beta_t = \sigma(W_\beta x_t)` (times 2 with
    ``allow_neg_eigval``), the log-decay :math:`\log a_t = -e^{A_{\log}}\,
    \operatorname{softplus}(W_a x_t + \text{dt\_bias})` (``[B, T, H]``), then the gated delta rule
    :func:`kjax.attention.delta_rule_attention` with ``decay=log a`` and ``scale = d_k ** -0.5``,

    .. math:: S_t = a_t S_{t-1}(I - \beta_t k_t k_t^\top) + \beta_t v_t k_t^\top,\qquad
        o_t = S_t\, q_t / \sqrt{d_k},

    an RMSNorm per head times ``silu(W_g x)`` (``use_gate``; fla's ``FusedRMSNormGated``) and the
    output projection. ``A_log`` is ``log U(0, 16)`` and ``softplus(dt_bias)`` log-uniform in
    ``[0.001, 0.1]`` at initialisation, as in fla.

    Decoding: :meth:`init_state`, ``self(x, return_state=True)`` and :meth:`step`
    (:func:`kjax.attention.delta_rule_step`) with a :class:`RecurrentLayerState` that holds the
    convolution cache and the ``[B, H, d_k, d_v]`` fast weights.

    Deviations from fla: no grouped value heads (``num_v_heads``); ``use_short_conv=False`` applies
    SiLU without a convolution (as fla does) and does not warn.

    Args:
      hidden_size: model width ``D`` (>= 1).
      num_heads: heads ``H`` (>= 1).
      head_dim: key size per head ``d_k`` (default ``hidden_size // num_heads``).
      expand_v: ``d_v = head_dim * expand_v`` (an integer >= 1).
      use_gate: the output gate.
      use_short_conv: the short convolution on ``q, k, v``.
      conv_size: its width (>= 1).
      allow_neg_eigval: ``beta`` in ``(0, 2)`` instead of ``(0, 1)``.
      norm_eps: RMSNorm epsilon (>= 0).
      chunk_size: tokens per chunk of the recurrence (>= 1).
      dtype: computation dtype of the projections (None: from the inputs and parameters).
      param_dtype: a real floating dtype of the parameters.
      rngs: ``nnx.Rngs`` for initialisation.

    Raises:
      ValueError: sizes < 1, ``head_dim * expand_v`` not a positive integer, ``norm_eps < 0``.
      TypeError: sizes not ints, flags not bools, non-floating dtypes, ``rngs`` not an ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import GatedDeltaNet
      >>> layer = GatedDeltaNet(8, 2, rngs=nnx.Rngs(0))
      >>> y, state = layer(jnp.ones((1, 5, 8)), return_state=True)
      >>> y_t, state = layer.step(jnp.ones((1, 8)), state)
      >>> print(y.shape, y_t.shape, state.recurrent.kv.shape, state.conv.cache.shape)
      (1, 5, 8) (1, 8) (1, 2, 4, 8) (1, 3, 32)

    References:
      Yang, Kautz & Hatamizadeh, *Gated Delta Networks: Improving Mamba2 with Delta Rule*, ICLR 2025.
    """

    __signature__ = InitSignature()
    _FN = "kjax.nn.GatedDeltaNet"

    def __init__(self, hidden_size: int, num_heads: int = 4, *, head_dim: int | None = None,
                 expand_v: float = 2.0, use_gate: bool = True, use_short_conv: bool = True,
                 conv_size: int = 4, allow_neg_eigval: bool = False, norm_eps: float = 1e-5,
                 chunk_size: int = 64, dtype: Any = None, param_dtype: Any = jnp.float32,
                 rngs: nnx.Rngs):
        fn = self._FN
        hidden_size, num_heads, chunk_size, dtype, param_dtype = _common_config(
            fn, hidden_size, num_heads, chunk_size, norm_eps, dtype, param_dtype, rngs)
        if head_dim is None:
            head_dim = max(hidden_size // num_heads, 1)
        head_dim = check_int(fn, "head_dim", head_dim, minimum=1)
        if isinstance(expand_v, bool) or not isinstance(expand_v, int | float) or not expand_v > 0 \
                or not float(head_dim * expand_v).is_integer():
            fail(fn, "expand_v", f"be > 0 with head_dim * expand_v an integer (head_dim={head_dim})",
                 repr(expand_v))
        use_gate = check_bool(fn, "use_gate", use_gate)
        use_short_conv = check_bool(fn, "use_short_conv", use_short_conv)
        conv_size = check_int(fn, "conv_size", conv_size, minimum=1)
        allow_neg_eigval = check_bool(fn, "allow_neg_eigval", allow_neg_eigval)

        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.head_k_dim, self.head_v_dim = head_dim, int(head_dim * expand_v)
        self.use_gate, self.use_short_conv = use_gate, use_short_conv
        self.allow_neg_eigval = allow_neg_eigval
        self.chunk_size, self.param_dtype = chunk_size, param_dtype
        key_dim, value_dim = num_heads * self.head_k_dim, num_heads * self.head_v_dim
        lin = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj, self.k_proj = lin(hidden_size, key_dim), lin(hidden_size, key_dim)
        self.v_proj = lin(hidden_size, value_dim)
        self.a_proj, self.b_proj = lin(hidden_size, num_heads), lin(hidden_size, num_heads)
        a_init = jax.random.uniform(rngs.params(), (num_heads,), jnp.float32, 1e-4, 16.0)
        self.A_log = nnx.Param(jnp.log(a_init).astype(param_dtype))
        self.dt_bias = nnx.Param(_inv_softplus_dt(rngs.params(), num_heads, 1e-3, 0.1, 1e-4, param_dtype))
        self.conv = ShortConv(2 * key_dim + value_dim, conv_size, dtype=dtype, param_dtype=param_dtype,
                              rngs=rngs) if use_short_conv else None
        self.g_proj = lin(hidden_size, value_dim) if use_gate else None
        self.o_norm = nnx.RMSNorm(self.head_v_dim, epsilon=norm_eps, dtype=dtype, param_dtype=param_dtype,
                                  rngs=rngs)
        self.o_proj = lin(value_dim, hidden_size)

    def _recurrent_template(self, b, dtype):
        return attention.DeltaRuleState(
            jax.ShapeDtypeStruct((b, self.num_heads, self.head_k_dim, self.head_v_dim), dtype))

    def _qkv(self, x):
        return jnp.concatenate([self.q_proj(x), self.k_proj(x), self.v_proj(x)], axis=-1)

    def _inputs(self, x, z):
        if self.conv is None:
            z = jax.nn.silu(z)
        kd, h = self.head_k_dim * self.num_heads, self.num_heads
        heads = lambda y, d: y.reshape(*y.shape[:-1], h, d)
        q = _l2norm(heads(z[..., :kd], self.head_k_dim))
        k = _l2norm(heads(z[..., kd:2 * kd], self.head_k_dim))
        v = heads(z[..., 2 * kd:], self.head_v_dim)
        b, a = self.b_proj(x), self.a_proj(x)
        acc = dtypes.accum_dtype(a.dtype)
        beta = jax.nn.sigmoid(b.astype(acc)) * (2.0 if self.allow_neg_eigval else 1.0)
        decay = -jnp.exp(self.A_log[...].astype(acc)) * jax.nn.softplus(a.astype(acc)
                                                                          + self.dt_bias[...].astype(acc))
        return q, k, v, beta.astype(v.dtype), decay

    def _output(self, x, o):
        return self._gated_heads_out(x, o, self.o_norm, self.use_gate)

    def _forward(self, x, state, return_state):
        z, conv_state = self._conv_full(self._qkv(x), state, return_state)
        q, k, v, beta, decay = self._inputs(x, z)
        out = attention.delta_rule_attention(
            q, k, v, beta, decay=decay, scale=self.head_k_dim ** -0.5, chunk_size=self.chunk_size,
            initial_state=None if state is None else state.recurrent, return_state=return_state)
        o, rec = out if return_state else (out, None)
        return self._output(x, o), (RecurrentLayerState(conv_state, rec) if return_state else None)

    def _step(self, x_t, state):
        z, conv_state = self._conv_step(self._qkv(x_t), state)
        q, k, v, beta, decay = self._inputs(x_t, z)
        o, rec = attention.delta_rule_step(state.recurrent, q, k, v, beta, decay_t=decay,
                                           scale=self.head_k_dim ** -0.5)
        return self._output(x_t, o), RecurrentLayerState(conv_state, rec)


# ------------------------------------------------------------------------------------------ Mamba-2


class Mamba2(_Recurrent):
    r"""Mamba-2 (SSD) as a layer, ``x: [B, T, hidden_size] -> [B, T, hidden_size]``.

    Follows Dao & Gu (ICML 2024) and flash-linear-attention's ``Mamba2`` layer: one input
    projection to the gate ``z`` (``d_inner = expand * hidden_size``), ``xBC`` and ``dt``;
    ``xBC = silu(conv(xBC))`` (a :class:`ShortConv` of width ``conv_kernel`` with bias); ``x`` split
    into ``H = d_inner / head_dim`` heads, ``B, C: [B, T, n_groups, state_size]``;
    ``dt = softplus(dt + dt_bias)``, ``A = -exp(A_log)`` (one scalar per head); then
    :func:`kjax.ssm.selective_scan` (SSD: :math:`h_t = e^{dt_t A} h_{t-1} + dt_t B_t x_t^\top`,
    :math:`y_t = C_t^\top h_t + D x_t`); then the gated RMSNorm ``norm(y * silu(z))`` over groups of
    ``d_inner / n_groups`` channels (``norm_before_gate=False``, fla's default) and the output
    projection. ``A`` is ``U(1, 16)`` and ``softplus(dt_bias)`` log-uniform in
    ``[dt_min, dt_max]`` at initialisation.

    Decoding: :meth:`init_state`, ``self(x, return_state=True)`` and :meth:`step`
    (:func:`kjax.ssm.selective_scan_step`) with a :class:`RecurrentLayerState` that holds the
    convolution cache and the SSM state.

    Deviations from fla: no ``dt_limit`` clamp, ``D`` per head only (``D_has_hdim=False``), the
    norm is always on (``rmsnorm=True``).

    Args:
      hidden_size: model width ``D`` (>= 1).
      state_size: ``N`` per group (>= 1).
      expand: ``d_inner = expand * hidden_size`` (an integer multiple of ``head_dim``).
      head_dim: ``P`` (>= 1).
      n_groups: groups ``G`` of ``B, C`` (>= 1, dividing the number of heads).
      conv_kernel: width of the short convolution (>= 1).
      use_conv_bias: a bias in the convolution.
      use_bias: biases in the input and output projections.
      dt_min, dt_max: range of ``softplus(dt_bias)`` at initialisation (``0 < dt_min <= dt_max``).
      norm_eps: RMSNorm epsilon (>= 0).
      chunk_size: tokens per chunk of the scan (>= 1).
      dtype: computation dtype of the projections (None: from the inputs and parameters).
      param_dtype: a real floating dtype of the parameters.
      rngs: ``nnx.Rngs`` for initialisation.

    Raises:
      ValueError: sizes < 1, ``expand * hidden_size`` not a multiple of ``head_dim``, ``n_groups``
        not dividing the heads, ``dt_min`` / ``dt_max`` out of range, ``norm_eps < 0``.
      TypeError: sizes not ints, flags not bools, non-floating dtypes, ``rngs`` not an ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import Mamba2
      >>> layer = Mamba2(8, state_size=4, head_dim=4, rngs=nnx.Rngs(0))
      >>> y, state = layer(jnp.ones((1, 5, 8)), return_state=True)
      >>> y_t, state = layer.step(jnp.ones((1, 8)), state)
      >>> print(y.shape, y_t.shape, state.conv.cache.shape)
      (1, 5, 8) (1, 8) (1, 3, 24)

    References:
      Dao & Gu, *Transformers are SSMs: Generalized Models and Efficient Algorithms Through
      Structured State Space Duality*, ICML 2024.
    """

    __signature__ = InitSignature()
    _FN = "kjax.nn.Mamba2"

    def __init__(self, hidden_size: int, *, state_size: int = 64, expand: float = 2.0, head_dim: int = 64,
                 n_groups: int = 1, conv_kernel: int = 4, use_conv_bias: bool = True, use_bias: bool = False,
                 dt_min: float = 1e-3, dt_max: float = 0.1, norm_eps: float = 1e-5, chunk_size: int = 64,
                 dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        fn = self._FN
        hidden_size, _, chunk_size, dtype, param_dtype = _common_config(
            fn, hidden_size, 1, chunk_size, norm_eps, dtype, param_dtype, rngs)
        state_size = check_int(fn, "state_size", state_size, minimum=1)
        head_dim = check_int(fn, "head_dim", head_dim, minimum=1)
        d_inner = _expanded(fn, "expand", hidden_size, expand, head_dim, "head_dim")
        num_heads = d_inner // head_dim
        n_groups = check_int(fn, "n_groups", n_groups, minimum=1)
        if num_heads % n_groups:
            fail(fn, "n_groups", f"divide the number of heads expand * hidden_size / head_dim = {num_heads}",
                 repr(n_groups))
        conv_kernel = check_int(fn, "conv_kernel", conv_kernel, minimum=1)
        use_conv_bias = check_bool(fn, "use_conv_bias", use_conv_bias)
        use_bias = check_bool(fn, "use_bias", use_bias)
        check_positive(fn, "dt_min", dt_min)
        check_positive(fn, "dt_max", dt_max)
        if dt_min > dt_max:
            fail(fn, "dt_min", f"be <= dt_max={dt_max}", repr(dt_min))

        self.hidden_size, self.d_inner = hidden_size, d_inner
        self.num_heads, self.head_dim = num_heads, head_dim
        self.state_size, self.n_groups, self.chunk_size = state_size, n_groups, chunk_size
        self.param_dtype = param_dtype
        conv_dim = d_inner + 2 * n_groups * state_size
        self.in_proj = nnx.Linear(hidden_size, d_inner + conv_dim + num_heads, use_bias=use_bias, dtype=dtype,
                                  param_dtype=param_dtype, rngs=rngs)
        self.conv = ShortConv(conv_dim, conv_kernel, use_bias=use_conv_bias, dtype=dtype,
                              param_dtype=param_dtype, rngs=rngs)
        self.dt_bias = nnx.Param(_inv_softplus_dt(rngs.params(), num_heads, dt_min, dt_max, 1e-4,
                                                  param_dtype))
        self.A_log = nnx.Param(jnp.log(jax.random.uniform(rngs.params(), (num_heads,), jnp.float32, 1.0, 16.0)
                                       ).astype(param_dtype))
        self.D = nnx.Param(jnp.ones((num_heads,), param_dtype))
        self.norm = nnx.RMSNorm(d_inner // n_groups, epsilon=norm_eps, use_scale=False, dtype=dtype,
                                param_dtype=param_dtype, rngs=rngs)
        self.norm_weight = nnx.Param(jnp.ones((d_inner,), param_dtype))
        self.out_proj = nnx.Linear(d_inner, hidden_size, use_bias=use_bias, dtype=dtype,
                                   param_dtype=param_dtype, rngs=rngs)

    def _scan_inputs(self, b, t, dtype):
        h, p, g, n = self.num_heads, self.head_dim, self.n_groups, self.state_size
        return (jnp.zeros((b, t, h, p), dtype), jnp.ones((b, t, h), dtype), -jnp.ones((h,), dtype),
                jnp.zeros((b, t, g, n), dtype), jnp.zeros((b, t, g, n), dtype))

    def _recurrent_template(self, b, dtype):
        scan = lambda: ssm.selective_scan(*self._scan_inputs(b, 1, dtype), return_state=True)
        return jax.eval_shape(scan)[1]

    def _split(self, zxbcdt):
        d, cd = self.d_inner, self.d_inner + 2 * self.n_groups * self.state_size
        return zxbcdt[..., :d], zxbcdt[..., d:d + cd], zxbcdt[..., d + cd:]

    def _inputs(self, xbc, dt):
        lead = xbc.shape[:-1]
        d, gn = self.d_inner, self.n_groups * self.state_size
        u = xbc[..., :d].reshape(*lead, self.num_heads, self.head_dim)
        bb = xbc[..., d:d + gn].reshape(*lead, self.n_groups, self.state_size)
        cc = xbc[..., d + gn:].reshape(*lead, self.n_groups, self.state_size)
        acc = dtypes.accum_dtype(dt.dtype)
        dt = jax.nn.softplus(dt.astype(acc) + self.dt_bias[...].astype(acc)).astype(u.dtype)
        a = -jnp.exp(self.A_log[...].astype(acc)).astype(u.dtype)
        return u, dt, a, bb, cc, self.D[...].astype(u.dtype)

    def _output(self, x, y, z):
        y = y.reshape(*y.shape[:-2], self.d_inner) * jax.nn.silu(z)
        grouped = y.reshape(*y.shape[:-1], self.n_groups, self.d_inner // self.n_groups)
        y = self.norm(grouped).reshape(y.shape) * self.norm_weight[...].astype(y.dtype)
        return self.out_proj(y).astype(x.dtype)

    def _forward(self, x, state, return_state):
        z, xbc, dt = self._split(self.in_proj(x))
        xbc, conv_state = self._conv_full(xbc, state, return_state)
        out = ssm.selective_scan(*self._inputs(xbc, dt), chunk_size=self.chunk_size,
                                 initial_state=None if state is None else state.recurrent,
                                 return_state=return_state)
        y, rec = out if return_state else (out, None)
        return self._output(x, y, z), (RecurrentLayerState(conv_state, rec) if return_state else None)

    def _step(self, x_t, state):
        z, xbc, dt = self._split(self.in_proj(x_t))
        xbc, conv_state = self._conv_step(xbc, state)
        y, rec = ssm.selective_scan_step(state.recurrent, *self._inputs(xbc, dt))
        return self._output(x_t, y, z), RecurrentLayerState(conv_state, rec)

"""``kjax.nn.KernelAttention``: multi-head kernel (linear) attention as a flax.nnx layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import attention
from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, check_in, check_int, check_positive, check_rank, fail, shape_of
from kjax._src.random_features import KINDS, check_key, float_dtype
from kjax.attention._attention import IMPLEMENTATIONS
from kjax.nn._common import InitSignature, check_batch_size, check_state, check_token

_FN = "kjax.nn.KernelAttention"
_MAPS = ("favor_positive", "favor_trig", "elu_plus_one", "relu", "dpfp", "taylor2", "hedgehog",
         "learned_spectral")
#: maps approximating the softmax kernel: queries and keys are scaled by head_dim**-0.25 first
_SOFTMAX_LIKE = ("favor_positive", "favor_trig", "taylor2")


class RandomFeatures(nnx.Variable):
    """A non-trainable random draw (projection ``w`` or spectral noise); changed only by ``redraw``."""


def _check_implementation(implementation) -> None:
    names = tuple(im.name for im in IMPLEMENTATIONS)
    ok = implementation is None or (isinstance(implementation, str) and implementation in names) or (
        isinstance(implementation, list | tuple) and len(implementation) > 0
        and all(isinstance(n, str) and n in names for n in implementation))
    if not ok:
        fail(_FN, "implementation", f"be None, one of {names!r} or a non-empty list of them",
             repr(implementation))


def _check_bool(arg: str, value) -> bool:
    if not isinstance(value, bool):
        fail(_FN, arg, "be a Python bool", repr(value), cls=KjaxTypeError)
    return value


class KernelAttention(nnx.Module):
    r"""Multi-head kernel attention: projections, a feature map, :func:`kjax.attention.kernel_attention`.

    ``x: [B, T, in_features] -> [B, T, out_features]``. Queries, keys and values are linear
    projections of ``x`` split into ``num_heads`` heads of ``head_dim`` (``[B, T, H, head_dim]``);
    queries and keys go through the feature map (scaled by ``head_dim ** -0.25`` first for the
    softmax-approximating maps ``favor_positive``, ``favor_trig`` and ``taylor2``), then causal or
    full normalised linear attention, then the output projection. No maths lives here: see
    :mod:`kjax.attention`.

    Random features (the projection of ``favor_*``, the noise of ``learned_spectral``) are drawn
    once at construction from ``rngs.params()`` and stored as :class:`RandomFeatures` variables
    (not :class:`flax.nnx.Param`, so optimisers leave them alone); they change only when you call
    :meth:`redraw` with an explicit key. Learnable maps (``hedgehog``, ``learned_spectral``) keep
    their parameters as ``nnx.Param`` and pass them to the map as
    :class:`kjax.attention.HedgehogParams` / :class:`kjax.attention.LearnedSpectralParams`.

    Decoding (causal layers): the state is a :class:`kjax.attention.LinearAttentionState`
    (``kv: [B, H, M, head_dim]``, ``k_sum: [B, H, M]``, in feature space) and nothing else.
    :meth:`init_state` gives zeros, ``self(x, return_state=True)`` is the prefill (it also accepts
    ``initial_state``), and :meth:`step` takes one token ``x_t: [B, in_features]`` with
    :func:`kjax.attention.linear_attention_step`; prefill then steps equal ``self`` on the whole
    sequence.

    Args:
      in_features: input feature size (>= 1), the last axis of ``x``.
      num_heads: number of heads ``H`` (>= 1); must divide ``in_features`` unless ``head_dim``
        is given.
      head_dim: per-head size ``D`` (default ``in_features // num_heads``).
      feature_map: one of ``"favor_positive"``, ``"favor_trig"``, ``"elu_plus_one"``, ``"relu"``,
        ``"dpfp"``, ``"taylor2"``, ``"hedgehog"``, ``"learned_spectral"``.
      num_features: ``M`` for the random/learned maps (default ``head_dim``).
      projection_kind: ``"iid"``, ``"orthogonal"`` or ``"simplex"`` for the ``favor_*`` maps.
      causal: causal (autoregressive) attention.
      chunk_size: tokens per chunk of the causal form (>= 1).
      eps: denominator epsilon (>= 0).
      out_features: output size (>= 1, default ``in_features``).
      implementation: passed to :func:`kjax.attention.kernel_attention` (None, a name, or a list).
      dtype: computation dtype of the projections (None: from the inputs and parameters).
      param_dtype: a real floating dtype of the parameters and random features.
      rngs: ``nnx.Rngs`` for initialisation.

    Raises:
      ValueError: sizes < 1, ``num_heads`` not dividing ``in_features`` (without ``head_dim``),
        an unknown ``feature_map``, ``projection_kind`` or ``implementation``, ``eps < 0``.
      TypeError: sizes not ints, ``causal`` not a bool, ``dtype`` / ``param_dtype`` not a real
        floating dtype, ``rngs`` not an ``nnx.Rngs``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import KernelAttention
      >>> layer = KernelAttention(16, 2, feature_map="favor_positive", rngs=nnx.Rngs(0))
      >>> y = layer(jnp.ones((1, 10, 16)))
      >>> print(y.shape)
      (1, 10, 16)
      >>> layer.redraw(jax.random.key(1))  # new random features, only when asked
      >>> y, state = layer(jnp.ones((1, 10, 16)), return_state=True)  # prefill
      >>> y_t, state = layer.step(jnp.ones((1, 16)), state)  # decode one token
      >>> print(y_t.shape, state.kv.shape)
      (1, 16) (1, 2, 8, 8)

    References:
      Katharopoulos et al., *Transformers are RNNs*, ICML 2020; Choromanski et al., *Rethinking
      Attention with Performers*, ICLR 2021.
    """

    __signature__ = InitSignature()

    def __init__(self, in_features: int, num_heads: int, *, head_dim: int | None = None,
                 feature_map: str = "favor_positive", num_features: int | None = None,
                 projection_kind: str = "orthogonal", causal: bool = True, chunk_size: int = 64,
                 eps: float = 1e-6, out_features: int | None = None,
                 implementation: None | str | Sequence[str] = None, dtype: Any = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        fn = _FN
        in_features = check_int(fn, "in_features", in_features, minimum=1)
        num_heads = check_int(fn, "num_heads", num_heads, minimum=1)
        check_in(fn, "feature_map", feature_map, _MAPS)
        if head_dim is None:
            if in_features % num_heads:
                fail(fn, "num_heads", f"divide in_features={in_features} (or pass head_dim)", repr(num_heads))
            head_dim = in_features // num_heads
        head_dim = check_int(fn, "head_dim", head_dim, minimum=1)
        num_features = head_dim if num_features is None else check_int(fn, "num_features", num_features,
                                                                        minimum=1)
        check_in(fn, "projection_kind", projection_kind, KINDS)
        causal = _check_bool("causal", causal)
        chunk_size = check_int(fn, "chunk_size", chunk_size, minimum=1)
        check_positive(fn, "eps", eps, allow_zero=True)
        out_features = in_features if out_features is None else check_int(fn, "out_features", out_features,
                                                                           minimum=1)
        _check_implementation(implementation)
        dtype = None if dtype is None else float_dtype(fn, "dtype", dtype)
        param_dtype = float_dtype(fn, "param_dtype", param_dtype)
        if not isinstance(rngs, nnx.Rngs):
            fail(fn, "rngs", "be an nnx.Rngs, e.g. nnx.Rngs(0)", type(rngs).__name__, cls=KjaxTypeError)

        self.in_features, self.out_features = in_features, out_features
        self.num_heads, self.head_dim = num_heads, head_dim
        self.feature_map, self.projection_kind = feature_map, projection_kind
        self.num_features = num_features
        self.causal, self.chunk_size, self.eps = causal, chunk_size, eps
        self.implementation = tuple(implementation) if isinstance(implementation, list) else implementation
        self.param_dtype = param_dtype
        lin = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        width = num_heads * head_dim
        self.q_proj, self.k_proj, self.v_proj = (lin(in_features, width) for _ in range(3))
        self.o_proj = lin(width, out_features)
        key = rngs.params()
        if feature_map == "hedgehog":
            p = attention.init_hedgehog(key, head_dim, num_features, dtype=param_dtype)
            self.hedgehog_w, self.hedgehog_b = nnx.Param(p.w), nnx.Param(p.b)
        elif feature_map == "learned_spectral":
            p = attention.init_learned_spectral(key, head_dim, num_features, dtype=param_dtype)
            self.spectral_mu, self.spectral_log_sigma = nnx.Param(p.mu), nnx.Param(p.log_sigma)
            self.random_features = RandomFeatures(p.noise)
        self.redraw(key)

    def redraw(self, key: jax.Array) -> None:
        """Draw new random features from the PRNG ``key`` (the only way they change)."""
        check_key(f"{_FN}.redraw", key)
        if self.feature_map in ("favor_positive", "favor_trig"):
            w = attention.random_projection(key, self.num_features, self.head_dim,
                                            kind=self.projection_kind, dtype=self.param_dtype)
            self.random_features = RandomFeatures(w)
        elif self.feature_map == "learned_spectral":
            self.random_features = RandomFeatures(jax.random.normal(
                key, (self.num_features, self.head_dim), self.param_dtype))

    def _params(self):
        if self.feature_map in ("favor_positive", "favor_trig"):
            return self.random_features[...]
        if self.feature_map == "hedgehog":
            return attention.HedgehogParams(w=self.hedgehog_w[...], b=self.hedgehog_b[...])
        if self.feature_map == "learned_spectral":
            return attention.LearnedSpectralParams(mu=self.spectral_mu[...],
                                                   log_sigma=self.spectral_log_sigma[...],
                                                   noise=self.random_features[...])
        return None

    def _check_input(self, x, segment_ids):
        x = dtypes.as_float_array(_FN, "x", x)
        check_rank(_FN, "x", x, 3, layout="[B, T, in_features]")
        b, t, d = x.shape
        if d != self.in_features:
            fail(_FN, "x", f"have in_features={self.in_features} in its last axis [B, T, in_features]",
                 f"shape {x.shape}")
        for name, size in (("B", b), ("T", t)):
            if size == 0:
                fail(_FN, "x", f"have {name} >= 1 in [B, T, in_features]", f"shape {x.shape}")
        if segment_ids is not None:
            if shape_of(segment_ids) != (b, t):
                fail(_FN, "segment_ids", f"have shape [B, T] = {(b, t)}", f"shape {shape_of(segment_ids)}")
            if not jnp.issubdtype(jnp.result_type(segment_ids), jnp.integer):
                fail(_FN, "segment_ids", "be an integer array", f"dtype {jnp.result_type(segment_ids)}",
                     cls=KjaxTypeError)
        return x

    @property
    def state_features(self) -> int:
        """``M``, the feature size of the decoding state (that of the feature map's output)."""
        x = jax.ShapeDtypeStruct((1, self.head_dim), self.param_dtype)
        return jax.eval_shape(lambda x: self._phi(x, is_query=False), x).shape[-1]

    def _state_shapes(self, b: int) -> dict[str, tuple[int, ...]]:
        m = self.state_features
        return {"kv": (b, self.num_heads, m, self.head_dim), "k_sum": (b, self.num_heads, m)}

    def _check_causal(self, fn: str, what: str) -> None:
        if not self.causal:
            fail(fn, "causal", f"be True for {what} (the layer was built with causal=False: a full "
                 "attention has no recurrent state)", "False")

    def init_state(self, batch_size: int, dtype: Any = None) -> attention.LinearAttentionState:
        """The zero decoding state for ``batch_size`` sequences, in ``dtype`` (default
        ``param_dtype``): ``kv: [B, H, M, head_dim]``, ``k_sum: [B, H, M]``.

        Raises:
          ValueError: ``batch_size < 1``; a non-causal layer (it cannot decode).
          TypeError: ``batch_size`` not an int; ``dtype`` not a real floating dtype.
        """
        fn = f"{_FN}.init_state"
        batch_size = check_batch_size(fn, batch_size)
        dtype = float_dtype(fn, "dtype", self.param_dtype if dtype is None else dtype)
        self._check_causal(fn, "decoding")
        return attention.LinearAttentionState(*(jnp.zeros(s, dtype) for s in
                                                self._state_shapes(batch_size).values()))

    def _qkv(self, x):
        """Projections of ``x: [..., in_features]`` split into heads, feature-mapped ``q, k``."""
        split = lambda y: y.reshape(*x.shape[:-1], self.num_heads, self.head_dim)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if self.feature_map in _SOFTMAX_LIKE:
            q, k = q * self.head_dim ** -0.25, k * self.head_dim ** -0.25
        return q, k, v

    def _phi(self, x, *, is_query: bool):
        """The layer's feature map on ``x: [..., head_dim]`` (what kernel_attention applies)."""
        p, name = self._params(), self.feature_map
        if name == "favor_positive":
            return attention.favor_positive(x, p, stabilize="row" if is_query else "weights")
        if name == "favor_trig":
            return attention.favor_trig(x, p)
        if name in ("hedgehog", "learned_spectral"):
            return getattr(attention, name)(p, x)
        return {"elu_plus_one": attention.elu_plus_one, "relu": attention.relu_features,
                "dpfp": attention.dpfp, "taylor2": attention.taylor2}[name](x)

    def __call__(self, x: Float[ArrayLike, "B T in_features"], *,
                 segment_ids: Int[ArrayLike, "B T"] | None = None,
                 initial_state: attention.LinearAttentionState | None = None,
                 return_state: bool = False
                 ) -> Float[Array, "B T out_features"] | tuple[Float[Array, "B T out_features"],
                                                               attention.LinearAttentionState]:
        """Attend over the sequence ``x`` (the prefill, when it returns its state).

        Args:
          x: ``[B, T, in_features]`` inputs (integers are promoted to the default float).
          segment_ids: ``[B, T]`` integer ids of packed sequences (attention stays inside each
            run of equal ids), or None.
          initial_state: a :class:`kjax.attention.LinearAttentionState` to continue from (from
            :meth:`init_state`, a previous prefill or :meth:`step`), or None for zeros; causal
            layers only.
          return_state: also return the final state (causal layers only), for :meth:`step`.

        Returns:
          ``[B, T, out_features]`` outputs, and the state if ``return_state``.

        Raises:
          ValueError: ``x`` not of rank 3, another last axis than ``in_features``, ``B`` or ``T``
            zero; ``segment_ids`` not of shape ``[B, T]``; ``initial_state`` of the wrong shapes;
            ``initial_state`` or ``return_state`` on a non-causal layer.
          TypeError: complex ``x``; non-integer ``segment_ids``; ``return_state`` not a bool;
            ``initial_state`` not a :class:`kjax.attention.LinearAttentionState`.
        """
        x = self._check_input(x, segment_ids)
        return_state = _check_bool("return_state", return_state)
        b, t, _ = x.shape
        if initial_state is not None or return_state:
            self._check_causal(_FN, "initial_state / return_state")
        if initial_state is not None:
            initial_state = check_state(_FN, "initial_state", initial_state, attention.LinearAttentionState,
                                        self._state_shapes(b))
        q, k, v = self._qkv(x)
        out = attention.kernel_attention(
            q, k, v, feature_map=self.feature_map, feature_params=self._params(), causal=self.causal,
            chunk_size=self.chunk_size, eps=self.eps, segment_ids=segment_ids,
            implementation=self.implementation, initial_state=initial_state, return_state=return_state)
        out, state = out if return_state else (out, None)
        y = self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim))
        return (y, state) if return_state else y

    def step(self, x_t: Float[ArrayLike, "B in_features"], state: attention.LinearAttentionState
             ) -> tuple[Float[Array, "B out_features"], attention.LinearAttentionState]:
        """Decode one token: ``x_t: [B, in_features] -> (y_t [B, out_features], new_state)``.

        Stepping through ``x[:, t]`` from :meth:`init_state` (or from the state of a prefill of
        ``x[:, :t0]``) gives ``self(x)[:, t]``.

        Raises:
          ValueError: a non-causal layer; ``x_t`` not ``[B, in_features]``; a state whose shapes
            do not match ``B`` and the layer.
          TypeError: complex ``x_t``; ``state`` not a :class:`kjax.attention.LinearAttentionState`.
        """
        fn = f"{_FN}.step"
        self._check_causal(fn, "decoding")
        x_t = check_token(fn, x_t, self.in_features)
        b = x_t.shape[0]
        state = check_state(fn, "state", state, attention.LinearAttentionState, self._state_shapes(b))
        q, k, v = self._qkv(x_t)
        o, state = attention.linear_attention_step(state, self._phi(q, is_query=True),
                                                   self._phi(k, is_query=False), v, eps=self.eps)
        return self.o_proj(o.reshape(b, self.num_heads * self.head_dim)), state

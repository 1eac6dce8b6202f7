"""``kjax.nn.KernelAttention``: multi-head kernel (linear) attention as a flax.nnx layer."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from kjax import attention
from kjax._src.errors import check_in, check_int

_MAPS = ("favor_positive", "favor_trig", "elu_plus_one", "relu", "dpfp", "taylor2", "hedgehog",
         "learned_spectral")
#: maps approximating the softmax kernel: queries and keys are scaled by head_dim**-0.25 first
_SOFTMAX_LIKE = ("favor_positive", "favor_trig", "taylor2")


class RandomFeatures(nnx.Variable):
    """A non-trainable random draw (projection ``w`` or spectral noise); changed only by ``redraw``."""


class KernelAttention(nnx.Module):
    r"""Multi-head kernel attention: projections, a feature map, :func:`kjax.attention.kernel_attention`.

    ``x: [B, T, in_features] -> [B, T, out_features]``. Queries, keys and values are linear
    projections split into ``num_heads`` heads of ``head_dim``; queries and keys go through the
    feature map (scaled by ``head_dim ** -0.25`` first for the softmax-approximating maps
    ``favor_positive``, ``favor_trig`` and ``taylor2``), then causal or full normalised linear
    attention, then the output projection. No maths lives here: see :mod:`kjax.attention`.

    Random features (the projection of ``favor_*``, the noise of ``learned_spectral``) are drawn
    once at construction from ``rngs.params()`` and stored as :class:`RandomFeatures` variables
    (not :class:`flax.nnx.Param`, so optimisers leave them alone); they change only when you call
    :meth:`redraw` with an explicit key. Learnable maps (``hedgehog``, ``learned_spectral``) keep
    their parameters as ``nnx.Param``.

    Args:
      in_features: input feature size.
      num_heads: number of heads ``H``.
      head_dim: per-head size ``D`` (default ``in_features // num_heads``).
      feature_map: one of ``"favor_positive"``, ``"favor_trig"``, ``"elu_plus_one"``, ``"relu"``,
        ``"dpfp"``, ``"taylor2"``, ``"hedgehog"``, ``"learned_spectral"``.
      num_features: ``M`` for the random/learned maps (default ``head_dim``).
      projection_kind: ``"iid"``, ``"orthogonal"`` or ``"simplex"`` for the ``favor_*`` maps.
      causal: causal (autoregressive) attention.
      chunk_size: chunk size of the causal form.
      eps: denominator epsilon.
      out_features: output size (default ``in_features``).
      implementation: passed to :func:`kjax.attention.kernel_attention`.
      dtype, param_dtype: computation and parameter dtypes of the projections.
      rngs: ``nnx.Rngs`` for initialisation.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import KernelAttention
      >>> layer = KernelAttention(16, 2, feature_map="favor_positive", rngs=nnx.Rngs(0))
      >>> y = layer(jnp.ones((1, 10, 16)))
      >>> print(y.shape)
      (1, 10, 16)
      >>> layer.redraw(jax.random.key(1))  # new random features, only when asked
    """

    def __init__(self, in_features: int, num_heads: int, *, head_dim: int | None = None,
                 feature_map: str = "favor_positive", num_features: int | None = None,
                 projection_kind: str = "orthogonal", causal: bool = True, chunk_size: int = 64,
                 eps: float = 1e-6, out_features: int | None = None, implementation: Any = None,
                 dtype: Any = None, param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        fn = "kjax.nn.KernelAttention"
        in_features = check_int(fn, "in_features", in_features, minimum=1)
        num_heads = check_int(fn, "num_heads", num_heads, minimum=1)
        check_in(fn, "feature_map", feature_map, _MAPS)
        head_dim = in_features // num_heads if head_dim is None else head_dim
        head_dim = check_int(fn, "head_dim", head_dim, minimum=1)
        self.num_heads, self.head_dim = num_heads, head_dim
        self.feature_map, self.projection_kind = feature_map, projection_kind
        self.num_features = head_dim if num_features is None else check_int(
            fn, "num_features", num_features, minimum=1)
        self.causal, self.chunk_size, self.eps = causal, chunk_size, eps
        self.implementation = implementation
        self.param_dtype = param_dtype
        out_features = in_features if out_features is None else out_features
        lin = lambda i, o: nnx.Linear(i, o, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        width = num_heads * head_dim
        self.q_proj, self.k_proj, self.v_proj = (lin(in_features, width) for _ in range(3))
        self.o_proj = lin(width, out_features)
        key = rngs.params()
        if feature_map == "hedgehog":
            p = attention.init_hedgehog(key, head_dim, self.num_features, dtype=param_dtype)
            self.hedgehog_w, self.hedgehog_b = nnx.Param(p["w"]), nnx.Param(p["b"])
        elif feature_map == "learned_spectral":
            p = attention.init_learned_spectral(key, head_dim, self.num_features, dtype=param_dtype)
            self.spectral_mu, self.spectral_log_sigma = nnx.Param(p["mu"]), nnx.Param(p["log_sigma"])
            self.random_features = RandomFeatures(p["noise"])
        self.redraw(key)

    def redraw(self, key: jax.Array) -> None:
        """Draw new random features from ``key`` (the only way they change)."""
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
            return {"w": self.hedgehog_w[...], "b": self.hedgehog_b[...]}
        if self.feature_map == "learned_spectral":
            return {"mu": self.spectral_mu[...], "log_sigma": self.spectral_log_sigma[...],
                    "noise": self.random_features[...]}
        return None

    def __call__(self, x: jax.Array, *, segment_ids: jax.Array | None = None) -> jax.Array:
        """``x: [B, T, in_features] -> [B, T, out_features]`` (``segment_ids: [B, T]`` for packing)."""
        b, t, _ = x.shape
        split = lambda y: y.reshape(b, t, self.num_heads, self.head_dim)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if self.feature_map in _SOFTMAX_LIKE:
            q, k = q * self.head_dim ** -0.25, k * self.head_dim ** -0.25
        out = attention.kernel_attention(
            q, k, v, feature_map=self.feature_map, feature_params=self._params(), causal=self.causal,
            chunk_size=self.chunk_size, eps=self.eps, segment_ids=segment_ids,
            implementation=self.implementation)
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim))

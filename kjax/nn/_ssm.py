"""flax.nnx layers over kjax.ssm: S4D, Hyena and STU (no maths here, only parameters and wiring)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from kjax import ssm


class S4D(nnx.Module):
    """Diagonal state-space layer: ``y = fftconv(u, s4d_filter(params, L), skip=D)``, ``u: [B, L, D]``.

    Parameters are those of :func:`kjax.ssm.s4d_init` plus the skip ``D``; :meth:`step` runs the
    same layer as a recurrence (streaming inference) from :meth:`initial_state`.

    Args:
      d_model: channels ``D``.
      state_size: real state size ``N`` (even).
      init: ``"lin"``, ``"inv"`` or ``"legs"``.
      discretization: ``"zoh"`` or ``"bilinear"``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import S4D
      >>> layer = S4D(4, 8, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 16, 4))).shape
      (2, 16, 4)
    """

    def __init__(self, d_model: int, state_size: int = 64, *, init: str = "lin",
                 discretization: str = "zoh", rngs: nnx.Rngs):
        p = ssm.s4d_init(rngs.params(), d_model, state_size, init=init)
        self.ssm = nnx.data({name: nnx.Param(v) for name, v in p._asdict().items()})
        self.skip = nnx.Param(jnp.ones((d_model,), p.log_dt.dtype))
        self.discretization = discretization

    @property
    def params(self) -> ssm.S4DParams:
        return ssm.S4DParams(**{name: v[...] for name, v in self.ssm.items()})

    def __call__(self, u: jax.Array) -> jax.Array:
        k = ssm.s4d_filter(self.params, u.shape[1], discretization=self.discretization)
        return ssm.fftconv(u, k, skip=self.skip[...])

    def initial_state(self, batch_size: int) -> ssm.S4DState:
        return ssm.s4d_initial_state(self.params, batch_size)

    def step(self, state: ssm.S4DState, u_t: jax.Array) -> tuple[ssm.S4DState, jax.Array]:
        state, y = ssm.s4d_step(self.params, state, u_t, discretization=self.discretization)
        return state, y + self.skip[...] * u_t


class Hyena(nnx.Module):
    """Order-2 Hyena operator on ``u: [B, L, D]``.

    ``x0, x1, v = short_conv(in_proj(u))``; ``y = out_proj(fftconv(v * x1, h, skip=bias, gate=x0))``
    with the implicit filter ``h = hyena_filter(params, L)`` and a causal short filter of 3 taps.

    Args:
      d_model: channels ``D``.
      emb_dim, width, depth: of the implicit filter (see :func:`kjax.ssm.hyena_init`).
      rngs: ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import Hyena
      >>> Hyena(4, width=8, rngs=nnx.Rngs(0))(jnp.ones((2, 16, 4))).shape
      (2, 16, 4)
    """

    def __init__(self, d_model: int, *, emb_dim: int = 33, width: int = 64, depth: int = 2,
                 short_len: int = 3, rngs: nnx.Rngs):
        self.in_proj = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
        self.out_proj = nnx.Linear(d_model, d_model, rngs=rngs)
        noise = jax.random.normal(rngs.params(), ((short_len + 1) * 3 * d_model,))
        self.short = nnx.Param(noise[: short_len * 3 * d_model].reshape(short_len, 3 * d_model) / short_len)
        self.bias = nnx.Param(noise[short_len * 3 * d_model:][:d_model])
        p = ssm.hyena_init(rngs.params(), d_model, emb_dim=emb_dim, width=width, depth=depth)
        self.filt = nnx.data({name: nnx.Param(v) for name, v in p._asdict().items()})

    def __call__(self, u: jax.Array) -> jax.Array:
        L = u.shape[1]
        z = ssm.fftconv(self.in_proj(u), self.short[...][: min(L, self.short.shape[0])])
        x0, x1, v = jnp.split(z, 3, axis=-1)
        h = ssm.hyena_filter(ssm.HyenaFilterParams(**{n: p[...] for n, p in self.filt.items()}), L)
        return self.out_proj(ssm.fftconv(v * x1, h.astype(u.dtype), skip=self.bias[...], gate=x0))


class STU(nnx.Module):
    """Spectral Transform Unit on ``u: [B, L, D]`` with ``K`` fixed spectral filters.

    ``y_t = sum_k M_k (phi_k * u)_t + M_skip u_t`` where ``phi = stu_filters(L, K)`` are fixed (not
    learned) and only the ``M``s are trained (the paper's STU without its autoregressive terms).

    Args:
      d_in: input channels ``D``.
      d_out: output channels.
      num_filters: ``K``.
      rngs: ``nnx.Rngs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import STU
      >>> STU(3, 5, num_filters=4, rngs=nnx.Rngs(0))(jnp.ones((2, 32, 3))).shape
      (2, 32, 5)
    """

    def __init__(self, d_in: int, d_out: int, *, num_filters: int = 16, rngs: nnx.Rngs):
        scale = 1.0 / (d_in * num_filters) ** 0.5
        self.m = nnx.Param(jax.random.normal(rngs.params(), (num_filters, d_in, d_out)) * scale)
        self.m_skip = nnx.Param(jax.random.normal(rngs.params(), (d_in, d_out)) / d_in**0.5)
        self.num_filters = num_filters

    def __call__(self, u: jax.Array) -> jax.Array:
        B, L, D = u.shape
        K = self.num_filters
        phi = ssm.stu_filters(L, K).astype(u.dtype)  # [L, K]
        feats = ssm.fftconv(jnp.tile(u, (1, 1, K)), jnp.repeat(phi, D, axis=1))  # [B, L, K*D]
        feats = feats.reshape(B, L, K, D)
        return jnp.einsum("blkd,kde->ble", feats, self.m[...]) + u @ self.m_skip[...]

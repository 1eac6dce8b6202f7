"""flax.nnx layers over kjax.ssm: S4D, Hyena and STU (no maths here, only parameters, wiring and
input checks that name the layer)."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from kjax import ssm
from kjax._src import dtypes
from kjax._src.errors import check_in, check_int, fail


class _InitSignature:
    """``cls.__signature__`` = ``__init__``'s signature without ``self``.

    nnx's metaclass defines ``__call__(*args, **kwargs)``, which ``inspect.signature`` and
    ``help()`` would otherwise show for the class. On an instance the attribute is absent, so
    ``inspect.signature(layer)`` is still that of ``__call__``.
    """

    def __get__(self, obj, cls):
        if obj is not None:
            raise AttributeError("__signature__")
        sig = inspect.signature(cls.__init__)
        return sig.replace(parameters=list(sig.parameters.values())[1:])


def _check_seq(fn: str, u, d: int, *, min_len: int = 1) -> jax.Array:
    """``u: [B, L, d]`` with ``L >= min_len``, promoted to float; errors name ``fn`` and ``u``."""
    u = dtypes.as_float_array(fn, "u", u)
    if u.ndim != 3:
        fail(fn, "u", "have rank 3 [B, L, D] (batch, length, channels)",
             f"shape {tuple(u.shape)} (rank {u.ndim})")
    if u.shape[1] < min_len:
        fail(fn, "u", f"have a sequence length L >= {min_len} (axis 1 of [B, L, D])",
             f"shape {tuple(u.shape)}")
    if u.shape[2] != d:
        fail(fn, "u", f"have {d} channels in its last axis (the layer's input size)",
             f"shape {tuple(u.shape)}")
    return u


class S4D(nnx.Module):
    """Diagonal state-space layer: ``y = fftconv(u, s4d_filter(params, L), skip=D)``.

    Shapes: ``u: [B, L, d_model] -> y: [B, L, d_model]`` (batch, length, channels), in the
    (floating) dtype of ``u``; integer inputs are promoted. Parameters are those of
    :func:`kjax.ssm.init_s4d` plus the skip ``D: [d_model]``; :meth:`step` runs the same layer as a
    recurrence (streaming inference, ``u_t: [B, d_model]``) from :meth:`initial_state`.

    Args:
      d_model: channels ``D`` (>= 1).
      state_size: real state size ``N`` (even, >= 2).
      init: ``"lin"``, ``"inv"`` or ``"legs"``.
      discretization: ``"zoh"`` or ``"bilinear"``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Raises:
      ValueError: non-positive or odd sizes, unknown ``init`` / ``discretization``; on call, ``u``
        not ``[B, L, d_model]`` with ``L >= 1``.
      TypeError: complex ``u``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import S4D
      >>> layer = S4D(4, 8, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 16, 4))).shape
      (2, 16, 4)
      >>> y_t, state = layer.step(layer.initial_state(2), jnp.ones((2, 4)))
      >>> y_t.shape
      (2, 4)
    """

    __signature__ = _InitSignature()

    def __init__(self, d_model: int, state_size: int = 64, *, init: str = "lin",
                 discretization: str = "zoh", rngs: nnx.Rngs):
        fn = "kjax.nn.S4D"
        d_model = check_int(fn, "d_model", d_model, minimum=1)
        state_size = check_int(fn, "state_size", state_size, minimum=2)
        if state_size % 2:
            fail(fn, "state_size", "be even (N/2 complex-conjugate pairs are stored)", repr(state_size))
        check_in(fn, "init", init, ("lin", "inv", "legs"))
        check_in(fn, "discretization", discretization, ("zoh", "bilinear"))
        p = ssm.init_s4d(rngs.params(), d_model, state_size, init=init)
        self.ssm = nnx.data({name: nnx.Param(v) for name, v in p._asdict().items()})
        self.skip = nnx.Param(jnp.ones((d_model,), p.log_dt.dtype))
        self.d_model = d_model
        self.discretization = discretization

    @property
    def params(self) -> ssm.S4DParams:
        """The SSM parameters as a :class:`kjax.ssm.S4DParams`."""
        return ssm.S4DParams(**{name: v[...] for name, v in self.ssm.items()})

    def __call__(self, u: Float[ArrayLike, "B L D"]) -> Float[Array, "B L D"]:
        """``u: [B, L, d_model] -> [B, L, d_model]``."""
        u = _check_seq("kjax.nn.S4D", u, self.d_model)
        k = ssm.s4d_filter(self.params, u.shape[1], discretization=self.discretization)
        return ssm.fftconv(u, k, skip=self.skip[...])

    def initial_state(self, batch_size: int) -> ssm.S4DState:
        """The zero recurrent state for ``batch_size`` sequences (:func:`kjax.ssm.s4d_initial_state`)."""
        check_int("kjax.nn.S4D.initial_state", "batch_size", batch_size, minimum=1)
        return ssm.s4d_initial_state(self.params, batch_size)

    def step(self, state: ssm.S4DState, u_t: Float[ArrayLike, "B D"]
             ) -> tuple[Float[Array, "B D"], ssm.S4DState]:
        """One streaming step, ``u_t: [B, d_model] -> (y_t: [B, d_model], new_state)``; stepping
        through ``u[:, t]`` from :meth:`initial_state` gives ``self(u)``."""
        fn = "kjax.nn.S4D.step"
        u_t = dtypes.as_float_array(fn, "u_t", u_t)
        if u_t.ndim != 2 or u_t.shape[1] != self.d_model:
            fail(fn, "u_t", f"have shape [B, {self.d_model}] (one time step)", f"shape {tuple(u_t.shape)}")
        y, state = ssm.s4d_step(self.params, state, u_t, discretization=self.discretization)
        return y + self.skip[...].astype(y.dtype) * u_t, state


class Hyena(nnx.Module):
    """Order-2 Hyena operator, ``u: [B, L, d_model] -> [B, L, d_model]``.

    ``x0, x1, v = short_conv(in_proj(u))``; ``y = out_proj(fftconv(v * x1, h, skip=bias, gate=x0))``
    with the implicit filter ``h = hyena_filter(params, L)`` and a causal short filter of
    ``short_len`` taps. The output has the (floating) dtype of ``u``; integer inputs are promoted.

    Args:
      d_model: channels ``D`` (>= 1).
      emb_dim: positional feature size of the implicit filter (odd >= 3; see
        :func:`kjax.ssm.init_hyena`).
      width: MLP width of the implicit filter (>= 1).
      depth: hidden layers of the implicit filter (>= 0).
      short_len: taps of the short causal convolution (>= 1).
      rngs: ``nnx.Rngs``.

    Raises:
      ValueError: non-positive sizes, even ``emb_dim``; on call, ``u`` not ``[B, L, d_model]`` with
        ``L >= 1``.
      TypeError: complex ``u``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import Hyena
      >>> Hyena(4, width=8, rngs=nnx.Rngs(0))(jnp.ones((2, 16, 4))).shape
      (2, 16, 4)
    """

    __signature__ = _InitSignature()

    def __init__(self, d_model: int, *, emb_dim: int = 33, width: int = 64, depth: int = 2,
                 short_len: int = 3, rngs: nnx.Rngs):
        fn = "kjax.nn.Hyena"
        d_model = check_int(fn, "d_model", d_model, minimum=1)
        emb_dim = check_int(fn, "emb_dim", emb_dim, minimum=3)
        if emb_dim % 2 == 0:
            fail(fn, "emb_dim", "be odd (time plus (E-1)/2 cosine/sine pairs)", repr(emb_dim))
        width = check_int(fn, "width", width, minimum=1)
        depth = check_int(fn, "depth", depth, minimum=0)
        short_len = check_int(fn, "short_len", short_len, minimum=1)
        self.in_proj = nnx.Linear(d_model, 3 * d_model, rngs=rngs)
        self.out_proj = nnx.Linear(d_model, d_model, rngs=rngs)
        noise = jax.random.normal(rngs.params(), ((short_len + 1) * 3 * d_model,))
        self.short = nnx.Param(noise[: short_len * 3 * d_model].reshape(short_len, 3 * d_model) / short_len)
        self.bias = nnx.Param(noise[short_len * 3 * d_model:][:d_model])
        p = ssm.init_hyena(rngs.params(), d_model, emb_dim=emb_dim, width=width, depth=depth)
        self.filt = nnx.data({name: nnx.Param(v) for name, v in p._asdict().items()})
        self.d_model = d_model

    def __call__(self, u: Float[ArrayLike, "B L D"]) -> Float[Array, "B L D"]:
        """``u: [B, L, d_model] -> [B, L, d_model]``."""
        u = _check_seq("kjax.nn.Hyena", u, self.d_model)
        L = u.shape[1]
        z = ssm.fftconv(self.in_proj(u), self.short[...][: min(L, self.short.shape[0])])
        x0, x1, v = jnp.split(z, 3, axis=-1)
        h = ssm.hyena_filter(ssm.HyenaFilterParams(**{n: p[...] for n, p in self.filt.items()}), L)
        y = ssm.fftconv(v * x1, h.astype(u.dtype), skip=self.bias[...], gate=x0)
        return self.out_proj(y).astype(u.dtype)


class STU(nnx.Module):
    """Spectral Transform Unit, ``u: [B, L, d_in] -> [B, L, d_out]``, with ``K`` fixed spectral filters.

    ``y_t = sum_k M_k^T (phi_k * u)_t + M_skip^T u_t`` where ``phi = stu_filters(L, K)`` are fixed (not
    learned) and only ``M: [K, d_in, d_out]`` and ``M_skip: [d_in, d_out]`` are trained (the
    paper's STU without its autoregressive terms). The sequence needs ``L >= K``. The output has
    the (floating) dtype of ``u``; integer inputs are promoted.

    Args:
      d_in: input channels ``D`` (>= 1).
      d_out: output channels (>= 1).
      num_filters: ``K`` (>= 1).
      rngs: ``nnx.Rngs``.

    Raises:
      ValueError: non-positive sizes; on call, ``u`` not ``[B, L, d_in]`` with ``L >= num_filters``.
      TypeError: complex ``u``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.nn import STU
      >>> STU(3, 5, num_filters=4, rngs=nnx.Rngs(0))(jnp.ones((2, 32, 3))).shape
      (2, 32, 5)
    """

    __signature__ = _InitSignature()

    def __init__(self, d_in: int, d_out: int, *, num_filters: int = 16, rngs: nnx.Rngs):
        fn = "kjax.nn.STU"
        d_in = check_int(fn, "d_in", d_in, minimum=1)
        d_out = check_int(fn, "d_out", d_out, minimum=1)
        num_filters = check_int(fn, "num_filters", num_filters, minimum=1)
        scale = 1.0 / (d_in * num_filters) ** 0.5
        self.m = nnx.Param(jax.random.normal(rngs.params(), (num_filters, d_in, d_out)) * scale)
        self.m_skip = nnx.Param(jax.random.normal(rngs.params(), (d_in, d_out)) / d_in**0.5)
        self.num_filters = num_filters
        self.d_in = d_in

    def __call__(self, u: Float[ArrayLike, "B L Din"]) -> Float[Array, "B L Dout"]:
        """``u: [B, L, d_in] -> [B, L, d_out]``."""
        K = self.num_filters
        u = _check_seq("kjax.nn.STU", u, self.d_in, min_len=K)
        B, L, D = u.shape
        phi = ssm.stu_filters(L, K).astype(u.dtype)  # [L, K]
        feats = ssm.fftconv(jnp.tile(u, (1, 1, K)), jnp.repeat(phi, D, axis=1))  # [B, L, K*D]
        feats = feats.reshape(B, L, K, D)
        y = jnp.einsum("blkd,kde->ble", feats, self.m[...]) + u @ self.m_skip[...]
        return y.astype(u.dtype)

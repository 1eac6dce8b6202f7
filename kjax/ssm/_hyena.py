"""Hyena's implicit long filter: a sine-activated MLP over positional features times a decay window
(:func:`init_hyena`, :func:`hyena_filter`)."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from kjax._src import dtypes
from kjax._src.errors import check_int, check_positive, fail
from kjax.ssm import _checks


class HyenaFilterParams(NamedTuple):
    """Implicit Hyena filter: a sine-activated MLP over positional features, times a decay.

    ``w_in: [E, W]``, ``b_in: [W]``, ``w_hidden: [depth, W, W]``, ``b_hidden: [depth, W]``,
    ``w_out: [W, D]``, ``freq: [W]`` (sine frequencies), ``decay: [D]`` (decay rates).
    """

    w_in: Float[Array, "E W"]
    b_in: Float[Array, " W"]
    w_hidden: Float[Array, "depth W W"]
    b_hidden: Float[Array, "depth W"]
    w_out: Float[Array, "W D"]
    freq: Float[Array, " W"]
    decay: Float[Array, " D"]


#: the axes of each field, for the checks
AXES = {"w_in": ("E", "W"), "b_in": ("W",), "w_hidden": ("depth", "W", "W"), "b_hidden": ("depth", "W"),
        "w_out": ("W", "D"), "freq": ("W",), "decay": ("D",)}


def init_hyena(key: Array, d_model: int, *, emb_dim: int = 33, width: int = 64, depth: int = 2,
               fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5, target: float = 1e-2
               ) -> HyenaFilterParams:
    """Hyena filter parameters: uniform fan-in MLP weights, ``freq = 1``, decays spread over channels.

    The decay rates are ``|linspace(log(target)/slow_decay_pct, log(target)/fast_decay_pct, D)|``,
    so channel 0 decays to ``target`` at ``slow_decay_pct`` of the sequence and the last one at
    ``fast_decay_pct``.

    Args:
      key: PRNG key.
      d_model: channels ``D`` (>= 1).
      emb_dim: positional feature size ``E`` (odd >= 3: time plus ``(E-1)/2`` sine/cosine bands).
      width: MLP width ``W`` (>= 1).
      depth: number of hidden ``W x W`` layers (>= 0).
      fast_decay_pct: see above (finite, > 0).
      slow_decay_pct: see above (finite, > 0).
      target: see above, in (0, 1) (the envelope decays from 1 towards it).

    Returns:
      :class:`HyenaFilterParams`.

    Raises:
      ValueError: even or too small ``emb_dim``, non-positive sizes, non-positive decay
        percentages, ``target`` outside (0, 1).

    Example:
      >>> import jax
      >>> from kjax.ssm import init_hyena
      >>> init_hyena(jax.random.key(0), 8).w_out.shape
      (64, 8)

    References:
      Poli et al., *Hyena Hierarchy: Towards Larger Convolutional Language Models*, ICML 2023.
    """
    fn = "kjax.ssm.init_hyena"
    d_model = check_int(fn, "d_model", d_model, minimum=1)
    e = check_int(fn, "emb_dim", emb_dim, minimum=3)
    if e % 2 == 0:
        fail(fn, "emb_dim", "be odd (time plus (E-1)/2 cosine/sine pairs)", repr(e))
    w = check_int(fn, "width", width, minimum=1)
    depth = check_int(fn, "depth", depth, minimum=0)
    check_positive(fn, "fast_decay_pct", fast_decay_pct)
    check_positive(fn, "slow_decay_pct", slow_decay_pct)
    _checks.in_range(fn, "target", target, 0.0, 1.0, high_open=True)
    return _hyena_init(key, d_model, e, w, depth, float(fast_decay_pct), float(slow_decay_pct),
                       float(target))


@functools.partial(jax.jit, static_argnums=tuple(range(1, 8)))
def _hyena_init(key, d_model, e, w, depth, fast_decay_pct, slow_decay_pct, target):
    dt = dtypes.default_float()
    # one random draw, sliced (each separate draw is a separate threefry program to compile)
    shapes = [(e, w), (w,), (depth, w, w), (depth, w), (w, d_model)]
    fans = [e, e, w, w, w]
    sizes = [math.prod(sh) for sh in shapes]
    flat = jax.random.uniform(key, (sum(sizes),), dt, -1.0, 1.0)
    starts = np.cumsum([0] + sizes).tolist()
    w_in, b_in, w_hidden, b_hidden, w_out = (
        flat[starts[i]:starts[i + 1]].reshape(shapes[i]) / math.sqrt(fans[i]) for i in range(5))

    decay = jnp.abs(jnp.linspace(math.log(target) / slow_decay_pct, math.log(target) / fast_decay_pct,
                                 d_model, dtype=dt))
    return HyenaFilterParams(
        w_in=w_in, b_in=b_in, w_hidden=w_hidden, b_hidden=b_hidden, w_out=w_out,
        freq=jnp.ones((w,), dt), decay=decay)


def hyena_positional(L: int, emb_dim: int, dtype) -> jax.Array:
    """Hyena's positional features ``[L, E]``: ``t`` in [0, 1], then ``cos, -sin`` of ``f_b 2 pi l / L``."""
    bands = (emb_dim - 1) // 2
    t = jnp.linspace(0.0, 1.0, L, dtype=dtype)[:, None]
    w = 2 * math.pi * jnp.arange(L, dtype=dtype)[:, None] / L
    f = jnp.linspace(1e-4, bands - 1, bands, dtype=dtype)[None]
    return jnp.concatenate([t, jnp.cos(f * w), -jnp.sin(f * w)], axis=1)


def hyena_filter(params: HyenaFilterParams, L: int, *, shift: float = 0.0) -> Float[Array, "L D"]:
    r"""Hyena's implicit long filter ``[L, D]``.

    .. math:: h_\ell = \big(\mathrm{FFN}(z_\ell)\big) \odot \big(e^{-|\alpha| t_\ell} + \text{shift}\big),
        \quad \mathrm{FFN} = W_{\mathrm{out}}^\top \circ \sin(\omega \odot (W_{\mathrm{hidden}} \cdot + b))
        \circ \dots \circ \sin(\omega \odot (W_{\mathrm{in}}^\top z + b_{\mathrm{in}})),

    with positional features :math:`z_\ell = (t_\ell, \cos(f_b w_\ell), -\sin(f_b w_\ell))`,
    :math:`t_\ell = \ell / (L-1)` (0 when ``L = 1``), :math:`w_\ell = 2\pi\ell / L`,
    :math:`f_b` = linspace(1e-4, bands-1).

    Args:
      params: :class:`HyenaFilterParams` (from :func:`init_hyena`).
      L: filter length (static int >= 1).
      shift: constant added to the decay window (finite).

    Returns:
      ``[L, D]`` filter in the parameters' dtype.

    Raises:
      ValueError: ``L < 1``, non-finite ``shift``, parameters of inconsistent shapes.
      TypeError: ``params`` not a :class:`HyenaFilterParams`, complex parameters.

    Example:
      >>> import jax
      >>> from kjax.ssm import init_hyena, hyena_filter
      >>> hyena_filter(init_hyena(jax.random.key(0), 8), 100).shape
      (100, 8)

    References:
      Poli et al., *Hyena Hierarchy: Towards Larger Convolutional Language Models*, ICML 2023.
    """
    fn = "kjax.ssm.hyena_filter"
    dims = _checks.params(fn, params, HyenaFilterParams, AXES, "init_hyena")
    if dims["E"] < 3 or dims["E"] % 2 == 0:
        fail(fn, "params", "have `w_in` of shape [E, W] with E odd >= 3 (time plus (E-1)/2 cos/sin pairs)",
             f"`w_in` of shape {tuple(params.w_in.shape)}")
    L = check_int(fn, "L", L, minimum=1)
    _checks.finite(fn, "shift", shift)
    return _hyena_filter(params, L, shift)


@functools.partial(jax.jit, static_argnums=1)
def _hyena_filter(params, L, shift):
    dt = jnp.result_type(*params, float)
    z = hyena_positional(L, params.w_in.shape[0], dt)
    h = jnp.sin(params.freq * (z @ params.w_in + params.b_in))
    for i in range(params.w_hidden.shape[0]):
        h = jnp.sin(params.freq * (h @ params.w_hidden[i] + params.b_hidden[i]))
    h = h @ params.w_out
    t = jnp.linspace(0.0, 1.0, L, dtype=dt)[:, None]
    return h * (jnp.exp(-jnp.abs(params.decay) * t) + shift)

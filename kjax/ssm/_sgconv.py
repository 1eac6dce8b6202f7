"""SGConv's multi-scale filter: sub-kernels upsampled and decayed per scale (:func:`init_sgconv`,
:func:`sgconv_filter`)."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from kjax._src import dtypes
from kjax._src.errors import check_int
from kjax.ssm import _checks


class SGConvParams(NamedTuple):
    """SGConv sub-kernels ``[S, d, D]``: ``S`` scales of ``d`` taps per channel."""

    kernels: Float[Array, "S d D"]


#: the axes of each field, for the checks
AXES = {"kernels": ("S", "d", "D")}


def init_sgconv(key: Array, d_model: int, L: int, *, kernel_dim: int = 32) -> SGConvParams:
    """SGConv parameters covering length ``L``: ``S = 1 + ceil(log2(L / d))`` scales of ``d`` taps, N(0, 1).

    Args:
      key: PRNG key.
      d_model: channels ``D`` (>= 1).
      L: the sequence length the filter must cover (>= 1).
      kernel_dim: taps per scale ``d`` (>= 1).

    Returns:
      :class:`SGConvParams`.

    Raises:
      ValueError: non-positive sizes.

    Example:
      >>> import jax
      >>> from kjax.ssm import init_sgconv
      >>> init_sgconv(jax.random.key(0), 4, 256, kernel_dim=32).kernels.shape
      (4, 32, 4)

    References:
      Li, Cai, Zhang, Chen, Dey, *What Makes Convolutional Models Great on Long Sequence
      Modeling?*, ICLR 2023.
    """
    fn = "kjax.ssm.init_sgconv"
    d_model = check_int(fn, "d_model", d_model, minimum=1)
    L = check_int(fn, "L", L, minimum=1)
    d = check_int(fn, "kernel_dim", kernel_dim, minimum=1)
    s = 1 + max(0, math.ceil(math.log2(L / d)))
    return SGConvParams(jax.random.normal(key, (s, d, d_model), dtypes.default_float()))


@functools.lru_cache(maxsize=64)
def _interp_weights(d: int, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation by ``scale`` with half-pixel centres (``align_corners=False``)."""
    src = np.clip((np.arange(d * scale) + 0.5) / scale - 0.5, 0.0, d - 1)
    i0 = np.floor(src).astype(np.int32)
    i1 = np.minimum(i0 + 1, d - 1)
    return i0, i1, (src - i0)


def sgconv_filter(params: SGConvParams, L: int, *, decay: float = 0.5) -> Float[Array, "L D"]:
    r"""The SGConv multi-scale filter ``[L, D]``.

    .. math:: k = \mathrm{Concat}_{i=0}^{S-1}\Big(\alpha^i\, \mathrm{Up}_{2^{\max(i-1, 0)}}(k_i)\Big),

    where :math:`\mathrm{Up}_r` is linear interpolation by ``r`` with half-pixel centres
    (``align_corners=False``); scale ``i`` spans ``d 2^{max(i-1,0)}`` taps, so the total length is
    ``d 2^{S-1}``, truncated or zero-padded to ``L``. (The official code also normalises the kernel
    by its norm at initialisation; scale the sub-kernels to do the same.)

    Args:
      params: :class:`SGConvParams` with ``kernels: [S, d, D]``.
      L: filter length (static int >= 1).
      decay: :math:`\alpha \in (0, 1]`: scale ``i`` is weighted by :math:`\alpha^i`, so coarser
        (longer-range) scales get smaller weights, the SGConv prior; ``1`` turns the decay off.
        Values above 1 (growing weights) or at most 0 are rejected when static; a traced
        ``decay`` is not checked (keep it in range, e.g. through a sigmoid).

    Returns:
      ``[L, D]`` filter in the parameters' dtype.

    Raises:
      ValueError: ``L < 1``, ``decay`` outside (0, 1] or non-finite, parameters of inconsistent
        shapes.
      TypeError: ``params`` not an :class:`SGConvParams`, complex parameters.

    Example:
      >>> import jax
      >>> from kjax.ssm import init_sgconv, sgconv_filter
      >>> p = init_sgconv(jax.random.key(0), 4, 100, kernel_dim=8)
      >>> sgconv_filter(p, 100).shape
      (100, 4)

    References:
      Li, Cai, Zhang, Chen, Dey, *What Makes Convolutional Models Great on Long Sequence
      Modeling?*, ICLR 2023.
    """
    fn = "kjax.ssm.sgconv_filter"
    _checks.params(fn, params, SGConvParams, AXES, "init_sgconv")
    L = check_int(fn, "L", L, minimum=1)
    _checks.in_range(fn, "decay", decay, 0.0, 1.0)
    return _sgconv_filter(params, L, decay)


@functools.partial(jax.jit, static_argnums=1)
def _sgconv_filter(params, L, decay):
    s, d, _ = params.kernels.shape
    kernels = params.kernels.astype(jnp.result_type(params.kernels.dtype, float))
    pieces, total = [], 0
    for i in range(s):
        if total >= L:
            break
        r = 2 ** max(i - 1, 0)
        ki = kernels[i]
        if r > 1:
            i0, i1, w = _interp_weights(d, r)
            w = jnp.asarray(w, ki.dtype)[:, None]
            ki = ki[i0] * (1 - w) + ki[i1] * w
        pieces.append(ki * decay**i)
        total += d * r
    k = jnp.concatenate(pieces, axis=0)
    if k.shape[0] >= L:
        return k[:L]
    return jnp.pad(k, ((0, L - k.shape[0]), (0, 0)))

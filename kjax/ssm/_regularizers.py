"""Regularisers of long-convolution filters (Fu et al. 2023): :func:`squash` and :func:`smooth`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from kjax._src.errors import check_int, check_positive, fail
from kjax.ssm import _checks


def squash(k: Float[Array, "L D"], lam: float) -> Float[Array, "L D"]:
    r"""Squash regulariser for long-convolution filters: soft-thresholding towards sparsity.

    .. math:: \mathrm{squash}(k)_\ell = \mathrm{sign}(k_\ell)\, \max(|k_\ell| - \lambda, 0).

    Args:
      k: filter ``[L, D]`` (any shape works elementwise).
      lam: threshold :math:`\lambda \ge 0`.

    Returns:
      Array of the shape and dtype of ``k``.

    Raises:
      ValueError: negative static ``lam``.
      TypeError: complex ``k`` (integer and bool ``k`` are promoted to float).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ssm import squash
      >>> squash(jnp.array([[-1.0], [0.05], [0.5]]), 0.1).ravel().tolist()
      [-0.9, 0.0, 0.4]

    References:
      Fu et al., *Simple Hardware-Efficient Long Convolutions for Sequence Modeling*, ICML 2023.
    """
    fn = "kjax.ssm.squash"
    k = _checks.real_float(fn, "k", k)
    check_positive(fn, "lam", lam, allow_zero=True)
    return jnp.sign(k) * jnp.maximum(jnp.abs(k) - lam, 0.0)


def smooth(k: Float[Array, "L D"], width: int) -> Float[Array, "L D"]:
    r"""Smooth regulariser for long-convolution filters: a centred moving average along ``L``.

    .. math:: \mathrm{smooth}(k)_\ell = \frac{1}{p} \sum_{j=-(p-1)/2}^{(p-1)/2} k_{\ell + j}

    with zeros outside ``[0, L)`` (``AvgPool1d(p, stride=1, padding=p // 2)``), odd width ``p``.

    Args:
      k: filter ``[L, D]``.
      width: odd window ``p >= 1``.

    Returns:
      ``[L, D]``, dtype of ``k``.

    Raises:
      ValueError: rank other than 2, even or non-positive ``width``.
      TypeError: complex ``k`` (integer and bool ``k`` are promoted to float).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ssm import smooth
      >>> smooth(jnp.array([[0.0], [3.0], [0.0]]), 3).ravel().tolist()
      [1.0, 1.0, 1.0]

    References:
      Fu et al., *Simple Hardware-Efficient Long Convolutions for Sequence Modeling*, ICML 2023.
    """
    fn = "kjax.ssm.smooth"
    k = _checks.real_float(fn, "k", k)
    if k.ndim != 2:
        fail(fn, "k", "have rank 2 [L, D]", f"shape {tuple(k.shape)}")
    p = check_int(fn, "width", width, minimum=1)
    if p % 2 == 0:
        fail(fn, "width", "be odd (a centred window)", repr(p))
    h = p // 2
    total = jax.lax.reduce_window(k, jnp.zeros((), k.dtype), jax.lax.add, (p, 1), (1, 1),
                                  ((h, h), (0, 0)))
    return total / p

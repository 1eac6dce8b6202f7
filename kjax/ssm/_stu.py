"""STU: the fixed spectral filters of the Spectral Transform Unit (:func:`stu_filters`)."""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from kjax._src import dtypes
from kjax._src.errors import check_int, fail


@functools.lru_cache(maxsize=16)
def _stu_numpy(L: int, K: int) -> np.ndarray:
    i = np.arange(1, L + 1, dtype=np.float64)
    s = i[:, None] + i[None, :]
    z = 2.0 / (s**3 - s)
    w, v = np.linalg.eigh(z)
    w, v = w[::-1][:K], v[:, ::-1][:, :K]
    # sign convention: the entry of largest magnitude of each eigenvector is positive
    sign = np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(K)])
    phi = v * sign * np.clip(w, 0.0, None) ** 0.25
    phi.setflags(write=False)
    return phi


def stu_filters(L: int, K: int) -> Float[Array, "L K"]:
    r"""Spectral filters of the Spectral Transform Unit: top-``K`` eigenvectors of a Hankel matrix.

    .. math:: Z_{ij} = \frac{2}{(i+j)^3 - (i+j)}, \quad i, j = 1, \dots, L, \qquad
        Z = \sum_k \sigma_k \phi_k \phi_k^\top,

    returning :math:`\sigma_k^{1/4} \phi_k` for the ``K`` largest :math:`\sigma_k` (descending), as in
    the paper's features. The eigendecomposition runs in float64 NumPy (``O(L^3)``, cached per
    ``(L, K)``, outside any trace); the result has the default float dtype. Each eigenvector's entry
    of largest magnitude is positive (the sign is otherwise arbitrary). Convolve them with
    :func:`fftconv` (causal) against each input channel to build STU features.

    Args:
      L: sequence length (static int >= 1).
      K: number of filters (1 <= K <= L).

    Returns:
      ``[L, K]`` filters.

    Raises:
      ValueError: ``L < 1`` or ``K`` outside ``[1, L]``.

    Example:
      >>> from kjax.ssm import stu_filters
      >>> stu_filters(64, 8).shape
      (64, 8)

    References:
      Agarwal, Suo, Chen, Hazan, *Spectral State Space Models*, 2023 (arXiv:2312.06837).
    """
    fn = "kjax.ssm.stu_filters"
    L = check_int(fn, "L", L, minimum=1)
    K = check_int(fn, "K", K, minimum=1)
    if K > L:
        fail(fn, "K", f"be <= L={L}", repr(K))
    return jnp.asarray(_stu_numpy(L, K), dtypes.default_float())

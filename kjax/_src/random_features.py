"""Random projection matrices shared by kernel attention (FAVOR+) and random Fourier features.

``random_projection(key, M, d, kind=...)`` returns ``w: [M, d]`` whose rows are marginally
``N(0, I_d)``; the kinds differ in how rows within a block of ``d`` are coupled:

* ``"iid"``: independent Gaussian rows.
* ``"orthogonal"``: each block of ``d`` rows is a Haar-random orthonormal basis (QR of a Gaussian
  matrix with the sign fix) with rows rescaled by independent chi(d) norms, so each row is still
  ``N(0, I)`` (Choromanski et al., *Rethinking Attention with Performers*, ICLR 2021; Yu et al.,
  *Orthogonal Random Features*, NeurIPS 2016).
* ``"simplex"``: each block's directions are the ``d`` vertices of a regular simplex
  (``s_i . s_j = -1/(d-1)``) under a Haar-random rotation, with chi(d) norms (Reid et al.,
  *Simplex Random Features*, ICML 2023).

Any ``M``: independent blocks are stacked and the last one truncated.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, check_in, check_int, fail

KINDS = ("iid", "orthogonal", "simplex")


def _haar_orthogonal(key, d, dtype):
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, d), dtype))
    return q * jnp.sign(jnp.diagonal(r))[None, :]


def _chi_norms(key, d, dtype):
    return jnp.linalg.norm(jax.random.normal(key, (d, d), dtype), axis=-1)


def check_key(fn: str, key, arg: str = "key") -> None:
    """``key`` must be a PRNG key: a typed key (``jax.random.key``) or a raw ``uint32[2]`` one."""
    dt = getattr(key, "dtype", None)
    if dt is not None and jax.dtypes.issubdtype(dt, jax.dtypes.prng_key):
        return
    if dt == np.uint32 and np.shape(key)[-1:] == (2,):
        return
    got = f"{type(key).__name__} of dtype {dt} and shape {np.shape(key)}" if dt is not None else repr(key)
    fail(fn, arg, "be a PRNG key, e.g. jax.random.key(0)", got, cls=KjaxTypeError)


def float_dtype(fn: str, arg: str, dtype) -> np.dtype:
    """``dtype`` as a real floating NumPy dtype (None: the default float); an error names ``arg``."""
    if dtype is None:
        return dtypes.default_float()
    try:
        dt = np.dtype(dtype)
    except TypeError:
        fail(fn, arg, "be a real floating dtype (e.g. jnp.float32)", repr(dtype), cls=KjaxTypeError)
    if not jnp.issubdtype(dt, jnp.floating):
        fail(fn, arg, "be a real floating dtype (e.g. jnp.float32)", dt.name, cls=KjaxTypeError)
    return dt


def simplex_directions(d: int, dtype=np.float64) -> np.ndarray:
    """``d`` unit vectors in R^d with pairwise dot products ``-1/(d-1)`` (rows)."""
    if d == 1:
        return np.ones((1, 1), dtype)
    s = np.eye(d) - 1.0 / d
    return (s * math.sqrt(d / (d - 1))).astype(dtype)


def random_projection(key: jax.Array, num_features: int, dim: int, *, kind: str = "iid",
                      dtype=None, fn_name: str = "kjax.attention.random_projection") -> jax.Array:
    r"""Random projection ``w: [num_features, dim]`` with rows marginally :math:`\mathcal N(0, I_d)`.

    The rows feed random-feature maps (:func:`kjax.attention.favor_positive`, random Fourier
    features). Within each block of ``dim`` rows the kinds differ in how rows are coupled:

    * ``"iid"``: independent Gaussian rows.
    * ``"orthogonal"``: the block's directions are an orthonormal basis (Haar-random, QR with the
      sign fix) and the norms independent :math:`\chi_d` draws, so each row stays Gaussian while
      rows are exactly orthogonal; lowers the variance of kernel estimates.
    * ``"simplex"``: the block's directions are the ``dim`` vertices of a regular simplex
      (:math:`s_i^\top s_j = -1/(d-1)`) under a Haar-random rotation, with :math:`\chi_d` norms;
      lower variance still for positive random features.

    ``num_features`` may exceed ``dim``: independent blocks are stacked and the last one cut.

    Args:
      key: PRNG key.
      num_features: number of rows ``M >= 1``.
      dim: input dimension ``d >= 1``.
      kind: ``"iid"``, ``"orthogonal"`` or ``"simplex"``.
      dtype: a real floating output dtype (default: the default float); drawn in at least float32.
      fn_name: name used in error messages (for pillars that re-export it).

    Returns:
      ``[num_features, dim]`` projection.

    Raises:
      ValueError: ``num_features`` or ``dim`` < 1, unknown ``kind``.
      TypeError: ``key`` not a PRNG key; ``num_features`` or ``dim`` not an int; ``dtype`` not a
        real floating dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.attention import random_projection
      >>> w = random_projection(jax.random.key(0), 6, 4, kind="orthogonal")
      >>> u = w[:4] / jnp.linalg.norm(w[:4], axis=1, keepdims=True)
      >>> print(w.shape, bool(jnp.allclose(u @ u.T, jnp.eye(4), atol=1e-5)))
      (6, 4) True

    References:
      Choromanski et al., *Rethinking Attention with Performers*, ICLR 2021; Yu et al.,
      *Orthogonal Random Features*, NeurIPS 2016; Reid et al., *Simplex Random Features*, ICML 2023.
    """
    check_key(fn_name, key)
    num_features = check_int(fn_name, "num_features", num_features, minimum=1)
    dim = check_int(fn_name, "dim", dim, minimum=1)
    check_in(fn_name, "kind", kind, KINDS)
    dtype = float_dtype(fn_name, "dtype", dtype)
    acc = dtypes.accum_dtype(dtype)
    if kind == "iid":
        return jax.random.normal(key, (num_features, dim), acc).astype(dtype)
    nblocks = math.ceil(num_features / dim)
    keys = jax.random.split(key, nblocks)
    simplex = jnp.asarray(simplex_directions(dim), acc)

    def block(k):
        k_rot, k_norm = jax.random.split(k)
        rot = _haar_orthogonal(k_rot, dim, acc)
        dirs = rot.T if kind == "orthogonal" else simplex @ rot.T
        return dirs * _chi_norms(k_norm, dim, acc)[:, None]

    w = jax.vmap(block)(keys).reshape(nblocks * dim, dim)
    return w[:num_features].astype(dtype)

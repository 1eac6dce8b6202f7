"""Nystrom centres: uniform, exact ridge leverage scores, BLESS, SQUEAK or RPCholesky pivots."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float, Int

from kjax._src import dtypes
from kjax._src.errors import check_in, check_int, check_same_dim, fail
from kjax.regression import _common as c
from kjax.regression._leverage import dictionary, exact_scores, raise_if_failed
from kjax.regression._rpcholesky import rpcholesky

METHODS = ("uniform", "rls", "bless", "squeak", "rpcholesky")


def nystrom_centers(
    key: jax.Array,
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    m: int,
    *,
    method: str = "uniform",
    ridge: float | None = None,
    ridge_scaling: str = "none",
) -> Int[jax.Array, " m"]:
    r"""Indices of ``m`` distinct Nystrom centres among the rows of ``x``.

    * ``uniform``: uniform without replacement (Falkon's default);
    * ``rls``: without replacement, probability :math:`\propto \ell_i(\lambda)`, the exact ridge
      leverage scores (:math:`O(n^3)`, small ``n``);
    * ``bless``: :math:`\propto \tilde\ell_i(\lambda)` from a BLESS dictionary;
    * ``squeak``: :math:`\propto \tilde\ell_i(\lambda)` from a SQUEAK dictionary;
    * ``rpcholesky``: the pivots of randomly pivoted Cholesky (no ``ridge``).

    Args:
      key: PRNG key.
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points.
      m: number of centres, ``1 <= m <= n``.
      method: one of the names above.
      ridge: :math:`\lambda > 0` of the leverage scores (required for ``rls``, ``bless``,
        ``squeak``; usually the ridge of the regression).
      ridge_scaling: ``"none"`` (default, :math:`K + \lambda I`; alias ``"sklearn"``) or ``"n"``
        (:math:`K + n\lambda I`).

    Returns:
      ``[m]`` int indices; the centres are ``x[indices]``.

    Raises:
      ValueError: ``m > n``, unknown ``method``, missing or non-positive ``ridge`` for a
        leverage-score method, ``x`` not ``[n, d]`` with ``n, d >= 1`` or with NaN/inf.

    Example:
      >>> import jax
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import nystrom_centers
      >>> x = jax.random.normal(jax.random.key(0), (200, 3))
      >>> nystrom_centers(jax.random.key(1), rbf, x, 20, method="rls", ridge=0.2).shape
      (20,)

    References:
      Williams & Seeger, NeurIPS 2001; Rudi, Camoriano & Rosasco, NeurIPS 2015; Rudi et al.,
      NeurIPS 2018 (BLESS); Calandriello et al., AISTATS 2017 (SQUEAK); Chen et al. 2024
      (RPCholesky).
    """
    return select_centers("kjax.regression.nystrom_centers", key, kernel, x, m, method=method,
                          ridge=ridge, ridge_scaling=ridge_scaling)


def select_centers(fn, key, kernel, x, m, *, method, ridge, ridge_scaling, m_arg="m"):
    """:func:`nystrom_centers` with the name of the public function that called it (and of its
    argument for ``m``)."""
    check_in(fn, "center_method" if m_arg != "m" else "method", method, METHODS)
    kern = c.check_kernel(fn, kernel, entries=method != "uniform")
    x = c.check_x(fn, "x", x, kern, column=method != "uniform")
    n = x.shape[0]
    m = check_int(fn, m_arg, m, minimum=1)
    if m > n:
        fail(fn, m_arg, f"be at most the number of points n={n}", m)
    if method == "uniform":
        return jax.random.choice(key, n, (m,), replace=False)
    if method == "rpcholesky":
        rp = rpcholesky(key, kern, x, m)
        raise_if_failed(fn, rp.status)
        return rp.indices
    if ridge is None:
        fail(fn, "ridge", f"be given for method={method!r} (the lambda of the leverage scores)", None)
    alpha = c.check_ridge(fn, ridge, ridge_scaling, n).astype(dtypes.gram_dtype(x))
    k1, k2 = jax.random.split(key)
    if method == "rls":
        sc, status = exact_scores(kern, x, alpha)
        raise_if_failed(fn, status)
    else:
        sc = dictionary(fn, k1, kern, x, ridge=ridge, ridge_scaling=ridge_scaling, method=method).scores
    p = jnp.maximum(sc, 1e-12 * jnp.max(sc) + jnp.finfo(sc.dtype).tiny)
    return jax.random.choice(k2, n, (m,), replace=False, p=p / jnp.sum(p))


def solver_centers(fn, key, kernel, x, num_centers, centers, *, center_method, ridge, ridge_scaling):
    """The centres of a Nystrom solver (Falkon, logistic Falkon): exactly one of ``num_centers``
    (then drawn by :func:`select_centers`) and ``centers`` (then checked against ``x``)."""
    if (num_centers is None) == (centers is None):
        fail(fn, "num_centers", "be given, or `centers` be given (exactly one of the two)",
             f"num_centers={num_centers!r}, centers={'None' if centers is None else 'an array'}")
    ik = c.index_kernel(kernel)
    if centers is None and getattr(ik, "columns", None) is not None:
        fail(fn, "num_centers", "be None with a kernel precomputed(gram, columns=idx): pass "
             "centers=idx (the stored columns)", num_centers)
    if centers is None:
        idx = select_centers(fn, key, kernel, x, num_centers, method=center_method, ridge=ridge,
                             ridge_scaling=ridge_scaling, m_arg="num_centers")
        return x[idx]
    z = c.check_x(fn, "centers", centers, kernel)
    check_same_dim(fn, "x", x, "centers", z, -1, what="the feature dimension d")
    return z

"""Ridge leverage scores: exact scores, the effective dimension, and BLESS / SQUEAK dictionaries."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import dtypes, linalg
from kjax._src.errors import KjaxError, check_in, check_int, check_positive, fail
from kjax._src.status import Status
from kjax.regression import _common as c


@c.kernel_jit(static_argnums=(3,))
def exact_scores(kern, x, alpha, jitter=None):
    """``(scores [n], status)``: exact ridge leverage scores ``1 - alpha [(K + alpha I)^-1]_ii``."""
    k = kernels.gram(kern, x)
    n = x.shape[0]
    low, _, status = linalg.robust_cholesky(k + alpha * jnp.eye(n, dtype=k.dtype), jitter=jitter)
    linv = jax.scipy.linalg.solve_triangular(low, jnp.eye(n, dtype=k.dtype), lower=True)
    inv_diag = jnp.sum(linv * linv, axis=0)
    return jnp.clip(1.0 - alpha * inv_diag, 0.0, 1.0), status


def raise_if_failed(fn: str, status) -> None:
    """Raise for a concrete ``NOT_PSD`` status of a function that returns bare arrays (no state)."""
    if c.is_concrete(status) and int(status) == Status.NOT_PSD:
        raise KjaxError(f"{fn}: `kernel` must be positive definite; its matrix on `x` (plus the ridge) "
                        "is not, even with the largest jitter (or has no positive eigenvalue).")


def ridge_leverage_scores(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    *,
    ridge: float,
    ridge_scaling: str = "none",
    jitter: float | None = None,
) -> Float[Array, " n"]:
    r"""Exact ridge leverage scores :math:`\ell_i(\lambda) = \big(K (K + \alpha I)^{-1}\big)_{ii}`.

    :math:`\alpha = \lambda` for ``ridge_scaling="none"`` (the default) or :math:`\alpha = n\lambda`
    for ``"n"`` (the :math:`\lambda` of the Nystrom literature). Computed as
    :math:`1 - \alpha\,[(K + \alpha I)^{-1}]_{ii}` from a (jittered) Cholesky factor:
    :math:`O(n^3)`, for small ``n`` and as the oracle of the sampled approximations
    (:func:`leverage_dictionary`).

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points.
      ridge: :math:`\lambda > 0`.
      ridge_scaling: ``"none"`` (alias ``"sklearn"``) or ``"n"``.
      jitter: relative jitter for a failed Cholesky (default ``10 eps``).

    Returns:
      ``[n]`` scores in ``[0, 1]``; their sum is :func:`effective_dimension`.

    Raises:
      ValueError: ``x`` not ``[n, d]`` with ``n, d >= 1`` or with NaN/inf, ``ridge <= 0``, a kernel
        matrix that is not positive definite even with jitter (concrete inputs; under ``jit`` the
        scores are NaN then).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import ridge_leverage_scores
      >>> s = ridge_leverage_scores(rbf, jnp.linspace(0.0, 5.0, 50)[:, None], ridge=0.05)
      >>> bool(jnp.all((s >= 0) & (s <= 1)))
      True

    References:
      Alaoui & Mahoney, *Fast randomized kernel ridge regression with statistical guarantees*,
      NeurIPS 2015; Rudi, Camoriano & Rosasco, *Less is more: Nystrom computational
      regularization*, NeurIPS 2015.
    """
    fn = "kjax.regression.ridge_leverage_scores"
    kern = c.check_kernel(fn, kernel)
    x = c.check_x(fn, "x", x, kern)
    jitter = c.check_jitter(fn, jitter)
    alpha = c.check_ridge(fn, ridge, ridge_scaling, x.shape[0])
    scores, status = exact_scores(kern, x, alpha.astype(dtypes.gram_dtype(x)), jitter)
    raise_if_failed(fn, status)
    return scores


def effective_dimension(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    *,
    ridge: float | Float[ArrayLike, " R"],
    ridge_scaling: str = "none",
) -> Float[Array, " *R"]:
    r"""Effective dimension :math:`d_{\text{eff}}(\lambda) = \operatorname{tr} K (K + \alpha I)^{-1}
    = \sum_j s_j / (s_j + \alpha)`.

    From the eigenvalues :math:`s_j` of :math:`K` (one ``eigvalsh``, negative ones clipped to zero;
    ``ridge`` may be an array). :math:`\alpha = \lambda` (``"none"``, default) or :math:`n\lambda`
    (``"n"``).

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points.
      ridge: :math:`\lambda > 0`, scalar or ``[R]``.
      ridge_scaling: ``"none"`` (alias ``"sklearn"``) or ``"n"``.

    Returns:
      ``[]`` or ``[R]``.

    Raises:
      ValueError: ``x`` not ``[n, d]`` with ``n, d >= 1`` or with NaN/inf, ``ridge <= 0``, a kernel
        matrix with no positive eigenvalue (concrete inputs).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import effective_dimension
      >>> d = effective_dimension(rbf, jnp.linspace(0.0, 5.0, 50)[:, None], ridge=jnp.array([5.0, 5e-3]))
      >>> bool(d[0] < d[1] < 50)
      True

    References:
      Zhang, *Learning bounds for kernel regression using effective data dimensionality*, Neural
      Computation 2005; Caponnetto & De Vito, Found. Comput. Math. 2007.
    """
    fn = "kjax.regression.effective_dimension"
    kern = c.check_kernel(fn, kernel)
    x = c.check_x(fn, "x", x, kern)
    alpha = c.check_ridge(fn, ridge, ridge_scaling, x.shape[0], allow_array=True)
    deff, status = _deff_core(kern, x, alpha)
    raise_if_failed(fn, status)
    return deff


@c.kernel_jit()
def _deff_core(kern, x, alpha):
    s, _, status = linalg.psd_eigh(kernels.gram(kern, x))
    a = alpha.astype(s.dtype)
    return jnp.sum(s / (s + a[..., None]), axis=-1), status


# ---------------------------------------------------------------------------------------------
# approximate leverage scores from a weighted dictionary


def approximate_scores(fn, kern, x, xd, wd, alpha, *, jitter=None):
    r"""Nystrom-approximated RLS of every row of ``x`` from a weighted dictionary ``(xd, wd)``.

    :math:`\tilde\ell_i = \big(k_{ii} - k_{iD} S (S K_{DD} S + \alpha I)^{-1} S k_{Di}\big)/\alpha`,
    :math:`S = \operatorname{diag}(\sqrt{w})` (Calandriello et al. 2017, Rudi et al. 2018).
    """
    if isinstance(x, jax.core.Tracer) or isinstance(xd, jax.core.Tracer):
        return _approx_scores_jit(kern, x, xd, wd, alpha, jitter)
    return jnp.asarray(_approx_scores_host(fn, kern, x, xd, np.asarray(wd), float(alpha), jitter))


def _bucket(k: int) -> int:
    return max(16, 1 << max(0, (int(k) - 1).bit_length()))


def _kernel_host(kern, a, b):
    """``kern(a, b)`` as float64 NumPy, evaluated on row counts padded to powers of two (so the
    host loops of BLESS/SQUEAK reuse a few compiled shapes)."""
    na, nb = a.shape[0], b.shape[0]
    ba, bb = _bucket(na), _bucket(nb)
    ap = np.concatenate([a, np.repeat(a[-1:], ba - na, axis=0)])
    bp = np.concatenate([b, np.repeat(b[-1:], bb - nb, axis=0)])
    return np.asarray(_kern_jit(kern, ap, bp), np.float64)[:na, :nb]


def _diag_host(kern, a):
    na = a.shape[0]
    ap = np.concatenate([a, np.repeat(a[-1:], _bucket(na) - na, axis=0)])
    return np.asarray(_diag_jit(kern, ap), np.float64)[:na]


@c.kernel_jit()
def _diag_jit(kern, a):
    return kernels.kernel_diag(kern, a)


@c.kernel_jit()
def _kern_jit(kern, a, b):
    return kern(a, b)


def _approx_scores_host(fn, kern, x, xd, wd, alpha, jitter):
    """NumPy/SciPy version of :func:`approximate_scores` for the host loops."""
    import scipy.linalg

    x, xd = np.asarray(x), np.asarray(xd)
    kdd = _kernel_host(kern, xd, xd)
    sq = np.sqrt(wd)
    b = sq[:, None] * kdd * sq[None, :] + alpha * np.eye(len(xd))
    low, _ = linalg.robust_cholesky_np(b, jitter=jitter)
    if low is None:
        raise KjaxError(f"{fn}: the dictionary's kernel matrix plus the ridge is not positive definite "
                        "even with the largest jitter; `kernel` must be a positive-definite kernel.")
    out = np.empty(len(x))
    for s in range(0, len(x), 4096):
        xs = x[s:s + 4096]
        z = scipy.linalg.solve_triangular(low, _kernel_host(kern, xd, xs) * sq[:, None], lower=True)
        diag = _diag_host(kern, xs)
        out[s:s + 4096] = (diag - np.sum(z * z, axis=0)) / alpha
    return np.clip(out, 0.0, 1.0)


@c.kernel_jit(static_argnums=(5,))
def _approx_scores_jit(kern, x, xd, wd, alpha, jitter):
    kdd = kern(xd, xd)
    dt = kdd.dtype
    sq = jnp.sqrt(wd.astype(dt))
    b = sq[:, None] * kdd * sq[None, :] + alpha * jnp.eye(xd.shape[0], dtype=dt)
    low, _, _ = linalg.robust_cholesky(b, jitter=jitter)
    kdx = kernels.gram(kern, xd, x, block_size=(xd.shape[0], 2048)) * sq[:, None]
    z = jax.scipy.linalg.solve_triangular(low, kdx, lower=True)
    diag = kernels.kernel_diag(kern, x)
    return jnp.clip((diag - jnp.sum(z * z, axis=0)) / alpha, 0.0, 1.0)


class RLSDictionary(NamedTuple):
    """A weighted dictionary of points whose Nystrom approximation gives accurate RLS.

    Attributes:
      indices: ``[D]`` int indices into ``x`` (distinct).
      weights: ``[D]`` importance weights (inverse inclusion probabilities).
      scores: ``[n]`` approximate ridge leverage scores of every point from the dictionary.
      effective_dimension: the estimate :math:`\\sum_i \\tilde\\ell_i` of :math:`d_{eff}`.
    """

    indices: Int[Array, " D"]
    weights: Float[Array, " D"]
    scores: Float[Array, " n"]
    effective_dimension: Float[Array, ""]


def _bless(fn, rng, kern, x, alpha, n, q, q1, q2, jitter):
    kappa2 = float(np.max(_diag_host(kern, x)))
    lam = float(alpha) / n
    lam_h = kappa2  # at lambda = kappa^2, d_eff <= 1
    idx = np.zeros(0, np.int64)
    w = np.zeros(0)
    levels = max(1, math.ceil(math.log(max(lam_h / lam, 1.0 + 1e-12)) / math.log(q)))
    for h in range(levels):
        lam_h = max(lam_h / q, lam) if h < levels - 1 else lam
        r = int(min(n, math.ceil(q1 * kappa2 / lam_h)))
        u = np.sort(rng.choice(n, size=r, replace=False))
        if idx.size == 0:
            sc = _diag_host(kern, x[u]) / (lam_h * n)  # empty dictionary
            sc = np.clip(sc, 0.0, 1.0)
        else:
            sc = np.asarray(approximate_scores(fn, kern, x[u], x[idx], jnp.asarray(w), lam_h * n,
                                               jitter=jitter))
        sc = np.maximum(sc, 1e-12)
        deff = n / r * float(sc.sum())
        m = max(1, int(math.ceil(q2 * deff)))
        p = sc / sc.sum()
        pick = rng.choice(r, size=m, replace=True, p=p)
        uniq, counts = np.unique(pick, return_counts=True)
        idx = u[uniq]
        # importance weight: copies drawn / expected copies per original data point
        w = counts / (m * p[uniq] * r / n)
    return idx, w


def _squeak(fn, rng, kern, x, alpha, n, qbar, chunk, jitter):
    idx = np.zeros(0, np.int64)
    p = np.zeros(0)
    order = rng.permutation(n)
    for start in range(0, n, chunk):
        new = order[start:start + chunk]
        cand = np.concatenate([idx, new])
        pc = np.concatenate([p, np.ones(len(new))])
        sc = np.asarray(approximate_scores(fn, kern, x[cand], x[cand], jnp.asarray(1.0 / pc), alpha,
                                           jitter=jitter))
        pnew = np.minimum(qbar * sc, pc)
        keep = rng.random(len(cand)) < pnew / pc
        idx, p = cand[keep], pnew[keep]
    return idx, 1.0 / p


def leverage_dictionary(
    key: jax.Array,
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    *,
    ridge: float,
    ridge_scaling: str = "none",
    method: str = "bless",
    oversampling: float = 2.0,
    chunk_size: int = 256,
    jitter: float | None = None,
) -> RLSDictionary:
    r"""A small weighted dictionary approximating the ridge leverage scores, without the ``n^3``.

    * ``"bless"`` (Rudi et al. 2018): a path :math:`\lambda_h = \kappa^2 q^{-h}` down to
      :math:`\lambda` (``"n"``-scaled); at each level a uniform subset of size
      :math:`\min(n, 2\kappa^2/\lambda_h)` is scored against the previous level's dictionary
      and ``oversampling`` :math:`\times \tilde d_{eff}` points are drawn by those scores.
    * ``"squeak"`` (Calandriello et al. 2017): one sequential pass over chunks of
      ``chunk_size`` points; each dictionary point keeps inclusion probability
      :math:`p_i = \min(\bar q\,\tilde\ell_i, p_i^{old})` and survives a chunk with probability
      :math:`p_i / p_i^{old}`.

    Either way the dictionary size is :math:`O(d_{eff}(\lambda))` and the final approximate
    scores :math:`\tilde\ell_i` (see :func:`ridge_leverage_scores`) are returned for every point.
    This runs a host loop (dictionary sizes are data dependent): not under ``jit``.

    Args:
      key: PRNG key.
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points (concrete).
      ridge: :math:`\lambda > 0`.
      ridge_scaling: ``"none"`` (default, :math:`\alpha = \lambda`; alias ``"sklearn"``) or ``"n"``
        (:math:`\alpha = n\lambda`).
      method: ``"bless"`` or ``"squeak"``.
      oversampling: ``q2`` of BLESS / :math:`\bar q` of SQUEAK (> 0).
      chunk_size: points per step of SQUEAK (>= 1).
      jitter: relative jitter for the dictionary Cholesky factors.

    Returns:
      :class:`RLSDictionary`.

    Raises:
      ValueError: bad ``method``, ``ridge <= 0``, ``oversampling <= 0``, ``chunk_size < 1``,
        ``x`` not ``[n, d]`` with ``n, d >= 1`` or with NaN/inf, traced inputs, a kernel that is not
        positive definite.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import leverage_dictionary
      >>> x = jax.random.normal(jax.random.key(0), (300, 2))
      >>> dic = leverage_dictionary(jax.random.key(1), rbf, x, ridge=1e-3, ridge_scaling="n")
      >>> bool(dic.indices.shape[0] < 300), dic.scores.shape
      (True, (300,))

    References:
      Rudi, Calandriello, Carratino & Rosasco, *On fast leverage score sampling and optimal
      learning* (BLESS), NeurIPS 2018; Calandriello, Lazaric & Valko, *Distributed adaptive
      sampling for kernel matrix approximation* (SQUEAK), AISTATS 2017.
    """
    fn = "kjax.regression.leverage_dictionary"
    return dictionary(fn, key, kernel, x, ridge=ridge, ridge_scaling=ridge_scaling, method=method,
                      oversampling=oversampling, chunk_size=chunk_size, jitter=jitter)


def dictionary(fn, key, kernel, x, *, ridge, ridge_scaling, method, oversampling=2.0, chunk_size=256,
               jitter=None) -> RLSDictionary:
    """:func:`leverage_dictionary` with the name of the public function that called it."""
    check_in(fn, "method", method, ("bless", "squeak"))
    kern = c.check_kernel(fn, kernel)
    if not c.is_concrete(x, key):
        fail(fn, "x", "be a concrete array (this function runs a host loop, not under jit)",
             "a traced value")
    x = c.check_x(fn, "x", x, kern)
    check_positive(fn, "oversampling", oversampling)
    chunk = check_int(fn, "chunk_size", chunk_size, minimum=1)
    jitter = c.check_jitter(fn, jitter)
    n = x.shape[0]
    alpha = float(c.check_ridge(fn, ridge, ridge_scaling, n))
    if not float(np.max(_diag_host(kern, np.asarray(x)))) > 0:
        raise KjaxError(f"{fn}: `kernel` must be positive definite; got max k(x_i, x_i) <= 0.")
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if method == "bless":
        idx, w = _bless(fn, rng, kern, np.asarray(x), alpha, n, 3.0, 2.0, float(oversampling), jitter)
    else:
        idx, w = _squeak(fn, rng, kern, np.asarray(x), alpha, n, float(oversampling), chunk, jitter)
    if idx.size == 0:  # degenerate (huge ridge): keep one point so the approximation is defined
        idx, w = np.zeros(1, np.int64), np.ones(1)
    sc = approximate_scores(fn, kern, x, x[idx], jnp.asarray(w, x.dtype), alpha, jitter=jitter)
    return RLSDictionary(jnp.asarray(idx), jnp.asarray(w, sc.dtype), sc, jnp.sum(sc))

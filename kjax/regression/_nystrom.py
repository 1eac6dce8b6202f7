"""Nystrom centres: ridge leverage scores (exact, BLESS, SQUEAK), RPCholesky, effective dimension."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src.errors import KjaxError, check_in, check_int, fail
from kjax.regression import _common as c

METHODS = ("uniform", "rls", "bless", "squeak", "rpcholesky")


@jax.jit(static_argnums=(0, 3))
def _exact_scores(kern, x, alpha, jitter=None):
    k = kernels.gram(kern, x)
    n = x.shape[0]
    low, _, _ = c.robust_cholesky(k + alpha * jnp.eye(n, dtype=k.dtype), jitter=jitter)
    linv = jax.scipy.linalg.solve_triangular(low, jnp.eye(n, dtype=k.dtype), lower=True)
    inv_diag = jnp.sum(linv * linv, axis=0)
    return jnp.clip(1.0 - alpha * inv_diag, 0.0, 1.0)


def ridge_leverage_scores(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    *,
    ridge: float,
    ridge_scaling: str = "n",
) -> Float[Array, " n"]:
    r"""Exact ridge leverage scores :math:`\ell_i(\lambda) = \big(K (K + \alpha I)^{-1}\big)_{ii}`.

    :math:`\alpha = n\lambda` for ``ridge_scaling="n"`` (the default, as in the Nystrom literature)
    or :math:`\alpha = \lambda` for ``"sklearn"``. Computed as
    :math:`1 - \alpha\,[(K + \alpha I)^{-1}]_{ii}` from a Cholesky factor: :math:`O(n^3)`, for
    small ``n`` and as the oracle of the sampled approximations (:func:`leverage_dictionary`).

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points.
      ridge: :math:`\lambda > 0`.
      ridge_scaling: ``"n"`` or ``"sklearn"``.

    Returns:
      ``[n]`` scores in ``[0, 1]``; their sum is :func:`effective_dimension`.

    Raises:
      ValueError: ``x`` not ``[n, d]`` or with NaN/inf, ``ridge <= 0``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import ridge_leverage_scores
      >>> s = ridge_leverage_scores(rbf, jnp.linspace(0.0, 5.0, 50)[:, None], ridge=1e-3)
      >>> bool(jnp.all((s >= 0) & (s <= 1)))
      True

    References:
      Alaoui & Mahoney, *Fast randomized kernel ridge regression with statistical guarantees*,
      NeurIPS 2015; Rudi, Camoriano & Rosasco, *Less is more: Nystrom computational
      regularization*, NeurIPS 2015.
    """
    fn = "kjax.regression.ridge_leverage_scores"
    kern = c.check_kernel(fn, kernel)
    x = c.check_x(fn, "x", x)
    alpha = c.check_ridge(fn, ridge, ridge_scaling, x.shape[0])
    return _exact_scores(kern, x, alpha.astype(c.dtypes.gram_dtype(x)))


def effective_dimension(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    *,
    ridge: float | Float[ArrayLike, " R"],
    ridge_scaling: str = "n",
) -> Float[Array, " *R"]:
    r"""Effective dimension :math:`d_{\text{eff}}(\lambda) = \operatorname{tr} K (K + \alpha I)^{-1}
    = \sum_j s_j / (s_j + \alpha)`.

    From the eigenvalues :math:`s_j` of :math:`K` (one ``eigvalsh``; ``ridge`` may be an array).
    :math:`\alpha = n\lambda` (``"n"``, default) or :math:`\lambda` (``"sklearn"``).

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points.
      ridge: :math:`\lambda > 0`, scalar or ``[R]``.
      ridge_scaling: ``"n"`` or ``"sklearn"``.

    Returns:
      ``[]`` or ``[R]``.

    Raises:
      ValueError: ``x`` not ``[n, d]`` or with NaN/inf, ``ridge <= 0``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import effective_dimension
      >>> d = effective_dimension(rbf, jnp.linspace(0.0, 5.0, 50)[:, None], ridge=jnp.array([1e-1, 1e-4]))
      >>> bool(d[0] < d[1] < 50)
      True

    References:
      Zhang, *Learning bounds for kernel regression using effective data dimensionality*, Neural
      Computation 2005; Caponnetto & De Vito, Found. Comput. Math. 2007.
    """
    fn = "kjax.regression.effective_dimension"
    kern = c.check_kernel(fn, kernel)
    x = c.check_x(fn, "x", x)
    alpha = c.check_ridge(fn, ridge, ridge_scaling, x.shape[0], allow_array=True)
    return _deff_core(kern, x, alpha)


@jax.jit(static_argnums=0)
def _deff_core(kern, x, alpha):
    s = jnp.maximum(jnp.linalg.eigvalsh(kernels.gram(kern, x)), 0.0)
    a = alpha.astype(s.dtype)
    return jnp.sum(s / (s + a[..., None]), axis=-1)


# ---------------------------------------------------------------------------------------------
# approximate leverage scores from a weighted dictionary


def approximate_scores(kern, x, xd, wd, alpha, *, jitter=None):
    r"""Nystrom-approximated RLS of every row of ``x`` from a weighted dictionary ``(xd, wd)``.

    :math:`\tilde\ell_i = \big(k_{ii} - k_{iD} S (S K_{DD} S + \alpha I)^{-1} S k_{Di}\big)/\alpha`,
    :math:`S = \operatorname{diag}(\sqrt{w})` (Calandriello et al. 2017, Rudi et al. 2018).
    """
    if isinstance(x, jax.core.Tracer) or isinstance(xd, jax.core.Tracer):
        return _approx_scores_jit(kern, x, xd, wd, alpha, jitter)
    return jnp.asarray(_approx_scores_host(kern, x, xd, np.asarray(wd), float(alpha), jitter))


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


@jax.jit(static_argnums=0)
def _diag_jit(kern, a):
    return kernels.kernel_diag(kern, a)


@jax.jit(static_argnums=0)
def _kern_jit(kern, a, b):
    return kern(a, b)


def _approx_scores_host(kern, x, xd, wd, alpha, jitter):
    """NumPy/SciPy version of :func:`approximate_scores` for the host loops."""
    import scipy.linalg

    x, xd = np.asarray(x), np.asarray(xd)
    kdd = _kernel_host(kern, xd, xd)
    sq = np.sqrt(wd)
    b = sq[:, None] * kdd * sq[None, :] + alpha * np.eye(len(xd))
    scale = max(float(np.mean(np.abs(np.diag(b)))), 1e-300)
    base = 10 * np.finfo(np.float64).eps if jitter is None else float(jitter)
    for k in range(6):
        try:
            low = np.linalg.cholesky(b + (0.0 if k == 0 else base * 10.0 ** (k - 1) * scale)
                                     * np.eye(len(xd)))
            break
        except np.linalg.LinAlgError:
            continue
    else:  # pragma: no cover - alpha > 0 makes b positive definite
        raise KjaxError("kjax.regression: the dictionary Gram matrix is not positive definite.")
    out = np.empty(len(x))
    for s in range(0, len(x), 4096):
        xs = x[s:s + 4096]
        z = scipy.linalg.solve_triangular(low, _kernel_host(kern, xd, xs) * sq[:, None], lower=True)
        diag = _diag_host(kern, xs)
        out[s:s + 4096] = (diag - np.sum(z * z, axis=0)) / alpha
    return np.clip(out, 0.0, 1.0)


def _bucket(k: int) -> int:
    return max(16, 1 << max(0, (int(k) - 1).bit_length()))


@jax.jit(static_argnums=(0, 5))
def _approx_scores_jit(kern, x, xd, wd, alpha, jitter):
    kdd = kern(xd, xd)
    dt = kdd.dtype
    sq = jnp.sqrt(wd.astype(dt))
    b = sq[:, None] * kdd * sq[None, :] + alpha * jnp.eye(xd.shape[0], dtype=dt)
    low, _, _ = c.robust_cholesky(b, jitter=jitter)
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


def _bless(rng, kern, x, alpha, n, q, q1, q2, jitter):
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
            sc = np.asarray(approximate_scores(kern, x[u], x[idx], jnp.asarray(w), lam_h * n,
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


def _squeak(rng, kern, x, alpha, n, qbar, chunk, jitter):
    idx = np.zeros(0, np.int64)
    p = np.zeros(0)
    order = rng.permutation(n)
    for start in range(0, n, chunk):
        new = order[start:start + chunk]
        cand = np.concatenate([idx, new])
        pc = np.concatenate([p, np.ones(len(new))])
        sc = np.asarray(approximate_scores(kern, x[cand], x[cand], jnp.asarray(1.0 / pc), alpha,
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
    ridge_scaling: str = "n",
    method: str = "bless",
    oversampling: float = 2.0,
    chunk_size: int = 256,
    jitter: float | None = None,
) -> RLSDictionary:
    r"""A small weighted dictionary approximating the ridge leverage scores, without the ``n^3``.

    * ``"bless"`` (Rudi et al. 2018): a path :math:`\lambda_h = \kappa^2 q^{-h}` down to
      :math:`\lambda`; at each level a uniform subset of size
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
      ridge_scaling: ``"n"`` (default, :math:`\alpha = n\lambda`) or ``"sklearn"``.
      method: ``"bless"`` or ``"squeak"``.
      oversampling: ``q2`` of BLESS / :math:`\bar q` of SQUEAK.
      chunk_size: points per step of SQUEAK.
      jitter: relative jitter for the dictionary Cholesky factors.

    Returns:
      :class:`RLSDictionary`.

    Raises:
      ValueError: bad ``method``, ``ridge <= 0``, ``x`` not ``[n, d]`` or with NaN/inf, traced
        inputs.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import leverage_dictionary
      >>> x = jax.random.normal(jax.random.key(0), (300, 2))
      >>> dic = leverage_dictionary(jax.random.key(1), rbf, x, ridge=1e-3)
      >>> bool(dic.indices.shape[0] < 300), dic.scores.shape
      (True, (300,))

    References:
      Rudi, Calandriello, Carratino & Rosasco, *On fast leverage score sampling and optimal
      learning* (BLESS), NeurIPS 2018; Calandriello, Lazaric & Valko, *Distributed adaptive
      sampling for kernel matrix approximation* (SQUEAK), AISTATS 2017.
    """
    fn = "kjax.regression.leverage_dictionary"
    check_in(fn, "method", method, ("bless", "squeak"))
    kern = c.check_kernel(fn, kernel)
    if not c.is_concrete(x, key):
        fail(fn, "x", "be a concrete array (this function runs a host loop, not under jit)",
             "a traced value")
    x = c.check_x(fn, "x", x)
    n = x.shape[0]
    alpha = float(c.check_ridge(fn, ridge, ridge_scaling, n))
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if method == "bless":
        idx, w = _bless(rng, kern, np.asarray(x), alpha, n, 3.0, 2.0, oversampling, jitter)
    else:
        chunk = check_int(fn, "chunk_size", chunk_size, minimum=1)
        idx, w = _squeak(rng, kern, np.asarray(x), alpha, n, oversampling, chunk, jitter)
    if idx.size == 0:  # degenerate (huge ridge): keep one point so the approximation is defined
        idx, w = np.zeros(1, np.int64), np.ones(1)
    sc = approximate_scores(kern, x, x[idx], jnp.asarray(w, x.dtype), alpha, jitter=jitter)
    return RLSDictionary(jnp.asarray(idx), jnp.asarray(w, sc.dtype), sc, jnp.sum(sc))


# ---------------------------------------------------------------------------------------------
# randomly pivoted Cholesky


class RPCholeskyState(NamedTuple):
    """Randomly pivoted partial Cholesky :math:`K \\approx F F^\\top`.

    Attributes:
      indices: ``[m]`` pivots (distinct rows of ``x``).
      factor: ``[n, m]`` factor ``F``.
      residual_trace: ``[m]`` :math:`\\operatorname{tr}(K - F_{:, :i+1} F_{:, :i+1}^\\top)` after each
        step (non-increasing).
    """

    indices: Int[Array, " m"]
    factor: Float[Array, "n m"]
    residual_trace: Float[Array, " m"]


def rpcholesky(
    key: jax.Array,
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    m: int,
) -> RPCholeskyState:
    r"""Randomly pivoted Cholesky: ``m`` pivots, each drawn with probability proportional to the
    diagonal of the current residual :math:`K - F F^\top`.

    Step ``i``: draw :math:`s \sim d / \sum d`, :math:`g = K_{:, s} - F F_{s,:}^\top`,
    :math:`F_{:, i} = g / \sqrt{g_s}`, :math:`d \leftarrow d - F_{:, i}^2`. Cost :math:`O(n m^2)`
    and ``m`` kernel columns; jittable (``lax.fori_loop``).

    Args:
      key: PRNG key.
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points.
      m: number of pivots, a Python int with ``1 <= m <= n``.

    Returns:
      :class:`RPCholeskyState`.

    Raises:
      ValueError: ``m > n`` or ``m < 1``, ``x`` not ``[n, d]`` or with NaN/inf.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import rpcholesky
      >>> st = rpcholesky(jax.random.key(0), rbf, jax.random.normal(jax.random.key(1), (100, 2)), 20)
      >>> bool(jnp.all(jnp.diff(st.residual_trace) <= 1e-9))
      True

    References:
      Chen, Epperly, Tropp & Webber, *Randomly pivoted Cholesky: practical approximation of a
      kernel matrix with few entry evaluations*, Comm. Pure Appl. Math. 2024.
    """
    fn = "kjax.regression.rpcholesky"
    kern = c.check_kernel(fn, kernel)
    x = c.check_x(fn, "x", x)
    n = x.shape[0]
    m = check_int(fn, "m", m, minimum=1)
    if m > n:
        fail(fn, "m", f"be at most the number of points n={n}", m)
    d0 = kernels.kernel_diag(kern, x)
    dt = d0.dtype
    keys = jax.random.split(key, m)

    def body(i, carry):
        f, d, idx, tr = carry
        logits = jnp.where(d > 0, jnp.log(jnp.maximum(d, jnp.finfo(dt).tiny)), -jnp.inf)
        # every remaining diagonal entry 0: fall back to uniform over unpicked points
        picked = jnp.zeros(n, bool).at[idx].set(jnp.arange(m) < i)
        logits = jnp.where(jnp.all(d <= 0), jnp.where(picked, -jnp.inf, 0.0), logits)
        s = jax.random.categorical(keys[i], logits).astype(jnp.int32)
        col = kern(x, jax.lax.dynamic_slice_in_dim(x, s, 1, axis=0))[:, 0].astype(dt)
        g = col - f @ f[s]
        piv = jnp.maximum(g[s], jnp.finfo(dt).tiny)
        newcol = g / jnp.sqrt(piv)
        f = f.at[:, i].set(newcol)
        d = jnp.maximum(d - newcol * newcol, 0.0).at[s].set(0.0)
        return f, d, idx.at[i].set(s), tr.at[i].set(jnp.sum(d))

    init = (jnp.zeros((n, m), dt), d0, jnp.zeros(m, jnp.int32), jnp.zeros(m, dt))
    f, _, idx, tr = jax.lax.fori_loop(0, m, body, init)
    return RPCholeskyState(idx, f, tr)


def nystrom_centers(
    key: jax.Array,
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    m: int,
    *,
    method: str = "uniform",
    ridge: float | None = None,
    ridge_scaling: str = "n",
) -> Int[Array, " m"]:
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
      ridge_scaling: ``"n"`` (default) or ``"sklearn"``.

    Returns:
      ``[m]`` int indices; the centres are ``x[indices]``.

    Raises:
      ValueError: ``m > n``, unknown ``method``, missing or non-positive ``ridge`` for a
        leverage-score method, ``x`` not ``[n, d]`` or with NaN/inf.

    Example:
      >>> import jax
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import nystrom_centers
      >>> x = jax.random.normal(jax.random.key(0), (200, 3))
      >>> nystrom_centers(jax.random.key(1), rbf, x, 20, method="rls", ridge=1e-3).shape
      (20,)

    References:
      Williams & Seeger, NeurIPS 2001; Rudi, Camoriano & Rosasco, NeurIPS 2015; Rudi et al.,
      NeurIPS 2018 (BLESS); Calandriello et al., AISTATS 2017 (SQUEAK); Chen et al. 2024
      (RPCholesky).
    """
    fn = "kjax.regression.nystrom_centers"
    check_in(fn, "method", method, METHODS)
    kern = c.check_kernel(fn, kernel)
    x = c.check_x(fn, "x", x)
    n = x.shape[0]
    m = check_int(fn, "m", m, minimum=1)
    if m > n:
        fail(fn, "m", f"be at most the number of points n={n}", m)
    if method == "uniform":
        return jax.random.choice(key, n, (m,), replace=False)
    if method == "rpcholesky":
        return rpcholesky(key, kern, x, m).indices
    if ridge is None:
        fail(fn, "ridge", f"be given for method={method!r} (the lambda of the leverage scores)", None)
    alpha = c.check_ridge(fn, ridge, ridge_scaling, n).astype(c.dtypes.gram_dtype(x))
    k1, k2 = jax.random.split(key)
    if method == "rls":
        sc = _exact_scores(kern, x, alpha)
    else:
        sc = leverage_dictionary(k1, kern, x, ridge=ridge, ridge_scaling=ridge_scaling,
                                 method=method).scores
    p = jnp.maximum(sc, 1e-12 * jnp.max(sc) + jnp.finfo(sc.dtype).tiny)
    return jax.random.choice(k2, n, (m,), replace=False, p=p / jnp.sum(p))

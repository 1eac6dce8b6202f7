"""scikit-learn estimators over :mod:`kjax.regression`: code written for scikit-learn ports by
changing one import.

* :class:`KernelRidge` -- ``sklearn.kernel_ridge.KernelRidge``'s parameters and values
  (``sample_weight``, ``kernel="precomputed"``, one ``alpha`` per target, ``alpha=0``);
* :class:`FalkonRegressor` -- Nystrom KRR by preconditioned CG (:func:`kjax.regression.falkon_fit`),
  with the parameters of the Falkon library's ``falkon.Falkon`` (``penalty``, ``M``, ...);
* :class:`EigenProRegressor` -- EigenPro 2 (:func:`kjax.regression.eigenpro_fit`), with the
  parameters of scikit-learn-extra's ``EigenProRegressor`` (``n_epoch``, ``n_components``, ...);
* :class:`GaussianProcessRegressor` -- ``sklearn.gaussian_process.GaussianProcessRegressor``:
  ``normalize_y``, ``predict(return_std=, return_cov=)``, ``sample_y`` and
  ``log_marginal_likelihood(theta, eval_gradient=True)`` with the gradient from ``jax.grad``.

scikit-learn is an optional dependency (``pip install 'kjax[sklearn]'``): ``import kjax.regression``
never imports it, ``import kjax.regression.sklearn`` does.

**Kernels.** ``kernel`` is a kjax kernel (a :class:`kjax.kernels.Kernel`, a kjax kernel function
or a ``functools.partial`` of one, or any batched ``k(x1, x2) -> [n1, n2]``; not scikit-learn's
per-pair callables), or one of scikit-learn's names with its ``gamma``, ``degree`` and ``coef0``:
``"linear"``, ``"rbf"``, ``"poly"`` / ``"polynomial"``, ``"laplacian"`` (the L1 distance, as
scikit-learn), ``"sigmoid"``, ``"cosine"``, ``"chi2"``, ``"additive_chi2"`` (and ``"precomputed"``
for :class:`KernelRidge`). ``gamma=None`` means ``1 / n_features`` (``1.0`` for ``"chi2"``, whose
scikit-learn default it is). ``"poly"`` needs ``coef0 >= 0`` (kjax keeps the kernel positive
semi-definite). Hyperparameters are pytree leaves of the kernel the estimators hold, so a
``GridSearchCV`` over ``gamma``, a :class:`~kjax.kernels.Kernel`'s lengthscale or ``alpha``
compiles once per data shape, not once per grid point.

**dtype.** The estimators compute in float64 by default (``dtype=None``), as scikit-learn does:
fit and predict run inside ``jax.enable_x64(True)`` (a scoped switch; the global
``jax_enable_x64`` flag is left as it is). ``dtype="float32"`` computes in float32. Fitted
attributes are NumPy arrays.

**Sparse input.** kjax kernels work on dense ``[n, d]`` arrays: a SciPy sparse ``X`` (CSR, CSC,
or any format scikit-learn converts to them) is densified block of rows by block of rows into one
dense ``[n, d]`` array (``8 n d`` bytes in float64), so it never holds a dense copy beside a
converted one.

**Checks.** Each estimator passes ``sklearn.utils.estimator_checks.check_estimator`` in
``tests/regression/test_sklearn.py``; the waived checks are listed in :data:`WAIVED_CHECKS`, each
with its reason. Errors of kjax's own checks name the estimator's method and the argument
(``kjax.regression.sklearn.KernelRidge.fit: `sample_weight` must ...``); input validation shared
with scikit-learn (NaN, wrong number of features, empty data) raises scikit-learn's messages.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import numbers
import warnings
from typing import Any

try:
    import scipy.linalg
    import scipy.optimize
    import scipy.sparse
    from sklearn.base import BaseEstimator, MultiOutputMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.utils import check_random_state
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as e:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("kjax.regression.sklearn needs scikit-learn (>= 1.6) and SciPy: install the "
                      "`sklearn` extra, `pip install 'kjax[sklearn]'`.") from e

import jax
import jax.numpy as jnp
import numpy as np

from kjax import kernels
from kjax._src import linalg
from kjax._src.errors import KjaxTypeError, fail
from kjax._src.status import Status, status_name
from kjax.kernels import Kernel, as_kernel
from kjax.regression import _common as c
from kjax.regression import _eigenpro, _falkon, _krr

__all__ = ["EigenProRegressor", "FalkonRegressor", "GaussianProcessRegressor", "KernelRidge",
           "WAIVED_CHECKS"]

#: the ``check_estimator`` checks each estimator waives, and why (passed to
#: ``check_estimator(..., expected_failed_checks=...)`` in the tests)
WAIVED_CHECKS: dict[str, dict[str, str]] = {
    "KernelRidge": {},
    "FalkonRegressor": {},
    "EigenProRegressor": {},
    "GaussianProcessRegressor": {},
}

#: scikit-learn's kernel names (``sklearn.metrics.pairwise.PAIRWISE_KERNEL_FUNCTIONS``)
KERNEL_NAMES = ("linear", "rbf", "poly", "polynomial", "laplacian", "sigmoid", "cosine", "chi2",
                "additive_chi2")

#: rows per block when a sparse ``X`` is densified
DENSIFY_ROWS = 4096

#: from this many samples ``KernelRidge(solver="auto")`` hands plain problems to
#: :func:`kjax.regression.krr_fit`'s own ``solver="auto"`` (below it: the dense weighted solve)
AUTO_KRR_FIT_MIN = 5000


# --------------------------------------------------------------------------------------------
# scikit-learn's kernels that kjax.kernels does not have, in scikit-learn's parameterisation
# (each checked against sklearn.metrics.pairwise in tests/regression/test_sklearn.py)


def _pair(x1, x2):
    x2 = x1 if x2 is None else x2
    dt = jnp.promote_types(jnp.result_type(x1, x2), jnp.float32)
    return jnp.asarray(x1, dt), jnp.asarray(x2, dt)


def _dot(x1, x2):
    return jnp.matmul(x1, x2.T, precision=jax.lax.Precision.HIGHEST)


def sk_laplacian(x1, x2=None, *, gamma):
    """scikit-learn's ``laplacian_kernel``: :math:`\\exp(-\\gamma \\lVert x - y\\rVert_1)`."""
    x1, x2 = _pair(x1, x2)
    l1 = jnp.sum(jnp.abs(x1[:, None, :] - x2[None, :, :]), axis=-1)
    return jnp.exp(-jnp.asarray(gamma, x1.dtype) * l1)


def sk_sigmoid(x1, x2=None, *, gamma, coef0):
    """scikit-learn's ``sigmoid_kernel``: :math:`\\tanh(\\gamma x^\\top y + c_0)` (not PSD)."""
    x1, x2 = _pair(x1, x2)
    return jnp.tanh(jnp.asarray(gamma, x1.dtype) * _dot(x1, x2) + jnp.asarray(coef0, x1.dtype))


def sk_cosine(x1, x2=None):
    """scikit-learn's ``cosine_similarity``: :math:`x^\\top y / (\\lVert x\\rVert \\lVert y\\rVert)`
    (a zero row gives zeros)."""
    x1, x2 = _pair(x1, x2)

    def unit(x):
        nrm = jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))
        return x / jnp.where(nrm == 0, 1.0, nrm)
    return _dot(unit(x1), unit(x2))


def sk_additive_chi2(x1, x2=None):
    """scikit-learn's ``additive_chi2_kernel``: :math:`-\\sum_k (x_k - y_k)^2 / (x_k + y_k)` (terms
    with :math:`x_k + y_k = 0` are 0); for non-negative data."""
    x1, x2 = _pair(x1, x2)
    a, b = x1[:, None, :], x2[None, :, :]
    den = a + b
    nz = den != 0
    return -jnp.sum(jnp.where(nz, (a - b) ** 2 / jnp.where(nz, den, 1.0), 0.0), axis=-1)


def sk_chi2(x1, x2=None, *, gamma):
    """scikit-learn's ``chi2_kernel``: :math:`\\exp(\\gamma\\, k_{\\text{additive}\\chi^2}(x, y))`."""
    k = sk_additive_chi2(x1, x2)
    return jnp.exp(jnp.asarray(gamma, k.dtype) * k)


# --------------------------------------------------------------------------------------------
# shared plumbing


def _name(est, method: str) -> str:
    return f"kjax.regression.sklearn.{type(est).__name__}.{method}"


def _dtype(fn: str, dtype: Any) -> np.dtype:
    if dtype is None:
        return np.dtype(np.float64)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        fail(fn, "dtype", "be None (float64), 'float64' or 'float32'", repr(dtype))
    return dt


def _precision(dt: np.dtype):
    """float64 work runs under a scoped ``jax.enable_x64(True)``; float32 leaves the flag as it is."""
    return jax.enable_x64(True) if dt == np.float64 else contextlib.nullcontext()


def _densify(x):
    """A SciPy sparse matrix as a dense array, converted ``DENSIFY_ROWS`` rows at a time."""
    if not scipy.sparse.issparse(x):
        return x
    x = x.tocsr()
    out = np.empty(x.shape, dtype=x.dtype)
    for i in range(0, x.shape[0], DENSIFY_ROWS):
        out[i:i + DENSIFY_ROWS] = x[i:i + DENSIFY_ROWS].toarray()
    return out


def _validate_fit(est, X, y):
    X, y = validate_data(est, X, y, accept_sparse=("csr", "csc"), multi_output=True, y_numeric=True,
                         dtype=(np.float64, np.float32))
    return _densify(X), np.asarray(y)


def _validate_predict(est, X):
    return _densify(validate_data(est, X, accept_sparse=("csr", "csc"), reset=False,
                                  dtype=(np.float64, np.float32)))


def _real(fn: str, arg: str, value: Any, *, minimum: float | None = None, strict: bool = False):
    """A finite real number (optionally ``> minimum`` / ``>= minimum``) as a Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(fn, arg, "be a real number", repr(value), cls=KjaxTypeError)
    v = float(value)
    if not np.isfinite(v):
        fail(fn, arg, "be finite", repr(value))
    if minimum is not None and (v <= minimum if strict else v < minimum):
        fail(fn, arg, f"be {'>' if strict else '>='} {minimum}", repr(value))
    return v


def _int(fn: str, arg: str, value: Any, *, minimum: int):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(fn, arg, f"be an int >= {minimum}", repr(value), cls=KjaxTypeError)
    if int(value) < minimum:
        fail(fn, arg, f"be an int >= {minimum}", repr(value))
    return int(value)


def _resolve_kernel(est, fn: str, n_features: int) -> c.HeldKernel:
    """The estimator's ``kernel`` (+ ``gamma``, ``degree``, ``coef0``, ``kernel_params``) as the
    pytree kernel the solvers hold."""
    kernel = est.kernel
    if isinstance(kernel, str):
        if kernel not in KERNEL_NAMES:
            fail(fn, "kernel", f"be a kjax kernel or one of {', '.join(map(repr, KERNEL_NAMES))}"
                 + (" or 'precomputed'" if isinstance(est, KernelRidge) else ""), repr(kernel))
        default = 1.0 if kernel == "chi2" else 1.0 / n_features
        gamma = default if est.gamma is None else _real(fn, "gamma", est.gamma, minimum=0.0,
                                                          strict=kernel != "sigmoid")
        if kernel == "linear":
            return c.HeldKernel(Kernel(kernels.linear))
        if kernel == "rbf":
            return c.HeldKernel(Kernel(kernels.rbf, lengthscale=float(1.0 / np.sqrt(2.0 * gamma))))
        if kernel in ("poly", "polynomial"):
            degree = _int(fn, "degree", est.degree, minimum=1)
            coef0 = _real(fn, "coef0", est.coef0, minimum=0.0)
            return c.HeldKernel(Kernel(kernels.polynomial, degree=degree, gamma=gamma, coef0=coef0))
        if kernel == "laplacian":
            return c.HeldKernel(Kernel(sk_laplacian, gamma=gamma))
        if kernel == "sigmoid":
            return c.HeldKernel(Kernel(sk_sigmoid, gamma=gamma, coef0=_real(fn, "coef0", est.coef0)))
        if kernel == "cosine":
            return c.HeldKernel(Kernel(sk_cosine))
        if kernel == "chi2":
            return c.HeldKernel(Kernel(sk_chi2, gamma=gamma))
        return c.HeldKernel(Kernel(sk_additive_chi2))
    if not callable(kernel):
        fail(fn, "kernel", "be a kjax kernel k(x1, x2) -> [n1, n2] or a kernel name", type(kernel).__name__,
             cls=KjaxTypeError)
    params = dict(getattr(est, "kernel_params", None) or {})
    k = as_kernel(kernel)
    if params:
        if isinstance(k, Kernel) and k.fn is not None:
            k = Kernel(k.fn, **{**k.hyperparameters, **params})
        elif isinstance(k, Kernel):
            fail(fn, "kernel_params", "be None for a combined kernel (k1 + k2, c * k): set the "
                 "hyperparameters on its parts", repr(params))
        else:
            k = Kernel(kernel, **params)
    elif not isinstance(k, Kernel):
        k = Kernel(kernel)
    return c.HeldKernel(k)


def _needs_nonnegative(est) -> bool:
    return isinstance(est.kernel, str) and est.kernel in ("chi2", "additive_chi2")


def _check_nonnegative(est, fn: str, arg: str, X) -> None:
    if _needs_nonnegative(est) and np.any(X < 0):
        fail(fn, arg, f"be non-negative for kernel={est.kernel!r}", f"minimum {X.min()!r}")


@c.kernel_jit(static_argnums=(3,))
def _gram(kern, x1, x2, block_size):
    return kernels.gram(kern, x1, x2, block_size=block_size)


@c.kernel_jit(static_argnums=(4,))
def _matvec(kern, x_new, x, coef, block_size):
    return kernels.kernel_matvec(kern, x_new, x, coef, block_size=block_size)


def _predict_dual(est, X, x_fit, coef):
    """``K(X, x_fit) @ coef`` in the estimator's dtype (coef ``[n]`` or ``[n, O]``), on padded
    shapes (padded training rows get zero coefficients)."""
    dt = np.dtype(x_fit.dtype)
    m, n = X.shape[0], x_fit.shape[0]
    cols = _pad_features(est.kernel_, X.shape[1])
    rows = _bucket(n, PAD_SAMPLES_MAX, 32)
    c2 = np.zeros((rows, int(np.prod(coef.shape[1:], dtype=int))), dt)
    c2[:n] = coef.reshape(n, -1)
    with _precision(dt):
        out = np.asarray(_matvec(est.kernel_, jnp.asarray(_pad(X, _bucket(m, PAD_SAMPLES_MAX, 32), cols), dt),
                                 jnp.asarray(_pad(x_fit, rows, cols), dt), jnp.asarray(c2), est.block_size))
    return out[:m].reshape(m, *coef.shape[1:])


def _sparse_tags(tags):
    tags.input_tags.sparse = True
    return tags


# Small problems are padded to a few shapes, so that cross-validation, grid searches and
# scikit-learn's checks (dozens of tiny fits of different sizes) compile a handful of programs
# instead of one per size. The padding is exact: padded samples are decoupled from the real ones
# (masked out of the kernel matrix, zero coefficients), and padded features are zero columns, added
# only for kernels that zero features leave unchanged.

#: up to this many samples (features), sizes are padded to the next power of two
PAD_SAMPLES_MAX = 256
PAD_FEATURES_MAX = 64


def _bucket(k: int, limit: int, minimum: int) -> int:
    if k > limit:
        return k
    return max(minimum, 1 << (int(k) - 1).bit_length())


def _feature_safe(k) -> bool:
    """True when zero features added to every point leave the kernel's values unchanged."""
    from kjax.kernels import Scale, Sum

    if isinstance(k, c.HeldKernel):
        return _feature_safe(k.fn)
    if isinstance(k, Sum):  # Product is a Sum subclass
        return _feature_safe(k.k1) and _feature_safe(k.k2)
    if isinstance(k, Scale):
        return _feature_safe(k.k)
    if not isinstance(k, Kernel) or k.fn is None:
        return False
    if any(np.ndim(v) != 0 for v in k.hyperparameters.values()):
        return False  # per-feature (ARD) hyperparameters
    if k.fn is kernels.polynomial:
        return k.hyperparameters.get("gamma") is not None  # gamma = 1 / d otherwise
    return k.fn in _FEATURE_SAFE


_FEATURE_SAFE = frozenset({kernels.rbf, kernels.laplace, kernels.matern, kernels.rational_quadratic,
                           kernels.linear, kernels.white_noise, sk_laplacian, sk_sigmoid, sk_cosine,
                           sk_additive_chi2, sk_chi2})


def _pad(x: np.ndarray, rows: int | None, cols: int | None) -> np.ndarray:
    """``x`` with rows (copies of its first row) up to ``rows`` and zero columns up to ``cols``."""
    if cols is not None and cols > x.shape[1]:
        x = np.concatenate([x, np.zeros((x.shape[0], cols - x.shape[1]), x.dtype)], axis=1)
    if rows is not None and rows > x.shape[0]:
        x = np.concatenate([x, np.repeat(x[:1], rows - x.shape[0], axis=0)], axis=0)
    return x


def _pad_features(kern, d: int) -> int | None:
    return _bucket(d, PAD_FEATURES_MAX, 8) if _feature_safe(kern) else None


def _padded_gram(kern, x1, x2, block_size, dt):
    """``K(x1, x2)`` (``x2=None``: ``K(x1, x1)``) as NumPy, computed on padded shapes."""
    cols = _pad_features(kern, x1.shape[1])
    m = x1.shape[0]
    a = jnp.asarray(_pad(x1, _bucket(m, PAD_SAMPLES_MAX, 32), cols), dt)
    if x2 is None:
        return np.asarray(_gram(kern, a, None, block_size))[:m, :m]
    b = jnp.asarray(_pad(x2, _bucket(x2.shape[0], PAD_SAMPLES_MAX, 32), cols), dt)
    return np.asarray(_gram(kern, a, b, block_size))[:m, :x2.shape[0]]


def _padded_diag(kern, x, dt):
    cols = _pad_features(kern, x.shape[1])
    a = jnp.asarray(_pad(x, _bucket(x.shape[0], PAD_SAMPLES_MAX, 32), cols), dt)
    return np.asarray(_diag(kern, a))[:x.shape[0]]


@c.kernel_jit()
def _diag(kern, x):
    return kernels.kernel_diag(kern, x)


# --------------------------------------------------------------------------------------------
# KernelRidge


def _check_sample_weight(fn: str, sample_weight: Any, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    sw = np.asarray(sample_weight)
    if sw.dtype == object or not (np.issubdtype(sw.dtype, np.integer) or np.issubdtype(sw.dtype, np.floating)
                                  or sw.dtype == np.bool_):
        fail(fn, "sample_weight", "be a real number or a real array", f"dtype {sw.dtype}", cls=KjaxTypeError)
    sw = sw.astype(np.float64)
    if sw.ndim == 0:
        sw = np.full(n, float(sw))
    if sw.shape != (n,):
        fail(fn, "sample_weight", f"be a scalar or have shape ({n},) (one weight per sample of X)",
             f"shape {sw.shape}")
    if not np.all(np.isfinite(sw)):
        fail(fn, "sample_weight", "be finite", f"{int(np.sum(~np.isfinite(sw)))} non-finite values")
    if np.any(sw < 0):
        fail(fn, "sample_weight", "be non-negative",
             f"{int(np.sum(sw < 0))} negative values (min {sw.min()!r})")
    if not np.any(sw > 0):
        fail(fn, "sample_weight", "have at least one positive weight", "all zeros")
    return sw


def _check_alpha(fn: str, alpha: Any, n_targets: int) -> np.ndarray:
    a = np.asarray(alpha)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        fail(fn, "alpha", "be a real number or one per target", repr(alpha), cls=KjaxTypeError)
    a = np.atleast_1d(a.astype(np.float64))
    if a.ndim != 1 or a.shape[0] not in (1, n_targets):
        fail(fn, "alpha", f"be a scalar or have shape ({n_targets},) (one penalty per target)",
             f"shape {np.shape(alpha)}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        fail(fn, "alpha", "be finite and >= 0", repr(alpha))
    return np.broadcast_to(a, (n_targets,)).copy()


def _weighted(k, y, sw, mask):
    """``S K S`` and ``S y`` on the real samples (``mask``), zero on padded ones, and the diagonal
    that keeps the padded block non-singular."""
    dt = k.dtype
    s = jnp.where(mask, jnp.sqrt(sw), 0.0).astype(dt)
    a = jnp.where(mask[:, None] & mask[None, :], k * s[:, None] * s[None, :], 0.0)
    dmax = jnp.max(jnp.abs(jnp.diagonal(a)))
    pad = jnp.where(mask, 0.0, jnp.where(dmax > 0, dmax, 1.0)).astype(dt)
    return a, y.astype(dt) * s[:, None], s, pad


@functools.partial(jax.jit, static_argnums=(5,))
def _krr_solve(k, y, sw, alpha, mask, per_target):
    """Solve ``(S K S + alpha I) c = S y`` and return ``S c`` (``S = diag(sqrt(sw))``), as
    scikit-learn's ``_solve_cholesky_kernel``; ``ok`` is False when the matrix is not positive
    definite (the caller then falls back to least squares). Padded samples (``mask`` False) form
    a separate identity block with a zero right-hand side."""
    dt = k.dtype
    a, yw, s, pad = _weighted(k, y, sw, mask)
    if not per_target:
        diag = jnp.where(mask, alpha[0].astype(dt), pad)
        low = jax.lax.linalg.cholesky(a + jnp.diag(diag), symmetrize_input=False)
        ok = jnp.all(jnp.isfinite(low))
        coef = linalg.cho_solve(low, yw)
    else:
        # one penalty per target: one eigendecomposition serves every alpha_t
        ev, u = jnp.linalg.eigh(a)
        shifted = ev[:, None] + alpha.astype(dt)[None, :]  # [n, T]
        tiny = linalg.null_tolerance(shifted.ravel())
        ok = jnp.all(shifted > tiny)
        inv = jnp.where(shifted > tiny, 1.0 / jnp.where(shifted > tiny, shifted, 1.0), 0.0)
        coef = u @ (inv * (u.T @ yw))
    return coef * s[:, None], ok


@jax.jit
def _krr_lstsq(k, y, sw, alpha, mask):
    """The minimum-norm least-squares solution of ``(S K S + alpha I) c = S y`` (SVD cutoff eps,
    LAPACK gelsd's and so SciPy's default), scaled by ``S``."""
    dt = k.dtype
    a, yw, s, pad = _weighted(k, y, sw, mask)
    a = a + jnp.diag(jnp.where(mask, alpha[0].astype(dt), pad))
    coef = jnp.linalg.lstsq(a, yw, rcond=float(np.finfo(dt).eps))[0]
    return coef * s[:, None]


def _krr_fit_has(param: str) -> bool:
    return param in inspect.signature(_krr.krr_fit).parameters


class KernelRidge(MultiOutputMixin, RegressorMixin, BaseEstimator):
    r"""Kernel ridge regression, ``sklearn.kernel_ridge.KernelRidge`` on kjax kernels.

    Solves :math:`(S K S + \alpha I)\, c' = S y`, :math:`c = S c'` with :math:`S =
    \operatorname{diag}(\sqrt{w})` (``sample_weight`` :math:`w`; :math:`S = I` without it), and
    predicts :math:`f(x) = K(x, X)\, c`: the values of scikit-learn's ``KernelRidge`` (equal to
    1e-10 relative in float64 in the tests, for every kernel name, with and without weights, with
    per-target ``alpha`` and with ``kernel="precomputed"``).

    ``alpha`` is scikit-learn's: a scalar, or an array of shape ``[n_targets]`` giving **one penalty
    per target**. This is *not* the regularisation path that an array ``ridge`` means in
    :func:`kjax.regression.krr_fit`. ``alpha = 0`` is allowed: when :math:`S K S + \alpha I` is not
    numerically positive definite (its Cholesky fails), the minimum-norm least-squares solution is
    used, with a warning, as scikit-learn does; ``status_`` then says ``singular``.

    Args:
      alpha: :math:`\alpha \ge 0`, a scalar or ``[n_targets]``.
      kernel: a kjax kernel, one of scikit-learn's kernel names (see the module docstring) or
        ``"precomputed"`` (``X`` is then the ``[n, n]`` kernel matrix at fit and ``[m, n]`` at
        predict).
      gamma: the named kernels' :math:`\gamma` (None: ``1 / n_features``; ``"rbf"``:
        :math:`\exp(-\gamma\lVert x - y\rVert^2)`).
      degree: ``"poly"``'s degree.
      coef0: ``"poly"``'s and ``"sigmoid"``'s :math:`c_0`.
      kernel_params: hyperparameters of a kernel *function* passed as ``kernel`` (e.g.
        ``kernel=kjax.kernels.rbf, kernel_params={"lengthscale": 2.0}``).
      solver: ``"cholesky"``: the dense weighted solve above (scikit-learn's, exactly);
        ``"pcg"``: :func:`kjax.regression.krr_fit` with ``solver="pcg"`` (the ``n x n`` matrix is
        never formed; plain problems only: no weights, one ``alpha > 0``, a kernel that is not
        precomputed); ``"auto"`` (default): ``"cholesky"`` below :data:`AUTO_KRR_FIT_MIN`
        samples, from there ``krr_fit``'s own ``solver="auto"`` for plain problems. A ``krr_fit``
        that reports a matrix that is not positive definite falls back to the dense solve.
      tol: passed to ``krr_fit`` with ``solver="pcg"`` (None: its default).
      maxiter: passed to ``krr_fit`` with ``solver="pcg"`` (None: its default).
      block_size: block sizes of the kernel assembly and matvecs (None: automatic).
      dtype: None (float64) or ``"float32"``.

    Attributes:
      dual_coef_: ``[n]`` or ``[n, n_targets]`` coefficients :math:`c`.
      X_fit_: the (dense) training data, or the kernel matrix for ``"precomputed"``.
      kernel_: the pytree kernel used (None for ``"precomputed"``).
      status_: ``0`` (ok) or ``6`` (singular: the least-squares fallback); see
        :func:`kjax.regression.status_name`.
      n_features_in_: number of features seen at fit.

    Raises:
      ValueError: ``alpha`` negative or of the wrong length, ``sample_weight`` negative, non-finite
        or of the wrong length, an unknown kernel name, ``gamma <= 0``, ``degree < 1``, a
        precomputed kernel that is not square at fit or has the wrong width at predict, negative
        ``X`` with ``"chi2"``, and scikit-learn's own validation of ``X`` and ``y``.
      TypeError: ``kernel`` neither a name nor callable.

    Example:
      >>> import numpy as np
      >>> from kjax.regression.sklearn import KernelRidge
      >>> rng = np.random.default_rng(0)
      >>> X, y = rng.normal(size=(40, 3)), rng.normal(size=40)
      >>> model = KernelRidge(alpha=0.1, kernel="rbf", gamma=0.5).fit(X, y)
      >>> model.predict(X[:2]).shape
      (2,)

    References:
      scikit-learn ``sklearn.kernel_ridge.KernelRidge``; Saunders, Gammerman & Vovk, ICML 1998.
    """

    def __init__(self, alpha=1.0, *, kernel="linear", gamma=None, degree=3, coef0=1, kernel_params=None,
                 solver="auto", tol=None, maxiter=None, block_size=None, dtype=None):
        self.alpha = alpha
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.kernel_params = kernel_params
        self.solver = solver
        self.tol = tol
        self.maxiter = maxiter
        self.block_size = block_size
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = _sparse_tags(super().__sklearn_tags__())
        tags.input_tags.pairwise = isinstance(self.kernel, str) and self.kernel == "precomputed"
        return tags

    def _precomputed(self) -> bool:
        return isinstance(self.kernel, str) and self.kernel == "precomputed"

    def fit(self, X, y, sample_weight=None):
        """Fit on ``X: [n, d]`` (or ``[n, n]`` kernel values), ``y: [n]`` or ``[n, n_targets]``,
        optional ``sample_weight: [n]``; returns ``self``."""
        fn = _name(self, "fit")
        dt = _dtype(fn, self.dtype)
        if self.solver not in ("auto", "cholesky", "pcg"):
            fail(fn, "solver", "be one of 'auto', 'cholesky', 'pcg'", repr(self.solver))
        pre = self._precomputed()
        X, y = _validate_fit(self, X, y)
        n = X.shape[0]
        if pre and X.shape[0] != X.shape[1]:
            fail(fn, "X", "be a square [n, n] kernel matrix with kernel='precomputed'", f"shape {X.shape}")
        _check_nonnegative(self, fn, "X", X)
        y2 = y.reshape(n, -1)
        alpha = _check_alpha(fn, self.alpha, y2.shape[1])
        sw = _check_sample_weight(fn, sample_weight, n)
        per_target = bool(np.any(alpha != alpha[0]))
        plain = not pre and sw is None and not per_target and alpha[0] > 0
        if self.solver == "pcg":
            if not _krr_fit_has("solver"):
                fail(fn, "solver", "be 'auto' or 'cholesky' (kjax.regression.krr_fit of this version "
                     "has no `solver=` argument)", "'pcg'")
            if not plain:
                fail(fn, "solver", "be 'auto' or 'cholesky' with sample_weight, kernel='precomputed', "
                     "alpha = 0 or one alpha per target ('pcg' solves the plain problem)", "'pcg'")
        self.status_ = int(Status.OK)
        with _precision(dt):
            xj = jnp.asarray(X, dt)
            self.kernel_ = None if pre else _resolve_kernel(self, fn, X.shape[1])
            coef = None
            if plain and _krr_fit_has("solver") and (self.solver == "pcg" or (
                    self.solver == "auto" and n >= AUTO_KRR_FIT_MIN)):
                kw = {k: v for k, v in (("tol", self.tol), ("maxiter", self.maxiter))
                      if v is not None and _krr_fit_has(k)}
                state = _krr.krr_fit(self.kernel_, xj, jnp.asarray(y2, dt), ridge=float(alpha[0]),
                                     solver=self.solver, block_size=self.block_size, **kw)
                self.status_ = int(state.status)
                if self.status_ in (Status.MAX_ITER,):
                    warnings.warn(f"{fn}: krr_fit's iterative solver stopped at `maxiter` before `tol` "
                                  f"(status {status_name(self.status_)!r}).", ConvergenceWarning,
                                  stacklevel=2)
                if self.status_ not in (Status.NOT_PSD, Status.NONFINITE_VALUES):
                    coef = np.asarray(state.coef)
            if coef is None:
                rows = _bucket(n, PAD_SAMPLES_MAX, 32)
                if pre:
                    k = jnp.asarray(np.pad(X, (0, rows - n)), dt)
                else:
                    cols = _pad_features(self.kernel_, X.shape[1])
                    k = _gram(self.kernel_, jnp.asarray(_pad(X, rows, cols), dt), None, self.block_size)
                swj = jnp.asarray(_pad(np.ones((n, 1)) if sw is None else sw[:, None], rows, None)[:, 0], dt)
                yj = jnp.asarray(np.pad(y2, ((0, rows - n), (0, 0))), dt)
                aj, mask = jnp.asarray(alpha, dt), jnp.arange(rows) < n
                coef, ok = _krr_solve(k, yj, swj, aj, mask, per_target)
                if not bool(ok):
                    warnings.warn(f"{fn}: the matrix (K + alpha I) is singular or not positive definite "
                                  "(a Cholesky factorisation failed); using the least-squares solution "
                                  "instead, as scikit-learn does.", UserWarning, stacklevel=2)
                    self.status_ = int(Status.SINGULAR)
                    if not per_target:
                        coef = _krr_lstsq(k, yj, swj, aj, mask)
                coef = np.asarray(coef)[:n]
        self.dual_coef_ = coef[:, 0] if y.ndim == 1 else coef
        self.X_fit_ = X.astype(dt, copy=False)
        return self

    def predict(self, X):
        """Predictions ``[m]`` or ``[m, n_targets]`` at ``X: [m, d]`` (``[m, n]`` kernel values for
        ``"precomputed"``)."""
        fn = _name(self, "predict")
        check_is_fitted(self)
        if self._precomputed():
            shape = getattr(X, "shape", None) or np.shape(X)
            if len(shape) == 2 and shape[1] != self.X_fit_.shape[0]:
                fail(fn, "X", f"have {self.X_fit_.shape[0]} columns (one per training sample) with "
                     "kernel='precomputed'", f"shape {tuple(shape)}")
        X = _validate_predict(self, X)
        if self._precomputed():
            return X.astype(self.X_fit_.dtype) @ self.dual_coef_
        _check_nonnegative(self, fn, "X", X)
        return _predict_dual(self, X, self.X_fit_, self.dual_coef_)


# --------------------------------------------------------------------------------------------
# Falkon and EigenPro


def _seed(random_state) -> jax.Array:
    return jax.random.key(int(check_random_state(random_state).randint(np.iinfo(np.int32).max)))


def _finish_iterative(est, fn, status, residual, what):
    est.status_ = int(status)
    est.residual_ = float(residual)
    if est.status_ == Status.MAX_ITER:
        warnings.warn(f"{fn}: {what} stopped at its iteration limit before reaching `tol` (relative "
                      f"residual {est.residual_:.3g}); raise it, or see the user guide's rule for "
                      "choosing it.", ConvergenceWarning, stacklevel=3)
    elif est.status_ != Status.OK:
        warnings.warn(f"{fn}: status {status_name(est.status_)!r}.", UserWarning, stacklevel=3)


class FalkonRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    r"""Falkon (Nystrom kernel ridge regression by preconditioned CG) as a scikit-learn estimator.

    The parameters of the Falkon library's ``falkon.Falkon(kernel, penalty, M, center_selection,
    maxiter, seed, ...)``, with scikit-learn's ``random_state`` for ``seed`` and scikit-learn's
    kernel names: fits :func:`kjax.regression.falkon_fit` with ``ridge=penalty``,
    ``ridge_scaling="n"`` (Falkon's :math:`\lambda`: :math:`(K_{nM}^\top K_{nM} + n\lambda K_{MM})
    \alpha = K_{nM}^\top y`) on ``min(M, n)`` centres.

    No ``sample_weight`` and no ``"precomputed"`` kernel (the centres need kernel evaluations).

    Args:
      kernel: a kjax kernel or a scikit-learn kernel name (default ``"rbf"``).
      penalty: :math:`\lambda > 0`.
      M: number of Nystrom centres (clamped to ``n``).
      gamma: the named kernels' :math:`\gamma` (None: ``1 / n_features``).
      degree: ``"poly"``'s degree.
      coef0: ``"poly"``'s / ``"sigmoid"``'s :math:`c_0`.
      kernel_params: hyperparameters of a kernel function passed as ``kernel``.
      center_selection: a method of :func:`kjax.regression.nystrom_centers` (``"uniform"``, ...).
      maxiter: CG iterations at most.
      tol: CG's relative-residual target.
      random_state: seed of the centre selection (int, ``RandomState`` or None).
      block_size: block sizes of the kernel matvecs.
      dtype: None (float64) or ``"float32"``.

    Attributes:
      centers_: ``[M, d]`` centres.
      alpha_: ``[M]`` or ``[M, n_targets]`` coefficients (``f(x) = K(x, centers_) alpha_``).
      n_iter_: CG iterations run.
      residual_: the relative residual reached; ``status_`` ``4`` (stopped at ``maxiter`` before
        ``tol``) also warns with a ``ConvergenceWarning``.
      status_: see :func:`kjax.regression.status_name`.

    Raises:
      ValueError: ``penalty <= 0``, ``M < 1``, ``maxiter < 1``, ``tol < 0``, an unknown kernel
        name or ``center_selection``, and scikit-learn's validation of ``X`` and ``y``.

    Example:
      >>> import numpy as np
      >>> from kjax.regression.sklearn import FalkonRegressor
      >>> rng = np.random.default_rng(0)
      >>> X = rng.normal(size=(100, 2)); y = np.sin(X[:, 0])
      >>> model = FalkonRegressor(penalty=1e-6, M=100, gamma=0.5, random_state=0).fit(X, y)
      >>> bool(model.score(X, y) > 0.99), model.status_  # with M = n the preconditioner is exact
      (True, 0)

    References:
      Rudi, Carratino & Rosasco, NeurIPS 2017; Meanti et al., NeurIPS 2020 (the Falkon library).
    """

    def __init__(self, kernel="rbf", penalty=1e-3, M=100, *, gamma=None, degree=3, coef0=1,
                 kernel_params=None, center_selection="uniform", maxiter=20, tol=1e-7, random_state=None,
                 block_size=None, dtype=None):
        self.kernel = kernel
        self.penalty = penalty
        self.M = M
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.kernel_params = kernel_params
        self.center_selection = center_selection
        self.maxiter = maxiter
        self.tol = tol
        self.random_state = random_state
        self.block_size = block_size
        self.dtype = dtype

    def __sklearn_tags__(self):
        return _sparse_tags(super().__sklearn_tags__())

    def fit(self, X, y):
        """Fit on ``X: [n, d]``, ``y: [n]`` or ``[n, n_targets]``; returns ``self``."""
        fn = _name(self, "fit")
        dt = _dtype(fn, self.dtype)
        penalty = _real(fn, "penalty", self.penalty, minimum=0.0, strict=True)
        m = _int(fn, "M", self.M, minimum=1)
        maxiter = _int(fn, "maxiter", self.maxiter, minimum=1)
        tol = _real(fn, "tol", self.tol, minimum=0.0)
        X, y = _validate_fit(self, X, y)
        _check_nonnegative(self, fn, "X", X)
        n = X.shape[0]
        with _precision(dt):
            self.kernel_ = _resolve_kernel(self, fn, X.shape[1])
            xp = _pad(X, None, _pad_features(self.kernel_, X.shape[1]))
            state = _falkon.falkon_fit(_seed(self.random_state), self.kernel_, jnp.asarray(xp, dt),
                                       jnp.asarray(y, dt), ridge=penalty, ridge_scaling="n",
                                       num_centers=min(m, n), center_method=self.center_selection,
                                       maxiter=maxiter, tol=tol, block_size=self.block_size)
            self.centers_ = np.asarray(state.centers)[:, :X.shape[1]]
            coef = np.asarray(state.alpha)
            self.n_iter_ = int(state.iterations)
            _finish_iterative(self, fn, state.status, state.residual, "CG (`maxiter`)")
        self.alpha_ = coef[:, 0] if y.ndim == 1 else coef
        return self

    def predict(self, X):
        """Predictions ``[m]`` or ``[m, n_targets]`` at ``X: [m, d]``."""
        check_is_fitted(self)
        X = _validate_predict(self, X)
        _check_nonnegative(self, _name(self, "predict"), "X", X)
        return _predict_dual(self, X, self.centers_, self.alpha_)


class EigenProRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    r"""EigenPro 2 (preconditioned SGD on kernel interpolation) as a scikit-learn estimator.

    The parameters of scikit-learn-extra's ``EigenProRegressor(batch_size, n_epoch, n_components,
    subsample_size, kernel, gamma, degree, coef0, kernel_params, random_state)`` (its
    ``bandwidth`` is ``gamma = 1 / (2 bandwidth^2)`` here), over
    :func:`kjax.regression.eigenpro_fit`: ``subsample_size`` is clamped to ``n`` and
    ``n_components`` to a quarter of it (at least 1): the small eigenvalues of a subsample's kernel
    matrix estimate those of the full one poorly, and flattening them slowed the fit (the user
    guide gives the numbers and the command). EigenPro fits the interpolant (no ridge): stop it early with
    ``n_epoch`` or ``tol``.

    No ``sample_weight`` and no ``"precomputed"`` kernel.

    Args:
      batch_size: ``"auto"`` (EigenPro's critical batch size) or an int.
      n_epoch: epochs (passes over the data).
      n_components: eigendirections of the preconditioner ``q``.
      subsample_size: ``"auto"`` (``min(n, 2000)``) or an int >= 2.
      kernel: a kjax kernel or a scikit-learn kernel name (default ``"rbf"``).
      gamma: the named kernels' :math:`\gamma` (None: ``1 / n_features``).
      degree: ``"poly"``'s degree.
      coef0: ``"poly"``'s / ``"sigmoid"``'s :math:`c_0`.
      kernel_params: hyperparameters of a kernel function passed as ``kernel``.
      random_state: seed of the subsample and the batches.
      tol: optional relative training residual at which to stop early (status ``4`` and a
        ``ConvergenceWarning`` when given and not reached).
      block_size: block sizes of the kernel matvecs.
      dtype: None (float64) or ``"float32"``.

    Attributes:
      X_fit_: ``[n, d]`` training data; dual_coef_: ``[n]`` or ``[n, n_targets]``.
      n_iter_: epochs run; residual_: relative training residual; status_: see
        :func:`kjax.regression.status_name`; batch_size_, step_size_: what EigenPro chose.

    Raises:
      ValueError: fewer than 2 samples, ``n_epoch``, ``n_components`` or ``batch_size`` below 1,
        ``subsample_size`` below 2, an unknown kernel name, and scikit-learn's validation.

    Example:
      >>> import numpy as np
      >>> from kjax.regression.sklearn import EigenProRegressor
      >>> rng = np.random.default_rng(0)
      >>> X = rng.normal(size=(200, 2)); y = np.sin(X[:, 0])
      >>> model = EigenProRegressor(n_epoch=10, n_components=20, gamma=0.5, random_state=0).fit(X, y)
      >>> bool(model.score(X, y) > 0.9)
      True

    References:
      Ma & Belkin, SysML 2019 (EigenPro 2); scikit-learn-extra ``EigenProRegressor``.
    """

    def __init__(self, batch_size="auto", n_epoch=2, n_components=1000, subsample_size="auto", *,
                 kernel="rbf", gamma=None, degree=3, coef0=1, kernel_params=None, random_state=None,
                 tol=None, block_size=None, dtype=None):
        self.batch_size = batch_size
        self.n_epoch = n_epoch
        self.n_components = n_components
        self.subsample_size = subsample_size
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.kernel_params = kernel_params
        self.random_state = random_state
        self.tol = tol
        self.block_size = block_size
        self.dtype = dtype

    def __sklearn_tags__(self):
        return _sparse_tags(super().__sklearn_tags__())

    def fit(self, X, y):
        """Fit on ``X: [n, d]``, ``y: [n]`` or ``[n, n_targets]``; returns ``self``."""
        fn = _name(self, "fit")
        dt = _dtype(fn, self.dtype)
        epochs = _int(fn, "n_epoch", self.n_epoch, minimum=1)
        q = _int(fn, "n_components", self.n_components, minimum=1)
        bs = None if self.batch_size == "auto" else _int(fn, "batch_size", self.batch_size, minimum=1)
        sub = 2000 if self.subsample_size == "auto" else _int(fn, "subsample_size", self.subsample_size,
                                                               minimum=2)
        tol = None if self.tol is None else _real(fn, "tol", self.tol, minimum=0.0)
        X, y = _validate_fit(self, X, y)
        _check_nonnegative(self, fn, "X", X)
        n = X.shape[0]
        if n < 2:
            fail(fn, "X", "have at least 2 samples (EigenPro's preconditioner needs a subsample of 2)",
                 "1 sample")
        s = min(sub, n)
        with _precision(dt):
            self.kernel_ = _resolve_kernel(self, fn, X.shape[1])
            xp = _pad(X, None, _pad_features(self.kernel_, X.shape[1]))
            state = _eigenpro.eigenpro_fit(_seed(self.random_state), self.kernel_, jnp.asarray(xp, dt),
                                           jnp.asarray(y, dt), epochs=epochs,
                                           num_eigen=min(q, max(1, s // 4)),
                                           subsample_size=s, batch_size=bs, tol=tol,
                                           block_size=self.block_size)
            coef = np.asarray(state.alpha)
            self.n_iter_ = int(state.iterations)
            self.batch_size_ = int(state.batch_size)
            self.step_size_ = float(state.step_size)
            _finish_iterative(self, fn, state.status, state.residual, "EigenPro (`n_epoch`)")
        self.dual_coef_ = coef[:, 0] if y.ndim == 1 else coef
        self.X_fit_ = X.astype(dt, copy=False)
        return self

    def predict(self, X):
        """Predictions ``[m]`` or ``[m, n_targets]`` at ``X: [m, d]``."""
        check_is_fitted(self)
        X = _validate_predict(self, X)
        _check_nonnegative(self, _name(self, "predict"), "X", X)
        return _predict_dual(self, X, self.X_fit_, self.dual_coef_)


# --------------------------------------------------------------------------------------------
# GaussianProcessRegressor


def _gp_factor(kern, x, y2, noise, mask):
    """``(log marginal likelihood summed over targets, L, (K + diag(noise))^-1 y, status)`` on the
    real samples (``mask``); padded ones form an identity block with zero targets, which adds
    nothing to the likelihood."""
    k = kernels.gram(kern, x)
    dt = k.dtype
    real = mask[:, None] & mask[None, :]
    noise = jnp.broadcast_to(noise.astype(dt), mask.shape)
    a = jnp.where(real, k, 0.0) + jnp.diag(jnp.where(mask, noise, 1.0))
    low, _, code = linalg.robust_cholesky(a)
    y2 = jnp.where(mask[:, None], y2.astype(dt), 0.0)
    coef = linalg.cho_solve(low, y2)
    n, o = jnp.sum(mask).astype(dt), y2.shape[1]
    val = (-0.5 * jnp.sum(y2 * coef) - o * jnp.sum(jnp.log(jnp.diagonal(low)))
           - 0.5 * n * o * jnp.log(2.0 * jnp.pi).astype(dt))
    return jnp.where(code == Status.NOT_PSD, -jnp.inf, val), low, coef, code


_gp_factor_jit = c.kernel_jit()(_gp_factor)


def _theta_of(kern) -> np.ndarray:
    leaves = jax.tree.leaves(kern)
    if not leaves:
        return np.zeros(0)
    return np.log(np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in leaves]))


def _with_theta_np(kern, theta):
    """:func:`_with_theta` with concrete NumPy / Python-float leaves (what ``kernel_`` holds)."""
    leaves, tdef = jax.tree.flatten(kern)
    out, i = [], 0
    for v in leaves:
        size = int(np.size(v))
        part = np.exp(np.asarray(theta[i:i + size], np.float64)).reshape(np.shape(v))
        out.append(float(part) if part.ndim == 0 else part)
        i += size
    return jax.tree.unflatten(tdef, out)


def _with_theta(kern, theta):
    """``kern`` with its leaves set to ``exp(theta)`` (theta flat, in leaf order)."""
    leaves, tdef = jax.tree.flatten(kern)
    out, i = [], 0
    for v in leaves:
        size = int(np.size(v))
        part = jnp.exp(theta[i:i + size])
        out.append(part.reshape(np.shape(v)))
        i += size
    return jax.tree.unflatten(tdef, out)


@jax.jit
def _lml_and_grad(kern, theta, x, y2, noise, mask):
    r"""The log marginal likelihood at ``theta`` and its gradient, Rasmussen & Williams eq. 5.9:
    :math:`\partial_\theta \log p = \tfrac12 \operatorname{tr}((\alpha\alpha^\top - O K^{-1})
    \partial_\theta K)`, with :math:`\partial_\theta K` from ``jax.jacfwd`` of the kernel
    (reverse mode through the Cholesky factorisation costs ~100x more at these sizes). ``-inf``
    and a zero gradient where the factorisation fails, as scikit-learn."""
    real = mask[:, None] & mask[None, :]

    def gram(t):
        return jnp.where(real, kernels.gram(_with_theta(kern, t), x), 0.0)

    k, dk = gram(theta), jax.jacfwd(gram)(theta)  # [n, n], [n, n, p]
    dt = k.dtype
    a = k + jnp.diag(jnp.where(mask, jnp.broadcast_to(noise.astype(dt), mask.shape), 1.0))
    # one eigendecomposition gives the solve, the log-determinant and K^-1 (a Cholesky factor
    # needs many-right-hand-side triangular solves for K^-1, ~100x slower than eigh in XLA:CPU at
    # these sizes); a matrix that is not numerically positive definite gives -inf, as scikit-learn
    ev, u = jnp.linalg.eigh(a)
    y2 = jnp.where(mask[:, None], y2.astype(dt), 0.0)
    coef = u @ ((u.T @ y2) / ev[:, None])
    n, o = jnp.sum(mask).astype(dt), y2.shape[1]
    val = (-0.5 * jnp.sum(y2 * coef) - 0.5 * o * jnp.sum(jnp.log(ev))
           - 0.5 * n * o * jnp.log(2.0 * jnp.pi).astype(dt))
    kinv = (u / ev[None, :]) @ u.T
    g = 0.5 * jnp.einsum("ij,ijp->p", coef @ coef.T - o * kinv, dk)
    ok = (ev[0] > 0) & jnp.isfinite(val) & jnp.all(jnp.isfinite(g))
    return jnp.where(ok, val, -jnp.inf), jnp.where(ok, g, 0.0)


def _gp_padded(kern, X, y2, noise, dt):
    """The padded training arrays of :func:`_gp_factor`: ``(x, y2, noise, mask)``."""
    n = X.shape[0]
    rows = _bucket(n, PAD_SAMPLES_MAX, 32)
    x = jnp.asarray(_pad(X, rows, _pad_features(kern, X.shape[1])), dt)
    yp = jnp.asarray(np.pad(y2, ((0, rows - n), (0, 0))), dt)
    nz = np.broadcast_to(noise, (n,))
    return x, yp, jnp.asarray(np.pad(nz, (0, rows - n)), dt), jnp.arange(rows) < n


class GaussianProcessRegressor(MultiOutputMixin, RegressorMixin, BaseEstimator):
    r"""Exact GP regression, ``sklearn.gaussian_process.GaussianProcessRegressor`` on kjax kernels.

    The hyperparameters are the kernel's pytree leaves (every numeric hyperparameter of a
    :class:`kjax.kernels.Kernel`, of its sums, products and scales), optimised in log space,
    :math:`\theta = \log(\text{leaves})`, as scikit-learn's ``kernel.theta``, within
    ``hyperparameter_bounds``. The log marginal likelihood and its gradient come from one
    ``jax.value_and_grad`` (compiled once per kernel structure and data shape). The optimiser is
    SciPy's L-BFGS-B (``"fmin_l_bfgs_b"``), a callable ``optimizer(obj_func, initial_theta,
    bounds) -> (theta_opt, func_min)`` as in scikit-learn, or None (keep the kernel).
    ``kernel=None`` is scikit-learn's default: ``C(1.0) * RBF(1.0)``, i.e.
    ``Kernel(rbf, lengthscale=1.0, variance=1.0)``, optimised at fit, and with fixed
    hyperparameters for predictions from the prior (before fit). Model the observation noise with ``alpha``
    or with a :func:`kjax.kernels.white_noise` term (which, comparing points exactly, also sees
    test points that coincide with training points, where scikit-learn's ``WhiteKernel`` does not).

    A Cholesky factor that needs jitter or fails (not positive definite) is reported in
    ``status_`` with a warning, instead of scikit-learn's ``LinAlgError``.

    Args:
      kernel: a kjax kernel or None.
      alpha: noise variance added to the diagonal, a scalar or ``[n]`` (one per sample).
      optimizer: ``"fmin_l_bfgs_b"``, a callable, or None.
      n_restarts_optimizer: extra optimiser runs from log-uniform draws within the bounds.
      normalize_y: standardise the targets (mean 0, variance 1) before fitting.
      copy_X_train: kept for scikit-learn compatibility (the training data is always stored as a
        NumPy copy).
      n_targets: number of targets, for sampling from the prior before fit.
      random_state: seed of the restarts.
      hyperparameter_bounds: ``(low, high)`` bounds of every hyperparameter, or ``"fixed"``.
      block_size: block sizes of the Gram assembly.
      dtype: None (float64) or ``"float32"``.

    Attributes:
      kernel_: the fitted kernel; X_train_, y_train_ (normalised when ``normalize_y``); L_: the
      lower Cholesky factor of :math:`K + \text{diag}(\alpha)`; alpha_: :math:`(K + \alpha I)^{-1}
      y`; log_marginal_likelihood_value_; status_.

    Raises:
      ValueError: ``alpha`` negative or of the wrong length, ``n_targets`` different from the
        targets at fit, bad ``hyperparameter_bounds`` or ``optimizer``, ``return_std`` together with
        ``return_cov`` (``RuntimeError``, as scikit-learn), and scikit-learn's validation.
      TypeError: ``kernel`` not callable.

    Example:
      >>> import numpy as np
      >>> from kjax.kernels import Kernel, rbf
      >>> from kjax.regression.sklearn import GaussianProcessRegressor
      >>> X = np.linspace(0, 5, 20)[:, None]; y = np.sin(X[:, 0])
      >>> gp = GaussianProcessRegressor(Kernel(rbf, lengthscale=1.0), alpha=1e-4).fit(X, y)
      >>> mean, std = gp.predict(X[:3], return_std=True)
      >>> mean.shape, bool(np.all(std < 0.1))
      ((3,), True)

    References:
      Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006, Algorithm 2.1;
      scikit-learn ``sklearn.gaussian_process.GaussianProcessRegressor``.
    """

    def __init__(self, kernel=None, *, alpha=1e-10, optimizer="fmin_l_bfgs_b", n_restarts_optimizer=0,
                 normalize_y=False, copy_X_train=True, n_targets=None, random_state=None,
                 hyperparameter_bounds=(1e-5, 1e5), block_size=None, dtype=None):
        self.kernel = kernel
        self.alpha = alpha
        self.optimizer = optimizer
        self.n_restarts_optimizer = n_restarts_optimizer
        self.normalize_y = normalize_y
        self.copy_X_train = copy_X_train
        self.n_targets = n_targets
        self.random_state = random_state
        self.hyperparameter_bounds = hyperparameter_bounds
        self.block_size = block_size
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = _sparse_tags(super().__sklearn_tags__())
        tags.requires_fit = False
        return tags

    def _kernel(self, fn, prior=False):
        if self.kernel is None:  # scikit-learn's C() * RBF(): fitted, and fixed for the prior
            if prior:
                return c.HeldKernel(Kernel(kernels.rbf, lengthscale=1.0)), False
            return c.HeldKernel(Kernel(kernels.rbf, lengthscale=1.0, variance=1.0)), True
        if not callable(self.kernel):
            fail(fn, "kernel", "be None or a kjax kernel k(x1, x2) -> [n1, n2]", type(self.kernel).__name__,
                 cls=KjaxTypeError)
        return c.HeldKernel(self.kernel), True

    def _bounds(self, fn, size):
        b = self.hyperparameter_bounds
        if isinstance(b, str) and b == "fixed":
            return None
        try:
            lo, hi = (float(v) for v in b)
        except (TypeError, ValueError):
            lo = hi = float("nan")
        if not (0 < lo <= hi < np.inf):
            fail(fn, "hyperparameter_bounds", "be 'fixed' or a pair (low, high) with 0 < low <= high < inf",
                 repr(b))
        return np.tile(np.log([lo, hi]), (size, 1))

    def fit(self, X, y):
        """Fit on ``X: [n, d]``, ``y: [n]`` or ``[n, n_targets]`` (optimising the kernel's
        hyperparameters unless ``optimizer=None``); returns ``self``."""
        fn = _name(self, "fit")
        dt = _dtype(fn, self.dtype)
        restarts = _int(fn, "n_restarts_optimizer", self.n_restarts_optimizer, minimum=0)
        if not (self.optimizer is None or callable(self.optimizer) or self.optimizer == "fmin_l_bfgs_b"):
            fail(fn, "optimizer", "be 'fmin_l_bfgs_b', a callable or None", repr(self.optimizer))
        kern, free = self._kernel(fn)
        X, y = _validate_fit(self, X, y)
        n = X.shape[0]
        t = 1 if y.ndim == 1 else y.shape[1]
        if self.n_targets is not None and t != self.n_targets:
            fail(fn, "y", f"have n_targets = {self.n_targets} target(s)", f"{t}")
        noise = np.asarray(self.alpha, np.float64)
        if noise.ndim > 1 or (noise.ndim == 1 and noise.shape[0] != n):
            fail(fn, "alpha", f"be a scalar or have shape ({n},) (one per sample)", f"shape {noise.shape}")
        if not np.all(np.isfinite(noise)) or np.any(noise < 0):
            fail(fn, "alpha", "be finite and >= 0", repr(self.alpha))
        if self.normalize_y:
            self._y_train_mean = np.mean(y, axis=0)
            std = np.std(y, axis=0)
            self._y_train_std = np.where(std < 10 * np.finfo(std.dtype).eps, 1.0, std)
        else:
            self._y_train_mean = np.zeros(y.shape[1:])
            self._y_train_std = np.ones(y.shape[1:])
        y_n = (y - self._y_train_mean) / self._y_train_std
        self.X_train_ = X.astype(dt)
        self.y_train_ = y_n
        self._noise = noise
        with _precision(dt):
            args = _gp_padded(kern, X, y_n.reshape(n, -1), noise, dt)
            theta0 = _theta_of(kern)
            bounds = self._bounds(fn, theta0.size) if free else None
            if self.optimizer is not None and theta0.size and bounds is not None:
                def obj(theta, eval_gradient=True):
                    v, g = _lml_and_grad(kern, jnp.asarray(theta, dt), *args)
                    v, g = -float(v), -np.asarray(g, np.float64)
                    if not np.isfinite(v):
                        v, g = np.inf, np.zeros_like(g)
                    return (v, g) if eval_gradient else v

                runs = [self._optimize(obj, theta0, bounds)]
                rng = check_random_state(self.random_state)
                for _ in range(restarts):
                    runs.append(self._optimize(obj, rng.uniform(bounds[:, 0], bounds[:, 1]), bounds))
                theta = min(runs, key=lambda r: r[1])[0]
                kern = _with_theta_np(kern, theta)
            val, low, coef, code = _gp_factor_jit(kern, *args)
        self.kernel_ = kern
        self.log_marginal_likelihood_value_ = float(val)
        self.L_ = np.asarray(low)[:n, :n]
        coef = np.asarray(coef)[:n]
        self.alpha_ = coef[:, 0] if y.ndim == 1 else coef
        self.status_ = int(code)
        if self.status_ != Status.OK:
            warnings.warn(f"{fn}: the Cholesky factorisation of K + alpha I reported "
                          f"{status_name(self.status_)!r}; increase `alpha`.", UserWarning, stacklevel=2)
        return self

    def _optimize(self, obj, theta0, bounds):
        if callable(self.optimizer):
            theta, fmin = self.optimizer(obj, theta0, bounds)
            return np.asarray(theta, np.float64), float(fmin)
        res = scipy.optimize.minimize(obj, theta0, method="L-BFGS-B", jac=True, bounds=bounds)
        return res.x, float(res.fun)

    def log_marginal_likelihood(self, theta=None, eval_gradient=False, clone_kernel=True):
        """The log marginal likelihood of the training data at ``theta`` (the log hyperparameters,
        in the order of ``jax.tree.leaves(kernel_)``), and its gradient with ``eval_gradient``;
        ``theta=None`` returns ``log_marginal_likelihood_value_``."""
        fn = _name(self, "log_marginal_likelihood")
        check_is_fitted(self)
        if theta is None:
            if eval_gradient:
                fail(fn, "theta", "be given when eval_gradient=True", None)
            return self.log_marginal_likelihood_value_
        theta = np.asarray(theta, np.float64)
        size = _theta_of(self.kernel_).size
        if theta.shape != (size,):
            fail(fn, "theta", f"have shape ({size},) (the log of the kernel's {size} hyperparameters)",
                 f"shape {theta.shape}")
        dt = np.dtype(self.X_train_.dtype)
        with _precision(dt):
            n = self.X_train_.shape[0]
            args = _gp_padded(self.kernel_, self.X_train_, self.y_train_.reshape(n, -1), self._noise, dt)
            v, g = _lml_and_grad(self.kernel_, jnp.asarray(theta, dt), *args)
        return (float(v), np.asarray(g, np.float64)) if eval_gradient else float(v)

    def predict(self, X, return_std=False, return_cov=False):
        """Posterior (or, before fit, prior) mean at ``X: [m, d]``, with the standard deviation
        ``[m]`` / ``[m, n_targets]`` or the covariance ``[m, m]`` / ``[m, m, n_targets]``."""
        fn = _name(self, "predict")
        if return_std and return_cov:
            raise RuntimeError(f"{fn}: at most one of `return_std` and `return_cov` can be requested.")
        X = _validate_predict(self, X)
        m = X.shape[0]
        fitted = hasattr(self, "X_train_")
        dt = np.dtype(self.X_train_.dtype) if fitted else _dtype(fn, self.dtype)
        with _precision(dt):
            if not fitted:
                kern = self._kernel(fn, prior=True)[0]
                t = self.n_targets if self.n_targets is not None else 1
                mean = np.zeros((m, t)).squeeze()
                if return_cov:
                    cov = _padded_gram(kern, X, None, self.block_size, dt)
                    return mean, (np.repeat(cov[..., None], t, axis=-1) if t > 1 else cov)
                if return_std:
                    var = _padded_diag(kern, X, dt)
                    return mean, np.sqrt(np.repeat(var[:, None], t, axis=-1) if t > 1 else var)
                return mean
            kern = self.kernel_
            ks = _padded_gram(kern, X, self.X_train_, self.block_size, dt)
            mean = ks @ self.alpha_
            mean = self._y_train_std * mean + self._y_train_mean
            if mean.ndim > 1 and mean.shape[1] == 1:
                mean = mean[:, 0]
            if not (return_std or return_cov):
                return mean
            v = scipy.linalg.solve_triangular(self.L_, ks.T, lower=True, check_finite=False)
            std2 = self._y_train_std ** 2
            if return_cov:
                cov = _padded_gram(kern, X, None, self.block_size, dt) - v.T @ v
                cov = np.outer(cov, std2).reshape(*cov.shape, -1)
                return mean, (cov[:, :, 0] if cov.shape[2] == 1 else cov)
            var = _padded_diag(kern, X, dt).astype(np.float64) - np.einsum("ij,ij->j", v, v)
            if np.any(var < 0):
                warnings.warn(f"{fn}: predicted variances smaller than 0; setting them to 0.", UserWarning,
                              stacklevel=2)
                var = np.maximum(var, 0.0)
            var = np.outer(var, std2).reshape(m, -1)
            return mean, np.sqrt(var[:, 0] if var.shape[1] == 1 else var)

    def sample_y(self, X, n_samples=1, random_state=0):
        """Draws ``[m, n_samples]`` (``[m, n_targets, n_samples]``) from the posterior (the prior
        before fit) at ``X``, as scikit-learn: ``rng.multivariate_normal(mean, cov)``."""
        fn = _name(self, "sample_y")
        n_samples = _int(fn, "n_samples", n_samples, minimum=1)
        rng = check_random_state(random_state)
        mean, cov = self.predict(X, return_cov=True)
        if mean.ndim == 1:
            return rng.multivariate_normal(mean, cov, n_samples).T
        draws = [rng.multivariate_normal(mean[:, t], cov[..., t], n_samples).T[:, np.newaxis]
                 for t in range(mean.shape[1])]
        return np.hstack(draws)

"""Falkon: Nystrom kernel ridge regression by preconditioned conjugate gradients."""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import dtypes, linalg
from kjax._src.errors import KjaxError, check_int, check_positive, check_same_dim, fail
from kjax.regression import _common as c
from kjax.regression._nystrom import METHODS, nystrom_centers


class FalkonState(NamedTuple):
    """A fitted Falkon model :math:`f(x) = \\sum_{j=1}^M \\alpha_j k(x, z_j)`.

    Attributes:
      centers: ``[M, d]`` Nystrom centres :math:`z_j`.
      alpha: ``[M, O]`` coefficients.
      residuals: ``[maxiter]`` relative residual :math:`\\lVert r_t\\rVert / \\lVert r_0\\rVert` of
        the preconditioned system after iteration ``t`` (max over outputs); ``nan`` after the
        last iteration run.
      val_errors: ``[maxiter]`` mean squared error on ``(x_val, y_val)`` after each iteration
        (``nan`` when no validation set was given or after the last iteration).
      iterations: number of CG iterations run.
      status: int32 code (0 ok, 1 non-finite input, 2 jitter added to a Cholesky factor,
        3 a factorisation or the CG failed); see :func:`status_name`.
      kernel: the kernel (static).
      layout: static shape facts.
    """

    centers: Float[Array, "M d"]
    alpha: Float[Array, "M O"]
    residuals: Float[Array, " maxiter"]
    val_errors: Float[Array, " maxiter"]
    iterations: Int[Array, ""]
    status: Int[Array, ""]
    kernel: c.StaticKernel
    layout: c.Layout


def _tri(fac, v, *, transpose):
    # blocked substitution with the factor's inverted diagonal blocks: matrix products only (jax's
    # triangular solve with one right-hand side is ~10x slower on CPU, and LAPACK calls in the
    # sharded CG loop run concurrently on every CPU device; see _falkon_core)
    low, inv = fac
    return linalg.solve_triangular(low, v, transpose=transpose, diag_inv=inv)


class _Problem(NamedTuple):
    x: Any  # data dtype: the n x M products run in it
    y: Any
    centers: Any
    low_t: Any  # (L, inverted diagonal blocks of L): L the lower factor of K_MM (T = L^T)
    low_a: Any  # the same for the lower factor of T T^T / M + lambda I (A = low_a^T)
    alpha_reg: Any
    x_val: Any
    y_val: Any


def _setup(kern, x, centers, alpha_reg, jitter, solver_dt):
    n, m = x.shape[0], centers.shape[0]
    kmm = kernels.gram(kern, centers.astype(solver_dt))
    dt = kmm.dtype
    # as in Falkon, the preconditioner factors K_MM + eps * M * I (eps of the dtype the n x M
    # products run in, relative to the mean diagonal); the CG operator's penalty uses the same
    # shifted K_MM (see _precond_apply), so this shift changes the penalty by a relative eps * M and
    # keeps the operator accurate at the products' precision (a float64 factor with float64's eps
    # but float32 products diverges: T^-1 then spans a range float32 products cannot carry)
    prod_dt = dtypes.gram_dtype(x, centers)
    shift = jnp.finfo(prod_dt).eps * m * jnp.mean(jnp.diagonal(kmm))
    low_t, _, st_t = c.robust_cholesky(kmm + shift * jnp.eye(m, dtype=dt), jitter=jitter)
    lam = alpha_reg.astype(dt) / n
    # T T^T = L^T L
    tt = low_t.T @ low_t / m + lam * jnp.eye(m, dtype=dt)
    low_a, _, st_a = c.robust_cholesky(tt, jitter=jitter)
    fac_t = (low_t, linalg.block_inverses(low_t))
    fac_a = (low_a, linalg.block_inverses(low_a))
    return kmm, fac_t, fac_a, c.combine_status(st_t, st_a)


def _precond_apply(p: _Problem, b, kern, block_size, mesh):
    """W b = A^-T (T^-T K_Mn K_nM T^-1 / n + lambda I) A^-1 b, Falkon's operator.

    The regulariser uses ``T^-T K_MM T^-1 = I`` (exact for ``T^T T = K_MM + shift I``, so the
    problem solved has ``K_MM + shift I`` in the penalty, a relative change of ``eps * M``) instead
    of multiplying by ``K_MM`` and solving with ``T`` again: in float32 that round trip amplifies
    rounding along ``K_MM``'s small eigenvalues, and CG converged to a solution with 2-3x the
    float64 test error at lambda = 1e-6; this form stays close to float64 (see
    tests/regression/test_falkon.py::test_falkon_float32_small_ridge_tracks_float64).
    """
    n = p.x.shape[0]
    u = _tri(p.low_a, b, transpose=True)  # A^-1 b
    v = _tri(p.low_t, u, transpose=True)  # T^-1 A^-1 b
    ktkv = kernels.kernel_normal_matvec(kern, p.x, p.centers, v.astype(p.centers.dtype),
                                        block_size=block_size, mesh=mesh).astype(b.dtype)
    inner = _tri(p.low_t, ktkv, transpose=False) / n + (p.alpha_reg / n) * u
    return _tri(p.low_a, inner, transpose=False)


def _coef(p: _Problem, beta):
    return _tri(p.low_t, _tri(p.low_a, beta, transpose=True), transpose=True)


def _val_error(p: _Problem, beta, kern, block_size, mesh):
    if p.x_val is None:
        return jnp.asarray(jnp.nan, beta.dtype)
    pred = kernels.kernel_matvec(kern, p.x_val, p.centers, _coef(p, beta), block_size=block_size,
                                 mesh=mesh)
    return jnp.mean((pred - p.y_val.astype(pred.dtype)) ** 2)


class _CG(NamedTuple):
    beta: Any
    r: Any
    d: Any
    rs: Any
    k: Any
    res: Any
    val: Any


def _cg_init(p, kern, block_size, mesh, maxiter):
    n = p.x.shape[0]
    kty = kernels.kernel_matvec(kern, p.centers, p.x, p.y, block_size=block_size, mesh=mesh)
    kty = kty.astype(p.low_t[0].dtype)
    r0 = _tri(p.low_a, _tri(p.low_t, kty, transpose=False), transpose=False) / n
    dt = r0.dtype
    nan = jnp.full((maxiter,), jnp.nan, dt)
    return _CG(jnp.zeros_like(r0), r0, r0, jnp.sum(r0 * r0, axis=0), jnp.asarray(0), nan, nan)


def _cg_step(s: _CG, p, kern, block_size, mesh, r0norm):
    wd = _precond_apply(p, s.d, kern, block_size, mesh)
    dwd = jnp.sum(s.d * wd, axis=0)
    tiny = jnp.finfo(s.r.dtype).tiny
    step = jnp.where(s.rs > tiny, s.rs / jnp.where(dwd > tiny, dwd, 1.0), 0.0)
    beta = s.beta + step * s.d
    r = s.r - step * wd
    rs_new = jnp.sum(r * r, axis=0)
    d = r + jnp.where(s.rs > tiny, rs_new / jnp.where(s.rs > tiny, s.rs, 1.0), 0.0) * s.d
    rel = jnp.max(jnp.sqrt(rs_new) / r0norm)
    val = _val_error(p, beta, kern, block_size, mesh)
    return _CG(beta, r, d, rs_new, s.k + 1, s.res.at[s.k].set(rel), s.val.at[s.k].set(val))


def falkon_fit(
    key: jax.Array,
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    *,
    ridge: float,
    num_centers: int | None = None,
    centers: Float[ArrayLike, "M d"] | None = None,
    center_method: str = "uniform",
    maxiter: int = 20,
    tol: float = 1e-7,
    ridge_scaling: str = "n",
    jitter: float | None = None,
    x_val: Float[ArrayLike, "nv d"] | None = None,
    y_val: Float[ArrayLike, " nv *O"] | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    progress: bool = False,
    solver_dtype: Any = None,
) -> FalkonState:
    r"""Falkon: Nystrom kernel ridge regression solved by preconditioned conjugate gradients.

    With centres :math:`z_1..z_M`, :math:`K_{nM} = k(X, Z)`, :math:`K_{MM} = k(Z, Z)`, the
    Nystrom KRR coefficients solve

    .. math:: (K_{nM}^\top K_{nM} + \alpha K_{MM})\,\alpha^\star = K_{nM}^\top y,\qquad
       \alpha = n\lambda\ (\texttt{ridge\_scaling="n"}, \text{default})\ \text{or}\ \lambda
       \ (\texttt{"sklearn"}).

    The system is preconditioned with the two Cholesky factors of Rudi et al. (2017):
    :math:`T^\top T = K_{MM} + \epsilon M I` (:math:`\epsilon` the dtype's machine epsilon times
    the mean diagonal, as in Falkon) and :math:`A^\top A = T T^\top / M + \lambda I`; CG runs on
    :math:`W = A^{-\top} (T^{-\top} K_{nM}^\top K_{nM} T^{-1} / n + \lambda I) A^{-1}` (Falkon's
    operator: the penalty uses :math:`T^\top T` in place of :math:`K_{MM}`, a relative change of
    :math:`\epsilon M`, which keeps float32 accurate),
    whose condition number is :math:`O(1)` once :math:`M \gtrsim d_{eff}(\lambda)`; a dozen or
    two iterations suffice. Each iteration costs one pass of
    :func:`kjax.kernels.kernel_normal_matvec` over the ``n x M`` kernel (each block evaluated once
    for both products, ``O(block)`` memory, split over ``mesh``); the ``M x M`` work is
    replicated. Each output column runs its
    own CG (multi-output). If :math:`K_{MM}` is not numerically positive definite (duplicated
    centres, a non-PSD kernel), jitter ``jitter * 10**k * mean(diag K_MM)`` is added to its
    Cholesky factor (``status`` 2); if that fails too ``status`` is 3.

    Args:
      key: PRNG key (centre selection).
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` training points.
      y: ``[n]`` or ``[n, O]`` targets.
      ridge: :math:`\lambda > 0`.
      num_centers: ``M``, the number of centres drawn with ``center_method`` (``M <= n``).
      centers: ``[M, d]`` explicit centres (instead of ``num_centers``).
      center_method: a method of :func:`nystrom_centers` (``"uniform"`` by default).
      maxiter: maximum CG iterations (a Python int).
      tol: stop when every output's relative residual is below ``tol``.
      ridge_scaling: ``"n"`` (default, Falkon's ``penalty``) or ``"sklearn"``.
      jitter: relative jitter for the Cholesky factors (default ``10 eps``).
      x_val: optional ``[nv, d]`` validation points; with ``y_val``, the validation MSE is
        recorded after every iteration.
      y_val: ``[nv]`` or ``[nv, O]`` validation targets.
      block_size: block sizes of the kernel matvecs (an int or ``(rows, cols)``; the CG's
        :func:`~kjax.kernels.kernel_normal_matvec` uses the rows).
      mesh: optional ``jax.sharding.Mesh``: the ``n x M`` products are split over its devices
        (also across processes after ``jax.distributed.initialize``).
      progress: run CG as a host loop and print the residual (and validation error) per
        iteration (not under ``jit``).
      solver_dtype: dtype of the ``M x M`` preconditioner and the CG vectors; default the data's
        (at least float32). ``jnp.float64`` with float32 data (needs ``jax_enable_x64``) keeps
        the ``n x M`` kernel products in float32 and does the cheap ``M x M`` work in float64,
        which brings the test error a little closer to float64's (see
        ``tests/regression/test_falkon.py::test_falkon_float32_small_ridge_tracks_float64``).

    Returns:
      :class:`FalkonState`; predict with :func:`falkon_predict`.

    Raises:
      ValueError: ``ridge <= 0``, neither or both of ``num_centers``/``centers``,
        ``num_centers > n``, ``y`` rows different from ``x``, NaN/inf in concrete inputs
        (``status`` 1 under ``jit``), ``progress`` under ``jit``, ``solver_dtype`` other than
        float32 / float64, below the data's precision, or float64 with x64 off.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import falkon_fit, falkon_predict
      >>> x = jax.random.uniform(jax.random.key(0), (200, 1), minval=-3, maxval=3)
      >>> y = jnp.sin(x[:, 0])
      >>> st = falkon_fit(jax.random.key(1), rbf, x, y, ridge=1e-6, num_centers=30, maxiter=20)
      >>> bool(jnp.sqrt(jnp.mean((falkon_predict(st, x) - y) ** 2)) < 1e-2)
      True

    References:
      Rudi, Carratino & Rosasco, *FALKON: An optimal large scale kernel method*, NeurIPS 2017;
      Meanti, Carratino, Rosasco & Rudi, *Kernel methods through the roof: handling billions of
      points efficiently*, NeurIPS 2020.
    """
    fn = "kjax.regression.falkon_fit"
    kern = c.check_kernel(fn, kernel)
    x, y2, vec = c.check_xy(fn, x, y)
    n = x.shape[0]
    maxiter = check_int(fn, "maxiter", maxiter, minimum=1)
    check_positive(fn, "tol", tol, allow_zero=True)
    alpha_reg = c.check_ridge(fn, ridge, ridge_scaling, n)
    if (num_centers is None) == (centers is None):
        fail(fn, "num_centers", "be given, or `centers` be given (exactly one of the two)",
             f"num_centers={num_centers!r}, centers={'None' if centers is None else 'an array'}")
    if centers is None:
        m = check_int(fn, "num_centers", num_centers, minimum=1)
        if m > n:
            fail(fn, "num_centers", f"be at most the number of points n={n}", m)
        if center_method not in METHODS:
            c.check_in(fn, "center_method", center_method, METHODS)
        idx = nystrom_centers(key, kern, x, m, method=center_method, ridge=ridge,
                              ridge_scaling=ridge_scaling)
        z = x[idx]
    else:
        z = c.check_x(fn, "centers", centers)
        check_same_dim(fn, "x", x, "centers", z, -1, what="the feature dimension d")
    xv = yv = None
    if (x_val is None) != (y_val is None):
        fail(fn, "y_val", "be given together with `x_val`", "only one of them")
    if x_val is not None:
        xv, yv, _ = c.check_xy(fn, x_val, y_val)
        check_same_dim(fn, "x", x, "x_val", xv, -1, what="the feature dimension d")
        if yv.shape[1] != y2.shape[1]:
            fail(fn, "y_val", f"have {y2.shape[1]} output column(s) like y", f"shape {yv.shape}")
    solver_dt = _solver_dtype(fn, solver_dtype, dtypes.gram_dtype(x, z))
    if progress:
        if not c.is_concrete(x, y2, z):
            raise KjaxError(f"{fn}: `progress=True` runs a host loop and cannot be used under "
                            "jit/vmap/grad; leave it False there.")
        coef, res, val, k, status = _falkon_host(kern, x, y2, z, alpha_reg, xv, yv, tol, maxiter,
                                                 jitter, block_size, mesh, solver_dt, fn)
    else:
        coef, res, val, k, status = _falkon_core(kern, x, y2, z, alpha_reg, xv, yv, tol, maxiter,
                                                 jitter, block_size, mesh, solver_dt)
    return FalkonState(z.astype(dtypes.gram_dtype(x, z)), coef, res, val, k, status, kern,
                       c.Layout(vec, False))


def _solver_dtype(fn, solver_dtype, prod_dt):
    if solver_dtype is None:
        return prod_dt
    try:
        dt = np.dtype(solver_dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.float32, np.float64):
        fail(fn, "solver_dtype", "be None, jnp.float32 or jnp.float64", repr(solver_dtype))
    if dt == np.float64 and not jax.config.jax_enable_x64:
        fail(fn, "solver_dtype", "be float64 only with jax_enable_x64 on "
             "(jax.config.update('jax_enable_x64', True))", "float64 with x64 off")
    if dt.itemsize < prod_dt.itemsize:
        fail(fn, "solver_dtype", f"be at least the data's {prod_dt.name}", dt.name)
    return dt


def _problem(kern, x, y2, z, alpha_reg, xv, yv, jitter, solver_dt):
    prod_dt = dtypes.gram_dtype(x, z)
    kmm, low_t, low_a, st_chol = _setup(kern, x, z, alpha_reg, jitter, solver_dt)
    p = _Problem(x, y2.astype(prod_dt), z.astype(prod_dt), low_t, low_a,
                 alpha_reg.astype(kmm.dtype), xv, yv)
    return p, st_chol


def _finish(p, s, x, y2, st_chol):
    coef = _coef(p, s.beta)
    cg_ok = jnp.all(jnp.isfinite(coef))
    status = c.combine_status(c.finite_status(x, y2), st_chol,
                              jnp.where(cg_ok, c.STATUS_OK, c.STATUS_FAILED).astype(jnp.int32))
    return coef, s.res, s.val, s.k, status


_problem_jit = jax.jit(_problem, static_argnums=(0, 7, 8))


def _falkon_core(kern, x, y2, z, alpha_reg, xv, yv, tol, maxiter, jitter, block_size, mesh,
                 solver_dt):
    # the M x M setup (two LAPACK Choleskys, the inverted diagonal blocks) is its own program, run
    # on one device: inside the sharded CG program XLA:CPU runs replicated work on every device at
    # once, and concurrent calls into threaded OpenBLAS intermittently returned NaN there (float64
    # solver, n = 307k, 2 CPU devices: 3 of 12 fresh runs, none of 6 with OPENBLAS_NUM_THREADS=1)
    p, st_chol = _problem_jit(kern, x, y2, z, alpha_reg, xv, yv, jitter, solver_dt)
    return _falkon_cg(kern, p, x, y2, st_chol, tol, maxiter, block_size, mesh)


@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8))
def _falkon_cg(kern, p, x, y2, st_chol, tol, maxiter, block_size, mesh):
    s0 = _cg_init(p, kern, block_size, mesh, maxiter)
    r0norm = jnp.maximum(jnp.sqrt(s0.rs), jnp.finfo(s0.rs.dtype).tiny)

    def cond(s):
        rel = jnp.max(jnp.sqrt(s.rs) / r0norm)
        return (s.k < maxiter) & (rel >= tol) & jnp.all(jnp.isfinite(s.rs))

    s = jax.lax.while_loop(cond, lambda s: _cg_step(s, p, kern, block_size, mesh, r0norm), s0)
    return _finish(p, s, x, y2, st_chol)


def _falkon_host(kern, x, y2, z, alpha_reg, xv, yv, tol, maxiter, jitter, block_size, mesh,
                 solver_dt, fn):
    p, st_chol = _problem_jit(kern, x, y2, z, alpha_reg, xv, yv, jitter, solver_dt)
    s = jax.jit(lambda p: _cg_init(p, kern, block_size, mesh, maxiter))(p)
    r0norm = jnp.maximum(jnp.sqrt(s.rs), jnp.finfo(s.rs.dtype).tiny)
    step = jax.jit(lambda s, p, r0: _cg_step(s, p, kern, block_size, mesh, r0))
    for it in range(maxiter):
        s = step(s, p, r0norm)
        rel = float(s.res[it])
        val = float(s.val[it])
        extra = "" if math.isnan(val) else f", validation MSE {val:.4g}"
        print(f"{fn}: iteration {it + 1}/{maxiter}, relative residual {rel:.3e}{extra}", flush=True)
        if rel < tol or not math.isfinite(rel):
            break
    return _finish(p, s, x, y2, st_chol)


def falkon_predict(
    state: FalkonState,
    x_new: Float[ArrayLike, "m d"],
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
) -> Float[Array, " m *O"]:
    r"""Predictions :math:`f(x_\star) = k(x_\star, Z)\, \alpha` of a fitted :class:`FalkonState`.

    Args:
      state: from :func:`falkon_fit`.
      x_new: ``[m, d]`` query points.
      block_size: block sizes of the kernel matvec.
      mesh: optional ``jax.sharding.Mesh``.

    Returns:
      ``[m]`` or ``[m, O]`` (the layout of the training ``y``).

    Raises:
      ValueError: ``x_new`` not ``[m, d]`` with the training ``d``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import falkon_fit, falkon_predict
      >>> x = jax.random.uniform(jax.random.key(0), (200, 1), minval=-3, maxval=3)
      >>> st = falkon_fit(jax.random.key(1), rbf, x, jnp.sin(x[:, 0]), ridge=1e-6, num_centers=30,
      ...                 maxiter=20)
      >>> falkon_predict(st, x[:4]).shape
      (4,)

    References:
      Rudi, Carratino & Rosasco, NeurIPS 2017.
    """
    fn = "kjax.regression.falkon_predict"
    x_new = c.check_x_new(fn, x_new, state.centers)
    out = kernels.kernel_matvec(state.kernel, x_new, state.centers, state.alpha,
                                block_size=block_size, mesh=mesh)
    return out[:, 0] if state.layout.vector else out

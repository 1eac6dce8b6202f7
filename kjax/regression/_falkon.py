"""Falkon: Nystrom kernel ridge regression by preconditioned conjugate gradients."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import dtypes, linalg, solvers
from kjax._src import status as st
from kjax._src.errors import KjaxError, check_int, check_positive, check_same_dim, fail
from kjax._src.status import Status
from kjax.regression import _common as c
from kjax.regression._centers import solver_centers


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
      residual: the relative residual reached (the last entry of ``residuals``; 0 when the
        right-hand side is zero).
      status: int32 code: 0 converged (every output's relative residual below ``tol``),
        1 non-finite input, 2 jitter added to a Cholesky factor, 3 not positive definite (a
        factorisation failed, or CG met non-positive curvature), 4 stopped at ``maxiter`` before
        ``tol``, 5 non-finite values; see :func:`status_name`.
      kernel: the kernel (static).
      layout: static shape facts.
    """

    centers: Float[Array, "M d"]
    alpha: Float[Array, "M O"]
    residuals: Float[Array, " maxiter"]
    val_errors: Float[Array, " maxiter"]
    iterations: Int[Array, ""]
    residual: Float[Array, ""]
    status: Int[Array, ""]
    kernel: c.HeldKernel
    layout: c.Layout


def tri_solve(fac, v, *, transpose):
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
    low_t, _, st_t = linalg.robust_cholesky(kmm + shift * jnp.eye(m, dtype=dt), jitter=jitter)
    lam = alpha_reg.astype(dt) / n
    # T T^T = L^T L
    tt = low_t.T @ low_t / m + lam * jnp.eye(m, dtype=dt)
    low_a, _, st_a = linalg.robust_cholesky(tt, jitter=jitter)
    fac_t = (low_t, linalg.block_inverses(low_t))
    fac_a = (low_a, linalg.block_inverses(low_a))
    return kmm, fac_t, fac_a, st.combine(st_t, st_a)


def _precond_apply(p: _Problem, b, kern, block_size, mesh, mesh_axis):
    """W b = A^-T (T^-T K_Mn K_nM T^-1 / n + lambda I) A^-1 b, Falkon's operator.

    The regulariser uses ``T^-T K_MM T^-1 = I`` (exact for ``T^T T = K_MM + shift I``, so the
    problem solved has ``K_MM + shift I`` in the penalty, a relative change of ``eps * M``) instead
    of multiplying by ``K_MM`` and solving with ``T`` again: in float32 that round trip amplifies
    rounding along ``K_MM``'s small eigenvalues, and CG converged to a solution with 2-3x the
    float64 test error at lambda = 1e-6; this form stays close to float64 (see
    tests/regression/test_falkon.py::test_falkon_float32_small_ridge_tracks_float64).
    """
    n = p.x.shape[0]
    u = tri_solve(p.low_a, b, transpose=True)  # A^-1 b
    v = tri_solve(p.low_t, u, transpose=True)  # T^-1 A^-1 b
    ktkv = kernels.kernel_normal_matvec(kern, p.x, p.centers, v.astype(p.centers.dtype),
                                        block_size=block_size, mesh=mesh,
                                        mesh_axis=mesh_axis).astype(b.dtype)
    inner = tri_solve(p.low_t, ktkv, transpose=False) / n + (p.alpha_reg / n) * u
    return tri_solve(p.low_a, inner, transpose=False)


def center_coefficients(p: _Problem, beta):
    return tri_solve(p.low_t, tri_solve(p.low_a, beta, transpose=True), transpose=True)


def _val_error(p: _Problem, beta, kern, block_size, mesh, mesh_axis):
    pred = kernels.kernel_matvec(kern, p.x_val, p.centers, center_coefficients(p, beta),
                                 block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    return jnp.mean((pred - p.y_val.astype(pred.dtype)) ** 2)


def _rhs(p: _Problem, kern, block_size, mesh, mesh_axis):
    """The right-hand side of Falkon's preconditioned system: A^-T T^-T K_Mn y / n."""
    n = p.x.shape[0]
    ik = c.index_kernel(kern)
    if ik is not None:  # K_Mn y as (K_nM)^T y: a columns= store holds K_nM, not K_Mn
        kty = ik.rmatvec(p.x, p.centers, p.y)
    else:
        kty = kernels.kernel_matvec(kern, p.centers, p.x, p.y, block_size=block_size, mesh=mesh,
                                    mesh_axis=mesh_axis)
    kty = kty.astype(p.low_t[0].dtype)
    return tri_solve(p.low_a, tri_solve(p.low_t, kty, transpose=False), transpose=False) / n


def _cg_parts(p: _Problem, kern, block_size, mesh, mesh_axis):
    """The operator and the per-iteration monitor (validation error) of the shared CG."""
    blocks = (block_size, mesh, mesh_axis)
    matvec = lambda b: _precond_apply(p, b, kern, *blocks)
    monitor = None if p.x_val is None else (lambda beta: _val_error(p, beta, kern, *blocks))
    return matvec, monitor


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
    ridge_scaling: str = "none",
    jitter: float | None = None,
    x_val: Float[ArrayLike, "nv d"] | None = None,
    y_val: Float[ArrayLike, " nv *O"] | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    progress: bool = False,
    solver_dtype: Any = None,
) -> FalkonState:
    r"""Falkon: Nystrom kernel ridge regression solved by preconditioned conjugate gradients.

    With centres :math:`z_1..z_M`, :math:`K_{nM} = k(X, Z)`, :math:`K_{MM} = k(Z, Z)`, the
    Nystrom KRR coefficients solve

    .. math:: (K_{nM}^\top K_{nM} + \alpha K_{MM})\,\alpha^\star = K_{nM}^\top y,\qquad
       \alpha = \lambda\ (\texttt{ridge\_scaling="none"}, \text{default})\ \text{or}\
       n\lambda\ (\texttt{"n"}, \text{Falkon's penalty}).

    The system is preconditioned with the two Cholesky factors of Rudi et al. (2017):
    :math:`T^\top T = K_{MM} + \epsilon M I` (:math:`\epsilon` the dtype's machine epsilon times
    the mean diagonal, as in Falkon) and :math:`A^\top A = T T^\top / M + \lambda I`; CG runs on
    :math:`W = A^{-\top} (T^{-\top} K_{nM}^\top K_{nM} T^{-1} / n + \lambda I) A^{-1}` (Falkon's
    operator: the penalty uses :math:`T^\top T` in place of :math:`K_{MM}`, a relative change of
    :math:`\epsilon M`, which keeps float32 accurate),
    whose condition number is :math:`O(1)` once :math:`M` is large enough for :math:`\lambda`
    (about :math:`M \gtrsim 1/\lambda_n` centres for uniform sampling, :math:`\lambda_n = \alpha/n`
    relative to :math:`\max_i k(x_i, x_i)`); a dozen or two iterations suffice then. With fewer
    centres or a smaller ridge CG needs more iterations (about
    :math:`\tfrac12\sqrt{1 + 1/(\lambda_n M)}\,\ln(2/\text{tol})`; see the user guide): if it
    stops at ``maxiter`` first, ``status`` is 4 and ``residual`` says how far it got. Each
    iteration costs one pass of
    :func:`kjax.kernels.kernel_normal_matvec` over the ``n x M`` kernel (each block evaluated once
    for both products, ``O(block)`` memory, split over ``mesh``); the ``M x M`` work is
    replicated. Each output column runs its
    own CG (multi-output). If :math:`K_{MM}` is not numerically positive definite (duplicated
    centres, a non-PSD kernel), jitter ``jitter * 10**k * mean(diag K_MM)`` is added to its
    Cholesky factor (``status`` 2); if that fails too ``status`` is 3.

    Args:
      key: PRNG key (centre selection).
      kernel: ``k(x1, x2) -> [n1, n2]``, or :func:`kjax.kernels.precomputed` (then ``x``,
        ``centers``, ``x_val`` are indices; with ``columns=idx`` pass ``centers=idx``: each
        iteration is two products with the stored ``[N, M]`` matrix).
      x: ``[n, d]`` training points.
      y: ``[n]`` or ``[n, O]`` targets.
      ridge: :math:`\lambda > 0` (see ``ridge_scaling``).
      num_centers: ``M``, the number of centres drawn with ``center_method`` (``M <= n``).
      centers: ``[M, d]`` explicit centres (instead of ``num_centers``).
      center_method: a method of :func:`nystrom_centers` (``"uniform"`` by default).
      maxiter: maximum CG iterations (a Python int >= 1).
      tol: stop when every output's relative residual is below ``tol`` (>= 0).
      ridge_scaling: ``"none"`` (default: :math:`K_{nM}^\top K_{nM} + \lambda K_{MM}`, scikit-learn's
        scale; alias ``"sklearn"``) or ``"n"`` (:math:`n\lambda`, Falkon's ``penalty``).
      jitter: relative jitter for the Cholesky factors (> 0; default ``10 eps``).
      x_val: optional ``[nv, d]`` validation points; with ``y_val``, the validation MSE is
        recorded after every iteration.
      y_val: ``[nv]`` or ``[nv, O]`` validation targets.
      block_size: block sizes of the kernel matvecs (an int or ``(rows, cols)``; the CG's
        :func:`~kjax.kernels.kernel_normal_matvec` uses the rows).
      mesh: optional ``jax.sharding.Mesh``: the ``n x M`` products are split over its devices
        (also across processes after ``jax.distributed.initialize``).
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).
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
        ``num_centers > n``, ``x`` not ``[n, d]`` with ``n, d >= 1``, ``y`` rows different from
        ``x``, NaN/inf in concrete inputs (``status`` 1 under ``jit``), ``maxiter < 1``,
        ``tol < 0``, ``jitter <= 0``, a bad ``block_size`` or ``mesh_axis``, ``progress`` under
        ``jit``, ``solver_dtype`` other than float32 / float64, below the data's precision, or
        float64 with x64 off.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import falkon_fit, falkon_predict
      >>> x = jax.random.uniform(jax.random.key(0), (200, 1), minval=-3, maxval=3)
      >>> y = jnp.sin(x[:, 0])
      >>> st = falkon_fit(jax.random.key(1), rbf, x, y, ridge=1e-6, ridge_scaling="n", num_centers=30,
      ...                 maxiter=20)
      >>> bool(jnp.sqrt(jnp.mean((falkon_predict(st, x) - y) ** 2)) < 1e-2)
      True

    References:
      Rudi, Carratino & Rosasco, *FALKON: An optimal large scale kernel method*, NeurIPS 2017;
      Meanti, Carratino, Rosasco & Rudi, *Kernel methods through the roof: handling billions of
      points efficiently*, NeurIPS 2020.
    """
    fn = "kjax.regression.falkon_fit"
    kern = c.check_kernel(fn, kernel)
    # the data are rows of K_nM only: with precomputed(K_nm, columns=idx) they need not be columns
    x, y2, vec = c.check_xy(fn, x, y, kern=kern, column=False)
    n = x.shape[0]
    maxiter = check_int(fn, "maxiter", maxiter, minimum=1)
    check_positive(fn, "tol", tol, allow_zero=True)
    alpha_reg = c.check_ridge(fn, ridge, ridge_scaling, n)
    jitter = c.check_jitter(fn, jitter)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    z = solver_centers(fn, key, kern, x, num_centers, centers, center_method=center_method, ridge=ridge,
                       ridge_scaling=ridge_scaling)
    xv = yv = None
    if (x_val is None) != (y_val is None):
        fail(fn, "y_val", "be given together with `x_val`", "only one of them")
    if x_val is not None:
        xv, yv, _ = c.check_xy(fn, x_val, y_val, kern=kern, column=False)
        check_same_dim(fn, "x", x, "x_val", xv, -1, what="the feature dimension d")
        if yv.shape[1] != y2.shape[1]:
            fail(fn, "y_val", f"have {y2.shape[1]} output column(s) like y", f"shape {yv.shape}")
    solver_dt = _solver_dtype(fn, solver_dtype, dtypes.gram_dtype(x, z))
    if progress:
        if not c.is_concrete(x, y2, z):
            raise KjaxError(f"{fn}: `progress=True` runs a host loop and cannot be used under "
                            "jit/vmap/grad; leave it False there.")
        out = _falkon_host(kern, x, y2, z, alpha_reg, xv, yv, tol, maxiter, jitter, block_size, mesh,
                           mesh_axis, solver_dt, fn)
    else:
        out = _falkon_core(kern, x, y2, z, alpha_reg, xv, yv, tol, maxiter, jitter, block_size, mesh,
                           mesh_axis, solver_dt)
    coef, res, val, k, resid, status = out
    return FalkonState(z.astype(dtypes.gram_dtype(x, z)), coef, res, val, k, resid, status, kern,
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


def _finish(p, beta, cg_status, stats, x, y2, st_chol):
    coef = center_coefficients(p, beta)
    # the CG's right-hand side is computed, not input: NaN there is a failure upstream
    cg_status = jnp.where(cg_status == Status.NONFINITE_INPUT, Status.NONFINITE_VALUES, cg_status)
    status = st.combine(st.nonfinite_input(x, y2), st_chol, cg_status, st.nonfinite_values(coef))
    return coef, stats.residuals, stats.monitor, stats.iterations, stats.residual, status


problem_jit = c.kernel_jit(static_argnums=(7, 8))(_problem)


def _falkon_core(kern, x, y2, z, alpha_reg, xv, yv, tol, maxiter, jitter, block_size, mesh, mesh_axis,
                 solver_dt):
    # the M x M setup (two LAPACK Choleskys, the inverted diagonal blocks) is its own program, run
    # on one device: inside the sharded CG program XLA:CPU runs replicated work on every device at
    # once, and concurrent calls into threaded OpenBLAS intermittently returned NaN there (float64
    # solver, n = 307k, 2 CPU devices: 3 of 12 fresh runs, none of 6 with OPENBLAS_NUM_THREADS=1)
    p, st_chol = problem_jit(kern, x, y2, z, alpha_reg, xv, yv, jitter, solver_dt)
    return _falkon_cg(kern, p, x, y2, st_chol, tol, maxiter, block_size, mesh, mesh_axis)


@c.kernel_jit(static_argnums=(5, 6, 7, 8, 9))
def _falkon_cg(kern, p, x, y2, st_chol, tol, maxiter, block_size, mesh, mesh_axis):
    b = _rhs(p, kern, block_size, mesh, mesh_axis)
    matvec, monitor = _cg_parts(p, kern, block_size, mesh, mesh_axis)
    beta, cg_status, stats = solvers.cg(matvec, b, tol=tol, maxiter=maxiter, monitor=monitor,
                                        fn_name="kjax.regression.falkon_fit")
    return _finish(p, beta, cg_status, stats, x, y2, st_chol)


def _falkon_host(kern, x, y2, z, alpha_reg, xv, yv, tol, maxiter, jitter, block_size, mesh, mesh_axis,
                 solver_dt, fn):
    p, st_chol = problem_jit(kern, x, y2, z, alpha_reg, xv, yv, jitter, solver_dt)
    blocks = (block_size, mesh, mesh_axis)

    @jax.jit
    def init(p):
        b = _rhs(p, kern, *blocks)
        return b, solvers.cg_init(_cg_parts(p, kern, *blocks)[0], b, tol=tol, maxiter=maxiter)

    @jax.jit
    def step(s, p):
        matvec, monitor = _cg_parts(p, kern, *blocks)
        s = solvers.cg_step(s, matvec, tol=tol, monitor=monitor)
        return s, solvers.cg_continue(s, maxiter)

    b, s = init(p)
    for it in range(maxiter):
        s, more = step(s, p)
        rel, val = float(s.residuals[it]), float(s.monitor[it])
        extra = "" if math.isnan(val) else f", validation MSE {val:.4g}"
        print(f"{fn}: iteration {it + 1}/{maxiter}, relative residual {rel:.3e}{extra}", flush=True)
        if not bool(more):
            break
    beta, cg_status, stats = jax.jit(solvers.cg_result)(s, b)
    return _finish(p, beta, cg_status, stats, x, y2, st_chol)


def falkon_predict(
    state: FalkonState,
    x_new: Float[ArrayLike, "m d"],
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> Float[Array, " m *O"]:
    r"""Predictions :math:`f(x_\star) = k(x_\star, Z)\, \alpha` of a fitted :class:`FalkonState`.

    NaN or inf in a concrete ``x_new`` raise; under ``jit`` they give NaN in their own rows only.

    Args:
      state: from :func:`falkon_fit`.
      x_new: ``[m, d]`` query points (``m = 0`` gives an empty result).
      block_size: block sizes of the kernel matvec.
      mesh: optional ``jax.sharding.Mesh``.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).

    Returns:
      ``[m]`` or ``[m, O]`` (the layout of the training ``y``).

    Raises:
      ValueError: ``x_new`` not ``[m, d]`` with the training ``d``, NaN/inf in a concrete
        ``x_new``, a bad ``block_size`` or ``mesh_axis``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import falkon_fit, falkon_predict
      >>> x = jax.random.uniform(jax.random.key(0), (200, 1), minval=-3, maxval=3)
      >>> st = falkon_fit(jax.random.key(1), rbf, x, jnp.sin(x[:, 0]), ridge=1e-4, num_centers=30,
      ...                 maxiter=20)
      >>> falkon_predict(st, x[:4]).shape
      (4,)

    References:
      Rudi, Carratino & Rosasco, NeurIPS 2017.
    """
    fn = "kjax.regression.falkon_predict"
    x_new = c.check_x_new(fn, x_new, state.centers, state.kernel)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    if x_new.shape[0] == 0:
        return c.empty_rows((0,) if state.layout.vector else (0, state.alpha.shape[1]), state.alpha.dtype)
    out = kernels.kernel_matvec(state.kernel, x_new, state.centers, state.alpha,
                                block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    return out[:, 0] if state.layout.vector else out

"""Krylov solvers shared by every pillar: (preconditioned) conjugate gradients and Lanczos.

Both return ``(solution, status, stats)``: ``status`` is a :class:`kjax._src.status.Status` code
(converged, stopped at ``maxiter`` before ``tol``, not positive definite, non-finite input or
values) and ``stats`` carries the iterations run and the relative residual reached, as lineax's
solvers do. Neither raises on values, so both run under ``jit``.

* :func:`cg` solves :math:`A x = b` for a symmetric positive-definite operator given by its
  matvec, optionally preconditioned (:math:`M \\approx A^{-1}`), each column of ``b: [n, k]`` with
  its own step sizes (the columns are independent systems). The step-level API
  (:func:`cg_init`, :func:`cg_step`, :func:`cg_result`) lets a caller run the loop itself (a host
  loop that prints progress, say). Falkon and ``kjax.ntk.predict`` use it.
* :func:`lanczos` finds the top-``k`` eigenpairs of a symmetric operator with full
  reorthogonalisation, restarting from a fresh random direction when the Krylov space becomes
  invariant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from kjax._src import status as st
from kjax._src.errors import check_int, check_positive, fail
from kjax._src.status import Status

Matvec = Callable[[jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------
# conjugate gradients


class CGStats(NamedTuple):
    """Diagnostics of :func:`cg`.

    Attributes:
      iterations: iterations run.
      residual: relative residual reached, :math:`\\max_j \\lVert r_j\\rVert / \\lVert b_j\\rVert` over
        the columns (from the CG recurrence).
      residuals: ``[maxiter]`` the same after each iteration; NaN after the last one run.
      monitor: ``[maxiter]`` the value of ``monitor(x)`` after each iteration (NaN after the last
        one run, or everywhere without a ``monitor``).
    """

    iterations: Int[Array, ""]
    residual: Float[Array, ""]
    residuals: Float[Array, " maxiter"]
    monitor: Float[Array, " maxiter"]


class CGState(NamedTuple):
    """The loop state of :func:`cg` (columns ``k`` of ``b: [n, k]`` are independent systems)."""

    x: Float[Array, "n k"]
    r: Float[Array, "n k"]
    p: Float[Array, "n k"]
    rz: Float[Array, " k"]
    bnorm: Float[Array, " k"]
    converged: Bool[Array, " k"]
    broken: Bool[Array, " k"]
    iteration: Int[Array, ""]
    residuals: Float[Array, " maxiter"]
    monitor: Float[Array, " maxiter"]


def _colsum(a, b):
    return jnp.sum(a * b, axis=0)


def _converged(r, bnorm, tol, atol):
    rn = jnp.sqrt(_colsum(r, r))
    return rn <= jnp.maximum(tol * bnorm, atol)


def _stop(r, rz, bnorm, tol, atol):
    """(converged, indefinite) per column: the residual test, or ``r = 0`` / ``0 < r^T z <= tiny``
    (nothing left to reduce); ``r^T z <= 0`` with ``r != 0`` means an indefinite preconditioner."""
    zero = _colsum(r, r) == 0
    tiny = jnp.finfo(rz.dtype).tiny
    done = _converged(r, bnorm, tol, atol) | zero | ((rz > 0) & (rz <= tiny))
    return done, (rz <= 0) & ~zero


def _relative(r, bnorm):
    rn = jnp.sqrt(_colsum(r, r))
    return jnp.max(rn / jnp.where(bnorm > 0, bnorm, 1.0))


def _active(s: CGState):
    return ~s.converged & ~s.broken & jnp.isfinite(s.rz)


def cg_init(matvec: Matvec, b: Float[Array, "n k"], *, x0: Float[Array, "n k"] | None = None,
            preconditioner: Matvec | None = None, tol: float = 1e-5, atol: float = 0.0,
            maxiter: int) -> CGState:
    """The state before the first iteration (``b`` two-dimensional: one column per system)."""
    dt = b.dtype
    if x0 is None:
        x, r = jnp.zeros_like(b), b
    else:
        x = x0.astype(dt)
        r = b - matvec(x).astype(dt)
    z = r if preconditioner is None else preconditioner(r).astype(dt)
    bnorm = jnp.sqrt(_colsum(b, b))
    rz = _colsum(r, z)
    nan = jnp.full((maxiter,), jnp.nan, dt)
    done, indefinite = _stop(r, rz, bnorm, tol, atol)
    return CGState(x, r, z, rz, bnorm, done, indefinite & ~done, jnp.asarray(0, jnp.int32), nan, nan)


def cg_step(s: CGState, matvec: Matvec, *, preconditioner: Matvec | None = None, tol: float = 1e-5,
            atol: float = 0.0, monitor: Callable[[jax.Array], jax.Array] | None = None) -> CGState:
    """One CG iteration on the columns still active (not converged, no breakdown, finite)."""
    dt = s.r.dtype
    active = _active(s)
    ap = matvec(s.p).astype(dt)
    pap = _colsum(s.p, ap)
    # non-positive curvature: the operator is not positive definite along p
    broken = s.broken | (active & ~(pap > 0))
    go = active & (pap > 0)
    step = jnp.where(go, s.rz / jnp.where(go, pap, 1.0), 0.0)
    x = s.x + step * s.p
    r = s.r - step * ap
    z = r if preconditioner is None else preconditioner(r).astype(dt)
    rz_new = jnp.where(go, _colsum(r, z), s.rz)
    tiny = jnp.finfo(dt).tiny
    done, indefinite = _stop(r, rz_new, s.bnorm, tol, atol)
    converged = s.converged | (go & done)
    # r^T M r <= 0 with r != 0: the preconditioner is not positive definite (in floating point),
    # and the iteration cannot go on; it stops there as NOT_PSD, never as converged
    broken = broken | (go & indefinite & ~done)
    beta = jnp.where(go, rz_new / jnp.where(s.rz > tiny, s.rz, 1.0), 0.0)
    p = jnp.where(go, z + beta * s.p, s.p)
    k = s.iteration
    res = s.residuals.at[k].set(_relative(r, s.bnorm))
    mon = s.monitor if monitor is None else s.monitor.at[k].set(jnp.asarray(monitor(x), dt))
    return CGState(x, r, p, rz_new, s.bnorm, converged, broken, k + 1, res, mon)


def cg_continue(s: CGState, maxiter: int) -> jax.Array:
    """Whether :func:`cg` runs another iteration."""
    return (s.iteration < maxiter) & jnp.any(_active(s))


def cg_result(s: CGState, b: jax.Array) -> tuple[jax.Array, jax.Array, CGStats]:
    """``(x, status, stats)`` of a finished loop (``b`` the right-hand side, for its status)."""
    code = st.nonfinite_input(b)
    code = st.where(jnp.any(s.broken & ~s.converged), Status.NOT_PSD, code)
    # a column whose r^T z is NaN / inf stopped there (a non-finite operator or preconditioner)
    code = st.where(~jnp.all(jnp.isfinite(s.x)) | ~jnp.all(jnp.isfinite(s.r))
                    | jnp.any(~jnp.isfinite(s.rz) & ~s.converged), Status.NONFINITE_VALUES, code)
    code = st.where(~jnp.all(s.converged | s.broken), Status.MAX_ITER, code)
    stats = CGStats(s.iteration, _relative(s.r, s.bnorm), s.residuals, s.monitor)
    return s.x, code, stats


def cg(
    matvec: Matvec,
    b: Float[Array, " n *k"],
    *,
    x0: Float[Array, " n *k"] | None = None,
    preconditioner: Matvec | None = None,
    tol: float = 1e-5,
    atol: float = 0.0,
    maxiter: int | None = None,
    monitor: Callable[[jax.Array], jax.Array] | None = None,
    fn_name: str = "kjax._src.solvers.cg",
) -> tuple[Float[Array, " n *k"], Int[Array, ""], CGStats]:
    r"""(Preconditioned) conjugate gradients for :math:`A x = b`, :math:`A` symmetric positive
    definite, given by its matvec.

    Each column :math:`b_j` of a 2-D ``b`` is its own system with its own step sizes; a column
    stops when :math:`\lVert r_j\rVert \le \max(\text{tol}\,\lVert b_j\rVert, \text{atol})`. With a
    preconditioner :math:`M \approx A^{-1}` (symmetric positive definite) the iteration is
    Hestenes-Stiefel PCG: :math:`z = M r`, :math:`\alpha = r^\top z / p^\top A p`,
    :math:`p \leftarrow z + (r'^\top z' / r^\top z)\, p`; the stopping test uses the unpreconditioned
    residual. A column that meets :math:`p^\top A p \le 0` stops there (status ``NOT_PSD``).

    Args:
      matvec: ``v -> A v`` for ``v`` of ``b``'s shape (``[n]`` or ``[n, k]``).
      b: ``[n]`` or ``[n, k]`` right-hand side(s).
      x0: initial guess, shape of ``b`` (default zeros).
      preconditioner: ``v -> M v``, ``M`` approximating :math:`A^{-1}`.
      tol: relative tolerance (>= 0).
      atol: absolute tolerance (>= 0).
      maxiter: iteration cap (default ``10 n``).
      monitor: ``x -> scalar`` recorded after every iteration (e.g. a validation error).
      fn_name: the public function to name in errors.

    Returns:
      ``(x, status, stats)``: ``x`` the shape of ``b``; ``status`` ``OK`` (every column converged),
      ``MAX_ITER``, ``NOT_PSD``, ``NONFINITE_VALUES`` or ``NONFINITE_INPUT``; :class:`CGStats`.

    Raises:
      ValueError: ``b`` of rank other than 1 or 2, a negative ``tol``/``atol``, ``maxiter < 1``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax._src.solvers import cg
      >>> a = jnp.array([[4.0, 1.0], [1.0, 3.0]])
      >>> x, status, stats = cg(lambda v: a @ v, jnp.array([1.0, 2.0]), tol=1e-6)
      >>> [round(float(v), 4) for v in x], int(status), int(stats.iterations)
      ([0.0909, 0.6364], 0, 2)

    References:
      Hestenes & Stiefel, *Methods of conjugate gradients for solving linear systems*, 1952;
      Saad, *Iterative Methods for Sparse Linear Systems*, 2nd ed., Algorithm 9.1 (PCG).
    """
    b = jnp.asarray(b)
    if b.ndim not in (1, 2):
        fail(fn_name, "b", "have rank 1 or 2 ([n] or [n, k])", f"shape {b.shape}")
    check_positive(fn_name, "tol", tol, allow_zero=True)
    check_positive(fn_name, "atol", atol, allow_zero=True)
    maxiter = 10 * max(b.shape[0], 1) if maxiter is None else check_int(fn_name, "maxiter", maxiter,
                                                                          minimum=1)
    vec = b.ndim == 1
    dt = jnp.promote_types(b.dtype, jnp.float32)

    def as2(v):
        return v.reshape(v.shape[0], -1)

    def back(v):
        return v.reshape(b.shape)

    mv = (lambda v: as2(jnp.asarray(matvec(back(v))))) if vec else matvec
    pc = None
    if preconditioner is not None:
        pc = (lambda v: as2(jnp.asarray(preconditioner(back(v))))) if vec else preconditioner
    mon = None if monitor is None else (lambda x: monitor(back(x)))
    b2 = as2(b).astype(dt)
    s0 = cg_init(mv, b2, x0=None if x0 is None else as2(jnp.asarray(x0)), preconditioner=pc, tol=tol,
                 atol=atol, maxiter=maxiter)
    s = jax.lax.while_loop(lambda s: cg_continue(s, maxiter),
                           lambda s: cg_step(s, mv, preconditioner=pc, tol=tol, atol=atol, monitor=mon),
                           s0)
    x, code, stats = cg_result(s, b2)
    return back(x), code, stats


# --------------------------------------------------------------------------------------------
# Lanczos


class LanczosStats(NamedTuple):
    r"""Diagnostics of :func:`lanczos`.

    Attributes:
      iterations: Lanczos steps run.
      residual: the largest relative Ritz residual of the ``k`` pairs returned,
        :math:`\max_j \lVert A v_j - \theta_j v_j\rVert / \max_i |\theta_i|` (from the recurrence:
        :math:`|\beta_m s_{m j}|`).
      restarts: how many times the Krylov space became invariant and a fresh direction was drawn.
    """

    iterations: Int[Array, ""]
    residual: Float[Array, ""]
    restarts: Int[Array, ""]


def lanczos(
    key: jax.Array,
    matvec: Matvec,
    n: int,
    k: int,
    *,
    num_iters: int | None = None,
    tol: float | None = None,
    dtype: Any = None,
    fn_name: str = "kjax._src.solvers.lanczos",
) -> tuple[tuple[Float[Array, " k"], Float[Array, "n k"]], Int[Array, ""], LanczosStats]:
    r"""The ``k`` largest eigenpairs of a symmetric operator given by its matvec (Lanczos).

    Runs ``num_iters = m`` steps of the Lanczos recurrence
    :math:`\beta_i v_{i+1} = A v_i - \alpha_i v_i - \beta_{i-1} v_{i-1}` with full
    reorthogonalisation (twice, against every earlier vector), then diagonalises the tridiagonal
    :math:`T_m`. When :math:`\beta_i` vanishes (the Krylov space is invariant), the next vector is a
    fresh random direction orthogonalised against the earlier ones and :math:`\beta_i = 0` (so
    :math:`T_m` splits and its eigenvalues stay Ritz values of :math:`A`). With ``m = n`` the result
    is exact up to rounding.

    Args:
      key: PRNG key for the starting vector (and restarts).
      matvec: ``v [n] -> A v [n]``.
      n: operator size (a Python int >= 1).
      k: number of eigenpairs (``1 <= k <= num_iters``).
      num_iters: Lanczos steps ``m`` (default ``min(n, 2k + 20)``; ``k <= m <= n``).
      tol: the pairs count as converged when ``stats.residual <= tol`` (default ``sqrt(eps)``).
      dtype: working dtype (default: the default float).
      fn_name: the public function to name in errors.

    Returns:
      ``((eigenvalues [k] descending, eigenvectors [n, k]), status, stats)``: ``status`` ``OK``,
      ``MAX_ITER`` (residual above ``tol``) or ``NONFINITE_VALUES``; :class:`LanczosStats`.

    Raises:
      ValueError: ``n < 1``, ``k < 1``, ``num_iters`` outside ``[k, n]``, a negative ``tol``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax._src.solvers import lanczos
      >>> a = jnp.diag(jnp.arange(1.0, 31.0))
      >>> (vals, vecs), status, stats = lanczos(jax.random.key(0), lambda v: a @ v, 30, 3, num_iters=30)
      >>> [round(float(v), 6) for v in vals], int(status)
      ([30.0, 29.0, 28.0], 0)

    References:
      Lanczos, *An iteration method for the solution of the eigenvalue problem of linear
      differential and integral operators*, 1950; Golub & Van Loan, *Matrix Computations*, 4th ed.,
      sections 10.1-10.3.
    """
    n = check_int(fn_name, "n", n, minimum=1)
    k = check_int(fn_name, "k", k, minimum=1)
    m = min(n, 2 * k + 20) if num_iters is None else check_int(fn_name, "num_iters", num_iters)
    if not k <= m <= n:
        fail(fn_name, "num_iters", f"be in [k, n] = [{k}, {n}]", m)
    if tol is not None:
        check_positive(fn_name, "tol", tol, allow_zero=True)
    dtype = np.dtype(dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32))
    tol = float(np.sqrt(np.finfo(dtype).eps)) if tol is None else float(tol)
    k_start, k_restart = jax.random.split(key)
    v0 = jax.random.normal(k_start, (n,), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    basis = jnp.zeros((m, n), dtype).at[0].set(v0)
    alpha = jnp.zeros((m,), dtype)
    beta = jnp.zeros((m,), dtype)

    def orthogonalise(w, basis, i):
        mask = (jnp.arange(m) <= i)[:, None]
        vm = basis * mask
        for _ in range(2):  # twice is enough (Parlett's "twice is enough")
            w = w - vm.T @ (vm @ w)
        return w

    def step(i, carry):
        basis, alpha, beta, scale, restarts = carry
        w = jnp.asarray(matvec(basis[i])).astype(dtype)
        a = jnp.dot(w, basis[i])
        scale = jnp.maximum(scale, jnp.linalg.norm(w))
        w = orthogonalise(w, basis, i)
        b = jnp.linalg.norm(w)
        # invariant subspace: continue from a fresh direction, decoupling T
        invariant = b <= 100 * n * jnp.finfo(dtype).eps * jnp.maximum(scale, jnp.finfo(dtype).tiny)
        fresh = orthogonalise(jax.random.normal(jax.random.fold_in(k_restart, i), (n,), dtype), basis, i)
        nxt = jnp.where(invariant, fresh / jnp.maximum(jnp.linalg.norm(fresh), jnp.finfo(dtype).tiny),
                        w / jnp.where(b > 0, b, 1.0))
        b = jnp.where(invariant, 0.0, b)
        more = i + 1 < m
        basis = basis.at[jnp.minimum(i + 1, m - 1)].set(jnp.where(more, nxt, basis[m - 1]))
        restarts = restarts + (more & invariant).astype(jnp.int32)
        return basis, alpha.at[i].set(a), beta.at[i].set(b), scale, restarts

    init = (basis, alpha, beta, jnp.asarray(0.0, dtype), jnp.asarray(0, jnp.int32))
    basis, alpha, beta, _, restarts = jax.lax.fori_loop(0, m, step, init)
    t = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, s = jnp.linalg.eigh(t)
    theta, s = theta[::-1][:k], s[:, ::-1][:, :k]
    vecs = basis.T @ s
    resid = jnp.max(jnp.abs(beta[m - 1] * s[m - 1])) / jnp.maximum(jnp.max(jnp.abs(theta)),
                                                                      jnp.finfo(dtype).tiny)
    code = st.nonfinite_values(theta, vecs)
    code = st.where(~(resid <= tol), Status.MAX_ITER, code)
    return (theta, vecs), code, LanczosStats(jnp.asarray(m, jnp.int32), resid, restarts)


__all__ = ["CGState", "CGStats", "LanczosStats", "cg", "cg_continue", "cg_init", "cg_result", "cg_step",
           "lanczos"]

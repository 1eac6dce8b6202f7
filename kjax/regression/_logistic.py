"""Logistic Falkon: kernel logistic regression on Nystrom centres by Newton steps whose linear
systems are solved by Falkon-preconditioned conjugate gradients."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import dtypes, solvers
from kjax._src import status as st
from kjax._src.errors import check_int, check_positive, fail
from kjax._src.status import Status
from kjax.regression import _common as c
from kjax.regression._centers import solver_centers
from kjax.regression._falkon import center_coefficients, problem_jit, tri_solve

#: step lengths tried along each Newton direction (the objective along it costs no kernel product)
_STEPS = tuple(0.5**i for i in range(12))


class FalkonLogisticState(NamedTuple):
    """A fitted kernel logistic regression :math:`f(x) = \\sum_{j=1}^M \\alpha_j k(x, z_j)`, the
    log-odds of the label ``+1``.

    Attributes:
      centers: ``[M, d]`` Nystrom centres :math:`z_j`.
      alpha: ``[M]`` coefficients.
      objectives: ``[newton_steps]`` the objective (see :func:`falkon_logistic_fit`) after each
        Newton step; NaN after the last one run.
      iterations: Newton steps run.
      cg_iterations: conjugate-gradient iterations run, over all Newton steps.
      residual: the relative gradient norm reached, :math:`\\lVert\\nabla J(\\alpha)\\rVert /
        \\lVert\\nabla J(0)\\rVert`.
      status: int32 code: 0 converged (``residual <= tol``), 1 non-finite input, 2 jitter added
        to a Cholesky factor, 3 not positive definite, 4 stopped at ``newton_steps`` before
        ``tol``, 5 non-finite values; see :func:`status_name`.
      kernel: the kernel (static).
    """

    centers: Float[Array, "M d"]
    alpha: Float[Array, " M"]
    objectives: Float[Array, " newton_steps"]
    iterations: Int[Array, ""]
    cg_iterations: Int[Array, ""]
    residual: Float[Array, ""]
    status: Int[Array, ""]
    kernel: c.HeldKernel


def falkon_logistic_fit(
    key: jax.Array,
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n"],
    *,
    ridge: float,
    num_centers: int | None = None,
    centers: Float[ArrayLike, "M d"] | None = None,
    center_method: str = "uniform",
    newton_steps: int = 20,
    maxiter: int = 20,
    tol: float = 1e-9,
    ridge_scaling: str = "none",
    jitter: float | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> FalkonLogisticState:
    r"""Kernel logistic regression on Nystrom centres (Falkon's ``LogisticFalkon``): Newton's
    method with Falkon-preconditioned conjugate gradients for each Newton system.

    With labels :math:`y_i \in \{-1, +1\}` (``y > 0`` is ``+1``, anything else ``-1``: labels
    ``{0, 1}`` work as they are), :math:`f = K_{nM}\alpha` and
    :math:`\alpha_{\text{reg}} = \text{ridge}` (``ridge_scaling="none"``) or :math:`n\,\text{ridge}`
    (``"n"``), the fit minimises

    .. math:: J(\alpha) = \sum_{i=1}^n \log\big(1 + e^{-y_i f_i}\big)
       + \tfrac{\alpha_{\text{reg}}}{2}\, \alpha^\top K_{MM}\, \alpha,

    which is scikit-learn's ``LogisticRegression(C=1 / alpha_reg, fit_intercept=False)`` on the
    Nystrom features :math:`\Phi = K_{nM} R^{-1}` (:math:`K_{MM} = R^\top R`, weights
    :math:`w = R\alpha`); with ``ridge_scaling="n"``, ``C = 1 / (n ridge)``. Each Newton step
    solves :math:`(K_{Mn} W K_{nM} + \alpha_{\text{reg}} K_{MM})\,\delta = -\nabla J`,
    :math:`W = \operatorname{diag}(\sigma(f)(1 - \sigma(f)))`, with at most ``maxiter`` CG
    iterations preconditioned as in :func:`falkon_fit` (with the curvature bound
    :math:`W \preceq I/4`), then takes the longest step of :math:`1, 1/2, \ldots, 2^{-11}` that
    does not increase :math:`J` beyond rounding (computed without a kernel product: :math:`f` is
    linear in the step). It stops when the relative gradient norm is below ``tol``; ``status`` 4
    says ``newton_steps`` ran out first. Each CG iteration costs two
    :func:`kjax.kernels.kernel_matvec` passes over the ``n x M`` kernel (blockwise, split over
    ``mesh``). Like Falkon, :math:`K_{MM}` gets a shift of the dtype's eps times ``M`` (relative)
    in the penalty.

    Args:
      key: PRNG key (centre selection).
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` training points.
      y: ``[n]`` binary labels (``y > 0`` is the positive class).
      ridge: :math:`> 0` (see ``ridge_scaling``).
      num_centers: ``M``, drawn with ``center_method`` (``M <= n``).
      centers: ``[M, d]`` explicit centres (instead of ``num_centers``).
      center_method: a method of :func:`nystrom_centers`.
      newton_steps: maximum Newton steps (a Python int >= 1).
      maxiter: maximum CG iterations per Newton step (a Python int >= 1).
      tol: target relative gradient norm (>= 0).
      ridge_scaling: ``"none"`` (default; alias ``"sklearn"``) or ``"n"``.
      jitter: relative jitter for the Cholesky factors (> 0).
      block_size: block sizes of the kernel matvecs.
      mesh: optional ``jax.sharding.Mesh``: the ``n x M`` products are split over its devices.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).

    Returns:
      :class:`FalkonLogisticState`; predict with :func:`falkon_logistic_predict` (log-odds) or
      :func:`falkon_logistic_predict_proba`.

    Raises:
      ValueError: ``y`` not ``[n]``, ``ridge <= 0``, neither or both of ``num_centers`` /
        ``centers``, ``num_centers > n``, ``newton_steps`` or ``maxiter`` below 1, ``tol < 0``,
        and the input errors of :func:`falkon_fit`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import falkon_logistic_fit, falkon_logistic_predict
      >>> x = jax.random.normal(jax.random.key(0), (200, 2))
      >>> y = jnp.where(x[:, 0] * x[:, 1] > 0, 1.0, -1.0)
      >>> st = falkon_logistic_fit(jax.random.key(1), rbf, x, y, ridge=1e-2, num_centers=40)
      >>> int(st.status), bool(jnp.mean(jnp.sign(falkon_logistic_predict(st, x)) == y) > 0.9)
      (0, True)

    References:
      Meanti, Carratino, Rosasco & Rudi, *Kernel methods through the roof*, NeurIPS 2020 (the
      Falkon library's ``LogisticFalkon``); Marteau-Ferey, Bach & Rudi, *Globally convergent Newton
      methods for ill-conditioned generalized self-concordant losses*, NeurIPS 2019.
    """
    fn = "kjax.regression.falkon_logistic_fit"
    kern = c.check_kernel(fn, kernel)
    x, y2, vec = c.check_xy(fn, x, y, kern=kern)
    if not vec:
        fail(fn, "y", "be [n] binary labels (one output; multiclass is not supported)",
             f"shape {y2.shape}")
    n = x.shape[0]
    newton_steps = check_int(fn, "newton_steps", newton_steps, minimum=1)
    maxiter = check_int(fn, "maxiter", maxiter, minimum=1)
    check_positive(fn, "tol", tol, allow_zero=True)
    alpha_reg = c.check_ridge(fn, ridge, ridge_scaling, n)
    jitter = c.check_jitter(fn, jitter)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    z = solver_centers(fn, key, kern, x, num_centers, centers, center_method=center_method, ridge=ridge,
                       ridge_scaling=ridge_scaling)
    prod_dt = dtypes.gram_dtype(x, z)
    # Falkon's preconditioner for the curvature bound W <= I / 4: A^T A = T T^T / (4 M) + lambda I
    # = (T T^T / M + 4 lambda I) / 4; the constant factor does not change the CG iterates
    p, st_chol = problem_jit(kern, x, y2, z, 4.0 * alpha_reg, None, None, jitter, prod_dt)
    out = _newton(kern, p, x, y2, alpha_reg.astype(prod_dt), st_chol, float(tol), newton_steps, maxiter,
                  block_size, mesh, mesh_axis)
    coef, objs, its, cg_its, resid, status = out
    return FalkonLogisticState(z.astype(prod_dt), coef, objs, its, cg_its, resid, status, kern)


@c.kernel_jit(static_argnums=(6, 7, 8, 9, 10, 11))
def _newton(kern, p, x, y2, alpha_reg, st_chol, tol, newton_steps, maxiter, block_size, mesh, mesh_axis):
    n = x.shape[0]
    dt = p.low_t[0].dtype
    kw = dict(block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    ys = jnp.where(y2[:, 0] > 0, 1.0, -1.0).astype(dt)
    low_t = p.low_t[0]
    steps = jnp.asarray(_STEPS, dt)

    def knm(v):  # K_nM v
        return kernels.kernel_matvec(kern, p.x, p.centers, v.astype(p.centers.dtype), **kw).astype(dt)

    def kmn(w):  # K_Mn w
        return kernels.kernel_matvec(kern, p.centers, p.x, w.astype(p.x.dtype), **kw).astype(dt)

    def penalty_mv(a):  # (K_MM + shift I) a = L L^T a
        return low_t @ (low_t.T @ a)

    def objective(f, a):
        return jnp.sum(jax.nn.softplus(-ys * f)) + 0.5 * alpha_reg * jnp.sum(a * penalty_mv(a))

    def gradient(f, a):
        return kmn(-ys * jax.nn.sigmoid(-ys * f)) + alpha_reg * penalty_mv(a)

    def direction(f, g):
        w = jax.nn.sigmoid(f) * jax.nn.sigmoid(-f)

        def op(b):
            u = tri_solve(p.low_a, b, transpose=True)
            v = tri_solve(p.low_t, u, transpose=True)
            inner = tri_solve(p.low_t, kmn(w[:, None] * knm(v)), transpose=False) / n + (alpha_reg / n) * u
            return tri_solve(p.low_a, inner, transpose=False)

        rhs = -tri_solve(p.low_a, tri_solve(p.low_t, g[:, None], transpose=False), transpose=False) / n
        beta, _, stats = solvers.cg(op, rhs, tol=0.0, maxiter=maxiter,
                                    fn_name="kjax.regression.falkon_logistic_fit")
        return center_coefficients(p, beta)[:, 0], stats.iterations

    def norm(v):
        return jnp.sqrt(jnp.sum(v * v))

    m = p.centers.shape[0]
    a0 = jnp.zeros((m,), dt)
    f0 = jnp.zeros((n,), dt)
    g0 = gradient(f0, a0)
    g0n = jnp.where(norm(g0) > 0, norm(g0), 1.0)

    def cond(carry):
        _, _, g, i, _, _ = carry
        return (i < newton_steps) & (norm(g) / g0n > tol) & jnp.all(jnp.isfinite(g))

    def body(carry):
        a, f, g, i, cg_its, objs = carry
        d, its = direction(f, g)
        kd = knm(d[:, None])[:, 0]
        vals = jax.vmap(lambda t: objective(f + t * kd, a + t * d))(steps)
        j0 = objective(f, a)
        # "decreases" up to rounding of J: near the optimum the full step's decrease is below it
        ok = vals <= j0 + 16 * jnp.finfo(dt).eps * jnp.abs(j0)
        # the longest step that decreases J (none: the direction is no use at this precision; stop)
        t = jnp.where(jnp.any(ok), steps[jnp.argmax(ok)], 0.0)
        a, f = a + t * d, f + t * kd
        g = jnp.where(t > 0, gradient(f, a), jnp.zeros_like(g))
        return a, f, g, i + 1, cg_its + its, objs.at[i].set(objective(f, a))

    init = (a0, f0, g0, jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32),
            jnp.full((newton_steps,), jnp.nan, dt))
    a, f, g, i, cg_its, objs = jax.lax.while_loop(cond, body, init)
    # a zero gradient from "no decreasing step" is a stall, not convergence: recompute it
    g_final = gradient(f, a)
    resid = norm(g_final) / g0n
    status = st.combine(st.nonfinite_input(x, y2), st_chol, st.nonfinite_values(a, resid))
    status = st.where(~(resid <= tol) & jnp.isfinite(resid), Status.MAX_ITER, status)
    return a, objs, i, cg_its, resid, status


def falkon_logistic_predict(
    state: FalkonLogisticState,
    x_new: Float[ArrayLike, "m d"],
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> Float[Array, " m"]:
    r"""The log-odds :math:`f(x_\star) = k(x_\star, Z)\,\alpha` of a :class:`FalkonLogisticState`
    (scikit-learn's ``decision_function``; the predicted label is ``+1`` where it is positive).

    Args:
      state: from :func:`falkon_logistic_fit`.
      x_new: ``[m, d]`` query points (``m = 0`` gives an empty result).
      block_size: block sizes of the kernel matvec.
      mesh: optional ``jax.sharding.Mesh``.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).

    Returns:
      ``[m]`` log-odds of the label ``+1``.

    Raises:
      ValueError: ``x_new`` not ``[m, d]`` with the training ``d``, NaN/inf in a concrete
        ``x_new``, a bad ``block_size`` or ``mesh_axis``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import falkon_logistic_fit, falkon_logistic_predict
      >>> x = jax.random.normal(jax.random.key(0), (100, 2))
      >>> st = falkon_logistic_fit(None, rbf, x, jnp.sign(x[:, 0]), ridge=1e-2, centers=x[:20])
      >>> falkon_logistic_predict(st, x[:3]).shape
      (3,)

    References:
      Meanti et al., NeurIPS 2020.
    """
    return _predict("kjax.regression.falkon_logistic_predict", state, x_new, block_size, mesh, mesh_axis)


def falkon_logistic_predict_proba(
    state: FalkonLogisticState,
    x_new: Float[ArrayLike, "m d"],
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> Float[Array, " m"]:
    r"""The probability :math:`\sigma(f(x_\star))` of the label ``+1`` (see
    :func:`falkon_logistic_predict`).

    Args:
      state: from :func:`falkon_logistic_fit`.
      x_new: ``[m, d]`` query points.
      block_size: block sizes of the kernel matvec.
      mesh: optional ``jax.sharding.Mesh``.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).

    Returns:
      ``[m]`` probabilities in ``[0, 1]``.

    Raises:
      ValueError: as :func:`falkon_logistic_predict`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import falkon_logistic_fit, falkon_logistic_predict_proba
      >>> x = jax.random.normal(jax.random.key(0), (100, 2))
      >>> st = falkon_logistic_fit(None, rbf, x, jnp.sign(x[:, 0]), ridge=1e-2, centers=x[:20])
      >>> p = falkon_logistic_predict_proba(st, x)
      >>> bool(jnp.all((p >= 0) & (p <= 1)))
      True

    References:
      Meanti et al., NeurIPS 2020.
    """
    f = _predict("kjax.regression.falkon_logistic_predict_proba", state, x_new, block_size, mesh, mesh_axis)
    return jax.nn.sigmoid(f)


def _predict(fn, state, x_new, block_size, mesh, mesh_axis):
    x_new = c.check_x_new(fn, x_new, state.centers, state.kernel)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    if x_new.shape[0] == 0:
        return c.empty_rows((0,), state.alpha.dtype)
    return kernels.kernel_matvec(state.kernel, x_new, state.centers, state.alpha, block_size=block_size,
                                 mesh=mesh, mesh_axis=mesh_axis)

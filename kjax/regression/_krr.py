"""Exact kernel ridge regression and spectral regularisation (one eigendecomposition, many filters)."""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import dtypes, linalg, solvers
from kjax._src import status as st
from kjax._src.errors import check_in, check_int, check_positive, fail
from kjax._src.status import Status
from kjax.regression import _common as c
from kjax.regression._rpcholesky import block_rpcholesky_core

FILTERS = ("tikhonov", "gradient_flow", "cutoff", "landweber", "iterated_tikhonov")

#: the values of ``krr_fit(solver=)``
SOLVERS = ("auto", "cholesky", "pcg")
#: ``solver="auto"`` takes the direct (Cholesky) solver up to this many points and PCG above
PCG_MIN_N = 4096
#: PCG multiplies by the ``n x n`` matrix formed once when it takes at most this many bytes (and no
#: mesh is given); above, every iteration re-evaluates kernel blocks (``kernel_matvec``)
PCG_DENSE_BYTES = 2 * 1024**3
#: default rank of the RPCholesky preconditioner (capped at n) and iteration cap of PCG
PCG_RANK = 500
PCG_MAXITER = 1000


class KRRState(NamedTuple):
    r"""A fitted exact (or spectral) kernel regressor: :math:`f(x) = \sum_i c_i k(x, x_i)`.

    Attributes:
      x: ``[n, d]`` training points.
      coef: ``[n, O]`` dual coefficients, or ``[R, n, O]`` for a path of ``R`` ridge values.
      alpha: the unscaled diagonal shift(s) actually used, ``[]`` or ``[R]`` (``K + alpha I``).
      status: int32 code (``0`` ok, ``1`` non-finite input, ``2`` jitter added / negative
        eigenvalues clipped, ``3`` not positive definite: the factorisation failed even with the
        largest jitter, or conjugate gradients met non-positive curvature, ``4`` PCG stopped at
        ``maxiter`` before ``tol``, ``5`` non-finite values from finite input); see
        :func:`status_name`.
      kernel: the kernel (static).
      layout: static shape facts used by :func:`krr_predict`.
      residual: the relative residual reached,
        :math:`\max_j \lVert (K + \alpha I) c_j - y_j\rVert / \lVert y_j\rVert` over the outputs
        (and the ridge path): recomputed from one more product with ``K`` after the iterations
        for ``solver="pcg"`` (not the CG recurrence's estimate, which drifts in float32),
        computed from ``K`` for the direct solvers; NaN for :func:`spectral_fit` filters other
        than ``"tikhonov"``, which do not solve this system.
      iterations: CG iterations run (``0`` for the direct solvers).
    """

    x: Float[Array, "n d"]
    coef: Float[Array, " *R n O"]
    alpha: Float[Array, " *R"]
    status: Int[Array, ""]
    kernel: c.HeldKernel
    layout: c.Layout
    residual: Float[Array, ""] | None = None
    iterations: Int[Array, ""] | None = None


def krr_fit(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    *,
    ridge: float | Float[ArrayLike, " R"],
    ridge_scaling: str = "none",
    jitter: float | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    solver: str = "auto",
    tol: float | None = None,
    maxiter: int | None = None,
    preconditioner_rank: int | None = None,
    key: jax.Array | None = None,
) -> KRRState:
    r"""Exact kernel ridge regression: solve :math:`(K + \alpha I)\, c = y`.

    With ``ridge_scaling="none"`` (the default; ``"sklearn"`` is an alias)
    :math:`\alpha = \text{ridge}`, scikit-learn's ``KernelRidge(alpha=ridge)``; with
    ``ridge_scaling="n"`` :math:`\alpha = n\,\text{ridge}`, the
    :math:`\lambda` of Falkon and of the learning-theory literature, which minimises
    :math:`\frac1n\sum_i (f(x_i) - y_i)^2 + \lambda \lVert f\rVert_{\mathcal H}^2`.

    A scalar ``ridge`` is solved by a Cholesky factorisation of :math:`K + \alpha I`; if the
    factorisation meets a matrix that is not numerically positive definite, jitter
    ``jitter * 10**k * mean(diag K)`` (k = 0, 1, ...; ``jitter`` defaults to ``10 eps``) is added
    to the diagonal and ``status`` says so. An array of ``R`` ridge values is solved from one
    eigendecomposition :math:`K = U \operatorname{diag}(s) U^\top` (negative eigenvalues clipped to
    zero, reported in ``status``): :math:`c_r = U \operatorname{diag}(1/(s + \alpha_r)) U^\top y`.

    ``solver="pcg"`` solves the same system (full KRR, not Nystrom) by conjugate gradients
    preconditioned with a randomly pivoted Cholesky (RPCholesky) approximation
    :math:`K \approx F F^\top` of rank ``r = preconditioner_rank`` (Diaz, Epperly, Frangella,
    Tropp & Webber 2023): :math:`P = F F^\top + \alpha I`, applied by Woodbury through the
    eigendecomposition of :math:`F^\top F`, costs :math:`O(n r)` per iteration and :math:`O(n r^2)`
    to build. Each iteration multiplies by :math:`K + \alpha I`: through the ``n x n`` matrix,
    formed once, when it takes at most :data:`PCG_DENSE_BYTES` (2 GiB: ``n <= 16384`` in float64)
    and no ``mesh`` is given; otherwise through :func:`kjax.kernels.kernel_matvec`, blockwise and
    split over ``mesh``, so the ``n x n`` matrix is never formed (``O(n r)`` memory; with ``mesh``
    across processes after ``jax.distributed.initialize``), each off-diagonal kernel block
    evaluated once (the symmetric product of :func:`kjax.kernels.kernel_matvec`). Every output
    column runs its own CG; each stops when its relative residual is below ``tol``. The state
    carries the residual reached and the iterations; ``status`` 4 says CG stopped at ``maxiter``
    first, ``3`` that it met non-positive curvature: in float32 this happens when
    :math:`\alpha / \lambda_{\max}(K)` is near float32's epsilon (the preconditioner, whose
    condition number is about :math:`\lambda_{\max}/\alpha`, is then indefinite in floating point):
    take float64 inputs or a larger ridge. PCG runs a
    ``lax.while_loop``, so it is not reverse-differentiable: take ``solver="cholesky"`` under
    ``jax.grad``.

    ``solver="auto"`` (the default) takes the eigendecomposition for an array ``ridge``, the
    Cholesky factorisation for ``n <= PCG_MIN_N`` (4096) and PCG above: a Cholesky costs
    :math:`n^3/3` flops and :math:`8 n^2` bytes in float64, PCG about
    :math:`(2 n^2 + \ldots)` per iteration with a few dozen iterations on smooth kernels.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``, e.g. ``functools.partial(kjax.kernels.rbf,
        lengthscale=2.0)``; or a stored Gram matrix :func:`kjax.kernels.precomputed`, or a
        matvec-only :func:`kjax.kernels.operator` (``solver="pcg"``, the default for it, with a
        Jacobi preconditioner from its ``diag``).
      x: ``[n, d]`` training points (for ``precomputed`` / ``operator``: ``[n]`` indices into its
        points, None for all of them).
      y: ``[n]`` or ``[n, O]`` targets.
      ridge: a positive scalar, or a ``[R]`` array of positive values (the whole path).
      ridge_scaling: ``"none"`` (:math:`\alpha = \text{ridge}`; alias ``"sklearn"``) or ``"n"``
        (:math:`\alpha = n\,\text{ridge}`).
      jitter: relative jitter for a failed Cholesky (> 0; default ``10 eps`` of the dtype).
      block_size: rows per block of the Gram assembly (an int or ``(rows, cols)``; None:
        automatic).
      mesh: optional ``jax.sharding.Mesh`` to split the Gram assembly over.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).
      solver: ``"auto"``, ``"cholesky"`` (direct: Cholesky for a scalar ``ridge``,
        eigendecomposition for a path) or ``"pcg"`` (scalar ``ridge`` only).
      tol: PCG's relative-residual target per output (>= 0; default ``1e-10`` in float64,
        ``1e-5`` in float32). Ignored by the direct solvers.
      maxiter: PCG's iteration cap (a Python int >= 1; default 1000).
      preconditioner_rank: ``r``, the rank of the RPCholesky preconditioner
        (``1 <= r <= n``; default ``min(n, 500)``).
      key: PRNG key of the RPCholesky pivots (default ``jax.random.key(0)``).

    Returns:
      :class:`KRRState`; predict with :func:`krr_predict`.

    Raises:
      ValueError: ``x`` not ``[n, d]`` with ``n, d >= 1``, ``y`` not ``[n]``/``[n, O]`` with ``n``
        rows, NaN or inf in concrete ``x``/``y`` (under ``jit`` ``status`` reports it instead),
        ``ridge <= 0``, unknown ``ridge_scaling``, ``jitter <= 0``, a bad ``block_size``, a
        ``mesh_axis`` that is not an axis of ``mesh`` (or missing on a multi-axis mesh), an
        unknown ``solver``, ``solver="pcg"`` with an array ``ridge``, ``tol < 0``,
        ``maxiter < 1``, ``preconditioner_rank`` outside ``[1, n]``.
      TypeError: ``kernel`` not callable, ``mesh`` not a ``Mesh``, a
        :func:`kjax.kernels.operator` with ``solver="cholesky"`` or a ridge path (it has no
        entries).

    Example:
      >>> import functools, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import krr_fit, krr_predict
      >>> x = jnp.linspace(0.0, 3.0, 30)[:, None]
      >>> state = krr_fit(functools.partial(rbf, lengthscale=0.5), x, jnp.sin(x[:, 0]), ridge=1e-3)
      >>> bool(jnp.max(jnp.abs(krr_predict(state, x) - jnp.sin(x[:, 0]))) < 1e-2)
      True
      >>> path = krr_fit(rbf, x, jnp.sin(x[:, 0]), ridge=jnp.array([1e-3, 1e-1, 1.0]))
      >>> krr_predict(path, x[:5]).shape
      (3, 5)
      >>> pcg = krr_fit(rbf, x, jnp.sin(x[:, 0]), ridge=1e-3, solver="pcg", preconditioner_rank=10)
      >>> int(pcg.status), bool(pcg.residual <= 1e-5)
      (0, True)

    References:
      Saunders, Gammerman & Vovk, *Ridge Regression Learning Algorithm in Dual Variables*, ICML
      1998; scikit-learn ``sklearn.kernel_ridge.KernelRidge``; Diaz, Epperly, Frangella, Tropp &
      Webber, *Robust, randomized preconditioning for kernel ridge regression*, 2023 (RPCholesky
      preconditioned CG); Chen, Epperly, Tropp & Webber, *Randomly pivoted Cholesky*, CPAM 2024.
    """
    fn = "kjax.regression.krr_fit"
    kern = c.check_kernel(fn, kernel, entries=False)
    x, y2, vec = c.check_xy(fn, x, y, kern=kern)
    ik = c.index_kernel(kern)
    matvec_only = ik is not None and not ik.has_entries
    n = x.shape[0]
    alpha = c.check_ridge(fn, ridge, ridge_scaling, n, allow_array=True)
    jitter = c.check_jitter(fn, jitter)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    path = alpha.ndim == 1
    check_in(fn, "solver", solver, SOLVERS)
    if tol is not None:
        check_positive(fn, "tol", tol, allow_zero=True)
    maxiter = PCG_MAXITER if maxiter is None else check_int(fn, "maxiter", maxiter, minimum=1)
    if matvec_only and preconditioner_rank is not None:
        fail(fn, "preconditioner_rank", "be None with a kjax.kernels.operator kernel (the RPCholesky "
             "preconditioner needs kernel columns; an operator is preconditioned by Jacobi from its "
             "`diag`, or not at all)", preconditioner_rank)
    if preconditioner_rank is None:
        rank = min(n, PCG_RANK)
    else:
        rank = check_int(fn, "preconditioner_rank", preconditioner_rank, minimum=1)
        if rank > n:
            fail(fn, "preconditioner_rank", f"be at most the number of points n={n}", rank)
    if solver == "pcg" and path:
        fail(fn, "solver", "be 'auto' or 'cholesky' for an array `ridge` (a ridge path is solved from "
             "one eigendecomposition; PCG takes a scalar ridge)", repr(solver))
    if solver == "auto":
        solver = "cholesky" if path or (n <= PCG_MIN_N and not matvec_only) else "pcg"
    if matvec_only and solver == "cholesky":
        c.require_entries(fn, ik, "solver='cholesky' or a ridge path (use solver='pcg' with a scalar "
                          "ridge)")
    if solver == "cholesky":
        coef, status, resid = _krr_core(kern, x, y2, alpha, path, jitter, block_size, mesh, mesh_axis)
        iters = jnp.asarray(0, jnp.int32)
    else:
        dt = dtypes.gram_dtype(x)
        if tol is None:
            tol = 1e-10 if dt == jnp.float64 else 1e-5
        key = jax.random.key(0) if key is None else key
        dense = mesh is None and n * n * dt.itemsize <= PCG_DENSE_BYTES and not matvec_only
        coef, status, resid, iters = _pcg_solve(kern, x, y2, alpha, key, rank, float(tol), maxiter, dense,
                                                block_size, mesh, mesh_axis)
    return KRRState(x, coef, alpha.astype(coef.dtype), status, kern, c.Layout(vec, path), resid, iters)


@c.kernel_jit(static_argnums=(4, 5, 6, 7, 8))
def _krr_core(kern, x, y2, alpha, path, jitter, block_size, mesh, mesh_axis):
    n = x.shape[0]
    # the Cholesky path reads only the lower triangle, so it skips gram's exact-symmetry pass
    k = kernels.gram(kern, x, None if path else x, block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    dt = k.dtype
    yk = y2.astype(dt)
    fin = st.nonfinite_input(x, y2)
    if not path:
        a = alpha.astype(dt)
        low, _, code = linalg.robust_cholesky(k + a * jnp.eye(n, dtype=dt), jitter=jitter)
        coef = linalg.cho_solve(low, yk)
        resid = _relative_residual(k @ coef + a * coef - yk, yk)
    else:
        s, u, code = linalg.psd_eigh(k)
        g = 1.0 / (s[None, :] + alpha.astype(dt)[:, None])  # [R, n]
        coef = jnp.einsum("ij,rj,jo->rio", u, g, u.T @ yk)
        kc = jnp.einsum("ij,rjo->rio", k, coef) + alpha.astype(dt)[:, None, None] * coef
        resid = _relative_residual(kc - yk[None], yk[None])
    return coef, st.combine(fin, code), resid


def _relative_residual(r, y):
    """max over columns (and a leading path axis) of ||r_j|| / ||y_j|| (0 / 0 counts as 0)."""
    rn = jnp.sqrt(jnp.sum(r * r, axis=-2))
    yn = jnp.sqrt(jnp.sum(y * y, axis=-2))
    return jnp.max(jnp.where(yn > 0, rn / jnp.where(yn > 0, yn, 1.0), rn))


class _NystromPreconditioner(NamedTuple):
    r"""The Woodbury inverse of :math:`P = F F^\top + \mu I`:
    :math:`P^{-1} = I/\mu - F V \operatorname{diag}(1/(\mu(\lambda + \mu))) V^\top F^\top`, with
    :math:`F^\top F = V \operatorname{diag}(\lambda) V^\top` (an ``r x r`` eigendecomposition; no
    division by a small :math:`\lambda`, so a rank-deficient ``F`` is fine)."""

    f: Float[Array, "n r"]
    v: Float[Array, "r r"]
    scale: Float[Array, " r"]
    inv_mu: Float[Array, ""]

    def __call__(self, x):
        return self.inv_mu * x - self.f @ (self.v @ (self.scale[:, None] * (self.v.T @ (self.f.T @ x))))


def nystrom_preconditioner(f: jax.Array, mu: jax.Array) -> _NystromPreconditioner:
    r"""The Woodbury inverse of :math:`F F^\top + \mu I` (see :class:`_NystromPreconditioner`).

    ``O(n r^2)`` flops in two matrix products and an ``r x r`` eigendecomposition (a QR of the
    ``n x r`` factor took about 5x longer on CPU at n = 10,000, r = 1000)."""
    lam, v = jnp.linalg.eigh(f.T @ f)
    lam = jnp.maximum(lam, 0.0)
    mu = mu.astype(f.dtype)
    return _NystromPreconditioner(f, v, 1.0 / (mu * (lam + mu)), 1.0 / mu)


@c.kernel_jit(static_argnums=(3,))
def _pcg_preconditioner(kern, x, key, rank, alpha):
    # its own single-device program (eigh is a LAPACK call; see _falkon._falkon_core)
    f, status = block_rpcholesky_core(kern, x, key, rank)
    return nystrom_preconditioner(f, alpha), status


class _JacobiPreconditioner(NamedTuple):
    """``diag(1 / (diag K + alpha))`` (ones without a diagonal): the preconditioner of a
    :func:`kjax.kernels.operator`, which has no columns for RPCholesky."""

    inv: Float[Array, " n"]

    def __call__(self, x):
        return self.inv[:, None] * x if x.ndim == 2 else self.inv * x


@c.kernel_jit()
def _jacobi_preconditioner(kern, x, alpha):
    ik = c.index_kernel(kern)
    dt = dtypes.gram_dtype(x)
    if ik.diag_values is None:
        return _JacobiPreconditioner(jnp.ones(x.shape[0], dt)), st.as_status(Status.OK)
    d = kernels.kernel_diag(kern, x).astype(dt) + alpha.astype(dt)
    return _JacobiPreconditioner(1.0 / d), st.as_status(Status.OK)


def _pcg_solve(kern, x, y2, alpha, key, rank, tol, maxiter, dense, block_size, mesh, mesh_axis):
    ik = c.index_kernel(kern)
    if ik is not None and not ik.has_entries:
        pre, rp_status = _jacobi_preconditioner(kern, x, alpha)
    else:
        pre, rp_status = _pcg_preconditioner(kern, x, key, rank, alpha)
    return _pcg_core(kern, x, y2, alpha, pre, rp_status, tol, maxiter, dense, block_size, mesh, mesh_axis)


@c.kernel_jit(static_argnums=(6, 7, 8, 9, 10, 11))
def _pcg_core(kern, x, y2, alpha, pre, rp_status, tol, maxiter, dense, block_size, mesh, mesh_axis):
    dt = pre.f.dtype if isinstance(pre, _NystromPreconditioner) else pre.inv.dtype
    a = alpha.astype(dt)
    yk = y2.astype(dt)
    if dense:
        k = kernels.gram(kern, x, x, block_size=block_size)
        matvec = lambda v: k @ v + a * v
    else:
        # x2=None: the symmetric product, each off-diagonal kernel block evaluated once
        matvec = lambda v: kernels.kernel_matvec(kern, x, None, v, block_size=block_size, mesh=mesh,
                                                 mesh_axis=mesh_axis).astype(dt) + a * v
    coef, code, stats = solvers.cg(matvec, yk, preconditioner=pre, tol=tol, maxiter=maxiter,
                                   fn_name="kjax.regression.krr_fit")
    # a NaN preconditioner from finite input is a computed failure, not an input one
    code = jnp.where(code == Status.NONFINITE_INPUT, Status.NONFINITE_VALUES, code)
    status = st.combine(st.nonfinite_input(x, y2), rp_status, code, st.nonfinite_values(coef))
    # the residual reported is recomputed by one more product: CG's recurrence drifts from the true
    # residual in finite precision (by ~eps * cond in float32: 3e-5 true against 3e-7 recurred at
    # alpha / lambda_max(K) ~ 2e-5; tests/regression/test_solvers.py)
    return coef, status, _relative_residual(yk - matvec(coef), yk), stats.iterations


def krr_predict(
    state: KRRState,
    x_new: Float[ArrayLike, "m d"],
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> Float[Array, " *R m *O"]:
    r"""Predictions :math:`f(x_\star) = K(x_\star, X)\, c` of a fitted :class:`KRRState`.

    Works for states of :func:`krr_fit` and :func:`spectral_fit`; the product goes through
    :func:`kjax.kernels.kernel_matvec` (blockwise, optionally sharded over ``mesh``). NaN or inf
    in a concrete ``x_new`` raise; under ``jit`` they give NaN in their own rows only.

    Args:
      state: from :func:`krr_fit` or :func:`spectral_fit`.
      x_new: ``[m, d]`` query points (``m = 0`` gives an empty result).
      block_size: block sizes of the kernel matvec (an int or ``(rows, cols)``).
      mesh: optional ``jax.sharding.Mesh``.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).

    Returns:
      ``[m]`` or ``[m, O]`` (the layout of the training ``y``), with a leading ``[R]`` axis for a
      ridge / regularisation path.

    Raises:
      ValueError: ``x_new`` not ``[m, d]`` with the training ``d``, NaN/inf in a concrete
        ``x_new``, a bad ``block_size`` or ``mesh_axis``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import krr_fit, krr_predict
      >>> x = jnp.linspace(0.0, 1.0, 8)[:, None]
      >>> krr_predict(krr_fit(rbf, x, jnp.ones((8, 2)), ridge=0.1), x).shape
      (8, 2)

    References:
      Scholkopf & Smola, *Learning with Kernels*, 2002 (the representer theorem).
    """
    fn = "kjax.regression.krr_predict"
    x_new = c.check_x_new(fn, x_new, state.x, state.kernel)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    if x_new.shape[0] == 0:
        lead = state.coef.shape[:1] if state.layout.path else ()
        tail = () if state.layout.vector else state.coef.shape[-1:]
        return c.empty_rows((*lead, 0, *tail), state.coef.dtype)
    return _predict_core(state.kernel, x_new, state.x, state.coef, state.layout, block_size, mesh,
                         mesh_axis)


@c.kernel_jit(static_argnums=(4, 5, 6, 7))
def _predict_core(kern, x_new, x, coef, layout, block_size, mesh, mesh_axis):
    kw = dict(block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    if layout.path:
        r, n, o = coef.shape
        flat = jnp.moveaxis(coef, 0, 1).reshape(n, r * o)
        out = kernels.kernel_matvec(kern, x_new, x, flat, **kw)
        out = jnp.moveaxis(out.reshape(-1, r, o), 1, 0)
    else:
        out = kernels.kernel_matvec(kern, x_new, x, coef, **kw)
    return out[..., 0] if layout.vector else out


def filter_function(filter: str, s: jax.Array, alpha: jax.Array, *, order: int = 2) -> jax.Array:
    r"""The spectral filter :math:`g_\alpha(s) \approx 1/s` on eigenvalues ``s >= 0`` of ``K``.

    See :func:`spectral_fit` for the formulas. ``s: [n]``, ``alpha: []`` or ``[R]``; returns
    ``[n]`` or ``[R, n]``.
    """
    dt = s.dtype
    a = jnp.asarray(alpha, dt)
    batched = a.ndim == 1
    a = a[:, None] if batched else a
    s_ = s[None, :] if batched else s
    smax = jnp.maximum(jnp.max(s), jnp.finfo(dt).tiny)
    small = s_ <= 1e3 * jnp.finfo(dt).eps * smax
    s_safe = jnp.where(small, smax, s_)
    if filter == "tikhonov":
        g = 1.0 / (s_ + a)
    elif filter == "gradient_flow":
        g = jnp.where(small, 1.0 / a, -jnp.expm1(-s_safe / a) / s_safe)
    elif filter == "cutoff":
        g = jnp.where(s_ >= a, 1.0 / s_safe, 0.0)
    elif filter == "landweber":
        eta = 1.0 / smax
        t = jnp.ceil(smax / a)
        g = jnp.where(small, t * eta, (1.0 - (1.0 - eta * s_safe) ** t) / s_safe)
    elif filter == "iterated_tikhonov":
        g = jnp.where(small, order / a, (1.0 - (a / (s_safe + a)) ** order) / s_safe)
    else:  # pragma: no cover - checked by the caller
        raise AssertionError(filter)
    return g


def spectral_fit(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    *,
    filter: str = "tikhonov",
    ridge: float | Float[ArrayLike, " R"] | None = None,
    order: int = 2,
    ridge_scaling: str = "none",
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    reg: float | Float[ArrayLike, " R"] | None = None,
) -> KRRState:
    r"""Spectral regularisation: :math:`c = U\, g_\alpha(S)\, U^\top y` from one eigendecomposition.

    With :math:`K = U \operatorname{diag}(s) U^\top` (negative eigenvalues clipped to zero and
    reported in ``status``) and :math:`\alpha = \text{ridge}` (``ridge_scaling="none"``) or
    :math:`n\,\text{ridge}` (``"n"``), the filters :math:`g_\alpha(s) \approx 1/s` are

    * ``tikhonov``: :math:`1/(s + \alpha)` (kernel ridge regression);
    * ``gradient_flow``: :math:`(1 - e^{-s t})/s`, :math:`t = 1/\alpha` (gradient descent on the
      squared loss run for time :math:`t`);
    * ``cutoff``: :math:`1/s` if :math:`s \ge \alpha` else 0 (truncated SVD / kernel PCR);
    * ``landweber``: :math:`(1 - (1 - \eta s)^T)/s`, :math:`\eta = 1/s_{max}`,
      :math:`T = \lceil s_{max}/\alpha \rceil` (T steps of :math:`c \leftarrow c + \eta (y - K c)`);
    * ``iterated_tikhonov``: :math:`(1 - (\alpha/(s + \alpha))^q)/s`, ``q = order`` (q steps of
      :math:`c \leftarrow (K + \alpha I)^{-1}(y + \alpha c)`).

    ``ridge`` may be an array: every value is served from the same eigendecomposition.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` training points.
      y: ``[n]`` or ``[n, O]`` targets.
      filter: one of the names above.
      ridge: positive scalar or ``[R]`` array, the regularisation :math:`\alpha` before scaling.
      order: ``q`` of ``iterated_tikhonov`` (a Python int >= 1).
      ridge_scaling: ``"none"`` (alias ``"sklearn"``) or ``"n"`` (see :func:`krr_fit`).
      block_size: rows per block of the Gram assembly.
      mesh: optional ``jax.sharding.Mesh`` for the Gram assembly.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).
      reg: deprecated name of ``ridge`` (warns).

    Returns:
      :class:`KRRState`; predict with :func:`krr_predict`.

    Raises:
      ValueError: unknown ``filter``, ``ridge <= 0`` or missing, both ``ridge`` and ``reg``,
        ``order < 1`` and the input errors of :func:`krr_fit`.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import krr_predict, spectral_fit
      >>> x = jnp.linspace(0.0, 3.0, 20)[:, None]
      >>> st = spectral_fit(rbf, x, jnp.sin(x[:, 0]), filter="gradient_flow",
      ...                   ridge=jnp.array([1e-2, 1e-4]))
      >>> krr_predict(st, x).shape
      (2, 20)

    References:
      Bauer, Pereverzev & Rosasco, *On regularization algorithms in learning theory*, J. Complexity
      2007; Lo Gerfo et al., *Spectral algorithms for supervised learning*, Neural Computation 2008;
      Velikanov, Panov & Yarotsky, *Generalization error of spectral algorithms*, ICLR 2024.
    """
    fn = "kjax.regression.spectral_fit"
    check_in(fn, "filter", filter, FILTERS)
    order = check_int(fn, "order", order, minimum=1)
    if reg is not None:
        if ridge is not None:
            fail(fn, "reg", "not be given together with `ridge` (it is the deprecated name of `ridge`)",
                 "both")
        warnings.warn(f"{fn}: `reg` is deprecated; pass the same value as `ridge`.", DeprecationWarning,
                      stacklevel=2)
        ridge = reg
    kern = c.check_kernel(fn, kernel)
    x, y2, vec = c.check_xy(fn, x, y, kern=kern)
    n = x.shape[0]
    alpha = c.check_ridge(fn, ridge, ridge_scaling, n, allow_array=True)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    path = alpha.ndim == 1
    coef, status, resid = _spectral_core(kern, x, y2, alpha, filter, order, path, block_size, mesh, mesh_axis)
    return KRRState(x, coef, alpha.astype(coef.dtype), status, kern, c.Layout(vec, path), resid,
                    jnp.asarray(0, jnp.int32))


@c.kernel_jit(static_argnums=(4, 5, 6, 7, 8, 9))
def _spectral_core(kern, x, y2, alpha, filter, order, path, block_size, mesh, mesh_axis):
    k = kernels.gram(kern, x, block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    dt = k.dtype
    s, u, code = linalg.psd_eigh(k)
    g = filter_function(filter, s, alpha.astype(dt), order=order)
    uty = u.T @ y2.astype(dt)
    if path:
        coef = jnp.einsum("ij,rj,jo->rio", u, g, uty)
    else:
        coef = u @ (g[:, None] * uty)
    if filter == "tikhonov":
        a = alpha.astype(dt)
        yk = y2.astype(dt)
        if path:
            kc = jnp.einsum("ij,rjo->rio", k, coef) + a[:, None, None] * coef
            resid = _relative_residual(kc - yk[None], yk[None])
        else:
            resid = _relative_residual(k @ coef + a * coef - yk, yk)
    else:
        resid = jnp.asarray(jnp.nan, dt)
    return coef, st.combine(st.nonfinite_input(x, y2), code), resid

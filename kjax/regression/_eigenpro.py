"""EigenPro 2: preconditioned stochastic gradient descent for kernel interpolation."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import linalg
from kjax._src import status as st
from kjax._src.errors import check_int, check_positive, fail
from kjax._src.status import Status
from kjax.regression import _common as c


class EigenProState(NamedTuple):
    """A fitted EigenPro model :math:`f(x) = \\sum_i \\alpha_i k(x, x_i)`.

    Attributes:
      x: ``[n, d]`` training points.
      alpha: ``[n, O]`` coefficients.
      train_errors: ``[epochs]`` training MSE after each epoch (NaN after the last epoch run, when
        ``tol`` stopped the fit early).
      batch_size: the batch size ``m`` used (automatic: :math:`\\lfloor\\beta / \\lambda_{q+1}\\rfloor
        + 1`, capped).
      step_size: the step :math:`\\eta` per batch (the update is :math:`\\eta / m` per sample):
        :math:`m / \\beta` below the critical batch size, as in EigenPro 2's reference code.
      iterations: epochs run.
      residual: relative training residual :math:`\\lVert f(X) - y\\rVert / \\lVert y\\rVert` after
        the last epoch.
      status: int32 code (0 ok, 1 non-finite input, 2 the subsample's kernel matrix had negative
        eigenvalues (clipped), 3 not positive definite (no positive eigenvalue, or
        :math:`\\max k(x, x) \\le 0`: nothing was fitted), 4 ``tol`` not reached in ``epochs``,
        5 diverged); see :func:`status_name`.
      kernel: the kernel (static).
      layout: static shape facts.
    """

    x: Float[Array, "n d"]
    alpha: Float[Array, "n O"]
    train_errors: Float[Array, " epochs"]
    batch_size: int
    step_size: Float[Array, ""]
    iterations: Int[Array, ""]
    residual: Float[Array, ""]
    status: Int[Array, ""]
    kernel: c.HeldKernel
    layout: c.Layout


def eigenpro_fit(
    key: jax.Array,
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    *,
    epochs: int = 10,
    num_eigen: int = 32,
    subsample_size: int = 2000,
    batch_size: int | None = None,
    max_batch_size: int = 4096,
    tol: float | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> EigenProState:
    r"""EigenPro 2: SGD on kernel interpolation :math:`K\alpha = y`, preconditioned by the top
    eigensystem of a Nystrom subsample, with automatic batch and step size.

    From a subsample :math:`X_s` of size ``s``, take the top :math:`q+1` eigenpairs
    :math:`(\lambda_j, e_j)` of :math:`K_{ss}/s`. The preconditioner
    :math:`P = I - \sum_{j \le q} (1 - \lambda_{q+1}/\lambda_j)\, \phi_j \otimes \phi_j` flattens the
    top of the spectrum, so the largest useful batch is :math:`m^\star = \beta/\lambda_{q+1} + 1`
    (:math:`\beta = \max_i k(x_i, x_i)`). As in EigenPro 2's reference code the automatic batch is
    :math:`m = \min(\lfloor m^\star\rfloor, \text{max\_batch\_size}, n)` and the step is
    :math:`\eta = m/\beta` (``1/beta`` per sample) for :math:`m < m^\star`, else
    :math:`0.99 \cdot 2m / (\beta + (m-1)\lambda_{q+1})`. A batch ``B`` with residual
    :math:`g = K_{B\cdot}\alpha - y_B` updates

    .. math:: \alpha_B \mathrel{-}= \tfrac{\eta}{m} g, \qquad
       \alpha_s \mathrel{+}= \tfrac{\eta}{m} E\, \operatorname{diag}\!\Big(\frac{1 - \lambda_{q+1}/\lambda_j}
       {s\lambda_j}\Big) E^\top K_{sB}\, g.

    The products :math:`K_{B\cdot}\alpha` go through :func:`kjax.kernels.kernel_matvec`. The state
    carries the relative training residual reached and a ``status``; with ``tol`` the fit stops
    once the residual is below it (``status`` 4 if ``epochs`` run out first). A kernel whose
    subsample matrix has no positive eigenvalue (not positive definite) fits nothing and reports
    ``status`` 3.

    Args:
      key: PRNG key (subsample and batch order).
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` training points.
      y: ``[n]`` or ``[n, O]`` targets.
      epochs: passes over the data (Python int).
      num_eigen: ``q``, the number of eigendirections flattened (``q < s``).
      subsample_size: ``s`` (clamped to ``n``).
      batch_size: override the automatic batch size (>= 1).
      max_batch_size: cap on the automatic batch size (>= 1).
      tol: optional target for the relative training residual (>= 0): stop early once reached.
      block_size: block sizes of the kernel matvecs.
      mesh: optional ``jax.sharding.Mesh`` for the kernel matvecs.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).

    Returns:
      :class:`EigenProState`; predict with :func:`eigenpro_predict`.

    Raises:
      ValueError: ``num_eigen >= min(subsample_size, n)``, ``epochs``, ``num_eigen``,
        ``batch_size`` or ``max_batch_size`` below 1, ``tol < 0``, shapes as in :func:`krr_fit`,
        NaN/inf in concrete inputs, a bad ``block_size`` or ``mesh_axis``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import laplace
      >>> from kjax.regression import eigenpro_fit, eigenpro_predict
      >>> x = jax.random.normal(jax.random.key(0), (100, 2))
      >>> st = eigenpro_fit(jax.random.key(1), laplace, x, jnp.sin(x[:, 0]), epochs=3, num_eigen=10,
      ...                   subsample_size=50)
      >>> bool(st.train_errors[-1] < st.train_errors[0])
      True

    References:
      Ma & Belkin, *Diving into the shallows: a computational perspective on large-scale shallow
      learning*, NeurIPS 2017; Ma & Belkin, *Kernel machines that adapt to GPUs for effective
      large batch training* (EigenPro 2), SysML 2019.
    """
    fn = "kjax.regression.eigenpro_fit"
    kern = c.check_kernel(fn, kernel)
    x, y2, vec = c.check_xy(fn, x, y, kern=kern)
    epochs = check_int(fn, "epochs", epochs, minimum=1)
    tol = _check_tol(fn, tol)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    sub, lam, vecs, lam_tail, eta, m, k_ep, eig_status = _preconditioner(
        fn, kern, x, x.shape[0], key, subsample_size, num_eigen, batch_size, max_batch_size)
    coef, errs, its, rel, status = _eigenpro_core(kern, x, y2, sub, lam, vecs, lam_tail, eta, k_ep,
                                                  eig_status, m, epochs, tol, block_size,
                                                  (mesh, mesh_axis))
    return EigenProState(x, coef, errs, m, jnp.asarray(eta, coef.dtype), its, rel, status, kern,
                         c.Layout(vec, False))


def _check_tol(fn, tol):
    if tol is None:
        return None
    check_positive(fn, "tol", tol, allow_zero=True)
    return float(tol)


def _preconditioner(fn, kern, pts, n, key, subsample_size, num_eigen, batch_size, max_batch_size):
    """EigenPro's Nystrom preconditioner on a subsample of ``pts`` (the data for EigenPro 2, the
    centres for EigenPro 3) and the batch size and step it allows for ``n`` training points.

    Returns ``(sub, lam, vecs, lam_tail, eta, m, key_for_epochs, status)``: the subsample indices,
    the top ``num_eigen`` eigenpairs, ``lambda_{q+1}``, the step size, the batch size and the
    status of the subsample's eigendecomposition (``JITTER``: negative eigenvalues clipped;
    ``NOT_PSD``: nothing positive, or ``max k(x, x) <= 0``; the step is then 0).
    """
    s = min(check_int(fn, "subsample_size", subsample_size, minimum=2), pts.shape[0])
    q = check_int(fn, "num_eigen", num_eigen, minimum=1)
    if q >= s:
        fail(fn, "num_eigen", f"be smaller than the subsample size min(subsample_size, n) = {s}", q)
    max_batch_size = check_int(fn, "max_batch_size", max_batch_size, minimum=1)
    if batch_size is not None:
        batch_size = check_int(fn, "batch_size", batch_size, minimum=1)
    k_sub, k_ep = jax.random.split(key)
    sub = jax.random.choice(k_sub, pts.shape[0], (s,), replace=False)
    lam, vecs, beta, status = _eigensystem(kern, pts[sub], q)
    lam_tail, beta = float(lam[q]), float(beta)
    if not beta > 0:
        status = st.combine(status, Status.NOT_PSD)
    m, eta = step_size(beta, lam_tail, n, batch_size, max_batch_size)
    if int(status) == Status.NOT_PSD:
        eta = 0.0
    return sub, lam[:q], vecs[:, :q], lam_tail, eta, m, k_ep, status


def step_size(beta: float, lam_tail: float, n: int, batch_size: int | None, max_batch_size: int
              ) -> tuple[int, float]:
    """EigenPro 2's batch size and step (Ma & Belkin 2019, and their reference code).

    The critical batch size is :math:`m^\\star = \\beta / \\lambda_{q+1} + 1`; the automatic batch is
    :math:`\\min(\\lfloor m^\\star\\rfloor, \\text{max\\_batch\\_size}, n)`. Below the critical size the
    step is :math:`\\eta = m / \\beta` (``1/beta`` per sample), above it
    :math:`0.99 \\cdot 2m / (\\beta + (m - 1)\\lambda_{q+1})`.
    """
    crit = beta / lam_tail + 1.0 if lam_tail > 0 else math.inf
    if batch_size is None:
        m = min(max_batch_size, n) if math.isinf(crit) else int(min(max(1.0, math.floor(crit)),
                                                                    max_batch_size, n))
    else:
        m = min(batch_size, n)
    if not beta > 0:
        return m, 0.0
    eta = m / beta if m < crit else 0.99 * 2.0 * m / (beta + (m - 1) * lam_tail)
    return m, eta


@c.kernel_jit(static_argnums=(2,))
def _eigensystem(kern, xs, q):
    ks = kern(xs, xs)
    s = xs.shape[0]
    lam, vecs, status = linalg.psd_eigh(ks / s)
    lam, vecs = lam[::-1][: q + 1], vecs[:, ::-1][:, : q + 1]
    beta = jnp.max(kernels.kernel_diag(kern, xs))
    return lam, vecs, beta, status


def _precond_diag(lam, lam_tail, s):
    """:math:`(1 - \\lambda_{q+1}/\\lambda_j) / (s \\lambda_j)`, zero where :math:`\\lambda_j = 0`."""
    pos = lam > 0
    safe = jnp.where(pos, lam, 1.0)
    return jnp.where(pos, (1.0 - lam_tail / safe) / (s * safe), 0.0)


def _epochs(epoch, alpha0, key, epochs, tol):
    """Run ``epoch(alpha, key) -> (alpha, mse, relative residual)`` up to ``epochs`` times (until the
    relative residual reaches ``tol``, when given): ``(alpha, [epochs] mse, epochs run, residual)``."""
    keys = jax.random.split(key, epochs)
    if tol is None:
        alpha, (errs, rels) = jax.lax.scan(lambda a, k: (lambda o: (o[0], o[1:]))(epoch(a, k)), alpha0,
                                           keys)
        return alpha, errs, jnp.asarray(epochs, jnp.int32), rels[-1]
    dt = alpha0.dtype

    def body(carry):
        alpha, i, errs, _ = carry
        alpha, mse, rel = epoch(alpha, keys[i])
        return alpha, i + 1, errs.at[i].set(mse), rel

    init = (alpha0, jnp.asarray(0, jnp.int32), jnp.full((epochs,), jnp.nan, dt), jnp.asarray(jnp.inf, dt))
    alpha, i, errs, rel = jax.lax.while_loop(lambda c: (c[1] < epochs) & ~(c[3] <= tol), body, init)
    return alpha, errs, i, rel


def _residual_stats(pred, y2):
    err = pred - y2
    ynorm = jnp.sqrt(jnp.sum(y2 * y2))
    return jnp.mean(err**2), jnp.sqrt(jnp.sum(err * err)) / jnp.where(ynorm > 0, ynorm, 1.0)


def _final_status(x, y2, alpha, eig_status, residual, tol, *extra):
    code = st.combine(st.nonfinite_input(x, y2), eig_status, st.nonfinite_values(alpha), *extra)
    if tol is not None:
        code = st.where(~(residual <= tol), Status.MAX_ITER, code)
    return code


@c.kernel_jit(static_argnums=(10, 11, 12, 13, 14))
def _eigenpro_core(kern, x, y2, sub, lam, vecs, lam_tail, eta, key, eig_status, m, epochs, tol,
                   block_size, mesh_and_axis):
    mesh, mesh_axis = mesh_and_axis
    n = x.shape[0]
    s = sub.shape[0]
    dt = vecs.dtype
    y2 = y2.astype(dt)
    diag = _precond_diag(lam, lam_tail, s)
    xs = x[sub]
    nb = n // m
    kw = dict(block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)

    def batch_step(alpha, ids):
        xb = x[ids]
        g = kernels.kernel_matvec(kern, xb, x, alpha, **kw) - y2[ids]
        alpha = alpha.at[ids].add(-(eta / m) * g)
        ksb_g = kern(xs, xb).astype(dt) @ g
        corr = vecs @ (diag[:, None] * (vecs.T @ ksb_g))
        return alpha.at[sub].add((eta / m) * corr), None

    def epoch(alpha, k):
        perm = jax.random.permutation(k, n)[: nb * m].reshape(nb, m)
        alpha, _ = jax.lax.scan(batch_step, alpha, perm)
        pred = kernels.kernel_matvec(kern, x, x, alpha, **kw)
        return (alpha, *_residual_stats(pred, y2))

    alpha, errs, its, rel = _epochs(epoch, jnp.zeros_like(y2), key, epochs, tol)
    return alpha, errs, its, rel, _final_status(x, y2, alpha, eig_status, rel, tol)


def eigenpro_predict(
    state: EigenProState,
    x_new: Float[ArrayLike, "m d"],
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> Float[Array, " m *O"]:
    r"""Predictions :math:`f(x_\star) = k(x_\star, X)\,\alpha` of a fitted :class:`EigenProState`.

    NaN or inf in a concrete ``x_new`` raise; under ``jit`` they give NaN in their own rows only.

    Args:
      state: from :func:`eigenpro_fit` or :func:`eigenpro3_fit`.
      x_new: ``[m, d]`` query points (``m = 0`` gives an empty result).
      block_size: block sizes of the kernel matvec.
      mesh: optional ``jax.sharding.Mesh``.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).

    Returns:
      ``[m]`` or ``[m, O]``.

    Raises:
      ValueError: ``x_new`` not ``[m, d]`` with the training ``d``, NaN/inf in a concrete
        ``x_new``, a bad ``block_size`` or ``mesh_axis``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import laplace
      >>> from kjax.regression import eigenpro_fit, eigenpro_predict
      >>> x = jax.random.normal(jax.random.key(0), (100, 2))
      >>> st = eigenpro_fit(jax.random.key(1), laplace, x, jnp.sin(x[:, 0]), epochs=3, num_eigen=10,
      ...                   subsample_size=50)
      >>> eigenpro_predict(st, x[:3]).shape
      (3,)

    References:
      Ma & Belkin, SysML 2019.
    """
    fn = "kjax.regression.eigenpro_predict"
    x_new = c.check_x_new(fn, x_new, state.x, state.kernel)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    if x_new.shape[0] == 0:
        return c.empty_rows((0,) if state.layout.vector else (0, state.alpha.shape[1]), state.alpha.dtype)
    out = kernels.kernel_matvec(state.kernel, x_new, state.x, state.alpha, block_size=block_size,
                                mesh=mesh, mesh_axis=mesh_axis)
    return out[:, 0] if state.layout.vector else out


def eigenpro3_fit(
    key: jax.Array,
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    *,
    centers: Float[ArrayLike, "p d"],
    epochs: int = 10,
    num_eigen: int = 32,
    subsample_size: int = 2000,
    batch_size: int | None = None,
    max_batch_size: int = 4096,
    tol: float | None = None,
    jitter: float | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> EigenProState:
    r"""EigenPro 3: projected, preconditioned SGD for a model on centres decoupled from the data.

    The model is :math:`f = \sum_{j=1}^p \alpha_j k(\cdot, z_j)` on ``p`` centres; it is fitted to
    :math:`\min_\alpha \lVert K_{XZ}\alpha - y\rVert^2` by SGD over data batches. A batch with
    residual :math:`g = K_{BZ}\alpha - y_B` gives the functional gradient
    :math:`\sum_{i \in B} g_i k(x_i, \cdot)`; it is preconditioned with the top-``q`` eigensystem of
    a subsample :math:`Z_s` of the centres, exactly as in :func:`eigenpro_fit`, and projected back
    onto the span of the centres:

    .. math:: \alpha \mathrel{-}= \tfrac{\eta}{m} K_{ZZ}^{-1}\Big(K_{ZB}\, g - K_{Z Z_s} E\,
       \operatorname{diag}\!\Big(\frac{1 - \lambda_{q+1}/\lambda_j}{s\lambda_j}\Big)
       E^\top K_{Z_s B}\, g\Big).

    Here the projection is solved exactly with one Cholesky factor of :math:`K_{ZZ}` (jitter added
    and reported in ``status`` when it is not numerically PD), so ``p`` up to a few ten thousand;
    the paper solves it approximately with inner EigenPro iterations to go further.

    Args:
      key: PRNG key (subsample and batch order).
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` training points.
      y: ``[n]`` or ``[n, O]`` targets.
      centers: ``[p, d]`` centres (e.g. ``x[nystrom_centers(...)]`` or any other points).
      epochs: passes over the data.
      num_eigen: ``q`` (``q < s``).
      subsample_size: ``s``, a subsample of the centres (clamped to ``p``).
      batch_size: override the automatic batch size.
      max_batch_size: cap on the automatic batch size.
      tol: optional target for the relative training residual
        :math:`\lVert K_{XZ}\alpha - y\rVert / \lVert y\rVert`: stop early once reached. (The
        least-squares problem on ``p < n`` centres has a nonzero minimum residual: pick ``tol``
        above it.)
      jitter: relative jitter for the Cholesky factor of :math:`K_{ZZ}`.
      block_size: block sizes of the kernel matvecs.
      mesh: optional ``jax.sharding.Mesh``.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).

    Returns:
      :class:`EigenProState` whose ``x`` are the centres; predict with :func:`eigenpro_predict`.

    Raises:
      ValueError: ``num_eigen >= min(subsample_size, p)``, ``centers`` not ``[p, d]``, and the input
        errors of :func:`eigenpro_fit`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import laplace
      >>> from kjax.regression import eigenpro3_fit, eigenpro_predict
      >>> x = jax.random.normal(jax.random.key(0), (100, 2))
      >>> st = eigenpro3_fit(jax.random.key(1), laplace, x, jnp.sin(x[:, 0]), centers=x[:40],
      ...                    epochs=3, num_eigen=10, subsample_size=40)
      >>> eigenpro_predict(st, x[:3]).shape
      (3,)

    References:
      Abedsoltan, Belkin & Pandit, *Toward large kernel models*, ICML 2023 (EigenPro 3).
    """
    fn = "kjax.regression.eigenpro3_fit"
    kern = c.check_kernel(fn, kernel)
    x, y2, vec = c.check_xy(fn, x, y, kern=kern)
    z = c.check_x(fn, "centers", centers, kern)
    c.check_same_dim(fn, "x", x, "centers", z, -1, what="the feature dimension d")
    epochs = check_int(fn, "epochs", epochs, minimum=1)
    tol = _check_tol(fn, tol)
    jitter = c.check_jitter(fn, jitter)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    sub, lam, vecs, lam_tail, eta, m, k_ep, eig_status = _preconditioner(
        fn, kern, z, x.shape[0], key, subsample_size, num_eigen, batch_size, max_batch_size)
    # K_zz's factor as its own single-device program, as in Falkon: inside the sharded program
    # XLA:CPU would run the LAPACK calls on every device at once (see _falkon._falkon_core)
    fac, st_chol = _eigenpro3_factor(kern, z, jitter)
    pre_status = st.combine(eig_status, st_chol)
    if int(pre_status) == Status.NOT_PSD:  # no usable preconditioner or projection: fit nothing
        eta = 0.0
    coef, errs, its, rel, status = _eigenpro3_core(
        kern, x, y2, z, sub, lam, vecs, lam_tail, eta, k_ep, pre_status, fac, m, epochs, tol, block_size,
        (mesh, mesh_axis))
    return EigenProState(z.astype(coef.dtype), coef, errs, m, jnp.asarray(eta, coef.dtype), its, rel,
                         status, kern, c.Layout(vec, False))


@c.kernel_jit(static_argnums=(2,))
def _eigenpro3_factor(kern, z, jitter):
    low, _, st_chol = linalg.robust_cholesky(kernels.gram(kern, z), jitter=jitter)
    return (low, linalg.block_inverses(low)), st_chol


@c.kernel_jit(static_argnums=(12, 13, 14, 15, 16))
def _eigenpro3_core(kern, x, y2, z, sub, lam, vecs, lam_tail, eta, key, pre_status, fac, m, epochs, tol,
                    block_size, mesh_and_axis):
    mesh, mesh_axis = mesh_and_axis
    n, s = x.shape[0], sub.shape[0]
    dt = vecs.dtype
    y2 = y2.astype(dt)
    low, inv = fac
    diag = _precond_diag(lam, lam_tail, s)
    kw = dict(block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    zs = z[sub]
    kz_zs = kern(z, zs).astype(dt)
    nb = n // m

    def batch_step(alpha, ids):
        xb = x[ids]
        g = kernels.kernel_matvec(kern, xb, z, alpha, **kw) - y2[ids]
        grad = kernels.kernel_matvec(kern, z, xb, g, **kw)
        corr = vecs @ (diag[:, None] * (vecs.T @ (kern(zs, xb).astype(dt) @ g)))
        rhs = grad - kz_zs @ corr
        theta = linalg.solve_triangular(low, linalg.solve_triangular(low, rhs, diag_inv=inv),
                                        transpose=True, diag_inv=inv)
        # eta = 0 (nothing to fit: K_ZZ not PD): a NaN factor must not leak into alpha
        return alpha - jnp.where(eta > 0, (eta / m) * theta, 0.0), None

    def epoch(alpha, k):
        perm = jax.random.permutation(k, n)[: nb * m].reshape(nb, m)
        alpha, _ = jax.lax.scan(batch_step, alpha, perm)
        pred = kernels.kernel_matvec(kern, x, z, alpha, **kw)
        return (alpha, *_residual_stats(pred, y2))

    alpha0 = jnp.zeros((z.shape[0], y2.shape[1]), dt)
    alpha, errs, its, rel = _epochs(epoch, alpha0, key, epochs, tol)
    return alpha, errs, its, rel, _final_status(x, y2, alpha, pre_status, rel, tol, st.nonfinite_input(z))

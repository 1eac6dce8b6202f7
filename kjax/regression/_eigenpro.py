"""EigenPro 2: preconditioned stochastic gradient descent for kernel interpolation."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import linalg
from kjax._src.errors import check_int, fail
from kjax.regression import _common as c


class EigenProState(NamedTuple):
    """A fitted EigenPro model :math:`f(x) = \\sum_i \\alpha_i k(x, x_i)`.

    Attributes:
      x: ``[n, d]`` training points.
      alpha: ``[n, O]`` coefficients.
      train_errors: ``[epochs]`` training MSE after each epoch.
      batch_size: the batch size used (automatic: :math:`m^\\star = \\beta / \\lambda_{q+1}`).
      step_size: the step size used, :math:`\\eta = m / (\\beta + (m - 1)\\lambda_{q+1})`.
      status: int32 code (0 ok, 1 non-finite input, 3 diverged).
      kernel: the kernel (static).
      layout: static shape facts.
    """

    x: Float[Array, "n d"]
    alpha: Float[Array, "n O"]
    train_errors: Float[Array, " epochs"]
    batch_size: int
    step_size: Float[Array, ""]
    status: Int[Array, ""]
    kernel: c.StaticKernel
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
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
) -> EigenProState:
    r"""EigenPro 2: SGD on kernel interpolation :math:`K\alpha = y`, preconditioned by the top
    eigensystem of a Nystrom subsample, with automatic batch and step size.

    From a subsample :math:`X_s` of size ``s``, take the top :math:`q+1` eigenpairs
    :math:`(\lambda_j, e_j)` of :math:`K_{ss}/s`. The preconditioner
    :math:`P = I - \sum_{j \le q} (1 - \lambda_{q+1}/\lambda_j)\, \phi_j \otimes \phi_j` flattens the
    top of the spectrum, so the largest useful batch is :math:`m^\star = \beta/\lambda_{q+1}`
    (:math:`\beta = \max_i k(x_i, x_i)`) and the step is
    :math:`\eta = m / (\beta + (m-1)\lambda_{q+1})`. A batch ``B`` with residual
    :math:`g = K_{B\cdot}\alpha - y_B` updates

    .. math:: \alpha_B \mathrel{-}= \tfrac{\eta}{m} g, \qquad
       \alpha_s \mathrel{+}= \tfrac{\eta}{m} E\, \operatorname{diag}\!\Big(\frac{1 - \lambda_{q+1}/\lambda_j}
       {s\lambda_j}\Big) E^\top K_{sB}\, g.

    The products :math:`K_{B\cdot}\alpha` go through :func:`kjax.kernels.kernel_matvec`.

    Args:
      key: PRNG key (subsample and batch order).
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` training points.
      y: ``[n]`` or ``[n, O]`` targets.
      epochs: passes over the data (Python int).
      num_eigen: ``q``, the number of eigendirections flattened (``q < s``).
      subsample_size: ``s`` (clamped to ``n``).
      batch_size: override the automatic batch size.
      max_batch_size: cap on the automatic batch size.
      block_size: block sizes of the kernel matvecs.
      mesh: optional ``jax.sharding.Mesh`` for the kernel matvecs.

    Returns:
      :class:`EigenProState`; predict with :func:`eigenpro_predict`.

    Raises:
      ValueError: ``num_eigen >= subsample_size``, shapes as in :func:`krr_fit`, NaN/inf in
        concrete inputs.

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
    x, y2, vec = c.check_xy(fn, x, y)
    epochs = check_int(fn, "epochs", epochs, minimum=1)
    sub, lam, vecs, lam_tail, eta, m, k_ep = _preconditioner(
        fn, kern, x, x.shape[0], key, subsample_size, num_eigen, batch_size, max_batch_size)
    coef, errs, st = _eigenpro_core(kern, x, y2, sub, lam, vecs, lam_tail, eta, k_ep,
                                    m, epochs, block_size, mesh)
    return EigenProState(x, coef, errs, m, jnp.asarray(eta, coef.dtype), st, kern,
                         c.Layout(vec, False))


def _preconditioner(fn, kern, pts, n, key, subsample_size, num_eigen, batch_size, max_batch_size):
    """EigenPro's Nystrom preconditioner on a subsample of ``pts`` (the data for EigenPro 2, the
    centres for EigenPro 3) and the batch size and step it allows for ``n`` training points.

    Returns ``(sub, lam, vecs, lam_tail, eta, m, key_for_epochs)``: the subsample indices, the top
    ``num_eigen`` eigenpairs, ``lambda_{q+1}``, the step size and the batch size.
    """
    s = min(check_int(fn, "subsample_size", subsample_size, minimum=2), pts.shape[0])
    q = check_int(fn, "num_eigen", num_eigen, minimum=1)
    if q >= s:
        fail(fn, "num_eigen", f"be smaller than the subsample size {s}", q)
    k_sub, k_ep = jax.random.split(key)
    sub = jax.random.choice(k_sub, pts.shape[0], (s,), replace=False)
    lam, vecs, beta = _eigensystem(kern, pts[sub], q)
    lam_tail, beta = float(lam[q]), float(beta)
    if batch_size is None:
        m = int(min(max(1, math.floor(beta / max(lam_tail, 1e-300))), max_batch_size, n))
    else:
        m = min(check_int(fn, "batch_size", batch_size, minimum=1), n)
    eta = m / (beta + (m - 1) * lam_tail)
    return sub, lam[:q], vecs[:, :q], lam_tail, eta, m, k_ep


@functools.partial(jax.jit, static_argnums=(0, 2))
def _eigensystem(kern, xs, q):
    ks = kern(xs, xs)
    s = xs.shape[0]
    lam, vecs = jnp.linalg.eigh(ks / s)
    lam, vecs = lam[::-1][: q + 1], vecs[:, ::-1][:, : q + 1]
    beta = jnp.max(kernels.kernel_diag(kern, xs))
    return jnp.maximum(lam, 0.0), vecs, beta


@functools.partial(jax.jit, static_argnums=(0, 9, 10, 11, 12))
def _eigenpro_core(kern, x, y2, sub, lam, vecs, lam_tail, eta, key, m, epochs, block_size, mesh):
    n = x.shape[0]
    s = sub.shape[0]
    dt = vecs.dtype
    y2 = y2.astype(dt)
    diag = jnp.where(lam > 0, (1.0 - lam_tail / jnp.where(lam > 0, lam, 1.0))
                     / (s * jnp.where(lam > 0, lam, 1.0)), 0.0)
    xs = x[sub]
    nb = n // m

    def batch_step(alpha, ids):
        xb = x[ids]
        g = kernels.kernel_matvec(kern, xb, x, alpha, block_size=block_size, mesh=mesh) - y2[ids]
        alpha = alpha.at[ids].add(-(eta / m) * g)
        ksb_g = kern(xs, xb).astype(dt) @ g
        corr = vecs @ (diag[:, None] * (vecs.T @ ksb_g))
        return alpha.at[sub].add((eta / m) * corr), None

    def epoch(alpha, k):
        perm = jax.random.permutation(k, n)[: nb * m].reshape(nb, m)
        alpha, _ = jax.lax.scan(batch_step, alpha, perm)
        pred = kernels.kernel_matvec(kern, x, x, alpha, block_size=block_size, mesh=mesh)
        return alpha, jnp.mean((pred - y2) ** 2)

    alpha, errs = jax.lax.scan(epoch, jnp.zeros_like(y2), jax.random.split(key, epochs))
    ok = jnp.all(jnp.isfinite(alpha))
    st = c.combine_status(c.finite_status(x, y2),
                          jnp.where(ok, c.STATUS_OK, c.STATUS_FAILED).astype(jnp.int32))
    return alpha, errs, st


def eigenpro_predict(
    state: EigenProState,
    x_new: Float[ArrayLike, "m d"],
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
) -> Float[Array, " m *O"]:
    r"""Predictions :math:`f(x_\star) = k(x_\star, X)\,\alpha` of a fitted :class:`EigenProState`.

    Args:
      state: from :func:`eigenpro_fit`.
      x_new: ``[m, d]`` query points.
      block_size: block sizes of the kernel matvec.
      mesh: optional ``jax.sharding.Mesh``.

    Returns:
      ``[m]`` or ``[m, O]``.

    Raises:
      ValueError: ``x_new`` not ``[m, d]`` with the training ``d``.

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
    x_new = c.check_x_new(fn, x_new, state.x)
    out = kernels.kernel_matvec(state.kernel, x_new, state.x, state.alpha, block_size=block_size,
                                mesh=mesh)
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
    jitter: float | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
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
      jitter: relative jitter for the Cholesky factor of :math:`K_{ZZ}`.
      block_size: block sizes of the kernel matvecs.
      mesh: optional ``jax.sharding.Mesh``.

    Returns:
      :class:`EigenProState` whose ``x`` are the centres; predict with :func:`eigenpro_predict`.

    Raises:
      ValueError: ``num_eigen >= subsample_size``, ``centers`` not ``[p, d]``, and the input errors of
        :func:`eigenpro_fit`.

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
    x, y2, vec = c.check_xy(fn, x, y)
    z = c.check_x(fn, "centers", centers)
    c.check_same_dim(fn, "x", x, "centers", z, -1, what="the feature dimension d")
    epochs = check_int(fn, "epochs", epochs, minimum=1)
    sub, lam, vecs, lam_tail, eta, m, k_ep = _preconditioner(
        fn, kern, z, x.shape[0], key, subsample_size, num_eigen, batch_size, max_batch_size)
    # K_zz's factor as its own single-device program, as in Falkon: inside the sharded program
    # XLA:CPU would run the LAPACK calls on every device at once (see _falkon._falkon_core)
    fac, st_chol = _eigenpro3_factor(kern, z, jitter)
    coef, errs, st = _eigenpro3_core(kern, x, y2, z, sub, lam, vecs, lam_tail, eta, k_ep,
                                     m, epochs, fac, st_chol, block_size, mesh)
    return EigenProState(z.astype(coef.dtype), coef, errs, m, jnp.asarray(eta, coef.dtype), st, kern,
                         c.Layout(vec, False))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _eigenpro3_factor(kern, z, jitter):
    low, _, st_chol = c.robust_cholesky(kernels.gram(kern, z), jitter=jitter)
    return (low, linalg.block_inverses(low)), st_chol


@functools.partial(jax.jit, static_argnums=(0, 10, 11, 14, 15))
def _eigenpro3_core(kern, x, y2, z, sub, lam, vecs, lam_tail, eta, key, m, epochs, fac, st_chol,
                    block_size, mesh):
    n, s = x.shape[0], sub.shape[0]
    dt = vecs.dtype
    y2 = y2.astype(dt)
    low, inv = fac
    diag = jnp.where(lam > 0, (1.0 - lam_tail / jnp.where(lam > 0, lam, 1.0))
                     / (s * jnp.where(lam > 0, lam, 1.0)), 0.0)
    zs = z[sub]
    kz_zs = kern(z, zs).astype(dt)
    nb = n // m

    def batch_step(alpha, ids):
        xb = x[ids]
        g = kernels.kernel_matvec(kern, xb, z, alpha, block_size=block_size, mesh=mesh) - y2[ids]
        grad = kernels.kernel_matvec(kern, z, xb, g, block_size=block_size, mesh=mesh)
        corr = vecs @ (diag[:, None] * (vecs.T @ (kern(zs, xb).astype(dt) @ g)))
        rhs = grad - kz_zs @ corr
        theta = linalg.solve_triangular(low, linalg.solve_triangular(low, rhs, diag_inv=inv),
                                        transpose=True, diag_inv=inv)
        return alpha - (eta / m) * theta, None

    def epoch(alpha, k):
        perm = jax.random.permutation(k, n)[: nb * m].reshape(nb, m)
        alpha, _ = jax.lax.scan(batch_step, alpha, perm)
        pred = kernels.kernel_matvec(kern, x, z, alpha, block_size=block_size, mesh=mesh)
        return alpha, jnp.mean((pred - y2) ** 2)

    alpha0 = jnp.zeros((z.shape[0], y2.shape[1]), dt)
    alpha, errs = jax.lax.scan(epoch, alpha0, jax.random.split(key, epochs))
    ok = jnp.all(jnp.isfinite(alpha))
    st = c.combine_status(c.finite_status(x, y2), st_chol,
                          jnp.where(ok, c.STATUS_OK, c.STATUS_FAILED).astype(jnp.int32))
    return alpha, errs, st

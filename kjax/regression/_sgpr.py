"""Sparse GP regression (SGPR, Titsias 2009): the collapsed variational bound on inducing points."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import linalg
from kjax._src import status as st
from kjax._src.errors import check_int, check_positive, check_same_dim, fail
from kjax._src.status import Status
from kjax.regression import _common as c


class SGPRState(NamedTuple):
    """A fitted sparse GP regression (Titsias 2009) on ``M`` inducing points.

    Attributes:
      centers: ``[M, d]`` inducing inputs :math:`Z`.
      low: ``[M, M]`` lower Cholesky factor :math:`L` of :math:`K_{MM}` (jitter added if needed).
      low_b: ``[M, M]`` lower Cholesky factor of
        :math:`B = I + L^{-1} K_{Mn} K_{nM} L^{-\\top} / \\sigma^2`.
      c: ``[M, O]`` :math:`L_B^{-1} L^{-1} K_{Mn}\\, y / \\sigma^2`.
      elbo: the collapsed evidence lower bound (summed over outputs).
      ridge: the noise variance :math:`\\sigma^2`.
      status: int32 code (0 ok, 1 non-finite input, 2 jitter added, 3 not positive definite); see
        :func:`status_name`.
      kernel: the kernel (static).
      layout: static shape facts.
    """

    centers: Float[Array, "M d"]
    low: Float[Array, "M M"]
    low_b: Float[Array, "M M"]
    c: Float[Array, "M O"]
    elbo: Float[Array, ""]
    ridge: Float[Array, ""]
    status: Int[Array, ""]
    kernel: c.HeldKernel
    layout: c.Layout


def sgpr_fit(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    centers: Float[ArrayLike, "M d"],
    *,
    ridge: float | Float[ArrayLike, ""],
    jitter: float | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> SGPRState:
    r"""Sparse GP regression with the collapsed variational bound of Titsias (2009).

    With :math:`Q_{nn} = K_{nM} K_{MM}^{-1} K_{Mn}` and noise variance :math:`\sigma^2 =`
    ``ridge``, the evidence lower bound (per output column, summed) is

    .. math:: \mathcal L = \log \mathcal N(y \mid 0, Q_{nn} + \sigma^2 I)
       - \tfrac{1}{2\sigma^2} \operatorname{tr}(K_{nn} - Q_{nn}) \le \log p(y),

    with equality when the inducing points are the data (in exact arithmetic: with an
    ill-conditioned :math:`K_{MM}` the bound loses accuracy, as every SGPR does). It is computed
    as in GPflow's ``SGPR``:
    :math:`L L^\top = K_{MM}`, :math:`B = I + L^{-1} K_{Mn} K_{nM} L^{-\top}/\sigma^2 = L_B L_B^\top`,
    :math:`c = L_B^{-1} L^{-1} K_{Mn} y / \sigma^2`,

    .. math:: \mathcal L = -\tfrac n2 \log 2\pi\sigma^2 - \sum_i \log (L_B)_{ii}
       - \tfrac{\lVert y\rVert^2}{2\sigma^2} + \tfrac12\lVert c\rVert^2
       - \tfrac{\operatorname{tr} K_{nn}}{2\sigma^2} + \tfrac12 \operatorname{tr}(B - I).

    :math:`K_{Mn} K_{nM}` comes from :func:`kjax.kernels.kernel_normal_matvec` and
    :math:`K_{Mn} y` from :func:`kjax.kernels.kernel_matvec` (blockwise, split over ``mesh``), so
    the ``n x M`` matrix is never held: memory :math:`O(M^2 + \text{block} \cdot M)`, time
    :math:`O(n M^2)`. Pick the centres with :func:`nystrom_centers` (uniform, ridge leverage
    scores, RPCholesky pivots). A Cholesky that fails gets jitter (``status`` 2).
    Differentiable in ``ridge``, ``centers`` and the kernel's hyperparameters (maximise
    ``elbo`` to fit them).

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` training inputs.
      y: ``[n]`` or ``[n, O]`` targets (zero prior mean).
      centers: ``[M, d]`` inducing inputs.
      ridge: noise variance :math:`\sigma^2 > 0`.
      jitter: relative jitter for a failed Cholesky (> 0; default ``10 eps``).
      block_size: block sizes of the kernel products.
      mesh: optional ``jax.sharding.Mesh``: the ``n x M`` products are split over its devices.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).

    Returns:
      :class:`SGPRState` with the ``elbo``; predict with :func:`sgpr_predict`.

    Raises:
      ValueError: ``ridge <= 0`` or missing, ``centers`` not ``[M, d]`` with the data's ``d``, the
        input errors of :func:`krr_fit`.

    Example:
      >>> import functools, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import gp_log_marginal_likelihood, sgpr_fit
      >>> x = jnp.linspace(0.0, 3.0, 10)[:, None]
      >>> y, k = jnp.sin(x[:, 0]), functools.partial(rbf, lengthscale=0.3)
      >>> full = sgpr_fit(k, x, y, x, ridge=0.1)  # the centres are all the data: ELBO = LML
      >>> bool(jnp.abs(full.elbo - gp_log_marginal_likelihood(k, x, y, ridge=0.1)) < 1e-4)
      True
      >>> bool(sgpr_fit(k, x, y, x[::3], ridge=0.1).elbo <= full.elbo)
      True

    References:
      Titsias, *Variational learning of inducing variables in sparse Gaussian processes*,
      AISTATS 2009; GPflow's ``SGPR``; GPJax's ``CollapsedVariationalGaussian`` /
      ``collapsed_elbo``.
    """
    fn = "kjax.regression.sgpr_fit"
    kern = c.check_kernel(fn, kernel)
    x, y2, vec = c.check_xy(fn, x, y, kern=kern)
    z = c.check_x(fn, "centers", centers, kern)
    check_same_dim(fn, "x", x, "centers", z, -1, what="the feature dimension d")
    if ridge is None:
        fail(fn, "ridge", "be given (the noise variance, > 0)", None)
    check_positive(fn, "ridge", ridge)
    jitter = c.check_jitter(fn, jitter)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    # the n x M products (sharded over mesh) and the M x M factorisations (LAPACK, one device) are
    # separate programs, as in Falkon (see kjax/regression/_falkon.py on OpenBLAS in sharded programs)
    kk, kky, tr_knn = _sgpr_products(kern, x, y2, z, block_size, mesh, mesh_axis)
    low, low_b, cvec, elbo, status = _sgpr_core(kern, x, y2, z, kk, kky, tr_knn, jnp.asarray(ridge), jitter)
    return SGPRState(z.astype(low.dtype), low, low_b, cvec, elbo, jnp.asarray(ridge, low.dtype), status,
                     kern, c.Layout(vec, False))


@c.kernel_jit(static_argnums=(4, 5, 6))
def _sgpr_products(kern, x, y2, z, block_size, mesh, mesh_axis):
    """K_Mn K_nM, K_Mn y and tr K_nn, blockwise."""
    kw = dict(block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    eye = jnp.eye(z.shape[0], dtype=x.dtype)
    kk = kernels.kernel_normal_matvec(kern, x, z, eye, **kw)
    kky = kernels.kernel_matvec(kern, z, x, y2.astype(x.dtype), **kw)
    return kk, kky, jnp.sum(kernels.kernel_diag(kern, x))


@c.kernel_jit(static_argnums=(8,))
def _sgpr_core(kern, x, y2, z, kk, kky, tr_knn, ridge, jitter):
    kmm = kernels.gram(kern, z)
    dt = kmm.dtype
    m = z.shape[0]
    n, o = y2.shape
    s2 = ridge.astype(dt)
    yk = y2.astype(dt)
    kk, kky, tr_knn = kk.astype(dt), kky.astype(dt), tr_knn.astype(dt)
    eye = jnp.eye(m, dtype=dt)
    low, _, st_l = linalg.robust_cholesky(kmm, jitter=jitter)
    tri = jax.scipy.linalg.solve_triangular
    a = tri(low, tri(low, kk, lower=True).T, lower=True) / s2  # L^-1 K_Mn K_nM L^-T / s2
    a = 0.5 * (a + a.T)
    low_b, _, st_b = linalg.robust_cholesky(eye + a, jitter=jitter)
    cvec = tri(low_b, tri(low, kky, lower=True), lower=True) / s2
    elbo = (-0.5 * n * o * jnp.log(2.0 * jnp.pi * s2) - o * jnp.sum(jnp.log(jnp.diagonal(low_b)))
            - 0.5 * jnp.sum(yk * yk) / s2 + 0.5 * jnp.sum(cvec * cvec)
            - 0.5 * o * tr_knn / s2 + 0.5 * o * jnp.trace(a))
    status = st.combine(st.nonfinite_input(x, y2, z), st_l, st_b)
    elbo = jnp.where(status == Status.NOT_PSD, -jnp.inf, elbo)
    return low, low_b, cvec, elbo, status


def sgpr_predict(
    state: SGPRState,
    x_new: Float[ArrayLike, "m d"],
    *,
    block_size: int | None = None,
) -> tuple[Float[Array, " m *O"], Float[Array, " m"]]:
    r"""Predictive mean and latent variance of a fitted :class:`SGPRState` (Titsias' optimal
    variational posterior).

    .. math:: \mu_\star = K_{\star M} L^{-\top} L_B^{-\top} c,\qquad
       v_\star = k(x_\star, x_\star) - \lVert L^{-1} K_{M\star}\rVert^2
       + \lVert L_B^{-1} L^{-1} K_{M\star}\rVert^2.

    ``v`` is the variance of the latent function (add ``state.ridge`` for a new observation).

    Args:
      state: from :func:`sgpr_fit`.
      x_new: ``[m, d]`` query points (``m = 0`` gives empty results).
      block_size: rows per block of the kernel diagonal (a positive int).

    Returns:
      ``(mean, variance)``: ``[m]`` or ``[m, O]`` (the layout of the training ``y``) and ``[m]``.

    Raises:
      ValueError: ``x_new`` not ``[m, d]`` with the training ``d``, NaN/inf in a concrete
        ``x_new``, a ``block_size`` that is not a positive int.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import sgpr_fit, sgpr_predict
      >>> x = jnp.linspace(0.0, 3.0, 20)[:, None]
      >>> mean, var = sgpr_predict(sgpr_fit(rbf, x, jnp.sin(x[:, 0]), x[::4], ridge=0.1), x[:3])
      >>> mean.shape, var.shape
      ((3,), (3,))

    References:
      Titsias, AISTATS 2009.
    """
    fn = "kjax.regression.sgpr_predict"
    x_new = c.check_x_new(fn, x_new, state.centers, state.kernel)
    if block_size is not None:
        block_size = check_int(fn, "block_size", block_size, minimum=1)
    if x_new.shape[0] == 0:
        tail = () if state.layout.vector else state.c.shape[1:]
        return c.empty_rows((0, *tail), state.c.dtype), c.empty_rows((0,), state.c.dtype)
    mean, var = _sgpr_predict_core(state.kernel, x_new, state.centers, state.low, state.low_b, state.c,
                                   block_size)
    return (mean[:, 0] if state.layout.vector else mean), var


@c.kernel_jit(static_argnums=(6,))
def _sgpr_predict_core(kern, x_new, z, low, low_b, cvec, block_size):
    dt = low.dtype
    tri = jax.scipy.linalg.solve_triangular
    kms = kern(z, x_new).astype(dt)
    t1 = tri(low, kms, lower=True)
    t2 = tri(low_b, t1, lower=True)
    mean = t2.T @ cvec
    kss = kernels.kernel_diag(kern, x_new, block_size=block_size).astype(dt)
    var = jnp.maximum(kss - jnp.sum(t1 * t1, axis=0) + jnp.sum(t2 * t2, axis=0), 0.0)
    return mean, var

"""Gaussian-process regression: exact posterior and log marginal likelihood.

The noise variance is called ``ridge``, as everywhere in kjax.regression (it is the number added to
the kernel's diagonal, scikit-learn's ``GaussianProcessRegressor(alpha=)``); ``noise`` is its
deprecated alias.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import linalg
from kjax._src import status as st
from kjax._src.errors import check_positive
from kjax._src.status import Status
from kjax.regression import _common as c


class GPPosterior(NamedTuple):
    """Posterior mean and marginal variance of a GP at query points.

    Attributes:
      mean: ``[m]`` or ``[m, O]``.
      variance: ``[m]`` latent-function variance :math:`k(x_\\star, x_\\star) - k_\\star^\\top
        (K + \\sigma^2 I)^{-1} k_\\star` (no observation noise; add ``ridge`` for the predictive
        variance of a new observation), shared by all outputs.
      status: int32 code (0 ok, 1 non-finite input (``x``, ``y`` or ``x_new``, under ``jit``),
        2 jitter added, 3 not positive definite: the Cholesky factorisation failed); see
        :func:`status_name`.
    """

    mean: Float[Array, " m *O"]
    variance: Float[Array, " m"]
    status: Int[Array, ""]


def _checked(fn, kernel, x, y, ridge, noise, jitter, block_size, mesh, mesh_axis):
    ridge = c.ridge_or_noise(fn, ridge, noise)
    kern = c.check_kernel(fn, kernel)
    x, y2, vec = c.check_xy(fn, x, y, kern=kern)
    check_positive(fn, "noise" if noise is not None else "ridge", ridge)
    jitter = c.check_jitter(fn, jitter)
    block_size = c.check_block_size(fn, block_size)
    mesh_axis = c.check_mesh(fn, mesh, mesh_axis)
    return kern, x, y2, vec, ridge, jitter, (block_size, mesh, mesh_axis)


@c.kernel_jit(static_argnums=(4, 5, 6, 7))
def _factor_core(kern, x, y2, ridge, jitter, block_size, mesh, mesh_axis):
    k = kernels.gram(kern, x, block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    dt = k.dtype
    n = x.shape[0]
    low, _, code = linalg.robust_cholesky(k + jnp.asarray(ridge, dt) * jnp.eye(n, dtype=dt), jitter=jitter)
    coef = linalg.cho_solve(low, y2.astype(dt))
    return low, coef, st.combine(st.nonfinite_input(x, y2), code)


def gp_posterior(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    x_new: Float[ArrayLike, "m d"],
    *,
    ridge: float | Float[ArrayLike, ""] | None = None,
    jitter: float | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    noise: float | Float[ArrayLike, ""] | None = None,
) -> GPPosterior:
    r"""Exact GP regression posterior with a zero prior mean.

    .. math:: \mu_\star = K_{\star n} (K + \sigma^2 I)^{-1} y,\qquad
       v_\star = k(x_\star, x_\star) - \lVert L^{-1} K_{n\star}\rVert^2,\quad L L^\top = K + \sigma^2 I.

    ``ridge`` :math:`\sigma^2` (the observation-noise variance) plays the role of scikit-learn's
    ``GaussianProcessRegressor(alpha=)`` (unscaled, added to the diagonal), so the mean equals
    exact KRR with the same ``ridge`` (``ridge_scaling="none"``). A Cholesky that fails gets
    jitter (``status`` 2). Differentiable in ``x``, ``y``, ``ridge`` and the kernel's
    hyperparameters. NaN or inf in concrete inputs (``x_new`` included) raise; under ``jit``
    ``status`` is 1 and the mean and variance of the affected rows are NaN.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` training inputs.
      y: ``[n]`` or ``[n, O]`` targets.
      x_new: ``[m, d]`` query points (``m = 0`` gives empty results).
      ridge: observation-noise variance :math:`\sigma^2 > 0` (keep it positive when traced).
      jitter: relative jitter for a failed Cholesky (> 0; default ``10 eps``).
      block_size: block sizes of the Gram assembly (an int or ``(rows, cols)``).
      mesh: optional ``jax.sharding.Mesh`` to split the Gram assembly over.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).
      noise: deprecated name of ``ridge`` (warns).

    Returns:
      :class:`GPPosterior` ``(mean, variance, status)``.

    Raises:
      ValueError: ``ridge <= 0`` (static) or missing, both ``ridge`` and ``noise``, shapes as in
        :func:`krr_fit`, NaN/inf in concrete inputs, a bad ``block_size`` or ``mesh_axis``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import gp_posterior
      >>> x = jnp.linspace(0.0, 3.0, 10)[:, None]
      >>> post = gp_posterior(rbf, x, jnp.sin(x[:, 0]), x + 0.1, ridge=1e-2)
      >>> post.mean.shape, bool(jnp.all(post.variance >= 0))
      ((10,), True)

    References:
      Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006, Algorithm 2.1.
    """
    fn = "kjax.regression.gp_posterior"
    kern, x, y2, vec, ridge, jitter, blocks = _checked(fn, kernel, x, y, ridge, noise, jitter, block_size,
                                                       mesh, mesh_axis)
    x_new = c.check_x_new(fn, x_new, x, kern)
    block_size, mesh, mesh_axis = blocks
    low, coef, code = _factor_core(kern, x, y2, ridge, jitter, *blocks)
    if x_new.shape[0] == 0:
        mean = c.empty_rows((0,) if vec else (0, y2.shape[1]), coef.dtype)
        return GPPosterior(mean, c.empty_rows((0,), coef.dtype), code)
    kxs = kernels.gram(kern, x, x_new, block_size=block_size, mesh=mesh, mesh_axis=mesh_axis)
    mean = kxs.T @ coef
    v = jax.scipy.linalg.solve_triangular(low, kxs, lower=True)
    var = jnp.maximum(kernels.kernel_diag(kern, x_new).astype(v.dtype) - jnp.sum(v * v, axis=0), 0.0)
    return GPPosterior(mean[:, 0] if vec else mean, var, st.combine(code, st.nonfinite_input(x_new)))


def gp_log_marginal_likelihood(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    *,
    ridge: float | Float[ArrayLike, ""] | None = None,
    jitter: float | None = None,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    noise: float | Float[ArrayLike, ""] | None = None,
) -> Float[Array, ""]:
    r"""Log marginal likelihood of a zero-mean GP, summed over output columns.

    .. math:: \log p(y) = -\tfrac12 y^\top (K + \sigma^2 I)^{-1} y - \sum_i \log L_{ii}
       - \tfrac n2 \log 2\pi.

    Differentiable in ``ridge`` and in the kernel's hyperparameters (build the kernel inside the
    loss, e.g. ``functools.partial(rbf, lengthscale=jax.nn.softplus(p))``): fit them with optax
    (see the user guide). Equals scikit-learn's
    ``GaussianProcessRegressor(alpha=ridge).log_marginal_likelihood()``.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` inputs.
      y: ``[n]`` or ``[n, O]`` targets.
      ridge: the noise variance :math:`\sigma^2 > 0`.
      jitter: relative jitter for a failed Cholesky.
      block_size: block sizes of the Gram assembly.
      mesh: optional ``jax.sharding.Mesh`` to split the Gram assembly over.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis).
      noise: deprecated name of ``ridge`` (warns).

    The factorisation is compiled once per kernel object: inside an optimisation loop ``jax.jit``
    the loss (a ``functools.partial`` built from traced hyperparameters is a new object per call).

    Returns:
      scalar; ``nan`` never silently: a failed factorisation gives ``-inf`` (NaN/inf in traced
      inputs give NaN).

    Raises:
      ValueError: as :func:`gp_posterior`.

    Example:
      >>> import functools, jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import gp_log_marginal_likelihood
      >>> x = jnp.linspace(0.0, 3.0, 10)[:, None]
      >>> nll = lambda ls: -gp_log_marginal_likelihood(functools.partial(rbf, lengthscale=ls), x,
      ...                                              jnp.sin(x[:, 0]), ridge=1e-2)
      >>> bool(jnp.isfinite(jax.jit(jax.grad(nll))(1.0)))
      True

    References:
      Rasmussen & Williams, 2006, eq. 2.30 and Algorithm 2.1.
    """
    fn = "kjax.regression.gp_log_marginal_likelihood"
    kern, x, y2, _, ridge, jitter, blocks = _checked(fn, kernel, x, y, ridge, noise, jitter, block_size,
                                                     mesh, mesh_axis)
    low, coef, code = _factor_core(kern, x, y2, ridge, jitter, *blocks)
    y2 = y2.astype(coef.dtype)
    n, o = y2.shape
    dt = coef.dtype
    fit = -0.5 * jnp.sum(y2 * coef)
    logdet = jnp.sum(jnp.log(jnp.diagonal(low)))
    val = fit - o * logdet - 0.5 * n * o * jnp.log(2.0 * jnp.pi).astype(dt)
    return jnp.where(code == Status.NOT_PSD, -jnp.inf, val)

"""Gaussian-process regression: exact posterior and log marginal likelihood."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import linalg
from kjax._src.errors import check_positive
from kjax.regression import _common as c


class GPPosterior(NamedTuple):
    """Posterior mean and marginal variance of a GP at query points.

    Attributes:
      mean: ``[m]`` or ``[m, O]``.
      variance: ``[m]`` latent-function variance :math:`k(x_\\star, x_\\star) - k_\\star^\\top
        (K + \\sigma^2 I)^{-1} k_\\star` (no observation noise; add ``noise`` for the predictive
        variance of a new observation), shared by all outputs.
      status: int32 code (0 ok, 1 non-finite input, 2 jitter added, 3 Cholesky failed).
    """

    mean: Float[Array, " m *O"]
    variance: Float[Array, " m"]
    status: Int[Array, ""]


def _factor(fn, kernel, x, y, noise, jitter):
    kern = c.check_kernel(fn, kernel)
    x, y2, vec = c.check_xy(fn, x, y)
    check_positive(fn, "noise", noise)
    low, coef, st = _factor_core(kern, x, y2, noise, jitter)
    return kern, x, y2.astype(coef.dtype), vec, low, coef, st


@functools.partial(jax.jit, static_argnums=(0, 4))
def _factor_core(kern, x, y2, noise, jitter):
    k = kernels.gram(kern, x)
    dt = k.dtype
    n = x.shape[0]
    low, _, st = c.robust_cholesky(k + jnp.asarray(noise, dt) * jnp.eye(n, dtype=dt), jitter=jitter)
    coef = linalg.cho_solve(low, y2.astype(dt))
    return low, coef, c.combine_status(c.finite_status(x, y2), st)


def gp_posterior(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    x_new: Float[ArrayLike, "m d"],
    *,
    noise: float | Float[ArrayLike, ""],
    jitter: float | None = None,
) -> GPPosterior:
    r"""Exact GP regression posterior with a zero prior mean.

    .. math:: \mu_\star = K_{\star n} (K + \sigma^2 I)^{-1} y,\qquad
       v_\star = k(x_\star, x_\star) - \lVert L^{-1} K_{n\star}\rVert^2,\quad L L^\top = K + \sigma^2 I.

    ``noise`` :math:`\sigma^2` plays the role of scikit-learn's ``GaussianProcessRegressor(alpha=)``
    (unscaled, added to the diagonal), so the mean equals exact KRR with
    ``ridge=noise, ridge_scaling="sklearn"``. A Cholesky that fails gets jitter
    (``status`` 2). Differentiable in ``x``, ``y``, ``noise`` and the kernel's hyperparameters.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` training inputs.
      y: ``[n]`` or ``[n, O]`` targets.
      x_new: ``[m, d]`` query points.
      noise: observation-noise variance :math:`\sigma^2 > 0` (keep it positive when traced).
      jitter: relative jitter for a failed Cholesky (default ``10 eps``).

    Returns:
      :class:`GPPosterior` ``(mean, variance, status)``.

    Raises:
      ValueError: ``noise <= 0`` (static), shapes as in :func:`krr_fit`, NaN/inf in concrete
        inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import gp_posterior
      >>> x = jnp.linspace(0.0, 3.0, 10)[:, None]
      >>> post = gp_posterior(rbf, x, jnp.sin(x[:, 0]), x + 0.1, noise=1e-2)
      >>> post.mean.shape, bool(jnp.all(post.variance >= 0))
      ((10,), True)

    References:
      Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006, Algorithm 2.1.
    """
    fn = "kjax.regression.gp_posterior"
    kern, x, y2, vec, low, coef, st = _factor(fn, kernel, x, y, noise, jitter)
    x_new = c.check_x_new(fn, x_new, x)
    kxs = kernels.gram(kern, x, x_new)
    mean = kxs.T @ coef
    v = jax.scipy.linalg.solve_triangular(low, kxs, lower=True)
    var = jnp.maximum(kernels.kernel_diag(kern, x_new).astype(v.dtype) - jnp.sum(v * v, axis=0), 0.0)
    return GPPosterior(mean[:, 0] if vec else mean, var, st)


def gp_log_marginal_likelihood(
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    y: Float[ArrayLike, " n *O"],
    *,
    noise: float | Float[ArrayLike, ""],
    jitter: float | None = None,
) -> Float[Array, ""]:
    r"""Log marginal likelihood of a zero-mean GP, summed over output columns.

    .. math:: \log p(y) = -\tfrac12 y^\top (K + \sigma^2 I)^{-1} y - \sum_i \log L_{ii}
       - \tfrac n2 \log 2\pi.

    Differentiable in ``noise`` and in the kernel's hyperparameters (build the kernel inside the
    loss, e.g. ``functools.partial(rbf, lengthscale=jax.nn.softplus(p))``): fit them with optax
    (see the user guide). Equals scikit-learn's
    ``GaussianProcessRegressor(alpha=noise).log_marginal_likelihood()``.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` inputs.
      y: ``[n]`` or ``[n, O]`` targets.
      noise: :math:`\sigma^2 > 0`.
      jitter: relative jitter for a failed Cholesky.

    The factorisation is compiled once per kernel object: inside an optimisation loop ``jax.jit``
    the loss (a ``functools.partial`` built from traced hyperparameters is a new object per call).

    Returns:
      scalar; ``nan`` never silently: a failed factorisation gives ``-inf``.

    Raises:
      ValueError: as :func:`gp_posterior`.

    Example:
      >>> import functools, jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import gp_log_marginal_likelihood
      >>> x = jnp.linspace(0.0, 3.0, 10)[:, None]
      >>> nll = lambda ls: -gp_log_marginal_likelihood(functools.partial(rbf, lengthscale=ls), x,
      ...                                              jnp.sin(x[:, 0]), noise=1e-2)
      >>> bool(jnp.isfinite(jax.jit(jax.grad(nll))(1.0)))
      True

    References:
      Rasmussen & Williams, 2006, eq. 2.30 and Algorithm 2.1.
    """
    fn = "kjax.regression.gp_log_marginal_likelihood"
    _, x, y2, _, low, coef, st = _factor(fn, kernel, x, y, noise, jitter)
    n, o = y2.shape
    dt = coef.dtype
    fit = -0.5 * jnp.sum(y2 * coef)
    logdet = jnp.sum(jnp.log(jnp.diagonal(low)))
    val = fit - o * logdet - 0.5 * n * o * jnp.log(2.0 * jnp.pi).astype(dt)
    return jnp.where(st == c.STATUS_FAILED, -jnp.inf, val)

"""Random Fourier features of shift-invariant kernels (RBF, Laplace, Matern)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from kjax import kernels
from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, check_in, check_int, check_positive, check_rank, fail
from kjax._src.random_features import KINDS, random_projection
from kjax.regression import _common as c


def _spectral_params(fn: str, kernel: Any) -> tuple[float | None, Any, Any]:
    """``(nu, lengthscale, variance)`` of an RBF / Laplace / Matern kernel (``nu=None``: RBF)."""
    base, kw = kernel, {}
    while isinstance(base, functools.partial):
        if base.args:
            break
        kw = {**base.keywords, **kw}
        base = base.func
    known = {kernels.rbf: None, kernels.laplace: 0.5, kernels.matern: None}
    if base not in known:
        fail(fn, "kernel", "be kjax.kernels.rbf, laplace or matern, or a functools.partial of one "
             "with keyword hyperparameters", repr(kernel), cls=KjaxTypeError)
    extra = set(kw) - {"lengthscale", "variance", "nu"}
    if extra or (base is not kernels.matern and "nu" in kw):
        fail(fn, "kernel", "carry only the hyperparameters lengthscale, variance (and nu for matern)",
             f"keywords {sorted(kw)}")
    nu = kw.get("nu", 1.5) if base is kernels.matern else known[base]
    if base is kernels.matern and nu not in (0.5, 1.5, 2.5):
        fail(fn, "kernel", "have nu in (0.5, 1.5, 2.5)", nu)
    ls, var = kw.get("lengthscale", 1.0), kw.get("variance", 1.0)
    check_positive(fn, "lengthscale", ls)
    check_positive(fn, "variance", var)
    return nu, ls, var


def random_fourier_features(
    key: jax.Array,
    x: Float[ArrayLike, "n d"],
    *,
    kernel: c.Kernel,
    num_features: int,
    kind: str = "iid",
) -> Float[Array, "n F"]:
    r"""Random Fourier features :math:`\phi(x)` with :math:`\phi(x)^\top\phi(y) \approx k(x, y)`.

    Bochner: a shift-invariant kernel is :math:`k(x, y) = \sigma^2\, \mathbb E_{\omega \sim p}
    \cos(\omega^\top (x - y))` with :math:`p` its normalised spectral density. With ``M =
    num_features`` frequencies :math:`\omega_j`,

    .. math:: \phi(x) = \sigma \sqrt{1/M}\,\big[\cos(\omega_j^\top x),\ \sin(\omega_j^\top x)\big]_{j=1}^M
       \in \mathbb R^{2M},

    an unbiased estimate for every ``kind``. :math:`\omega = z / \ell` for the RBF kernel and
    :math:`\omega = z \sqrt{2\nu / u} / \ell`, :math:`u \sim \chi^2_{2\nu}` (a multivariate
    Student t) for Matern-:math:`\nu` and Laplace (:math:`\nu = 1/2`), where the directions
    :math:`z` come from :func:`kjax._src.random_features.random_projection` (shared with
    kjax.attention): ``"iid"`` Gaussian, ``"orthogonal"`` (blocks of orthogonal rows with
    chi norms) or ``"simplex"`` (simplex random features).

    Args:
      key: PRNG key.
      x: ``[n, d]`` points.
      kernel: ``kjax.kernels.rbf``, ``laplace`` or ``matern``, or a ``functools.partial`` of one
        with keyword ``lengthscale`` (scalar or ``[d]``), ``variance`` and ``nu``.
      num_features: ``M``, the number of frequencies (the output has ``2M`` columns).
      kind: ``"iid"``, ``"orthogonal"`` or ``"simplex"``.

    Returns:
      ``[n, 2 M]`` features, the dtype of ``x`` (at least float32).

    Raises:
      ValueError: unknown ``kind``, ``num_features < 1``, non-positive hyperparameters, ``x`` not
        ``[n, d]``.
      TypeError: a kernel without a known spectral density.

    Example:
      >>> import functools, jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import random_fourier_features
      >>> x = jax.random.normal(jax.random.key(0), (50, 3))
      >>> k = functools.partial(rbf, lengthscale=2.0)
      >>> phi = random_fourier_features(jax.random.key(1), x, kernel=k, num_features=4096)
      >>> phi.shape, bool(jnp.max(jnp.abs(phi @ phi.T - k(x))) < 0.1)
      ((50, 8192), True)

    References:
      Rahimi & Recht, *Random features for large-scale kernel machines*, NeurIPS 2007; Yu et al.,
      *Orthogonal random features*, NeurIPS 2016; Reid et al., *Simplex random features*, ICML 2023.
    """
    fn = "kjax.regression.random_fourier_features"
    check_in(fn, "kind", kind, KINDS)
    m = check_int(fn, "num_features", num_features, minimum=1)
    x = dtypes.as_float_array(fn, "x", x)
    check_rank(fn, "x", x, 2, layout="[n, d]")
    nu, ls, var = _spectral_params(fn, kernel)
    return _rff_core(key, x, jnp.asarray(ls), jnp.asarray(var), m, kind, nu, fn)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _rff_core(key, x, ls, var, m, kind, nu, fn):
    dt = dtypes.gram_dtype(x)
    d = x.shape[1]
    k_dir, k_rad = jax.random.split(key)
    z = random_projection(k_dir, m, d, kind=kind, dtype=dt, fn_name=fn)
    if nu is not None:
        # chi^2 with 2 nu (an integer: nu is a half-integer) degrees of freedom
        u = jnp.sum(jax.random.normal(k_rad, (m, int(round(2 * nu))), dt) ** 2, axis=1)
        z = z * jnp.sqrt(2.0 * nu / u)[:, None]
    proj = (x.astype(dt) / ls.astype(dt)) @ z.T
    scale = jnp.sqrt(var.astype(dt) / m)
    return scale * jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], axis=-1)

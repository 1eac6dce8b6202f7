"""Positive-definite kernel functions ``k(x1, x2) -> [n1, n2]``.

Every kernel is a pure function of ``x1: [n1, d]`` and ``x2: [n2, d]`` (``x2=None`` means ``x1``, and
then the diagonal distances are exactly zero), with hyperparameters keyword-only. Integer inputs are
promoted to the default float dtype; the result has dtype at least float32 (the Gram-matrix rule of
``kjax._src.dtypes``). Kernels are differentiable in inputs and hyperparameters, also at
``x1 == x2``: distances use a square root whose gradient at zero is taken as zero (the minimum-norm
subgradient), which is exact for Matern 3/2 and 5/2 and the conventional choice for Laplace.

Hyperparameters known at trace time are checked (``lengthscale > 0``); traced ones (under ``grad``
of a marginal likelihood) cannot be, so keep them positive, e.g. with ``jax.nn.softplus``.
Empty inputs (``n1``, ``n2`` or ``d`` zero) are errors.

Non-finite inputs are values, not checked: a point holding NaN gives NaN in its row of the kernel
matrix (its row and column when ``x2`` is None) and leaves every other entry as it was. No kernel
turns NaN into a plausible value (such as ``k = 1``, "identical to every point").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from kjax._src import dtypes
from kjax._src.errors import check_int, check_positive, check_rank, check_same_dim, fail

#: up to this feature dimension distances are sums of squared differences unrolled over features
#: (exact, one fused loop); above it |x|^2 + |y|^2 - 2 x.y (a matmul)
_DIRECT_DIM = 8


def _nonempty(fn: str, arg: str, x, n: str) -> None:
    if x.shape[0] == 0:
        fail(fn, arg, f"have {n} >= 1 points in [{n}, d]", f"shape {x.shape}")
    if x.shape[1] == 0:
        fail(fn, arg, f"have d >= 1 features in [{n}, d]", f"shape {x.shape}")


def prepare_inputs(fn: str, x1, x2):
    """Validate and promote inputs; returns ``(x1, x2, same)`` in the Gram dtype."""
    x1 = dtypes.as_float_array(fn, "x1", x1)
    check_rank(fn, "x1", x1, 2, layout="[n1, d]")
    _nonempty(fn, "x1", x1, "n1")
    same = x2 is None
    if same:
        x2 = x1
    else:
        x2 = dtypes.as_float_array(fn, "x2", x2)
        check_rank(fn, "x2", x2, 2, layout="[n2, d]")
        check_same_dim(fn, "x1", x1, "x2", x2, -1, what="the feature dimension d")
        _nonempty(fn, "x2", x2, "n2")
    dt = dtypes.gram_dtype(x1, x2)
    return x1.astype(dt), x2.astype(dt), same


def _scale(fn: str, x1, x2, lengthscale):
    """Divide by a scalar or per-feature (ARD) lengthscale."""
    check_positive(fn, "lengthscale", lengthscale)
    ls = jnp.asarray(lengthscale, x1.dtype)
    if ls.ndim > 1 or (ls.ndim == 1 and ls.shape[0] != x1.shape[-1]):
        fail(fn, "lengthscale", f"be a scalar or have shape ({x1.shape[-1]},) (one per feature)",
             f"shape {ls.shape}")
    return x1 / ls, x2 / ls


def squared_distance(x1: Float[ArrayLike, "n1 d"], x2: Float[ArrayLike, "n2 d"], *,
                     same: bool = False) -> Float[Array, "n1 n2"]:
    """``|x1_i - x2_j|^2``, clamped at zero; exact zeros on the diagonal when ``same``.

    Raises:
      ValueError: ranks other than 2, empty inputs, mismatched feature dimensions ``d``.
      TypeError: complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import squared_distance
      >>> print(squared_distance(jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0]])))
      [[25.]]
    """
    x1, x2, _ = prepare_inputs("kjax.kernels.squared_distance", x1, x2)
    return _squared_distance(x1, x2, same=same)


def _squared_distance(x1, x2, *, same: bool = False):
    """:func:`squared_distance` on validated arrays (the kernels' hot path)."""
    if x1.shape[-1] <= _DIRECT_DIM:
        # unrolled over features: XLA fuses this into one elementwise loop, where a broadcast
        # [n1, n2, d] difference would be materialised (7x slower at d = 3)
        d2 = jnp.zeros((x1.shape[0], x2.shape[0]), x1.dtype)
        for k in range(x1.shape[-1]):
            diff = x1[:, None, k] - x2[None, :, k]
            d2 = d2 + diff * diff
        return d2
    n1 = jnp.sum(x1 * x1, axis=-1)
    n2 = jnp.sum(x2 * x2, axis=-1)
    cross = jnp.matmul(x1, x2.T, precision=jax.lax.Precision.HIGHEST)
    d2 = jnp.maximum(n1[:, None] + n2[None, :] - 2.0 * cross, 0.0)  # NaN stays NaN
    if same:
        d2 = jnp.where(jnp.eye(x1.shape[0], dtype=bool), 0.0 * d2, d2)  # 0, or NaN for a NaN point
    return d2


def _safe_sqrt(d2):
    """sqrt with gradient 0 (instead of inf/NaN) at 0; NaN stays NaN."""
    pos = d2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0 * d2)


def _scalar(fn: str, arg: str, x, *, allow_zero: bool = False) -> None:
    """A scalar hyperparameter: positive (or >= 0) when static; a shape would broadcast silently."""
    if x is not None and np.shape(x) != ():
        fail(fn, arg, "be a scalar", f"shape {np.shape(x)}")
    check_positive(fn, arg, x, allow_zero=allow_zero)


def scale_by_variance(fn, variance, k):
    _scalar(fn, "variance", variance)
    return jnp.asarray(variance, k.dtype) * k


def rbf(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None = None,
    *,
    lengthscale: float | Float[ArrayLike, " d"] = 1.0,
    variance: float = 1.0,
) -> Float[Array, "n1 n2"]:
    r"""Radial basis function (squared-exponential, Gaussian) kernel.

    .. math:: k(x, y) = \sigma^2 \exp\!\left(-\frac{\lVert x - y\rVert^2}{2\ell^2}\right)

    Args:
      x1: ``[n1, d]`` points.
      x2: ``[n2, d]`` points, or None for ``x1``.
      lengthscale: :math:`\ell`, a positive scalar or one per feature (ARD), shape ``(d,)``.
      variance: :math:`\sigma^2 > 0`.

    Returns:
      ``[n1, n2]`` kernel matrix, dtype at least float32.

    Raises:
      ValueError: ranks other than 2, empty inputs (``n1``, ``n2`` or ``d`` zero), mismatched
        ``d``, non-positive static ``lengthscale`` or ``variance``, ``lengthscale`` of the wrong
        shape, a non-scalar ``variance``.
      TypeError: complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> x = jnp.array([[0.0, 0.0], [1.0, 0.0]])
      >>> print(jnp.round(rbf(x, lengthscale=1.0), 4))
      [[1.     0.6065]
       [0.6065 1.    ]]

    References:
      Rasmussen & Williams, *Gaussian Processes for Machine Learning*, 2006, eq. 4.9.
    """
    fn = "kjax.kernels.rbf"
    x1, x2, same = prepare_inputs(fn, x1, x2)
    x1, x2 = _scale(fn, x1, x2, lengthscale)
    return scale_by_variance(fn, variance, jnp.exp(-0.5 * _squared_distance(x1, x2, same=same)))


def matern(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None = None,
    *,
    lengthscale: float | Float[ArrayLike, " d"] = 1.0,
    nu: float = 1.5,
    variance: float = 1.0,
) -> Float[Array, "n1 n2"]:
    r"""Matern kernel for :math:`\nu \in \{1/2, 3/2, 5/2\}` (half-integer closed forms).

    With :math:`r = \lVert x - y\rVert/\ell`:

    * :math:`\nu = 1/2`: :math:`\sigma^2 e^{-r}`
    * :math:`\nu = 3/2`: :math:`\sigma^2 (1 + \sqrt3 r) e^{-\sqrt3 r}`
    * :math:`\nu = 5/2`: :math:`\sigma^2 (1 + \sqrt5 r + 5r^2/3) e^{-\sqrt5 r}`

    Args:
      x1: ``[n1, d]`` points.
      x2: ``[n2, d]`` points, or None for ``x1``.
      lengthscale: :math:`\ell > 0`, scalar or ``(d,)``.
      nu: smoothness, one of 0.5, 1.5, 2.5 (a static Python float).
      variance: :math:`\sigma^2 > 0`.

    Returns:
      ``[n1, n2]`` kernel matrix; NaN where a point holds NaN (never ``k = 1``).

    Raises:
      ValueError: ``nu`` not in {0.5, 1.5, 2.5}, and the input errors of :func:`rbf`.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import matern
      >>> x = jnp.array([[0.0], [1.0]])
      >>> print(jnp.round(matern(x, nu=1.5)[0, 1], 4))
      0.4834

    References:
      Rasmussen & Williams 2006, eq. 4.17.
    """
    return _matern("kjax.kernels.matern", x1, x2, lengthscale=lengthscale, nu=nu, variance=variance)


def _matern(fn: str, x1, x2, *, lengthscale, nu, variance):
    if nu not in (0.5, 1.5, 2.5):
        fail(fn, "nu", "be one of 0.5, 1.5, 2.5", repr(nu))
    x1, x2, same = prepare_inputs(fn, x1, x2)
    x1, x2 = _scale(fn, x1, x2, lengthscale)
    r = _safe_sqrt(_squared_distance(x1, x2, same=same))
    if nu == 0.5:
        k = jnp.exp(-r)
    elif nu == 1.5:
        s = math.sqrt(3.0) * r
        k = (1.0 + s) * jnp.exp(-s)
    else:
        s = math.sqrt(5.0) * r
        k = (1.0 + s + s * s / 3.0) * jnp.exp(-s)
    return scale_by_variance(fn, variance, k)


def laplace(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None = None,
    *,
    lengthscale: float | Float[ArrayLike, " d"] = 1.0,
    variance: float = 1.0,
) -> Float[Array, "n1 n2"]:
    r"""Laplace (exponential) kernel with the Euclidean distance; equals Matern 1/2.

    .. math:: k(x, y) = \sigma^2 \exp(-\lVert x - y\rVert_2 / \ell)

    Note that scikit-learn's ``laplacian_kernel`` uses the L1 distance instead.

    Args:
      x1: ``[n1, d]`` points.
      x2: ``[n2, d]`` points, or None for ``x1``.
      lengthscale: :math:`\ell > 0`, scalar or ``(d,)``.
      variance: :math:`\sigma^2 > 0`.

    Returns:
      ``[n1, n2]`` kernel matrix; NaN where a point holds NaN. Its gradient at ``x1 == x2`` is
      taken as zero (subgradient).

    Raises:
      ValueError: the input errors of :func:`rbf`.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import laplace
      >>> print(jnp.round(laplace(jnp.array([[0.0, 0.0]]), jnp.array([[3.0, 4.0]])), 4))
      [[0.0067]]

    References:
      Geifman et al., *On the Similarity between the Laplace and Neural Tangent Kernels*, 2020.
    """
    return _matern("kjax.kernels.laplace", x1, x2, lengthscale=lengthscale, nu=0.5, variance=variance)


def rational_quadratic(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None = None,
    *,
    lengthscale: float | Float[ArrayLike, " d"] = 1.0,
    alpha: float = 1.0,
    variance: float = 1.0,
) -> Float[Array, "n1 n2"]:
    r"""Rational quadratic kernel, a scale mixture of RBFs.

    .. math:: k(x, y) = \sigma^2 \left(1 + \frac{\lVert x-y\rVert^2}{2\alpha\ell^2}\right)^{-\alpha}

    Args:
      x1: ``[n1, d]`` points.
      x2: ``[n2, d]`` points, or None for ``x1``.
      lengthscale: :math:`\ell > 0`.
      alpha: scale-mixture parameter :math:`\alpha > 0`.
      variance: :math:`\sigma^2 > 0`.

    Returns:
      ``[n1, n2]`` kernel matrix.

    Raises:
      ValueError: non-positive static or non-scalar ``alpha``, and the input errors of :func:`rbf`.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import rational_quadratic
      >>> x = jnp.array([[0.0], [2.0]])
      >>> print(jnp.round(rational_quadratic(x, alpha=2.0)[0, 1], 4))
      0.25

    References:
      Rasmussen & Williams 2006, eq. 4.19.
    """
    fn = "kjax.kernels.rational_quadratic"
    _scalar(fn, "alpha", alpha)
    x1, x2, same = prepare_inputs(fn, x1, x2)
    x1, x2 = _scale(fn, x1, x2, lengthscale)
    a = jnp.asarray(alpha, x1.dtype)
    k = (1.0 + _squared_distance(x1, x2, same=same) / (2.0 * a)) ** (-a)
    return scale_by_variance(fn, variance, k)


def polynomial(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None = None,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> Float[Array, "n1 n2"]:
    r"""Polynomial kernel, scikit-learn's ``polynomial_kernel`` convention.

    .. math:: k(x, y) = (\gamma\, x^\top y + c_0)^{p}, \quad \gamma = 1/d \text{ by default}

    Args:
      x1: ``[n1, d]`` points.
      x2: ``[n2, d]`` points, or None for ``x1``.
      degree: :math:`p`, a Python int >= 1.
      gamma: :math:`\gamma > 0`, default ``1 / d``.
      coef0: :math:`c_0 \ge 0` (positive definiteness needs it non-negative).

    Returns:
      ``[n1, n2]`` kernel matrix.

    Raises:
      ValueError: ``degree < 1``, non-positive ``gamma``, negative ``coef0``, a non-scalar
        ``gamma`` or ``coef0``, input errors.
      TypeError: non-integer ``degree``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import polynomial
      >>> x = jnp.array([[1.0, 2.0]])
      >>> print(polynomial(x, degree=2, gamma=1.0, coef0=1.0))
      [[36.]]
    """
    fn = "kjax.kernels.polynomial"
    degree = check_int(fn, "degree", degree, minimum=1)
    _scalar(fn, "gamma", gamma)
    _scalar(fn, "coef0", coef0, allow_zero=True)
    x1, x2, _ = prepare_inputs(fn, x1, x2)
    g = 1.0 / x1.shape[-1] if gamma is None else gamma
    dot = jnp.matmul(x1, x2.T, precision=jax.lax.Precision.HIGHEST)
    return (jnp.asarray(g, x1.dtype) * dot + jnp.asarray(coef0, x1.dtype)) ** degree


def linear(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None = None,
    *,
    variance: float = 1.0,
    bias: float = 0.0,
) -> Float[Array, "n1 n2"]:
    r"""Linear (dot-product) kernel :math:`k(x, y) = \sigma^2 x^\top y + b`.

    Args:
      x1: ``[n1, d]`` points.
      x2: ``[n2, d]`` points, or None for ``x1``.
      variance: :math:`\sigma^2 > 0`.
      bias: :math:`b \ge 0`.

    Returns:
      ``[n1, n2]`` kernel matrix.

    Raises:
      ValueError: non-positive ``variance``, negative ``bias``, either non-scalar, input errors.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import linear
      >>> print(linear(jnp.array([[1.0, 2.0]]), jnp.array([[3.0, 4.0]]), bias=1.0))
      [[12.]]
    """
    fn = "kjax.kernels.linear"
    _scalar(fn, "bias", bias, allow_zero=True)
    x1, x2, _ = prepare_inputs(fn, x1, x2)
    dot = jnp.matmul(x1, x2.T, precision=jax.lax.Precision.HIGHEST)
    return scale_by_variance(fn, variance, dot) + jnp.asarray(bias, x1.dtype)


# ---------------------------------------------------------------------------------------------
# arc-cosine kernels


def _pi_minus_theta(c):
    return jnp.pi - jnp.arccos(c)


@jax.custom_jvp
def _j0(c):
    return _pi_minus_theta(c)


@_j0.defjvp
def _j0_jvp(primals, tangents):
    (c,), (dc,) = primals, tangents
    s = jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0))
    # d(pi - arccos c)/dc = 1/sin(theta); infinite at c = +-1, where we take 0 (subgradient).
    ds = jnp.where(s > 0, 1.0 / jnp.where(s > 0, s, 1.0), 0.0)
    return _j0(c), ds * dc


@jax.custom_jvp
def _j1(c):
    s = jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0))
    return s + _pi_minus_theta(c) * c


@_j1.defjvp
def _j1_jvp(primals, tangents):
    (c,), (dc,) = primals, tangents
    return _j1(c), _pi_minus_theta(c) * dc  # dJ1/dc = pi - theta, finite everywhere


@jax.custom_jvp
def _j2(c):
    s = jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0))
    return 3.0 * s * c + _pi_minus_theta(c) * (1.0 + 2.0 * c * c)


@_j2.defjvp
def _j2_jvp(primals, tangents):
    (c,), (dc,) = primals, tangents
    s = jnp.sqrt(jnp.maximum(1.0 - c * c, 0.0))
    return _j2(c), (4.0 * s + 4.0 * c * _pi_minus_theta(c)) * dc


_J = {0: _j0, 1: _j1, 2: _j2}


def _safe_norm(x):
    return _safe_sqrt(jnp.sum(x * x, axis=-1))


def arccos(
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None = None,
    *,
    order: int = 1,
) -> Float[Array, "n1 n2"]:
    r"""Arc-cosine kernel of Cho & Saul: the infinite-width kernel of one random threshold layer.

    .. math::
       k_n(x, y) = \frac{1}{\pi}\lVert x\rVert^n \lVert y\rVert^n J_n(\theta),\quad
       \theta = \arccos\frac{x^\top y}{\lVert x\rVert\lVert y\rVert}

    with :math:`J_0 = \pi - \theta`, :math:`J_1 = \sin\theta + (\pi-\theta)\cos\theta`,
    :math:`J_2 = 3\sin\theta\cos\theta + (\pi-\theta)(1 + 2\cos^2\theta)`. Equivalently
    :math:`k_n(x, y) = 2\,\mathbb E_{w\sim N(0, I)}[\Theta(w^\top x)\Theta(w^\top y)
    (w^\top x)^n (w^\top y)^n]`: order 0 is the step, 1 the ReLU, 2 the ReQU network.

    Args:
      x1: ``[n1, d]`` points.
      x2: ``[n2, d]`` points, or None for ``x1``.
      order: 0, 1 or 2.

    Returns:
      ``[n1, n2]`` kernel matrix. Orders 1 and 2 are differentiable everywhere (the derivatives in
      :math:`\cos\theta` are finite); for order 0 the gradient at :math:`\theta = 0` is taken as
      zero. A zero vector has :math:`\cos\theta = 0` by convention; a point holding NaN gives NaN.

    Raises:
      ValueError: ``order`` not in {0, 1, 2}, input errors.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import arccos
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> print(jnp.round(arccos(x, order=1), 4))
      [[1.     0.3183]
       [0.3183 1.    ]]

    References:
      Cho & Saul, *Kernel Methods for Deep Learning*, NeurIPS 2009, eqs. 1 and 6.
    """
    fn = "kjax.kernels.arccos"
    if order not in _J:
        fail(fn, "order", "be 0, 1 or 2", repr(order))
    x1, x2, same = prepare_inputs(fn, x1, x2)
    n1, n2 = _safe_norm(x1), _safe_norm(x2)
    denom = n1[:, None] * n2[None, :]
    dot = jnp.matmul(x1, x2.T, precision=jax.lax.Precision.HIGHEST)
    ok = denom > 0
    c = jnp.clip(jnp.where(ok, dot / jnp.where(ok, denom, 1.0), 0.0), -1.0, 1.0)
    c = jnp.where(jnp.isnan(dot), jnp.nan, c)  # a NaN point is NaN, not a zero vector
    if same:
        c = jnp.where(jnp.eye(x1.shape[0], dtype=bool) & ok, 1.0, c)
    k = _J[order](c) / jnp.pi
    if order:
        k = k * denom**order
    return k

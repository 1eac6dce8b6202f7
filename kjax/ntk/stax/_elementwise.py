r"""Elementwise nonlinearities: every activation layer of neural-tangents' ``stax``.

Each maps a Gaussian input's covariance :math:`K \mapsto E[\phi(x_1)\phi(x_2)]` in closed form
(the arc-cosine kernels for ReLU, Abs, Sign and the rectified monomials, Williams' arcsine kernel
for erf, Gaussian integrals for sin / exp / Gaussian / Gabor / RBF, Isserlis and Mehler for the
polynomials) and multiplies the NTK by the same map of the derivative,
:math:`E[\phi'(x_1)\phi'(x_2)]` (Price's theorem). ``Elementwise`` takes a user's dual and
differentiates it; ``ElementwiseNumerical`` integrates any ``fn`` by Gauss-Hermite quadrature.
Layout as in :mod:`kjax.ntk.stax`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from kjax._src.errors import (
    KjaxNotImplementedError,
    KjaxTypeError,
    check_positive,
    fail,
    is_static_number,
)
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import STAX, Layer, make_layer, single_branch


def _elementwise(fn_name: str, f: Callable, kernel_map: Callable) -> Layer:
    def init_fn(rng, input_shape):
        return tuple(input_shape), ()

    def apply_fn(params, inputs, **kwargs):
        return f(inputs)

    def transform(st):
        st = single_branch(fn_name, st)
        K.check_gaussian(fn_name, st)
        v = K.variances(st.nngp, st.n_spatial, st.diag)
        nngp, ntk = kernel_map(st.nngp, st.ntk, v, st.diag)
        return st.replace(nngp=nngp, ntk=ntk, is_gaussian=False)

    short = fn_name.rsplit(".", 1)[-1]
    # neural-tangents' remask_kernel: zero the kernels at masked positions after the nonlinearities
    # that don't map zero covariance to zero
    return make_layer(init_fn, apply_fn, transform, short, remask=short.split("(")[0] in _REMASK)


_REMASK = {"Erf", "Sin", "Cos", "Rbf", "Exp", "Gaussian", "ExpNormalized", "Hermite",
           "Elementwise", "ElementwiseNumerical", "Sigmoid_like"}


@jax.custom_jvp
def _safe_sqrt(x):
    """``sqrt(max(x, 0))`` with a zero derivative where ``x <= 0`` (NT's ``_sqrt``)."""
    return jnp.sqrt(jnp.maximum(x, 0.0))


@_safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    root = _safe_sqrt(x)
    safe = jnp.where(x > 1e-30, root, 1.0)
    return root, jnp.where(x > 1e-30, dx / (2 * safe), 0.0)


def ABRelu(a: float, b: float, do_stabilize: bool = False) -> Layer:
    r"""ABReLU :math:`\phi(x) = a \min(x, 0) + b \max(x, 0)`.

    With :math:`\theta = \arccos(K_{12} / \sqrt{K_{11} K_{22}})` the kernels map as

    .. math::
        K' = \frac{(a-b)^2}{2\pi} \sqrt{K_{11}K_{22} - K_{12}^2} + \dot\sigma K_{12},\quad
        \Theta' = \dot\sigma\, \Theta,\quad
        \dot\sigma = \frac{a^2 + b^2}{2} - \frac{(a-b)^2}{2\pi}\theta.

    Args:
      a: slope for ``x < 0``.
      b: slope for ``x > 0``.
      do_stabilize: divide by the largest covariance entry before the map (deep networks).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: (``kernel_fn``) a non-Gaussian input, i.e. no ``Dense`` / ``Conv`` before it.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.ABRelu(-0.5, 2.0)
      >>> apply_fn((), jnp.array([-2.0, 3.0])).tolist()
      [1.0, 6.0]

    References:
      Cho, Saul. Kernel Methods for Deep Learning. NeurIPS 2009 (arc-cosine kernels).
      Tsuchida, Roosta, Gallagher. Invariance of Weight Distributions in Rectified MLPs. ICML 2018.
    """
    return _abrelu(f"{STAX}.ABRelu", a, b, do_stabilize)


def _abrelu(fn: str, a: float, b: float, do_stabilize: bool) -> Layer:
    """ABReLU under the name ``fn`` of the layer the user built (Relu and LeakyRelu are ABRelus)."""

    def f(x):
        return a * jnp.minimum(x, 0) + b * jnp.maximum(x, 0)

    def kmap(nngp, ntk, v, diag):
        factor = jnp.maximum(jnp.max(jnp.abs(nngp)), 1e-12) if do_stabilize else 1.0
        nngp, v = nngp / factor, v / factor
        prod = K.outer(v, diag=diag)
        root = _safe_sqrt(prod - nngp**2)
        # the angle is pi/2 at zero covariances; _arctan2_fill keeps its gradient finite there
        # (NT's issue #123: zero inputs, whose kernel gradient is zero, not NaN)
        angles = _arctan2_fill(root, nngp, jnp.pi / 2)
        c = (a - b) ** 2 / (2 * jnp.pi)
        dot_sigma = (a**2 + b**2) / 2 - c * angles
        return (c * root + dot_sigma * nngp) * factor, ntk * dot_sigma

    return _elementwise(fn, f, kmap)


def Relu(do_stabilize: bool = False) -> Layer:
    r"""ReLU, ``ABRelu(0, 1)``: the arc-cosine kernel of order 1 (NNGP) and order 0 (derivative).

    .. math::
        K' = \frac{\sqrt{K_{11}K_{22}}}{2\pi}\big(\sin\theta + (\pi - \theta)\cos\theta\big),\qquad
        \Theta' = \frac{\pi - \theta}{2\pi}\,\Theta.

    Args:
      do_stabilize: see :func:`ABRelu`.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Relu())
      >>> round(float(kernel_fn(jnp.ones((1, 2)), get="nngp")[0, 0]), 4)  # E[relu(z)^2] = 1/2
      0.5

    References:
      Cho, Saul. Kernel Methods for Deep Learning. NeurIPS 2009.
    """
    return _abrelu(f"{STAX}.Relu", 0.0, 1.0, do_stabilize)


def LeakyRelu(alpha: float, do_stabilize: bool = False) -> Layer:
    r"""Leaky ReLU :math:`\max(x, 0) + \alpha \min(x, 0)`, i.e. ``ABRelu(alpha, 1)``.

    Args:
      alpha: slope for ``x < 0``.
      do_stabilize: see :func:`ABRelu`.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.LeakyRelu(0.1)
      >>> apply_fn((), jnp.array([-1.0, 1.0])).round(3).tolist()
      [-0.1, 1.0]

    References:
      Tsuchida, Roosta, Gallagher. Invariance of Weight Distributions in Rectified MLPs. ICML 2018.
    """
    return _abrelu(f"{STAX}.LeakyRelu", alpha, 1.0, do_stabilize)


def Erf(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    r"""Affine error function :math:`a\,\mathrm{erf}(b x) + c`.

    With :math:`\tilde K = b^2 K`,

    .. math::
        K' = a^2 \frac{2}{\pi} \arcsin\frac{2\tilde K_{12}}{\sqrt{(1 + 2\tilde K_{11})(1 + 2\tilde
        K_{22})}} + c^2,\qquad
        \Theta' = a^2 b^2 \frac{4}{\pi} \frac{\Theta}{\sqrt{(1 + 2\tilde K_{11})(1 + 2\tilde K_{22})
        - 4 \tilde K_{12}^2}}.

    Args:
      a: output scale.
      b: input scale.
      c: output shift.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Erf())
      >>> bool(kernel_fn(jnp.ones((2, 3)), get="nngp")[0, 1] > 0)
      True

    References:
      Williams. Computing with Infinite Networks. NeurIPS 1997.
    """
    return _erf(f"{STAX}.Erf", a, b, c)


def _erf(fn: str, a, b, c) -> Layer:
    a, b, c = (_real(fn, n, x) for n, x in (("a", a), ("b", b), ("c", c)))

    def f(x):
        return a * jax.scipy.special.erf(b * x) + c

    def kmap(nngp, ntk, v, diag):
        nngp, ntk, v = b**2 * nngp, b**2 * ntk, b**2 * v
        prod = K.outer(1 + 2 * v, diag=diag)
        root = _safe_sqrt(prod - 4 * nngp**2)
        new = 2 / jnp.pi * jnp.arctan2(2 * nngp, root)
        ntk = ntk * (4 / jnp.pi) / root
        return a**2 * new + c**2, a**2 * ntk

    return _elementwise(fn, f, kmap)


def Gelu(approximate: bool = False) -> Layer:
    r"""GELU :math:`x\,\Phi(x)`; the kernel is exact (``approximate`` only changes ``apply_fn``).

    With :math:`\Delta = (1 + K_{11})(1 + K_{22}) - K_{12}^2`,

    .. math::
        K' = \frac{K_{12}}{4} + \frac{1}{2\pi}\Big(K_{12}\arctan\frac{K_{12}}{\sqrt\Delta}
        + \frac{K_{12}^2 + K_{11}K_{22}\,\Delta}{(1 + K_{11})(1 + K_{22})\sqrt\Delta}\Big).

    Args:
      approximate: use the tanh approximation in ``apply_fn``.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Gelu())
      >>> kernel_fn(jnp.ones((2, 3)), get=("nngp", "ntk")).ntk.shape
      (2, 2)

    References:
      Tsuchida, Pearce, van der Heide, Roosta, Gallagher. Avoiding Kernel Fixed Points:
      Computing with ELU and GELU Infinite Networks. AAAI 2021.
    """
    fn = f"{STAX}.Gelu"

    def f(x):
        return jax.nn.gelu(x, approximate=approximate)

    def kmap(nngp, ntk, v, diag):
        prod = K.outer(v, diag=diag)
        prod1 = K.outer(v + 1, diag=diag)
        delta2 = prod1 - nngp**2
        delta = _safe_sqrt(delta2)
        angles = jnp.arctan2(nngp, delta)
        new = (nngp**2 + prod * delta2) / (prod1 * delta) + nngp * angles
        new = new / (2 * jnp.pi) + 0.25 * nngp
        second = 0.25 + angles / (2 * jnp.pi)
        first = (1 / delta2 + (1 - prod) / prod1 + 1) * nngp / delta / (2 * jnp.pi)
        return new, ntk * (first + second)

    return _elementwise(fn, f, kmap)


# --------------------------------------------------------------------------------------------
# neural-tangents' other elementwise layers (Han et al. 2022, "Fast Neural Kernel Embeddings for
# General Activations", and the references of each layer)


def _real(fn: str, arg: str, x) -> float:
    """A finite real scalar hyperparameter (traced values pass through unchecked; a bool counts as
    0 / 1, as in neural-tangents, whose own tests pass ``ExpNormalized(gamma, do_clip)``)."""
    if isinstance(x, jax.core.Tracer):
        return x
    if not is_static_number(x) or np.ndim(x) != 0 or np.iscomplexobj(x):
        fail(fn, arg, "be a real scalar", repr(x))
    if not np.isfinite(x):
        fail(fn, arg, "be finite", repr(x))
    return x


def _degree(fn: str, degree, maximum: int | None = None) -> int:
    if isinstance(degree, bool) or not isinstance(degree, int | np.integer):
        fail(fn, "degree", "be a non-negative Python int", repr(degree), cls=KjaxTypeError)
    if degree < 0 or (maximum is not None and degree > maximum):
        want = f"be an integer between 0 and {maximum}" if maximum is not None else "be >= 0"
        fail(fn, "degree", want, repr(degree), cls=KjaxNotImplementedError)
    return int(degree)


def _callable(fn: str, arg: str, f, optional: bool = True):
    if f is None and optional:
        return None
    if not callable(f):
        fail(fn, arg, "be a callable" + (" or None" if optional else ""), repr(f), cls=KjaxTypeError)
    return f


def _broadcast_pair(v: jax.Array, diag: bool) -> tuple[jax.Array, jax.Array]:
    """``(var1, var2)`` broadcast to the kernel's shape: ``var1[i, j, ...] = v[i, ...]``."""
    v1 = K.outer(v, lambda a, b: a * jnp.ones_like(b), diag=diag)
    v2 = K.outer(v, lambda a, b: jnp.ones_like(a) * b, diag=diag)
    return v1, v2


def _arctan2_fill(y, x, fill):
    """``arctan2(y, x)`` with ``fill`` at ``y = x = 0`` and a derivative that stays finite there."""
    zero = (y == 0) & (x == 0)
    safe_x = jnp.where(zero, 1.0, x)
    return jnp.where(zero, fill, jnp.arctan2(y, safe_x))


def _unapplicable(fn_name: str, arg: str):
    def f(x):
        raise KjaxNotImplementedError(
            f"{fn_name}: apply_fn needs the finite-width nonlinearity `{arg}`; this layer was built "
            f"without one (it has only a kernel_fn).")
    return f


def Sin(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    r"""Affine sine :math:`a \sin(b x + c)`.

    With :math:`S = K_{11} + K_{22}` (the variances of the two inputs),

    .. math::
        s_\pm = e^{b^2(-S/2 \pm K_{12})},\quad
        K' = \frac{a^2}{2}\big(s_+ - s_- \cos 2c\big),\quad
        \Theta' = \frac{a^2 b^2}{2}\big(s_+ + s_- \cos 2c\big)\,\Theta.

    Args:
      a: output scale.
      b: input scale.
      c: input phase shift.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: a non-finite ``a``, ``b`` or ``c``; (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Sin())
      >>> k = kernel_fn(jnp.ones((1, 2)), get="nngp")  # E[sin(z)^2], z ~ N(0, 1)
      >>> round(float(k[0, 0]), 6) == round((1 - float(jnp.exp(-2.0))) / 2, 6)
      True

    References:
      Rahimi, Recht. Random Features for Large-Scale Kernel Machines. NeurIPS 2007.
      Han, Zandieh, Lee, Novak, Xiao, Karbasi. Fast Neural Kernel Embeddings for General
      Activations. NeurIPS 2022.
    """
    return _sin(f"{STAX}.Sin", a, b, c)


def _sin(fn: str, a, b, c, shift: float = 0.0) -> Layer:
    a, b, c = (_real(fn, n, x) for n, x in (("a", a), ("b", b), ("c", c)))
    c = c + shift

    def f(x):
        return a * jnp.sin(b * x + c)

    def kmap(nngp, ntk, v, diag):
        sum_ = K.outer(v, jnp.add, diag=diag)
        s1 = jnp.exp(b**2 * (-0.5 * sum_ + nngp))
        s2 = jnp.exp(b**2 * (-0.5 * sum_ - nngp)) * jnp.cos(2 * c)
        half = a**2 / 2
        return half * (s1 - s2), ntk * half * b**2 * (s1 + s2)

    return _elementwise(fn, f, kmap)


def Cos(a: float = 1.0, b: float = 1.0, c: float = 0.0) -> Layer:
    r"""Affine cosine :math:`a \cos(b x + c)`, i.e. ``Sin(a, b, c + pi / 2)``.

    Args:
      a: output scale.
      b: input scale.
      c: input phase shift.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: a non-finite ``a``, ``b`` or ``c``; (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.Cos()
      >>> apply_fn((), jnp.array([0.0])).tolist()
      [1.0]

    References:
      Rahimi, Recht. Random Features for Large-Scale Kernel Machines. NeurIPS 2007.
    """
    return _sin(f"{STAX}.Cos", a, b, c, shift=np.pi / 2)


def Rbf(gamma: float = 1.0) -> Layer:
    r"""The dual activation of the RBF kernel: :math:`\sqrt2 \sin(\sqrt{2\gamma}\, x + \pi/4)`.

    Its NNGP is the squared-exponential kernel of the layer's inputs,

    .. math::
        K' = e^{-\gamma (K_{11} + K_{22} - 2K_{12})},\qquad \Theta' = 2\gamma K'\,\Theta,

    i.e. :math:`\exp(-\gamma \|x - x'\|^2 / d)` after a ``Dense`` layer without bias.

    Args:
      gamma: inverse squared length scale, :math:`\gamma = 1 / (2 l^2)`; ``>= 0``.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: a negative or non-finite ``gamma``; (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, b_std=0.0), stax.Rbf(0.5))
      >>> x = jnp.array([[0.0, 0.0], [1.0, 1.0]])
      >>> round(float(kernel_fn(x, get="nngp")[0, 1]), 6) == round(float(jnp.exp(-0.5)), 6)
      True

    References:
      Rahimi, Recht. Random Features for Large-Scale Kernel Machines. NeurIPS 2007.
    """
    fn = f"{STAX}.Rbf"
    check_positive(fn, "gamma", _real(fn, "gamma", gamma), allow_zero=True)

    def f(x):
        return jnp.sqrt(2.0) * jnp.sin(jnp.sqrt(2 * gamma) * x + jnp.pi / 4)

    def kmap(nngp, ntk, v, diag):
        new = jnp.exp(gamma * (2 * nngp - K.outer(v, jnp.add, diag=diag)))
        return new, ntk * 2 * gamma * new

    return _elementwise(fn, f, kmap)


def Abs(do_stabilize: bool = False) -> Layer:
    r"""Absolute value :math:`|x|`, i.e. ``ABRelu(-1, 1)``.

    .. math::
        K' = \frac{2}{\pi}\sqrt{K_{11}K_{22} - K_{12}^2} + \Big(1 - \frac{2\theta}{\pi}\Big) K_{12},
        \qquad \Theta' = \Big(1 - \frac{2\theta}{\pi}\Big)\Theta.

    Args:
      do_stabilize: see :func:`ABRelu`.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.Abs()
      >>> apply_fn((), jnp.array([-2.0, 3.0])).tolist()
      [2.0, 3.0]

    References:
      Tsuchida, Roosta, Gallagher. Invariance of Weight Distributions in Rectified MLPs. ICML 2018.
    """
    return _abrelu(f"{STAX}.Abs", -1.0, 1.0, do_stabilize)


def Sign() -> Layer:
    r"""Sign function; its derivative is zero almost everywhere, so the NTK after it is zero.

    .. math::
        K' = 1 - \frac{2\theta}{\pi},\qquad \Theta' = 0,\qquad
        \theta = \arccos\frac{K_{12}}{\sqrt{K_{11}K_{22}}}.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, b_std=0.0), stax.Sign())
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> kernel_fn(x, get="nngp").round(6).tolist()  # orthogonal inputs: uncorrelated signs
      [[1.0, 0.0], [0.0, 1.0]]

    References:
      Cho, Saul. Kernel Methods for Deep Learning. NeurIPS 2009 (arc-cosine kernel of order 0).
    """
    fn = f"{STAX}.Sign"

    def kmap(nngp, ntk, v, diag):
        prod = K.outer(v, diag=diag)
        angles = _arctan2_fill(_safe_sqrt(prod - nngp**2), nngp, jnp.pi / 2)
        return 1 - angles * 2 / jnp.pi, jnp.zeros_like(ntk)

    return _elementwise(fn, jnp.sign, kmap)


def Exp(a: float = 1.0, b: float = 1.0) -> Layer:
    r"""Exponential :math:`a e^{b x}` (a log-normal output).

    .. math::
        K' = a^2 e^{b^2 (K_{11} + K_{22}) / 2 + b^2 K_{12}},\qquad \Theta' = b^2 K' \Theta.

    Args:
      a: output scale.
      b: input scale.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: a non-finite ``a`` or ``b``; (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, b_std=0.0), stax.Exp())
      >>> round(float(kernel_fn(jnp.ones((1, 1)), get="nngp")[0, 0]), 6)  # E[e^{2z}] = e^2
      7.389056

    References:
      Han, Zandieh, Lee, Novak, Xiao, Karbasi. Fast Neural Kernel Embeddings for General
      Activations. NeurIPS 2022.
    """
    fn = f"{STAX}.Exp"
    a, b = _real(fn, "a", a), _real(fn, "b", b)

    def f(x):
        return a * jnp.exp(b * x)

    def kmap(nngp, ntk, v, diag):
        new = jnp.exp(b**2 * (K.outer(v, jnp.add, diag=diag) / 2 + nngp))
        return a**2 * new, a**2 * b**2 * new * ntk

    return _elementwise(fn, f, kmap)


def Gaussian(a: float = 1.0, b: float = -1.0) -> Layer:
    r"""Gaussian bump :math:`a e^{b x^2}`.

    With :math:`D = (1 - 2bK_{11})(1 - 2bK_{22}) - 4b^2K_{12}^2`,

    .. math::
        K' = \frac{a^2}{\sqrt D},\qquad \Theta' = \frac{4 a^2 b^2 K_{12}}{D^{3/2}}\,\Theta.

    For ``b > 0`` the expectation diverges once :math:`4 b K_{ii} \ge 1`; the kernel is then
    ``inf`` (the true value), as in neural-tangents.

    Args:
      a: output scale.
      b: exponent scale (``< 0`` for a bump).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: a non-finite ``a`` or ``b``; (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, b_std=0.0), stax.Gaussian())
      >>> round(float(kernel_fn(jnp.ones((1, 1)), get="nngp")[0, 0]), 6)  # E[e^{-2z^2}] = 1/sqrt(5)
      0.447214

    References:
      Han, Zandieh, Lee, Novak, Xiao, Karbasi. Fast Neural Kernel Embeddings for General
      Activations. NeurIPS 2022.
    """
    fn = f"{STAX}.Gaussian"
    a, b = _real(fn, "a", a), _real(fn, "b", b)

    def f(x):
        return a * jnp.exp(b * x**2)

    def kmap(nngp, ntk, v, diag):
        prod = K.outer(1 - 2 * b * v, diag=diag)
        det = _safe_sqrt(prod - 4 * b**2 * nngp**2)
        return a**2 / det, ntk * a**2 * 4 * b**2 * nngp / det**3

    return _elementwise(fn, f, kmap)


def ExpNormalized(gamma: float = 1.0, shift: float = -1.0, do_clip: bool = False) -> Layer:
    r"""The "Gaussian normalized kernel" of Shankar et al.: a kernel map without a finite network.

    With :math:`p = \sqrt{K_{11}K_{22}}`,

    .. math::
        K' = p\, e^{\gamma (K_{12}/p + \mathrm{shift})},\qquad
        \Theta' = \gamma\, e^{\gamma (K_{12}/p + \mathrm{shift})}\,\Theta.

    Args:
      gamma: exponent scale, ``>= 0`` (a negative one gives a kernel that is not PSD).
      shift: added to the normalised covariance before exponentiation.
      do_clip: clip the normalised covariance to ``[-1, 1]`` (rounding can leave it outside).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters. ``apply_fn`` raises (there is no
      finite-width nonlinearity).

    Raises:
      KjaxError: a negative or non-finite ``gamma``, a non-finite ``shift``, a non-bool
        ``do_clip``; (``kernel_fn``) a non-Gaussian input; (``apply_fn``) always, as a
        ``NotImplementedError``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, b_std=0.0), stax.ExpNormalized())
      >>> x = jnp.array([[1.0, 0.0], [2.0, 0.0]])
      >>> kernel_fn(x, get="nngp").round(4).tolist()  # parallel inputs: p * e^0
      [[0.5, 1.0], [1.0, 2.0]]

    References:
      Shankar, Fang, Guo, Fridovich-Keil, Ragan-Kelley, Schmidt, Recht. Neural Kernels Without
      Tangents. ICML 2020 (page 6).
    """
    fn = f"{STAX}.ExpNormalized"
    check_positive(fn, "gamma", _real(fn, "gamma", gamma), allow_zero=True)
    shift = _real(fn, "shift", shift)
    if not isinstance(do_clip, bool | np.bool_):
        fail(fn, "do_clip", "be a bool", repr(do_clip), cls=KjaxTypeError)

    def kmap(nngp, ntk, v, diag):
        prod = _safe_sqrt(K.outer(v, diag=diag))
        prod = jnp.maximum(prod, 1e-30)  # NT's _sqrt(., tol=1e-30)
        cov = nngp / prod
        if do_clip:
            cov = jnp.clip(cov, -1, 1)
        e = jnp.exp(gamma * (cov + shift))
        return prod * e, gamma * e * ntk

    return _elementwise(fn, _unapplicable(fn, "fn"), kmap)


def Hermite(degree: int) -> Layer:
    r"""The normalised probabilists' Hermite polynomial :math:`\mathrm{He}_n(x) / \sqrt{n!}`.

    For inputs of unit variance (the layer assumes it, e.g. after ``LayerNorm``; a warning says
    so when the kernel is built) Mehler's formula gives

    .. math::
        K' = K_{12}^n,\qquad \Theta' = n K_{12}^{n-1}\, \Theta.

    Args:
      degree: ``n >= 0``.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: a negative ``degree`` (also a ``NotImplementedError``, as in neural-tangents) or
        a non-int one; (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.Hermite(2)
      >>> apply_fn((), jnp.array([0.0, 1.0])).round(6).tolist()  # (x^2 - 1) / sqrt(2)
      [-0.707107, 0.0]

    References:
      Daniely, Frostig, Singer. Toward Deeper Understanding of Neural Networks: The Power of
      Initialization and a Dual View on Expressivity. NeurIPS 2016.
    """
    fn = f"{STAX}.Hermite"
    degree = _degree(fn, degree)
    p = np.polynomial.hermite_e.herme2poly([0] * degree + [1])[::-1]
    norm = math.sqrt(math.factorial(degree))

    def f(x):
        return jnp.polyval(jnp.asarray(p, x.dtype), x) / norm

    def kmap(nngp, ntk, v, diag):
        warnings.warn(f"{fn}: inputs are assumed to have unit variance across channels, i.e. "
                      "jnp.std(x, axis=channel_axis) == 1 (e.g. after LayerNorm).", stacklevel=2)
        d_ntk = jnp.zeros_like(ntk) if degree == 0 else degree * nngp ** (degree - 1) * ntk
        return nngp**degree, d_ntk

    return _elementwise(fn, f, kmap)


def _monomial_moment(nngp, prod, degree: int):
    """``E[x^n y^n]`` for a centred Gaussian pair with ``E[xy] = nngp`` and ``E[x^2]E[y^2] = prod``
    (Isserlis' theorem), for ``n <= 5``; ``n = -1`` gives 0."""
    if degree == -1:
        return jnp.zeros_like(nngp)
    if degree == 0:
        return jnp.ones_like(nngp)
    if degree == 1:
        return nngp
    if degree == 2:
        return 2 * nngp**2 + prod
    if degree == 3:
        return 6 * nngp**3 + 9 * nngp * prod
    if degree == 4:
        return 3 * (8 * nngp**4 + 3 * prod * (8 * nngp**2 + prod))
    return 15 * nngp * (8 * nngp**4 + 5 * prod * (8 * nngp**2 + 3 * prod))


def Monomial(degree: int) -> Layer:
    r"""Monomial :math:`x^n` for ``0 <= n <= 5`` (the degrees neural-tangents supports).

    By Isserlis' theorem :math:`K' = E[x^n y^n]` is a polynomial in :math:`K_{12}` and
    :math:`K_{11}K_{22}` (e.g. :math:`2K_{12}^2 + K_{11}K_{22}` for ``n = 2``), and
    :math:`\Theta' = n^2 E[x^{n-1} y^{n-1}]\,\Theta`.

    Args:
      degree: ``n``, an int between 0 and 5.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: a ``degree`` outside ``0..5`` (also a ``NotImplementedError``, as in
        neural-tangents) or a non-int one; (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, b_std=0.0), stax.Monomial(2))
      >>> float(kernel_fn(jnp.ones((1, 1)), get="nngp")[0, 0])  # E[z^4] = 3
      3.0

    References:
      Han, Zandieh, Lee, Novak, Xiao, Karbasi. Fast Neural Kernel Embeddings for General
      Activations. NeurIPS 2022.
    """
    fn = f"{STAX}.Monomial"
    degree = _degree(fn, degree, maximum=5)

    def f(x):
        return x**degree

    def kmap(nngp, ntk, v, diag):
        prod = K.outer(v, diag=diag)
        d_ntk = ntk * degree**2 * _monomial_moment(nngp, prod, degree - 1)
        return _monomial_moment(nngp, prod, degree), d_ntk

    return _elementwise(fn, f, kmap)


@functools.cache
def _arccos_polynomials(degree: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """``(A_n, B_n)`` for ``n = 0..degree``: the arc-cosine kernel of order ``n`` is
    ``J_n(rho) = A_n(rho) (pi - arccos rho) + B_n(rho) sqrt(1 - rho^2)`` (integer polynomials,
    ascending coefficients).

    Price's theorem gives ``J_n' = n^2 J_{n-1}`` (the derivative of ``x_+^n`` is ``n x_+^{n-1}``);
    with ``d(pi - arccos)/drho = 1/s`` and ``ds/drho = -rho/s`` that is ``A_n' = n^2 A_{n-1}`` and
    ``A_n + (1 - rho^2) B_n' - rho B_n = n^2 (1 - rho^2) B_{n-1}``, a square linear system for the
    constant of ``A_n`` and the ``n`` coefficients of ``B_n``.
    """
    P = np.polynomial.polynomial
    out = [(np.array([1.0]), np.array([0.0]))]  # J_0 = pi - theta
    one_minus = np.array([1.0, 0.0, -1.0])
    for n in range(1, degree + 1):
        a_prev, b_prev = out[-1]
        a_part = P.polyint(n**2 * a_prev)  # A_n without its constant
        rhs = P.polysub(P.polymul(n**2 * b_prev, one_minus), a_part)  # what c + L(B_n) must equal
        cols = [np.array([1.0])]  # the constant c
        for k in range(n):  # B_n = rho^k
            e = np.zeros(k + 1)
            e[k] = 1.0
            cols.append(P.polysub(P.polymul(one_minus, P.polyder(e)) if k else np.zeros(1),
                                  P.polymul([0.0, 1.0], e)))
        m = np.zeros((n + 1, n + 1))
        for j, col in enumerate(cols):
            m[: len(col), j] = col[: n + 1]
        r = np.zeros(n + 1)
        r[: min(len(rhs), n + 1)] = rhs[: n + 1]
        sol = np.round(np.linalg.solve(m, r))
        out.append((P.polyadd(a_part, [sol[0]]), sol[1:]))
    return tuple(out)


def _arccos_kernel(degree: int):
    """``J_n(rho)`` for ``rho in [-1, 1]`` with the exact derivative ``n^2 J_{n-1}(rho)`` (finite at
    ``rho = +-1``, where the closed form's pieces are not differentiable)."""
    polys = _arccos_polynomials(degree)

    def value(n, rho):
        a, b = polys[n]
        s = _safe_sqrt(1 - rho**2)
        theta = jnp.arctan2(s, rho)  # arccos(rho), accurate near +-1
        return (jnp.polyval(jnp.asarray(a[::-1], rho.dtype), rho) * (jnp.pi - theta)
                + jnp.polyval(jnp.asarray(b[::-1], rho.dtype), rho) * s)

    def make(n):
        @jax.custom_jvp
        def j(rho):
            return value(n, rho)

        @j.defjvp
        def j_jvp(primals, tangents):
            (rho,), (drho,) = primals, tangents
            if n == 0:
                s = _safe_sqrt(1 - rho**2)
                d = jnp.where(s > 0, 1 / jnp.where(s > 0, s, 1.0), 0.0)
            else:
                d = n**2 * make(n - 1)(rho)
            return j(rho), d * drho

        return j

    return make(degree), (make(degree - 1) if degree else None)


def RectifiedMonomial(degree: int) -> Layer:
    r"""Rectified monomial :math:`x^n\,[x \ge 0]`: the arc-cosine kernel of order ``n``.

    With :math:`p = \sqrt{K_{11}K_{22}}`, :math:`\rho = K_{12}/p` and Cho and Saul's
    :math:`J_n(\theta) = (-1)^n \sin^{2n+1}\theta\,\big(\tfrac{1}{\sin\theta}\partial_\theta\big)^n
    \tfrac{\pi - \theta}{\sin\theta}`,

    .. math::
        K' = \frac{p^n}{2\pi} J_n(\theta),\qquad
        \Theta' = \frac{n^2 p^{n-1}}{2\pi} J_{n-1}(\theta)\,\Theta\quad(\Theta' = 0 \text{ for } n = 0).

    :math:`J_n` is evaluated as :math:`A_n(\rho)(\pi - \theta) + B_n(\rho)\sin\theta` with integer
    polynomials from Price's theorem (:math:`dJ_n/d\rho = n^2 J_{n-1}`), which is exact and finite
    at :math:`\theta = 0` (identical inputs), where neural-tangents' repeated autodiff divides by
    :math:`\sin\theta = 0`.

    Args:
      degree: ``n >= 0``.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: a negative ``degree`` (also a ``NotImplementedError``, as in neural-tangents) or
        a non-int one; (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, b_std=0.0), stax.RectifiedMonomial(2))
      >>> float(kernel_fn(jnp.ones((1, 1)), get="nngp")[0, 0])  # E[z^4 1(z > 0)] = 3/2
      1.5

    References:
      Cho, Saul. Kernel Methods for Deep Learning. NeurIPS 2009.
      Price. A Useful Theorem for Nonlinear Devices Having Gaussian Inputs. IRE Trans. IT 1958.
    """
    fn = f"{STAX}.RectifiedMonomial"
    degree = _degree(fn, degree)
    j_n, j_prev = _arccos_kernel(degree)

    def f(x):
        return (x >= 0) * x**degree

    def kmap(nngp, ntk, v, diag):
        p = _safe_sqrt(K.outer(v, diag=diag))
        pos = p > 0
        rho = jnp.where(pos, nngp / jnp.where(pos, p, 1.0), 0.0)
        # into [-1, 1] (rounding); where, not clip, keeps the full derivative at rho = +-1
        rho = jnp.where(rho > 1, 1.0, jnp.where(rho < -1, -1.0, rho))
        new = p**degree / (2 * jnp.pi) * j_n(rho)
        if degree == 0:
            return new, jnp.zeros_like(ntk)
        return new, ntk * degree**2 * p ** (degree - 1) / (2 * jnp.pi) * j_prev(rho)

    return _elementwise(fn, f, kmap)


def Polynomial(coef: Sequence[float]) -> Layer:
    r"""Polynomial :math:`\sum_k c_k x^k` (``coef`` in ``numpy.polynomial.Polynomial`` order).

    Expanding in normalised Hermite polynomials, :math:`\phi(\sqrt{q} z) = \sum_l r_l(q)
    \mathrm{He}_l(z)/\sqrt{l!}` with :math:`r_l(q) = \sum_i c_{2i+l} \frac{(2i+l)!}{2^i i!
    \sqrt{l!}} q^{i + l/2}`, Mehler's formula gives, with :math:`\rho = K_{12}/\sqrt{K_{11}K_{22}}`,

    .. math::
        K' = \sum_l r_l(K_{11}) r_l(K_{22}) \rho^l,\qquad
        \Theta' = \frac{\sum_l l\, r_l(K_{11}) r_l(K_{22}) \rho^{l-1}}{\sqrt{K_{11}K_{22}}}\,\Theta.

    Args:
      coef: the coefficients :math:`c_0, c_1, \dots` (finite reals; empty means zero).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: ``coef`` not a 1-D sequence of finite reals; (``kernel_fn``) a non-Gaussian
        input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1, b_std=0.0), stax.Polynomial([1.0, 0.0, 1.0]))
      >>> float(kernel_fn(jnp.ones((1, 1)), get="nngp")[0, 0])  # E[(1 + z^2)^2] = 1 + 2 + 3
      6.0

    References:
      Han, Zandieh, Lee, Novak, Xiao, Karbasi. Fast Neural Kernel Embeddings for General
      Activations. NeurIPS 2022.
    """
    fn = f"{STAX}.Polynomial"
    try:
        c = np.asarray(coef)
    except Exception:  # ragged
        c = None
    if (c is None or c.ndim != 1 or not (np.issubdtype(c.dtype, np.floating)
                                         or np.issubdtype(c.dtype, np.integer) or c.size == 0)):
        fail(fn, "coef", "be a 1-D sequence of real numbers", repr(coef))
    c = c.astype(np.float64)
    if not np.all(np.isfinite(c)):
        fail(fn, "coef", "be finite", repr(coef))
    n = len(c)
    # r_l as a polynomial in sqrt(q): coefficient of sqrt(q)^(2i + l)
    r_coefs = []
    for lvl in range(n):
        rc = np.zeros(n)
        for i in range((n - 1 - lvl) // 2 + 1):
            k = 2 * i + lvl
            rc[k] = c[k] * math.factorial(k) / (2**i * math.factorial(i) * math.sqrt(math.factorial(lvl)))
        r_coefs.append(rc)

    def f(x):
        return jnp.polyval(jnp.asarray(c[::-1], x.dtype), x) if n else jnp.zeros_like(x)

    def kmap(nngp, ntk, v, diag):
        root = jnp.sqrt(jnp.maximum(v, 0.0))
        rs = [K.outer(jnp.polyval(jnp.asarray(rc[::-1], v.dtype), root), diag=diag) for rc in r_coefs]
        p = _safe_sqrt(K.outer(v, diag=diag))
        pos = p > 0
        safe_p = jnp.where(pos, p, 1.0)
        ratio = jnp.where(pos, nngp / safe_p, 0.0)  # r_l = 0 for l >= 1 where a variance is 0
        new = sum((rs[lvl] * ratio**lvl for lvl in range(n)), jnp.zeros_like(nngp))
        dot = sum((lvl * rs[lvl] * ratio ** (lvl - 1) for lvl in range(1, n)), jnp.zeros_like(nngp))
        return new, ntk * jnp.where(pos, dot / safe_p, 0.0)

    return _elementwise(fn, f, kmap)


def Gabor() -> Layer:
    r"""Gabor function :math:`e^{-x^2} \sin x`.

    With :math:`S = K_{11} + K_{22}`, :math:`P = K_{11}K_{22}`, :math:`\Delta = 4(P - K_{12}^2)`
    and :math:`D = 2S + \Delta + 1`,

    .. math::
        K' = \frac{e^{-(S + \Delta + 2K_{12})/(2D)}\,\big(e^{2K_{12}/D} - 1\big)}{2\sqrt D},

    and :math:`\Theta'` multiplies :math:`\Theta` by :math:`\partial K' / \partial K_{12}` in closed
    form.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.Gabor()
      >>> apply_fn((), jnp.array([0.0])).tolist()
      [0.0]

    References:
      Han, Zandieh, Lee, Novak, Xiao, Karbasi. Fast Neural Kernel Embeddings for General
      Activations. NeurIPS 2022.
    """
    fn = f"{STAX}.Gabor"

    def f(x):
        return jnp.exp(-(x**2)) * jnp.sin(x)

    def kmap(nngp, ntk, v, diag):
        prod = K.outer(v, diag=diag)
        sum_ = K.outer(v, jnp.add, diag=diag)
        diff = 4 * (prod - nngp**2)
        denom = 2 * sum_ + diff + 1
        exp_left = jnp.exp(-(sum_ + diff + 2 * nngp) / (2 * denom))
        exp_right = jnp.exp(2 * nngp / denom)
        shared = 1 + 2 * sum_ + 4 * (nngp**2 + prod)
        cross = 4 * nngp * (diff + 3 * sum_ + 2)
        t_dot = exp_left * ((shared - cross) + exp_right * (shared + cross)) / denom**2.5
        new = exp_left * (exp_right - 1) / (2 * _safe_sqrt(denom))
        return new, ntk * t_dot / 2

    return _elementwise(fn, f, kmap)


def Sigmoid_like() -> Layer:  # noqa: N802 (neural-tangents' name)
    r"""A sigmoid-like :math:`\tfrac12 \mathrm{erf}(x / 2.4020563531719796) + \tfrac12`, an ``Erf``.

    The constant minimises the squared difference from the logistic sigmoid on ``[-5, 5]``; the
    kernels are :func:`Erf`'s with ``a = 1/2``, ``b = 1/2.4020563531719796``, ``c = 1/2``.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: (``kernel_fn``) a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.Sigmoid_like()
      >>> apply_fn((), jnp.array([0.0])).tolist()
      [0.5]

    References:
      Williams. Computing with Infinite Networks. NeurIPS 1997.
    """
    return _erf(f"{STAX}.Sigmoid_like", 0.5, 1 / 2.4020563531719796, 0.5)


def Elementwise(fn: Callable | None = None, nngp_fn: Callable | None = None,
                d_nngp_fn: Callable | None = None) -> Layer:
    r"""A layer from a scalar nonlinearity ``fn`` and its dual ``nngp_fn``; the NTK by autodiff.

    ``nngp_fn(cov12, var1, var2)`` must return :math:`E[\phi(x_1)\phi(x_2)]` for a centred Gaussian
    pair with variances ``var1``, ``var2`` and covariance ``cov12``. The NTK multiplies by
    ``d_nngp_fn(cov12, var1, var2)`` :math:`= E[\phi'(x_1)\phi'(x_2)]`, which by Price's theorem is
    :math:`\partial\,\mathrm{nngp\_fn} / \partial\,\mathrm{cov12}`: when ``d_nngp_fn`` is None it is
    taken by ``jax.grad`` (and, as in neural-tangents, a warning says so: autodiff through
    ``jnp.where`` / ``sqrt`` can give NaN at the boundary). Both functions are scalar and are
    vectorised over the kernel.

    Args:
      fn: the nonlinearity :math:`\mathbb{R} \to \mathbb{R}`, or None (then ``apply_fn`` raises).
      nngp_fn: ``(cov12, var1, var2) -> E[fn(x1) fn(x2)]``, or None (then ``kernel_fn`` raises).
      d_nngp_fn: ``(cov12, var1, var2) -> E[fn'(x1) fn'(x2)]``, or None (autodiff of ``nngp_fn``).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: ``fn`` and ``nngp_fn`` both None, or an argument that is not callable;
        (``kernel_fn``) a non-Gaussian input, or no ``nngp_fn`` (also a ``NotImplementedError``);
        (``apply_fn``) no ``fn`` (also a ``NotImplementedError``).

    Example:
      >>> import warnings
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> def nngp_fn(cov12, var1, var2):  # erf's dual (Williams 1997)
      ...     return 2 / jnp.pi * jnp.arcsin(2 * cov12 / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2)))
      >>> with warnings.catch_warnings():
      ...     warnings.simplefilter("ignore")
      ...     _, _, kernel_fn = stax.serial(stax.Dense(1), stax.Elementwise(None, nngp_fn), stax.Dense(1))
      >>> _, _, kernel_erf = stax.serial(stax.Dense(1), stax.Erf(), stax.Dense(1))
      >>> x = jnp.array([[1.0, 0.5], [0.2, -1.0]])
      >>> bool(jnp.allclose(kernel_fn(x, get="ntk"), kernel_erf(x, get="ntk")))
      True

    References:
      Han, Zandieh, Lee, Novak, Xiao, Karbasi. Fast Neural Kernel Embeddings for General
      Activations. NeurIPS 2022.
      Price. A Useful Theorem for Nonlinear Devices Having Gaussian Inputs. IRE Trans. IT 1958.
    """
    name = f"{STAX}.Elementwise"
    fn = _callable(name, "fn", fn)
    nngp_fn = _callable(name, "nngp_fn", nngp_fn)
    d_nngp_fn = _callable(name, "d_nngp_fn", d_nngp_fn)
    if fn is None and nngp_fn is None:
        fail(name, "fn", "be given, or `nngp_fn` (with neither the layer does nothing)", "None for both")
    if nngp_fn is not None and d_nngp_fn is None:
        warnings.warn(f"{name}: the NTK uses the derivative of `nngp_fn` by JAX autodiff; beware of "
                      "https://jax.readthedocs.io/en/latest/faq.html#gradients-contain-nan-where-"
                      "using-where (pass `d_nngp_fn` to avoid it).", stacklevel=2)
        d_nngp_fn = jax.grad(nngp_fn)

    def kmap(nngp, ntk, v, diag):
        if nngp_fn is None:
            raise KjaxNotImplementedError(
                f"{name} kernel_fn: `nngp_fn` must be given to compute the infinite-width kernels; "
                "got None (use ElementwiseNumerical(fn, deg) for a quadrature instead).")
        v1, v2 = _broadcast_pair(v, diag)
        new = jnp.vectorize(nngp_fn)(nngp, v1, v2)
        d = jnp.vectorize(d_nngp_fn)(nngp, v1, v2)
        return jnp.asarray(new, nngp.dtype), ntk * jnp.asarray(d, ntk.dtype)

    return _elementwise(name, fn if fn is not None else _unapplicable(name, "fn"), kmap)


def ElementwiseNumerical(fn: Callable, deg: int, df: Callable | None = None) -> Layer:
    r"""Any scalar nonlinearity by 2-D Gauss-Hermite quadrature with ``deg`` points per axis.

    Writing the Gaussian pair as :math:`x_1 = \sqrt{2K_{11}}\,u`,
    :math:`x_2 = \frac{K_{12}}{\sqrt{K_{11}/2}}u + \sqrt{2(K_{22} - K_{12}^2/K_{11})}\,w`,

    .. math::
        K' \approx \frac1\pi \sum_{i,j} w_i w_j\, \phi(x_1(u_i))\,\phi(x_2(u_i, w_j)),

    with the Hermite nodes :math:`u_i` and weights :math:`w_i` of ``scipy.special.roots_hermite``;
    :math:`\Theta'` uses the same rule on :math:`\phi'` (``df``, or ``jax.grad(fn)``). Exact for
    polynomials of degree :math:`< 2\,\mathrm{deg}`; smooth activations converge fast (``deg=25``
    is a good start), non-smooth ones (ReLU, Abs) slowly: use their closed forms. Memory and time
    grow as ``deg**2`` times the kernel's size.

    Args:
      fn: the nonlinearity :math:`\mathbb{R} \to \mathbb{R}` (jnp-traceable).
      deg: quadrature points per axis, ``>= 1``.
      df: the derivative of ``fn``, or None for ``jax.grad(fn)`` (with a warning, as in
        neural-tangents).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no parameters.

    Raises:
      KjaxError: ``deg < 1`` or not an int, ``fn`` / ``df`` not callable; (``kernel_fn``) a
        non-Gaussian input.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> def d_erf(x):
      ...     return 2 / jnp.sqrt(jnp.pi) * jnp.exp(-x**2)
      >>> layer = stax.ElementwiseNumerical(jax.scipy.special.erf, 30, df=d_erf)
      >>> _, _, k_num = stax.serial(stax.Dense(1), layer)
      >>> _, _, k_erf = stax.serial(stax.Dense(1), stax.Erf())
      >>> x = jnp.array([[1.0, 0.5], [0.2, -1.0]])
      >>> bool(jnp.allclose(k_num(x, get="nngp"), k_erf(x, get="nngp"), rtol=1e-4))
      True

    References:
      Han, Zandieh, Lee, Novak, Xiao, Karbasi. Fast Neural Kernel Embeddings for General
      Activations. NeurIPS 2022 (section 4).
    """
    name = f"{STAX}.ElementwiseNumerical"
    fn = _callable(name, "fn", fn, optional=False)
    if isinstance(deg, bool) or not isinstance(deg, int | np.integer):
        fail(name, "deg", "be a Python int >= 1", repr(deg), cls=KjaxTypeError)
    if deg < 1:
        fail(name, "deg", "be >= 1", repr(deg))
    df = _callable(name, "df", df)
    if df is None:
        warnings.warn(f"{name}: the NTK uses the derivative of `fn` by JAX autodiff; beware of "
                      "https://jax.readthedocs.io/en/latest/faq.html#gradients-contain-nan-where-"
                      "using-where (pass `df` to avoid it).", stacklevel=2)
        df = jnp.vectorize(jax.grad(fn))
    xs, ws = scipy.special.roots_hermite(int(deg))

    def kmap(nngp, ntk, v, diag):
        # [deg, deg, *kernel shape]: nodes on the two leading axes (all ranks equal, so that
        # jax_numpy_rank_promotion="raise" holds)
        q11, q22 = (q[None, None] for q in _broadcast_pair(v, diag))
        c12 = nngp[None, None]
        dt = nngp.dtype
        x = jnp.asarray(xs, dt).reshape((-1, 1) + (1,) * nngp.ndim)
        y = jnp.asarray(xs, dt).reshape((1, -1) + (1,) * nngp.ndim)
        grid = jnp.asarray(np.outer(ws, ws), dt)
        a1 = _safe_sqrt(2 * q11)
        a2 = c12 / _safe_sqrt(jnp.maximum(q11 / 2, 1e-30))
        b2 = _safe_sqrt(2 * (q22 - c12**2 / jnp.where(q11 > 0, q11, 1.0)))
        x1 = a1 * x
        x2 = a2 * x + b2 * y

        def integrate(g):
            vals = g(x1) * g(x2)
            return jnp.tensordot(grid, vals, ((0, 1), (0, 1))) / jnp.pi

        return integrate(fn), ntk * integrate(df)

    return _elementwise(name, fn, kmap)


__all__ = [
    "ABRelu", "Abs", "Cos", "Elementwise", "ElementwiseNumerical", "Erf", "Exp", "ExpNormalized",
    "Gabor", "Gaussian", "Gelu", "Hermite", "LeakyRelu", "Monomial", "Polynomial", "Rbf",
    "RectifiedMonomial", "Relu", "Sigmoid_like", "Sign", "Sin",
]

"""Elementwise nonlinearities: ReLU and its leaky / two-slope forms, erf, GELU.

Each maps a Gaussian input's covariance in closed form (the arc-cosine kernels for ReLU, Williams'
arcsine kernel for erf) and multiplies the NTK by the kernel of the derivative. Layout as in
:mod:`kjax.ntk.stax`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

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

    return make_layer(init_fn, apply_fn, transform, fn_name.rsplit(".", 1)[-1])


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
        angles = jnp.where((root == 0) & (nngp == 0), jnp.pi / 2, jnp.arctan2(root, nngp))
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
    fn = f"{STAX}.Erf"

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


"""Infinite-width layers with neural-tangents' ``(init_fn, apply_fn, kernel_fn)`` interface.

Layout: activations are ``[n, *spatial, C]`` (batch first, channels last; NT's defaults); kernels
are ``[n1, n2, *spatial pairs]`` in NT's zipped order ``[n1, n2, H, H', W, W']``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxError, check_in, check_int, check_positive, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._kernel import State

Layer = tuple[Callable, Callable, Callable]
_P = "kjax.ntk.stax"


class KernelFn:
    """``kernel_fn(x1, x2=None, get=None)``: the infinite-width kernels of a network.

    Called on arrays ``x1: [n1, *spatial, C]`` and ``x2: [n2, *spatial, C]`` (or None for ``x1``),
    it returns NT's outputs: with ``get=None`` a :class:`Kernel` (``nngp``, ``ntk``, ``cov1``,
    ``cov2``); with a string, that array; with a tuple of names, a namedtuple ``Kernel`` with those
    fields in that order. Kernels have shape ``[n1, n2, *spatial pairs]``.
    """

    def __init__(self, transform: Callable, name: str, needs_full: bool = False):
        self.transform = transform
        self.name = name
        # True when some layer mixes spatial positions (pooling), so the spatial diagonal is not
        # enough; otherwise a network ending in Flatten is computed on the diagonal only
        self.needs_full = needs_full
        self.__name__ = name
        # one compiled program per (shapes, get) instead of hundreds of eagerly dispatched ops
        self._jitted = jax.jit(self._compute, static_argnames=("get",))

    def _compute(self, x1, x2, get):
        fn = f"{self.name} kernel_fn"
        st = None
        if not self.needs_full and jnp.ndim(x1) > 2:
            # NT's diagonal_spatial: valid when the output has no spatial axes left (Flatten);
            # otherwise trace again with the full covariance (the unused trace is dead code)
            st = self.transform(K.input_state(fn, x1, x2, diag=True))
            if not isinstance(st, State) or len(st.shape1) != 2:
                st = None
        if st is None:
            st = self.transform(K.input_state(fn, x1, x2))
        if not isinstance(st, State):
            fail(fn, "layers", "end in a single branch (close a FanOut with FanInSum / FanInConcat)",
                 f"{len(st)} branches")
        return K.finish(fn, st, get)

    def __call__(self, x1, x2=None, get=None):
        if isinstance(x1, State) or (isinstance(x1, list | tuple) and x1
                                     and all(isinstance(s, State) for s in x1)):
            return self.transform(x1)
        fn = f"{self.name} kernel_fn"
        _, names = K.canonical_get(fn, get)
        x1 = K.to_float(fn, "x1", x1)
        x2 = None if x2 is None else K.to_float(fn, "x2", x2)
        return self._jitted(x1, x2, get=get if names is None or isinstance(get, str) else names)

    def __repr__(self) -> str:
        return f"<kernel_fn of {self.name}>"


def _layer(init_fn, apply_fn, transform, name, needs_full=False) -> Layer:
    init_fn.__name__ = apply_fn.__name__ = name
    return init_fn, apply_fn, KernelFn(transform, name, needs_full)


def _check_std(fn: str, W_std, b_std) -> None:
    check_positive(fn, "W_std", W_std, allow_zero=True)
    check_positive(fn, "b_std", b_std, allow_zero=True)


def _check_param(fn: str, parameterization: str) -> str:
    p = str(parameterization).lower()
    check_in(fn, "parameterization", p, ("ntk", "standard"))
    return p


def _map_states(f, st):
    if isinstance(st, list | tuple):
        return [f(s) for s in st]
    return f(st)


def _single(fn: str, st) -> State:
    if not isinstance(st, State):
        fail(fn, "input", "be a single branch (use parallel(...) to act on branches)",
             f"{len(st)} branches")
    return st


# --------------------------------------------------------------------------------------------
# affine layers


def Dense(out_dim: int, W_std: float = 1.0, b_std: float | None = None, *,
          parameterization: str = "ntk", s: tuple[int, int] = (1, 1)) -> Layer:
    r"""Fully connected layer over the channel (last) axis.

    With ``parameterization="ntk"`` the layer is :math:`z = \frac{\sigma_W}{\sqrt{N_{in}}} W x +
    \sigma_b b` with :math:`W, b \sim \mathcal N(0, 1)`, and the kernels map as

    .. math::
        K' = \sigma_W^2 K + \sigma_b^2, \qquad \Theta' = K' + \sigma_W^2 \Theta.

    With ``"standard"``, :math:`W \sim \mathcal N(0, \sigma_W^2 / N_{in})`, :math:`b \sim
    \mathcal N(0, \sigma_b^2)` and :math:`\Theta' = \frac{N_{in}}{s_0} K + \sigma_W^2 \Theta
    (+1 \text{ with a bias})`, where :math:`N_{in}` is the finite input width.

    Args:
      out_dim: output channels of the finite network (ignored by ``kernel_fn`` under "ntk").
      W_std: weight standard deviation :math:`\sigma_W \ge 0`.
      b_std: bias standard deviation :math:`\sigma_b \ge 0`, or None for no bias.
      parameterization: ``"ntk"`` or ``"standard"``.
      s: width scalings ``(s_in, s_out)`` of the standard parameterisation (NT's ``s``).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``: ``init_fn(key, input_shape) -> (output_shape, (W, b))``,
      ``apply_fn(params, x) -> y``, ``kernel_fn(x1, x2=None, get=None)``.

    Raises:
      KjaxError: negative ``W_std`` / ``b_std``, unknown ``parameterization``, or (in
        ``apply_fn``) a ``W`` whose input dimension does not match ``x``'s channels.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(512, b_std=0.1), stax.Relu(), stax.Dense(1))
      >>> kernel_fn(jnp.ones((3, 4)), get="ntk").shape
      (3, 3)

    References:
      Jacot, Gabriel, Hongler. Neural Tangent Kernel. NeurIPS 2018.
      Novak et al. Neural Tangents: Fast and Easy Infinite Neural Networks in Python. ICLR 2020.
    """
    fn = f"{_P}.Dense"
    out_dim = check_int(fn, "out_dim", out_dim, minimum=1)
    _check_std(fn, W_std, b_std)
    param = _check_param(fn, parameterization)
    width_out = out_dim if param == "ntk" else out_dim * s[1]

    def init_fn(rng, input_shape):
        input_shape = tuple(input_shape)
        out_shape = input_shape[:-1] + (width_out,)
        k1, k2 = jax.random.split(rng)
        W = jax.random.normal(k1, (input_shape[-1], width_out))
        b = None if b_std is None else jax.random.normal(k2, (1,) * (len(input_shape) - 1) + (width_out,))
        if param == "standard":
            W = W * (W_std / (input_shape[-1] / s[0]) ** 0.5)
            b = None if b is None else b * b_std
        return out_shape, (W, b)

    def apply_fn(params, inputs, **kwargs):
        W, b = params
        if W.shape[0] != inputs.shape[-1]:
            fail(f"{fn} apply_fn", "inputs", f"have {W.shape[0]} channels (the rows of W)",
                 f"shape {inputs.shape}")
        prod = jnp.tensordot(inputs, W, (-1, 0))
        if param == "ntk":
            out = W_std / inputs.shape[-1] ** 0.5 * prod
            if b is not None:
                out = out + b_std * b
        else:
            out = prod / s[0] ** 0.5
            if b is not None:
                out = out + b
        return out

    def transform(st):
        st = _single(fn, st)
        nngp, ntk = st.nngp, st.ntk
        new_nngp = W_std**2 * nngp + (0.0 if b_std is None else b_std**2)
        if param == "ntk":
            new_ntk = new_nngp + W_std**2 * ntk
        else:
            new_ntk = st.shape1[-1] / s[0] * nngp + W_std**2 * ntk + (0.0 if b_std is None else 1.0)
        return st.replace(nngp=new_nngp, ntk=new_ntk, is_gaussian=True,
                          shape1=st.shape1[:-1] + (width_out,), shape2=st.shape2[:-1] + (width_out,))

    return _layer(init_fn, apply_fn, transform, f"Dense({out_dim})")


def _canon_padding(fn: str, padding: str) -> str:
    p = str(padding).upper()
    check_in(fn, "padding", p, ("VALID", "SAME", "CIRCULAR"))
    return p


def _tuple_of_ints(fn: str, arg: str, value, n: int | None = None) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * (n or 1)
    if not isinstance(value, tuple | list) or not value or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) and v >= 1 for v in value):
        fail(fn, arg, "be a tuple of positive ints", repr(value))
    if n is not None and len(value) != n:
        fail(fn, arg, f"have {n} entries (one per spatial axis)", repr(value))
    return tuple(int(v) for v in value)


def _check_spatial_rank(fn: str, arg: str, shape: tuple, n_spatial: int) -> None:
    if len(shape) != n_spatial + 2:
        lay = "[n, " + ", ".join("HWD"[:n_spatial]) + ", C]"
        fail(fn, arg, f"have rank {n_spatial + 2} {lay} for a {n_spatial}D layer",
             f"shape {tuple(shape)} (rank {len(shape)})")


def Conv(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
         padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
         dimension_numbers: Any = None, *, parameterization: str = "ntk",
         s: tuple[int, int] = (1, 1)) -> Layer:
    r"""Convolution with shared weights over 1, 2 or more spatial axes (inputs ``[n, *spatial, C]``).

    In the infinite-channel limit a filter of size :math:`w` maps the full spatial covariance as

    .. math::
        K'_{x x'} = \frac{\sigma_W^2}{|w|} \sum_{k \in w} K_{s x + k,\; s x' + k} + \sigma_b^2,
        \qquad \Theta' = K' + \frac{\sigma_W^2}{|w|} \sum_k \Theta_{s x + k,\; s x' + k}

    (``"ntk"`` parameterisation; zero padding for ``"SAME"``, periodic for ``"CIRCULAR"``).

    Args:
      out_chan: output channels of the finite network.
      filter_shape: spatial filter shape, e.g. ``(3, 3)``.
      strides: spatial strides; default ones.
      padding: ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"``.
      W_std: weight standard deviation (>= 0).
      b_std: bias standard deviation (>= 0) or None.
      dimension_numbers: must be None (NT's default ``NHWC`` / ``HWIO`` layout).
      parameterization: ``"ntk"`` or ``"standard"``.
      s: width scalings of the standard parameterisation.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; params are ``(W: [*filter_shape, C_in, out_chan],
      b: [1, ..., 1, out_chan] or None)``.

    Raises:
      KjaxError: inputs of the wrong rank for ``filter_shape``, negative ``W_std``, a bad
        ``padding`` / ``strides``, or ``dimension_numbers`` other than None.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Conv(8, (3, 3), padding="SAME"), stax.Relu(),
      ...                               stax.Flatten(), stax.Dense(1))
      >>> kernel_fn(jnp.ones((2, 5, 5, 3)), get="nngp").shape
      (2, 2)

    References:
      Novak et al. Bayesian Deep Convolutional Networks with Many Channels are Gaussian
      Processes. ICLR 2019. Arora et al. On Exact Computation with an Infinitely Wide Neural Net.
      NeurIPS 2019.
    """
    fn = f"{_P}.Conv"
    out_chan = check_int(fn, "out_chan", out_chan, minimum=1)
    filter_shape = _tuple_of_ints(fn, "filter_shape", tuple(filter_shape))
    nsp = len(filter_shape)
    strides = (1,) * nsp if strides is None else _tuple_of_ints(fn, "strides", strides, nsp)
    padding = _canon_padding(fn, padding)
    _check_std(fn, W_std, b_std)
    param = _check_param(fn, parameterization)
    if dimension_numbers is not None:
        fail(fn, "dimension_numbers", "be None (kjax uses NT's default channels-last layout)",
             repr(dimension_numbers))
    width_out = out_chan if param == "ntk" else out_chan * s[1]
    spatial = "ABDEFGHJKLM"[:nsp]
    dn = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    fsize = math.prod(filter_shape)

    def out_shape_of(shape):
        return (shape[0],) + tuple(K.out_length(L, w, st, padding)
                                   for L, w, st in zip(shape[1:-1], filter_shape, strides, strict=True)
                                   ) + (width_out,)

    def init_fn(rng, input_shape):
        input_shape = tuple(input_shape)
        _check_spatial_rank(f"{fn} init_fn", "input_shape", input_shape, nsp)
        k1, k2 = jax.random.split(rng)
        W = jax.random.normal(k1, filter_shape + (input_shape[-1], width_out))
        b = None if b_std is None else jax.random.normal(k2, (1,) * (nsp + 1) + (width_out,))
        if param == "standard":
            W = W * (W_std / (input_shape[-1] * fsize / s[0]) ** 0.5)
            b = None if b is None else b * b_std
        return out_shape_of(input_shape), (W, b)

    def apply_fn(params, inputs, **kwargs):
        W, b = params
        _check_spatial_rank(f"{fn} apply_fn", "inputs", inputs.shape, nsp)
        if W.shape[-2] != inputs.shape[-1]:
            fail(f"{fn} apply_fn", "inputs", f"have {W.shape[-2]} channels (W's input channels)",
                 f"shape {inputs.shape}")
        x, pad = inputs, padding
        if padding == "CIRCULAR":
            widths = [(0, 0)] + [K.same_padding(L, w, st) for L, w, st in
                                 zip(inputs.shape[1:-1], filter_shape, strides, strict=True)] + [(0, 0)]
            x, pad = jnp.pad(inputs, widths, mode="wrap"), "VALID"
        y = jax.lax.conv_general_dilated(x, W, strides, pad, dimension_numbers=dn,
                                         precision=jax.lax.Precision.HIGHEST)
        if param == "ntk":
            y = W_std / (inputs.shape[-1] * fsize) ** 0.5 * y
            if b is not None:
                y = y + b_std * b
        else:
            y = y / s[0] ** 0.5
            if b is not None:
                y = y + b
        return y

    def conv(mat, diag):
        for d in range(nsp):
            if diag:  # on the spatial diagonal the filter is a window average of one axis
                mat = K.pool_axis(mat, 2 + d, filter_shape[d], strides[d], padding, False)
            else:
                mat = K.conv_pair(mat, 2 + 2 * d, filter_shape[d], strides[d], padding)
        return mat

    def transform(st):
        st = _single(fn, st)
        _check_spatial_rank(f"{fn} kernel_fn", "x1", st.shape1, nsp)
        b2 = 0.0 if b_std is None else b_std**2
        nngp_c, ntk_c = conv(st.nngp, st.diag), conv(st.ntk, st.diag)
        nngp = W_std**2 * nngp_c + b2
        if param == "ntk":
            ntk = W_std**2 * ntk_c + nngp
        else:
            fan_in = st.shape1[-1] * fsize / s[0]
            ntk = fan_in * nngp_c + W_std**2 * ntk_c + (0.0 if b_std is None else 1.0)
        return st.replace(nngp=nngp, ntk=ntk, is_gaussian=True,
                          shape1=out_shape_of(st.shape1), shape2=out_shape_of(st.shape2))

    return _layer(init_fn, apply_fn, transform, f"Conv({out_chan}, {filter_shape})")


# --------------------------------------------------------------------------------------------
# nonlinearities


def _elementwise(fn_name: str, f: Callable, kernel_map: Callable) -> Layer:
    def init_fn(rng, input_shape):
        return tuple(input_shape), ()

    def apply_fn(params, inputs, **kwargs):
        return f(inputs)

    def transform(st):
        st = _single(fn_name, st)
        K.check_gaussian(fn_name, st)
        v = K.variances(st.nngp, st.n_spatial, st.diag)
        nngp, ntk = kernel_map(st.nngp, st.ntk, v, st.diag)
        return st.replace(nngp=nngp, ntk=ntk, is_gaussian=False)

    return _layer(init_fn, apply_fn, transform, fn_name.rsplit(".", 1)[-1])


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
    fn = f"{_P}.ABRelu"

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
    return ABRelu(0.0, 1.0, do_stabilize)


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
    return ABRelu(alpha, 1.0, do_stabilize)


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
    fn = f"{_P}.Erf"

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
    fn = f"{_P}.Gelu"

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


def Identity() -> Layer:
    """The identity layer: ``apply_fn`` returns its input and ``kernel_fn`` its kernel.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.Identity()
      >>> apply_fn((), jnp.arange(3.0)).tolist()
      [0.0, 1.0, 2.0]

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """

    def init_fn(rng, input_shape):
        return input_shape, ()

    def apply_fn(params, inputs, **kwargs):
        return inputs

    return _layer(init_fn, apply_fn, lambda st: st, "Identity")


# --------------------------------------------------------------------------------------------
# reshaping and pooling


def Flatten() -> Layer:
    r"""Flatten all non-batch axes: ``[n, *spatial, C] -> [n, prod(spatial) * C]``.

    In the infinite-channel limit the flattened covariance is the mean of the spatial diagonal,
    :math:`K' = \frac{1}{|S|} \sum_{x} K_{x x}` (and the same for :math:`\Theta`).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.Flatten()
      >>> apply_fn((), jnp.ones((2, 3, 4))).shape
      (2, 12)

    References:
      Novak et al. Bayesian Deep Convolutional Networks with Many Channels are Gaussian
      Processes. ICLR 2019.
    """

    def out_shape(shape):
        return (shape[0], math.prod(shape[1:]))

    def init_fn(rng, input_shape):
        return out_shape(tuple(input_shape)), ()

    def apply_fn(params, inputs, **kwargs):
        return inputs.reshape(inputs.shape[0], -1)

    def diag_mean(mat, diag):
        if diag:
            return jnp.mean(mat, axis=tuple(range(2, mat.ndim)))
        while mat.ndim > 2:
            mat = jnp.trace(mat, axis1=-2, axis2=-1) / mat.shape[-1]
        return mat

    def transform(st):
        st = _single(f"{_P}.Flatten", st)
        return st.replace(nngp=diag_mean(st.nngp, st.diag), ntk=diag_mean(st.ntk, st.diag),
                          is_gaussian=False, diag=False,
                          shape1=out_shape(st.shape1), shape2=out_shape(st.shape2))

    return _layer(init_fn, apply_fn, transform, "Flatten")


def GlobalAvgPool() -> Layer:
    r"""Average over all spatial axes: ``[n, *spatial, C] -> [n, C]``.

    The kernels average over all pairs of positions, :math:`K' = \frac{1}{|S|^2}\sum_{x, x'}
    K_{x x'}`.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Conv(4, (2,)), stax.Relu(), stax.GlobalAvgPool())
      >>> kernel_fn(jnp.ones((2, 6, 3)), get="nngp").shape
      (2, 2)

    References:
      Novak et al. Bayesian Deep Convolutional Networks with Many Channels are Gaussian
      Processes. ICLR 2019.
    """

    def out_shape(shape):
        return (shape[0], shape[-1])

    def init_fn(rng, input_shape):
        return out_shape(tuple(input_shape)), ()

    def apply_fn(params, inputs, **kwargs):
        return jnp.mean(inputs, axis=tuple(range(1, inputs.ndim - 1)))

    def transform(st):
        st = _single(f"{_P}.GlobalAvgPool", st)
        axes = tuple(range(2, st.nngp.ndim))
        return st.replace(nngp=jnp.mean(st.nngp, axes), ntk=jnp.mean(st.ntk, axes),
                          shape1=out_shape(st.shape1), shape2=out_shape(st.shape2))

    return _layer(init_fn, apply_fn, transform, "GlobalAvgPool", needs_full=True)


def AvgPool(window_shape: Sequence[int], strides: Sequence[int] | None = None,
            padding: str = "VALID", normalize_edges: bool = False) -> Layer:
    r"""Average pooling over the spatial axes of ``[n, *spatial, C]``.

    Both positions of a covariance entry are pooled independently:
    :math:`K'_{x x'} = \frac{1}{|w|^2} \sum_{k, k' \in w} K_{s x + k,\; s x' + k'}`.

    Args:
      window_shape: spatial window, e.g. ``(2, 2)``.
      strides: spatial strides; default ones (NT's default).
      padding: ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"``.
      normalize_edges: with ``"SAME"``, divide by the number of real (unpadded) entries.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: inputs whose rank does not match ``window_shape``, or a bad ``padding``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.AvgPool((2,), strides=(2,))
      >>> apply_fn((), jnp.arange(4.0).reshape(1, 4, 1))[0, :, 0].tolist()
      [0.5, 2.5]

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{_P}.AvgPool"
    window_shape = _tuple_of_ints(fn, "window_shape", tuple(window_shape))
    nsp = len(window_shape)
    strides = (1,) * nsp if strides is None else _tuple_of_ints(fn, "strides", strides, nsp)
    padding = _canon_padding(fn, padding)

    def out_shape(shape):
        return (shape[0],) + tuple(K.out_length(L, w, s_, padding) for L, w, s_ in
                                   zip(shape[1:-1], window_shape, strides, strict=True)) + (shape[-1],)

    def init_fn(rng, input_shape):
        _check_spatial_rank(f"{fn} init_fn", "input_shape", tuple(input_shape), nsp)
        return out_shape(tuple(input_shape)), ()

    def apply_fn(params, inputs, **kwargs):
        _check_spatial_rank(f"{fn} apply_fn", "inputs", inputs.shape, nsp)
        x = inputs
        for d in range(nsp):
            x = K.pool_axis(x, 1 + d, window_shape[d], strides[d], padding, normalize_edges)
        return x

    def pool(mat):
        for d in range(nsp):
            for ax in (2 + 2 * d, 3 + 2 * d):
                mat = K.pool_axis(mat, ax, window_shape[d], strides[d], padding, normalize_edges)
        return mat

    def transform(st):
        st = _single(fn, st)
        _check_spatial_rank(f"{fn} kernel_fn", "x1", st.shape1, nsp)
        return st.replace(nngp=pool(st.nngp), ntk=pool(st.ntk), shape1=out_shape(st.shape1),
                          shape2=out_shape(st.shape2))

    return _layer(init_fn, apply_fn, transform, f"AvgPool({window_shape})", needs_full=True)


def LayerNorm(axis: int | Sequence[int] = -1, eps: float = 1e-12) -> Layer:
    r"""Layer normalisation :math:`(x - \mu) / \sqrt{\epsilon + \sigma^2}` over ``axis``.

    ``axis`` must contain the channel (last) axis and may contain spatial axes (not the batch
    axis). In the infinite-channel limit the mean vanishes and the kernels are divided by the
    variances averaged over the normalised spatial axes:
    :math:`K'_{12} = K_{12} / \sqrt{(\epsilon + \bar K_{11})(\epsilon + \bar K_{22})}`.

    Args:
      axis: axis or axes of ``[n, *spatial, C]`` to normalise over.
      eps: added to the variance.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: (``kernel_fn``) ``axis`` without the channel axis or with the batch axis, or a
        non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.LayerNorm())
      >>> round(float(kernel_fn(jnp.ones((1, 3)), get="nngp")[0, 0]), 6)
      1.0

    References:
      Ba, Kiros, Hinton. Layer Normalization. 2016. Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{_P}.LayerNorm"
    axes_in = (axis,) if isinstance(axis, int) else tuple(axis)

    def canon(ndim, f):
        out = []
        for a in axes_in:
            if not -ndim <= a < ndim:
                fail(f, "axis", f"be in [-{ndim}, {ndim}) for inputs of rank {ndim}", repr(axis))
            out.append(a % ndim)
        return sorted(set(out))

    def init_fn(rng, input_shape):
        return tuple(input_shape), ()

    def apply_fn(params, inputs, **kwargs):
        ax = tuple(canon(inputs.ndim, f"{fn} apply_fn"))
        mean = jnp.mean(inputs, ax, keepdims=True)
        var = jnp.var(inputs, ax, keepdims=True)
        return (inputs - mean) / jnp.sqrt(eps + var)

    def transform(st):
        st = _single(fn, st)
        ndim = len(st.shape1)
        ax = canon(ndim, f"{fn} kernel_fn")
        if ndim - 1 not in ax:
            fail(f"{fn} kernel_fn", "axis", f"contain the channel axis ({ndim - 1}) for the "
                 "infinite-width limit to exist", repr(axis))
        if 0 in ax:
            fail(f"{fn} kernel_fn", "axis", "not contain the batch axis 0 (not implemented)", repr(axis))
        if not st.is_gaussian:
            raise KjaxError(f"{fn} kernel_fn: LayerNorm is only implemented for Gaussian inputs "
                            "(the output of a Dense / Conv layer).")
        v = K.variances(st.nngp, st.n_spatial, st.diag)
        spatial = tuple(a for a in ax if a != ndim - 1)  # axis a of x is axis a of v
        if spatial:
            v = jnp.mean(v, spatial, keepdims=True)
        denom = jnp.sqrt(K.outer(eps + v, diag=st.diag))
        return st.replace(nngp=st.nngp / denom, ntk=st.ntk / denom)

    return _layer(init_fn, apply_fn, transform, "LayerNorm")


# --------------------------------------------------------------------------------------------
# combinators and branching


def serial(*layers: Layer) -> Layer:
    """Compose layers in sequence (NT's / ``jax.example_libraries.stax``'s ``serial``).

    Args:
      *layers: ``(init_fn, apply_fn, kernel_fn)`` triples.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; the params are a list with one entry per layer.

    Raises:
      KjaxError: a layer that is not a triple.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(16), stax.Relu(), stax.Dense(1))
      >>> out_shape, params = init_fn(jax.random.key(0), (3, 5))
      >>> out_shape, apply_fn(params, jnp.ones((3, 5))).shape
      ((3, 1), (3, 1))

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    _check_layers(f"{_P}.serial", layers)
    init_fns, apply_fns, kernel_fns = zip(*layers, strict=True) if layers else ((), (), ())

    def init_fn(rng, input_shape):
        params = []
        for init in init_fns:
            rng, layer_rng = jax.random.split(rng)
            input_shape, param = init(layer_rng, input_shape)
            params.append(param)
        return input_shape, params

    def apply_fn(params, inputs, **kwargs):
        for f, p in zip(apply_fns, params, strict=True):
            inputs = f(p, inputs, **kwargs)
        return inputs

    def transform(st):
        for kf in kernel_fns:
            st = kf.transform(st)
        return st

    return _layer(init_fn, apply_fn, transform, "serial",
                  needs_full=any(kf.needs_full for kf in kernel_fns))


def parallel(*layers: Layer) -> Layer:
    """Apply layers to the branches of a list input, one each (NT's ``parallel``).

    Args:
      *layers: one ``(init_fn, apply_fn, kernel_fn)`` triple per branch.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; inputs and outputs are lists of branches.

    Raises:
      KjaxError: a layer that is not a triple, or a number of branches that differs from the
        number of layers.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> block = stax.serial(stax.FanOut(2), stax.parallel(stax.Dense(8), stax.Identity()),
      ...                     stax.FanInSum())
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), block)
      >>> kernel_fn(jnp.ones((2, 3)), get="ntk").shape
      (2, 2)

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{_P}.parallel"
    _check_layers(fn, layers)
    init_fns, apply_fns, kernel_fns = zip(*layers, strict=True)

    def check_n(x):
        if len(x) != len(layers):
            fail(fn, "inputs", f"be a list of {len(layers)} branches", f"{len(x)} branches")

    def init_fn(rng, input_shape):
        check_n(input_shape)
        rngs = jax.random.split(rng, len(layers))
        shapes, params = zip(*[f(r, sh) for f, r, sh in zip(init_fns, rngs, input_shape, strict=True)],
                             strict=True)
        return list(shapes), list(params)

    def apply_fn(params, inputs, **kwargs):
        check_n(inputs)
        return [f(p, x, **kwargs) for f, p, x in zip(apply_fns, params, inputs, strict=True)]

    def transform(sts):
        if isinstance(sts, State):
            fail(fn, "input", f"be a list of {len(layers)} branches (use FanOut first)", "one branch")
        check_n(sts)
        return [kf.transform(s) for kf, s in zip(kernel_fns, sts, strict=True)]

    return _layer(init_fn, apply_fn, transform, "parallel",
                  needs_full=any(kf.needs_full for kf in kernel_fns))


def _check_layers(fn, layers):
    for i, lay in enumerate(layers):
        if not (isinstance(lay, tuple) and len(lay) == 3 and isinstance(lay[2], KernelFn)):
            fail(fn, f"layers[{i}]", "be an (init_fn, apply_fn, kernel_fn) triple from kjax.ntk.stax",
                 type(lay).__name__)


def FanOut(num: int) -> Layer:
    """Copy the input into ``num`` branches.

    Args:
      num: number of branches (>= 1).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)`` producing lists of ``num`` branches.

    Raises:
      KjaxError: ``num`` not a positive int.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.FanOut(3)
      >>> len(apply_fn((), jnp.ones(2)))
      3

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    num = check_int(f"{_P}.FanOut", "num", num, minimum=1)

    def init_fn(rng, input_shape):
        return [input_shape] * num, ()

    def apply_fn(params, inputs, **kwargs):
        return [inputs] * num

    def transform(st):
        st = _single(f"{_P}.FanOut", st)
        return [st] * num

    return _layer(init_fn, apply_fn, transform, f"FanOut({num})")


def _check_branches(fn, sts):
    if isinstance(sts, State):
        fail(fn, "input", "be a list of branches (from FanOut / parallel)", "one branch")
    for s in sts[1:]:
        if s.shape1 != sts[0].shape1 or s.shape2 != sts[0].shape2:
            fail(fn, "branches", "have equal shapes", f"shapes {[t.shape1 for t in sts]}")


def FanInSum() -> Layer:
    """Sum the branches (residual connections): kernels of independent Gaussian branches add.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: branches of different shapes, or (``kernel_fn``) a branch that is not Gaussian
        (each branch needs its own ``Dense`` / ``Conv``, or is an ``Identity`` of a Gaussian).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.FanInSum()
      >>> apply_fn((), [jnp.ones(2), jnp.ones(2)]).tolist()
      [2.0, 2.0]

    References:
      He et al. Deep Residual Learning for Image Recognition. CVPR 2016.
    """
    fn = f"{_P}.FanInSum"

    def init_fn(rng, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if any(s != shapes[0] for s in shapes):
            fail(fn, "input_shape", "list equal shapes", shapes)
        return shapes[0], ()

    def apply_fn(params, inputs, **kwargs):
        if any(x.shape != inputs[0].shape for x in inputs):
            fail(fn, "inputs", "have equal shapes", [x.shape for x in inputs])
        return sum(inputs[1:], inputs[0])

    def transform(sts):
        _check_branches(fn, sts)
        if not all(s.is_gaussian for s in sts):
            raise KjaxError(f"{fn}: every branch must be Gaussian (end in a Dense / Conv layer); "
                            f"got is_gaussian={[s.is_gaussian for s in sts]}.")
        return sts[0].replace(nngp=sum(s.nngp for s in sts), ntk=sum(s.ntk for s in sts),
                              is_gaussian=True)

    return _layer(init_fn, apply_fn, transform, "FanInSum")


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenate the branches along the channel axis (the only axis supported here).

    Kernels average over the branches weighted by their channel widths,
    ``K' = sum_b C_b K_b / sum_b C_b``.

    Args:
      axis: ``-1`` (the channel axis).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: ``axis`` other than the channel axis, or branches whose non-channel shapes
        differ.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.FanInConcat()
      >>> apply_fn((), [jnp.ones((2, 3)), jnp.ones((2, 1))]).shape
      (2, 4)

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{_P}.FanInConcat"
    if axis != -1:
        fail(fn, "axis", "be -1 (concatenation along the channel axis; other axes are not "
             "implemented in kjax)", repr(axis))

    def init_fn(rng, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if any(s[:-1] != shapes[0][:-1] for s in shapes):
            fail(fn, "input_shape", "list shapes equal except in the channel axis", shapes)
        return shapes[0][:-1] + (sum(s[-1] for s in shapes),), ()

    def apply_fn(params, inputs, **kwargs):
        if any(x.shape[:-1] != inputs[0].shape[:-1] for x in inputs):
            fail(fn, "inputs", "have shapes equal except in the channel axis", [x.shape for x in inputs])
        return jnp.concatenate(inputs, axis=-1)

    def transform(sts):
        if isinstance(sts, State):
            fail(fn, "input", "be a list of branches (from FanOut / parallel)", "one branch")
        if any(s.shape1[:-1] != sts[0].shape1[:-1] for s in sts):
            fail(fn, "branches", "have shapes equal except in the channel axis",
                 f"shapes {[s.shape1 for s in sts]}")
        widths = [s.shape1[-1] for s in sts]
        if all(w == widths[0] for w in widths):
            widths = [1] * len(widths)
        tot = sum(widths)
        nngp = sum(w * s.nngp for w, s in zip(widths, sts, strict=True)) / tot
        ntk = sum(w * s.ntk for w, s in zip(widths, sts, strict=True)) / tot
        c = sum(s.shape1[-1] for s in sts)
        return sts[0].replace(nngp=nngp, ntk=ntk, is_gaussian=False,
                              shape1=sts[0].shape1[:-1] + (c,), shape2=sts[0].shape2[:-1] + (c,))

    return _layer(init_fn, apply_fn, transform, "FanInConcat")

r"""Affine layers: ``Dense`` and ``Conv`` (the layers with weights), and ``Identity``.

In the infinite-width limit an affine layer maps the NNGP covariance to :math:`\sigma_W^2 K +
\sigma_b^2` (averaged over the filter window for a convolution) and adds it to the NTK; a
nonlinearity needs one of these before it (its input must be Gaussian).

Layout: activations ``[n, *spatial, C]`` (batch first, channels last); kernels ``[n1, n2, *spatial
pairs]`` in neural-tangents' zipped order ``[n1, n2, H, H', W, W']``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from kjax._src.errors import check_int, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import (
    STAX,
    Layer,
    canonical_padding,
    check_parameterization,
    check_spatial_rank,
    check_std,
    make_layer,
    single_branch,
    spatial_out_shape,
    tuple_of_ints,
)


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
    fn = f"{STAX}.Dense"
    out_dim = check_int(fn, "out_dim", out_dim, minimum=1)
    check_std(fn, W_std, b_std)
    param = check_parameterization(fn, parameterization)
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
        st = single_branch(fn, st)
        nngp, ntk = st.nngp, st.ntk
        new_nngp = W_std**2 * nngp + (0.0 if b_std is None else b_std**2)
        if param == "ntk":
            new_ntk = new_nngp + W_std**2 * ntk
        else:
            new_ntk = st.shape1[-1] / s[0] * nngp + W_std**2 * ntk + (0.0 if b_std is None else 1.0)
        return st.replace(nngp=new_nngp, ntk=new_ntk, is_gaussian=True,
                          shape1=st.shape1[:-1] + (width_out,), shape2=st.shape2[:-1] + (width_out,))

    return make_layer(init_fn, apply_fn, transform, f"Dense({out_dim})")



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
        ``padding`` / ``strides``, ``dimension_numbers`` other than None, or (in ``init_fn``,
        ``apply_fn`` and ``kernel_fn``) a ``"VALID"`` filter larger than its input, whose output
        would be empty.

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
    fn = f"{STAX}.Conv"
    out_chan = check_int(fn, "out_chan", out_chan, minimum=1)
    filter_shape = tuple_of_ints(fn, "filter_shape", tuple(filter_shape))
    nsp = len(filter_shape)
    strides = (1,) * nsp if strides is None else tuple_of_ints(fn, "strides", strides, nsp)
    padding = canonical_padding(fn, padding)
    check_std(fn, W_std, b_std)
    param = check_parameterization(fn, parameterization)
    if dimension_numbers is not None:
        fail(fn, "dimension_numbers", "be None (kjax uses NT's default channels-last layout)",
             repr(dimension_numbers))
    width_out = out_chan if param == "ntk" else out_chan * s[1]
    spatial = "ABDEFGHJKLM"[:nsp]
    dn = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
    fsize = math.prod(filter_shape)

    def out_shape_of(shape, where):
        spatial = spatial_out_shape(f"{fn} {where}", "filter_shape", shape, filter_shape, strides,
                                    padding)
        return (shape[0], *spatial, width_out)

    def init_fn(rng, input_shape):
        input_shape = tuple(input_shape)
        check_spatial_rank(f"{fn} init_fn", "input_shape", input_shape, nsp,
                           ("filter_shape", filter_shape))
        k1, k2 = jax.random.split(rng)
        W = jax.random.normal(k1, filter_shape + (input_shape[-1], width_out))
        b = None if b_std is None else jax.random.normal(k2, (1,) * (nsp + 1) + (width_out,))
        if param == "standard":
            W = W * (W_std / (input_shape[-1] * fsize / s[0]) ** 0.5)
            b = None if b is None else b * b_std
        return out_shape_of(input_shape, "init_fn"), (W, b)

    def apply_fn(params, inputs, **kwargs):
        W, b = params
        check_spatial_rank(f"{fn} apply_fn", "inputs", inputs.shape, nsp,
                           ("filter_shape", filter_shape))
        out_shape_of(inputs.shape, "apply_fn")
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
        st = single_branch(fn, st)
        check_spatial_rank(f"{fn} kernel_fn", "x1", st.shape1, nsp,
                           ("filter_shape", filter_shape))
        shape1, shape2 = out_shape_of(st.shape1, "kernel_fn"), out_shape_of(st.shape2, "kernel_fn")
        b2 = 0.0 if b_std is None else b_std**2
        nngp_c, ntk_c = conv(st.nngp, st.diag), conv(st.ntk, st.diag)
        nngp = W_std**2 * nngp_c + b2
        if param == "ntk":
            ntk = W_std**2 * ntk_c + nngp
        else:
            fan_in = st.shape1[-1] * fsize / s[0]
            ntk = fan_in * nngp_c + W_std**2 * ntk_c + (0.0 if b_std is None else 1.0)
        return st.replace(nngp=nngp, ntk=ntk, is_gaussian=True, shape1=shape1, shape2=shape2)

    return make_layer(init_fn, apply_fn, transform, f"Conv({out_chan}, {filter_shape})")



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

    return make_layer(init_fn, apply_fn, lambda st: st, "Identity")


"""Normalisation: ``LayerNorm`` (over the channel axis and optionally spatial axes).

In the infinite-channel limit the mean vanishes and the kernels are divided by the (averaged)
variances. Layout as in :mod:`kjax.ntk.stax`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from kjax._src.errors import KjaxError, check_positive, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import STAX, Layer, axis_arg, check_axes, make_layer, single_branch


def LayerNorm(axis: int | Sequence[int] = -1, eps: float = 1e-12, batch_axis: int = 0,
              channel_axis: int = -1) -> Layer:
    r"""Layer normalisation :math:`(x - \mu) / \sqrt{\epsilon + \sigma^2}` over ``axis``.

    ``axis`` must contain the channel (last) axis and may contain spatial axes (not the batch
    axis). In the infinite-channel limit the mean vanishes and the kernels are divided by the
    variances averaged over the normalised spatial axes:
    :math:`K'_{12} = K_{12} / \sqrt{(\epsilon + \bar K_{11})(\epsilon + \bar K_{22})}`.

    Args:
      axis: axis or axes of the input to normalise over.
      eps: added to the variance.
      batch_axis: batch axis of the input.
      channel_axis: channel axis of the input (``axis`` must contain it for ``kernel_fn``).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: a negative or non-finite ``eps``; (``kernel_fn``) ``axis`` without the channel
        axis or with the batch axis, or a non-Gaussian input.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(1), stax.LayerNorm())
      >>> round(float(kernel_fn(jnp.ones((1, 3)), get="nngp")[0, 0]), 6)
      1.0

    References:
      Ba, Kiros, Hinton. Layer Normalization. 2016. Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{STAX}.LayerNorm"
    check_positive(fn, "eps", eps, allow_zero=True)
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    channel_axis = axis_arg(fn, "channel_axis", channel_axis)
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

    def apply_fn(params, inputs, mask=None, **kwargs):
        ax = tuple(canon(inputs.ndim, f"{fn} apply_fn"))
        if mask is None:
            mean = jnp.mean(inputs, ax, keepdims=True)
            var = jnp.var(inputs, ax, keepdims=True)
        else:  # NT's mean_and_var: divide by the number of unmasked entries (masked ones are 0)
            size = jnp.sum(~jnp.broadcast_to(mask, inputs.shape), ax, keepdims=True)
            size = jnp.maximum(size, 1).astype(inputs.dtype)
            mean = jnp.sum(inputs, ax, keepdims=True) / size
            var = jnp.sum((inputs - mean) ** 2, ax, keepdims=True) / size
        return (inputs - mean) / jnp.sqrt(eps + var)

    def transform(st):
        st = single_branch(fn, st)
        check_axes(f"{fn} kernel_fn", st, batch_axis, channel_axis)
        ndim = len(st.shape1)
        b, c = st.axes()
        ax = canon(ndim, f"{fn} kernel_fn")
        if c not in ax:
            fail(f"{fn} kernel_fn", "axis", f"contain the channel axis ({c}) for the "
                 "infinite-width limit to exist", repr(axis))
        if b in ax:
            fail(f"{fn} kernel_fn", "axis", f"not contain the batch axis {b} (not implemented)",
                 repr(axis))
        if not st.is_gaussian:
            raise KjaxError(f"{fn} kernel_fn: LayerNorm is only implemented for Gaussian inputs "
                            "(the output of a Dense / Conv layer).")
        v = K.variances(st.nngp, st.n_spatial, st.diag)
        # axis a of the activations is spatial axis number (its rank among the spatial axes) of v
        spatial_axes = [i for i in range(ndim) if i not in (b, c)]
        spatial = tuple(1 + spatial_axes.index(a) for a in ax if a not in (b, c))
        v = eps + v
        if st.mask is not None:
            m = K.spatial_mask(f"{fn} kernel_fn", st)  # NT: masks must not differ per channel
            if spatial:  # NT's masked mean of eps + var over the unmasked positions
                count = jnp.sum(~m, spatial, keepdims=True)
                v = jnp.sum(v, spatial, keepdims=True) / jnp.maximum(count, 1).astype(v.dtype)
        elif spatial:
            v = jnp.mean(v, spatial, keepdims=True)
        denom = jnp.sqrt(K.outer(v, diag=st.diag))
        return st.replace(nngp=st.nngp / denom, ntk=st.ntk / denom)

    return make_layer(init_fn, apply_fn, transform, "LayerNorm",
                      reqs={"batch_axis": batch_axis, "channel_axis": channel_axis})


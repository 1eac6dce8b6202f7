"""Pooling and reshaping: ``AvgPool``, ``SumPool``, ``GlobalAvgPool``, ``GlobalSumPool``, ``Flatten``.

``AvgPool`` and ``GlobalAvgPool`` mix spatial positions, so networks that contain them carry the
full position-position covariance ``[N, N, H, H', W, W']``; networks of affine and elementwise
layers ending in ``Flatten`` need only its spatial diagonal (neural-tangents' ``diagonal_spatial``).
Layout as in :mod:`kjax.ntk.stax`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp

from kjax._src.errors import KjaxError, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import (
    STAX,
    Layer,
    axis_arg,
    batch_channel_axes,
    canonical_padding,
    check_axes,
    check_spatial_rank,
    make_layer,
    single_branch,
    spatial_out_shape,
    tuple_of_ints,
)


def Flatten(batch_axis: int = 0, batch_axis_out: int = 0) -> Layer:
    r"""Flatten all non-batch axes: ``[n, *spatial, C] -> [n, prod(spatial) * C]``.

    In the infinite-channel limit the flattened covariance is the mean of the spatial diagonal,
    :math:`K' = \frac{1}{|S|} \sum_{x} K_{x x}` (and the same for :math:`\Theta`).

    Args:
      batch_axis: batch axis of the input.
      batch_axis_out: batch axis of the output, 0 (``[n, features]``) or 1 (``[features, n]``).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: ``batch_axis_out`` not 0 or 1, or (``kernel_fn``) a ``batch_axis`` that is not
        the batch axis of its input.

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
    fn = f"{STAX}.Flatten"
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    batch_axis_out = axis_arg(fn, "batch_axis_out", batch_axis_out)
    if batch_axis_out not in (0, 1):
        fail(fn, "batch_axis_out", "be 0 or 1", repr(batch_axis_out))

    def out_shape(shape, where):
        if not -len(shape) <= batch_axis < len(shape):
            fail(f"{fn} {where}", "batch_axis", f"be in [-{len(shape)}, {len(shape)}) for inputs "
                 f"of rank {len(shape)}", repr(batch_axis))
        n = shape[batch_axis]
        rest = math.prod(shape) // n if n else math.prod(
            d for i, d in enumerate(shape) if i != batch_axis % len(shape))
        return (n, rest) if batch_axis_out == 0 else (rest, n)

    def init_fn(rng, input_shape):
        return out_shape(tuple(input_shape), "init_fn"), ()

    def apply_fn(params, inputs, **kwargs):
        shape = out_shape(inputs.shape, "apply_fn")
        return jnp.moveaxis(inputs, batch_axis, -batch_axis_out).reshape(shape)

    def diag_mean(mat, diag):
        if diag:
            return jnp.mean(mat, axis=tuple(range(2, mat.ndim)))
        while mat.ndim > 2:
            mat = jnp.trace(mat, axis1=-2, axis2=-1) / mat.shape[-1]
        return mat

    def transform(st):
        st = single_branch(fn, st)
        check_axes(f"{fn} kernel_fn", st, batch_axis, None)
        flat1 = (st.shape1[0], math.prod(st.shape1[1:]))
        flat2 = (st.shape2[0], math.prod(st.shape2[1:]))
        return st.replace(nngp=diag_mean(st.nngp, st.diag), ntk=diag_mean(st.ntk, st.diag),
                          is_gaussian=False, diag=False, shape1=flat1, shape2=flat2,
                          batch_axis=batch_axis_out, channel_axis=1 - batch_axis_out)

    def mask_fn(mask, input_shape):
        mask = jnp.broadcast_to(mask, tuple(input_shape))
        return jnp.moveaxis(mask, batch_axis, -batch_axis_out).reshape(
            out_shape(mask.shape, "kernel_fn"))

    return make_layer(init_fn, apply_fn, transform, "Flatten",
                      reqs={"batch_axis": batch_axis, "_reset": True}, mask_fn=mask_fn)


def _global_pool(name: str, batch_axis: int, channel_axis: int, summed: bool) -> Layer:
    fn = f"{STAX}.{name}"
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    channel_axis = axis_arg(fn, "channel_axis", channel_axis)

    def axes(nd, where):
        b, c = batch_channel_axes(f"{fn} {where}", batch_axis, channel_axis, nd)
        return b, c

    def out_shape(shape, where):
        b, c = axes(len(shape), where)
        return (shape[b], shape[c]) if b < c else (shape[c], shape[b])

    def init_fn(rng, input_shape):
        return out_shape(tuple(input_shape), "init_fn"), ()

    def apply_fn(params, inputs, mask=None, **kwargs):
        b, c = axes(inputs.ndim, "apply_fn")
        spatial = tuple(i for i in range(inputs.ndim) if i not in (b, c))
        if summed or mask is None:
            return (jnp.sum if summed else jnp.mean)(inputs, axis=spatial)
        # NT's mean_and_var: the mean over the unmasked positions (inputs are zero where masked)
        unmasked = jnp.sum(~jnp.broadcast_to(mask, inputs.shape), axis=spatial)
        return jnp.sum(inputs, axis=spatial) / jnp.maximum(unmasked, 1).astype(inputs.dtype)

    def transform(st):
        st = single_branch(fn, st)
        check_axes(f"{fn} kernel_fn", st, batch_axis, channel_axis)
        axes_k = tuple(range(2, st.nngp.ndim))
        scale = float(math.prod(st.shape1[1:-1])) ** 2 if summed else 1.0
        if st.diag:  # only reachable with an explicit diagonal_spatial=True, refused before
            raise KjaxError(f"{fn} kernel_fn: needs the full spatial covariance.")
        b, c = st.axes()
        if st.mask is not None and not summed:
            # the kernels are zero between masked positions (re-masked before): average over
            # the pairs of unmasked positions
            pairs = ~K.pair_mask(K.spatial_mask(f"{fn} kernel_fn", st), False)
            count = jnp.maximum(jnp.sum(pairs, axes_k), 1).astype(st.nngp.dtype)
            return st.replace(nngp=jnp.sum(st.nngp, axes_k) / count,
                              ntk=jnp.sum(st.ntk, axes_k) / count,
                              shape1=(st.shape1[0], st.shape1[-1]),
                              shape2=(st.shape2[0], st.shape2[-1]),
                              batch_axis=0 if b < c else 1, channel_axis=1 if b < c else 0)
        return st.replace(nngp=scale * jnp.mean(st.nngp, axes_k), ntk=scale * jnp.mean(st.ntk, axes_k),
                          shape1=(st.shape1[0], st.shape1[-1]), shape2=(st.shape2[0], st.shape2[-1]),
                          batch_axis=0 if b < c else 1, channel_axis=1 if b < c else 0)

    def mask_fn(mask, input_shape):
        b, c = axes(mask.ndim, "kernel_fn")
        _check_mask_channels(fn, mask, c)
        return jnp.all(mask, axis=tuple(i for i in range(mask.ndim) if i not in (b, c)))

    return make_layer(init_fn, apply_fn, transform, name, needs_full=True,
                      reqs={"batch_axis": batch_axis, "channel_axis": channel_axis, "_reset": True},
                      mask_fn=mask_fn)


def GlobalAvgPool(batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    r"""Average over all spatial axes: ``[n, *spatial, C] -> [n, C]``.

    The kernels average over all pairs of positions, :math:`K' = \frac{1}{|S|^2}\sum_{x, x'}
    K_{x x'}`.

    Args:
      batch_axis: batch axis of the input.
      channel_axis: channel axis of the input; every other axis is pooled. The output keeps the
        batch and channel axes in their order.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: equal or out-of-range axes, or (``kernel_fn``) axes that differ from those of
        the layers before it.

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
    return _global_pool("GlobalAvgPool", batch_axis, channel_axis, summed=False)


def GlobalSumPool(batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    r"""Sum over all spatial axes: ``[n, *spatial, C] -> [n, C]``.

    The kernels sum over all pairs of positions, :math:`K' = \sum_{x, x'} K_{x x'}`.

    Args:
      batch_axis: batch axis of the input.
      channel_axis: channel axis of the input; every other axis is summed.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: equal or out-of-range axes, or (``kernel_fn``) axes that differ from those of
        the layers before it.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.GlobalSumPool()
      >>> float(apply_fn((), jnp.ones((2, 3, 4)))[0, 0])
      3.0

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    return _global_pool("GlobalSumPool", batch_axis, channel_axis, summed=True)


def _pool(name: str, window_shape, strides, padding, normalize_edges, batch_axis, channel_axis,
          summed: bool) -> Layer:
    fn = f"{STAX}.{name}"
    window_shape = tuple_of_ints(fn, "window_shape", tuple(window_shape))
    nsp = len(window_shape)
    strides = (1,) * nsp if strides is None else tuple_of_ints(fn, "strides", strides, nsp)
    padding = canonical_padding(fn, padding)
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    channel_axis = axis_arg(fn, "channel_axis", channel_axis)
    scale = float(math.prod(window_shape)) if summed else 1.0

    def canon_shape(shape, where):
        nd = len(shape)
        check_spatial_rank(f"{fn} {where}", "input_shape" if where == "init_fn" else "inputs",
                           tuple(shape), nsp, ("window_shape", window_shape))
        for arg, a in (("batch_axis", batch_axis), ("channel_axis", channel_axis)):
            if not -nd <= a < nd:
                fail(f"{fn} {where}", arg, f"be in [-{nd}, {nd}) for inputs of rank {nd}", repr(a))
        if batch_axis % nd == channel_axis % nd:
            fail(f"{fn} {where}", "channel_axis", "differ from `batch_axis`", repr(channel_axis))
        return K.canonical_shape(tuple(shape), batch_axis, channel_axis)

    def out_shape(shape, where):
        spatial = spatial_out_shape(f"{fn} {where}", "window_shape", shape, window_shape, strides,
                                    padding)
        return (shape[0], *spatial, shape[-1])

    def init_fn(rng, input_shape):
        shape = out_shape(canon_shape(input_shape, "init_fn"), "init_fn")
        return K.logical_shape(shape, batch_axis, channel_axis), ()

    def apply_fn(params, inputs, **kwargs):
        out_shape(canon_shape(inputs.shape, "apply_fn"), "apply_fn")
        x = K.to_canonical(inputs, batch_axis, channel_axis)
        for d in range(nsp):
            x = K.pool_axis(x, 1 + d, window_shape[d], strides[d], padding, normalize_edges)
        return K.from_canonical(scale * x if summed else x, batch_axis, channel_axis)

    def pool(mat):
        for d in range(nsp):
            for ax in (2 + 2 * d, 3 + 2 * d):
                mat = K.pool_axis(mat, ax, window_shape[d], strides[d], padding, normalize_edges)
        return scale**2 * mat if summed else mat

    def transform(st):
        st = single_branch(fn, st)
        check_spatial_rank(f"{fn} kernel_fn", "x1", st.shape1, nsp,
                           ("window_shape", window_shape))
        check_axes(f"{fn} kernel_fn", st, batch_axis, channel_axis)
        shape1, shape2 = out_shape(st.shape1, "kernel_fn"), out_shape(st.shape2, "kernel_fn")
        return st.replace(nngp=pool(st.nngp), ntk=pool(st.ntk), shape1=shape1, shape2=shape2)

    def mask_fn(mask, input_shape):
        nd = mask.ndim
        _check_mask_channels(fn, mask, channel_axis % nd)
        spatial = tuple(i for i in range(nd) if i not in (batch_axis % nd, channel_axis % nd))
        m = jnp.broadcast_to(mask, tuple(d if i in spatial else mask.shape[i]
                                         for i, d in enumerate(input_shape)))
        return K.pool_mask(m, window_shape, strides, padding, spatial)

    return make_layer(init_fn, apply_fn, transform, f"{name}({window_shape})", needs_full=True,
                      reqs={"batch_axis": batch_axis, "channel_axis": channel_axis},
                      mask_fn=mask_fn, remask=True)


def _check_mask_channels(fn: str, mask, channel_axis: int) -> None:
    if mask.shape[channel_axis] != 1:
        raise K.MaskingNotImplementedError(
            f"{fn}: masks that differ between channels (mask shape {mask.shape}) are not "
            "supported by pooling layers, as in neural-tangents: put a Dense / Conv layer before "
            "the pooling, which masks a position when all its channels are masked.")


def AvgPool(window_shape: Sequence[int], strides: Sequence[int] | None = None,
            padding: str = "VALID", normalize_edges: bool = False, batch_axis: int = 0,
            channel_axis: int = -1) -> Layer:
    r"""Average pooling over the spatial axes of ``[n, *spatial, C]``.

    Both positions of a covariance entry are pooled independently:
    :math:`K'_{x x'} = \frac{1}{|w|^2} \sum_{k, k' \in w} K_{s x + k,\; s x' + k'}`.

    Args:
      window_shape: spatial window, e.g. ``(2, 2)``.
      strides: spatial strides; default ones (NT's default).
      padding: ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"`` (or a :class:`Padding`).
      normalize_edges: with ``"SAME"``, divide by the number of real (unpadded) entries.
      batch_axis: batch axis of the input.
      channel_axis: channel axis of the input; the other axes are the spatial ones, in order.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: inputs whose rank does not match ``window_shape``, a bad ``padding``, a
        ``"VALID"`` window larger than its input, whose output would be empty, or bad axes.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.AvgPool((2,), strides=(2,))
      >>> apply_fn((), jnp.arange(4.0).reshape(1, 4, 1))[0, :, 0].tolist()
      [0.5, 2.5]

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    return _pool("AvgPool", window_shape, strides, padding, normalize_edges, batch_axis,
                 channel_axis, summed=False)


def SumPool(window_shape: Sequence[int], strides: Sequence[int] | None = None,
            padding: str = "VALID", batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    r"""Sum pooling over the spatial axes of ``[n, *spatial, C]``: :func:`AvgPool` times the window
    size :math:`|w|`, so the kernels are :math:`|w|^2` times those of ``AvgPool``.

    Args:
      window_shape: spatial window, e.g. ``(2, 2)``.
      strides: spatial strides; default ones.
      padding: ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"`` (or a :class:`Padding`).
      batch_axis: batch axis of the input.
      channel_axis: channel axis of the input.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: as :func:`AvgPool`.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.SumPool((2,), strides=(2,))
      >>> apply_fn((), jnp.arange(4.0).reshape(1, 4, 1))[0, :, 0].tolist()
      [1.0, 5.0]

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    return _pool("SumPool", window_shape, strides, padding, False, batch_axis, channel_axis,
                 summed=True)

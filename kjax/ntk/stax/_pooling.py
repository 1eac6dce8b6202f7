"""Pooling and reshaping: ``AvgPool``, ``GlobalAvgPool`` and ``Flatten``.

``AvgPool`` and ``GlobalAvgPool`` mix spatial positions, so networks that contain them carry the
full position-position covariance ``[N, N, H, H', W, W']``; networks of affine and elementwise
layers ending in ``Flatten`` need only its spatial diagonal (neural-tangents' ``diagonal_spatial``).
Layout as in :mod:`kjax.ntk.stax`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp

from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import (
    STAX,
    Layer,
    canonical_padding,
    check_spatial_rank,
    make_layer,
    single_branch,
    spatial_out_shape,
    tuple_of_ints,
)


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
        st = single_branch(f"{STAX}.Flatten", st)
        return st.replace(nngp=diag_mean(st.nngp, st.diag), ntk=diag_mean(st.ntk, st.diag),
                          is_gaussian=False, diag=False,
                          shape1=out_shape(st.shape1), shape2=out_shape(st.shape2))

    return make_layer(init_fn, apply_fn, transform, "Flatten")


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
        st = single_branch(f"{STAX}.GlobalAvgPool", st)
        axes = tuple(range(2, st.nngp.ndim))
        return st.replace(nngp=jnp.mean(st.nngp, axes), ntk=jnp.mean(st.ntk, axes),
                          shape1=out_shape(st.shape1), shape2=out_shape(st.shape2))

    return make_layer(init_fn, apply_fn, transform, "GlobalAvgPool", needs_full=True)


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
      KjaxError: inputs whose rank does not match ``window_shape``, a bad ``padding``, or a
        ``"VALID"`` window larger than its input, whose output would be empty.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, apply_fn, _ = stax.AvgPool((2,), strides=(2,))
      >>> apply_fn((), jnp.arange(4.0).reshape(1, 4, 1))[0, :, 0].tolist()
      [0.5, 2.5]

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{STAX}.AvgPool"
    window_shape = tuple_of_ints(fn, "window_shape", tuple(window_shape))
    nsp = len(window_shape)
    strides = (1,) * nsp if strides is None else tuple_of_ints(fn, "strides", strides, nsp)
    padding = canonical_padding(fn, padding)

    def out_shape(shape, where):
        spatial = spatial_out_shape(f"{fn} {where}", "window_shape", shape, window_shape, strides,
                                    padding)
        return (shape[0], *spatial, shape[-1])

    def init_fn(rng, input_shape):
        check_spatial_rank(f"{fn} init_fn", "input_shape", tuple(input_shape), nsp,
                           ("window_shape", window_shape))
        return out_shape(tuple(input_shape), "init_fn"), ()

    def apply_fn(params, inputs, **kwargs):
        check_spatial_rank(f"{fn} apply_fn", "inputs", inputs.shape, nsp,
                           ("window_shape", window_shape))
        out_shape(inputs.shape, "apply_fn")
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
        st = single_branch(fn, st)
        check_spatial_rank(f"{fn} kernel_fn", "x1", st.shape1, nsp,
                           ("window_shape", window_shape))
        shape1, shape2 = out_shape(st.shape1, "kernel_fn"), out_shape(st.shape2, "kernel_fn")
        return st.replace(nngp=pool(st.nngp), ntk=pool(st.ntk), shape1=shape1, shape2=shape2)

    return make_layer(init_fn, apply_fn, transform, f"AvgPool({window_shape})", needs_full=True)


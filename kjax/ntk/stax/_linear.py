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

import jax
import jax.numpy as jnp

from kjax._src.errors import check_int, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import (
    STAX,
    Layer,
    axis_arg,
    canonical_padding,
    check_axes,
    check_parameterization,
    check_spatial_rank,
    check_std,
    make_layer,
    single_branch,
    spatial_out_shape,
    tuple_of_ints,
)


def Dense(out_dim: int, W_std: float = 1.0, b_std: float | None = None, batch_axis: int = 0,
          channel_axis: int = -1, parameterization: str = "ntk", s: tuple[int, int] = (1, 1)
          ) -> Layer:
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
      batch_axis: batch axis of the inputs.
      channel_axis: the axis the layer acts on (the channels, taken to infinity); it must differ
        from ``batch_axis``.
      parameterization: ``"ntk"`` or ``"standard"``.
      s: width scalings ``(s_in, s_out)`` of the standard parameterisation (NT's ``s``).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``: ``init_fn(key, input_shape) -> (output_shape, (W, b))``,
      ``apply_fn(params, x) -> y``, ``kernel_fn(x1, x2=None, get=None)``.

    Raises:
      KjaxError: negative ``W_std`` / ``b_std``, unknown ``parameterization``, equal or non-int
        axes, (in ``apply_fn``) a ``W`` whose input dimension does not match ``x``'s channels, or
        (in ``kernel_fn``) axes that differ from those of the layers before it.

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
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    channel_axis = axis_arg(fn, "channel_axis", channel_axis)
    width_out = out_dim if param == "ntk" else out_dim * s[1]

    def axes(nd, where):
        for arg, a in (("batch_axis", batch_axis), ("channel_axis", channel_axis)):
            if not -nd <= a < nd:
                fail(f"{fn} {where}", arg, f"be in [-{nd}, {nd}) for inputs of rank {nd}", repr(a))
        if batch_axis % nd == channel_axis % nd:
            fail(f"{fn} {where}", "channel_axis", "differ from `batch_axis`", repr(channel_axis))
        return batch_axis % nd, channel_axis % nd

    def init_fn(rng, input_shape):
        input_shape = tuple(input_shape)
        _, c = axes(len(input_shape), "init_fn")
        out_shape = input_shape[:c] + (width_out,) + input_shape[c + 1:]
        k1, k2 = jax.random.split(rng)
        W = jax.random.normal(k1, (input_shape[c], width_out))
        b_shape = [1] * len(input_shape)
        b_shape[c] = width_out
        b = None if b_std is None else jax.random.normal(k2, tuple(b_shape))
        if param == "standard":
            W = W * (W_std / (input_shape[c] / s[0]) ** 0.5)
            b = None if b is None else b * b_std
        return out_shape, (W, b)

    def apply_fn(params, inputs, **kwargs):
        W, b = params
        _, c = axes(inputs.ndim, "apply_fn")
        if W.shape[0] != inputs.shape[c]:
            fail(f"{fn} apply_fn", "inputs", f"have {W.shape[0]} channels (the rows of W)",
                 f"shape {inputs.shape}")
        prod = jnp.moveaxis(jnp.tensordot(inputs, W, (c, 0)), -1, c)
        if param == "ntk":
            out = W_std / inputs.shape[c] ** 0.5 * prod
            if b is not None:
                out = out + b_std * b
        else:
            out = prod / s[0] ** 0.5
            if b is not None:
                out = out + b
        return out

    def transform(st):
        st = single_branch(fn, st)
        check_axes(f"{fn} kernel_fn", st, batch_axis, channel_axis)
        nngp, ntk = st.nngp, st.ntk
        new_nngp = W_std**2 * nngp + (0.0 if b_std is None else b_std**2)
        if param == "ntk":
            new_ntk = new_nngp + W_std**2 * ntk
        else:
            new_ntk = st.shape1[-1] / s[0] * nngp + W_std**2 * ntk + (0.0 if b_std is None else 1.0)
        return st.replace(nngp=new_nngp, ntk=new_ntk, is_gaussian=True,
                          shape1=st.shape1[:-1] + (width_out,), shape2=st.shape2[:-1] + (width_out,))

    def mask_fn(mask, input_shape):
        # one affine map per position: a position is masked iff all its channels are
        return jnp.all(mask, axis=channel_axis, keepdims=True)

    return make_layer(init_fn, apply_fn, transform, f"Dense({out_dim})",
                      reqs={"batch_axis": batch_axis, "channel_axis": channel_axis},
                      mask_fn=mask_fn, remask=True)



def Conv(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
         padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
         dimension_numbers: tuple[str, str, str] | None = None, parameterization: str = "ntk",
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
      padding: ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"`` (or a :class:`Padding`).
      W_std: weight standard deviation (>= 0).
      b_std: bias standard deviation (>= 0) or None.
      dimension_numbers: ``(lhs, rhs, out)`` layout strings as in
        ``jax.lax.conv_general_dilated``, e.g. ``("NCHW", "OIHW", "NCHW")``; None is
        ``("NHWC", "HWIO", "NHWC")``. ``filter_shape`` and ``strides`` follow the spatial order of
        ``rhs``; ``lhs``' ``N`` / ``C`` are the input's batch and channel axes, ``out``'s those
        of the output, and the kernels' spatial axes follow the output's spatial order (``out``
        may reorder them, as in neural-tangents).
      parameterization: ``"ntk"`` or ``"standard"``.
      s: width scalings of the standard parameterisation.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; params are ``(W: [*filter_shape, C_in, out_chan],
      b: [1, ..., 1, out_chan] or None)``.

    Raises:
      KjaxError: inputs of the wrong rank for ``filter_shape``, negative ``W_std``, a bad
        ``padding`` / ``strides`` / ``dimension_numbers``, or (in ``init_fn``,
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
    return _conv("Conv", True, out_chan, filter_shape, strides, padding, W_std, b_std,
                 dimension_numbers, parameterization, s)


def ConvLocal(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
              padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
              dimension_numbers: tuple[str, str, str] | None = None, parameterization: str = "ntk",
              s: tuple[int, int] = (1, 1)) -> Layer:
    r"""Locally connected layer: a convolution whose filter (and bias) differ at every position.

    Without weight sharing, different output positions are independent, so the kernels keep only
    the spatial diagonal: :math:`K'_{x x'} = \delta_{x x'} \big(\frac{\sigma_W^2}{|w|}
    \sum_{k \in w} K_{s x + k,\; s x + k} + \sigma_b^2\big)`, which equals :func:`Conv`'s
    on the diagonal; networks without pooling give the same kernels as with :func:`Conv`.

    Args:
      out_chan: output channels of the finite network.
      filter_shape: spatial filter shape.
      strides: spatial strides; default ones.
      padding: ``"VALID"``, ``"SAME"`` or ``"CIRCULAR"`` (or a :class:`Padding`).
      W_std: weight standard deviation (>= 0).
      b_std: bias standard deviation (>= 0) or None.
      dimension_numbers: as in :func:`Conv`.
      parameterization: ``"ntk"`` or ``"standard"``.
      s: width scalings of the standard parameterisation.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; params are ``(W: [out_chan, C_in * prod(filter_shape),
      *out_spatial] in rhs's order, b: [1, *out_spatial, out_chan] or None)`` (NT's layout, as
      ``jax.lax.conv_general_dilated_local`` takes them).

    Raises:
      KjaxError: as :func:`Conv`.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.ConvLocal(8, (3,), padding="SAME"), stax.Relu())
      >>> kernel_fn(jnp.ones((2, 5, 3)), get="nngp").shape
      (2, 2, 5, 5)

    References:
      Novak et al. Bayesian Deep Convolutional Networks with Many Channels are Gaussian
      Processes. ICLR 2019 (locally connected networks).
    """
    return _conv("ConvLocal", False, out_chan, filter_shape, strides, padding, W_std, b_std,
                 dimension_numbers, parameterization, s)


def ConvTranspose(out_chan: int, filter_shape: Sequence[int], strides: Sequence[int] | None = None,
                  padding: str = "VALID", W_std: float = 1.0, b_std: float | None = None,
                  dimension_numbers: tuple[str, str, str] | None = None,
                  parameterization: str = "ntk", s: tuple[int, int] = (1, 1)) -> Layer:
    r"""Transposed convolution (``jax.lax.conv_transpose``): upsamples by ``strides``.

    Each output position gathers the input positions and filter taps that reach it,
    :math:`y_p = \frac{\sigma_W}{\sqrt{C |w|}} \sum_{i, k:\, s i + w - 1 - k = p} W_k x_i`, so with
    shared taps the kernels map as :math:`K'_{p p'} = \frac{\sigma_W^2}{|w|} \sum_{k}
    \sum_{i, i':\, s i + k = p,\, s i' + k = p'} K_{i i'} + \sigma_b^2` (the transposed
    convolution of each covariance pair with the identity filter ``eye(w) / |w|``).
    ``"CIRCULAR"`` is neural-tangents' periodic transposed convolution: the ``"VALID"`` output
    (length :math:`M = L s + \max(w - s, 0)`) is folded onto :math:`L s` positions,
    :math:`y_p = \sum_{j \equiv p + \lfloor (M - L s) / 2 \rfloor \pmod{L s}} y^{valid}_j`,
    and the kernels fold both axes of each pair the same way.

    Args:
      out_chan: output channels of the finite network.
      filter_shape: spatial filter shape.
      strides: spatial strides (the upsampling factors); default ones.
      padding: ``"VALID"`` (output ``L s + max(w - s, 0)``), ``"SAME"`` or ``"CIRCULAR"``
        (output ``L s``).
      W_std: weight standard deviation (>= 0).
      b_std: bias standard deviation (>= 0) or None.
      dimension_numbers: as in :func:`Conv`.
      parameterization: ``"ntk"`` or ``"standard"``.
      s: width scalings of the standard parameterisation.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; params as :func:`Conv`'s.

    Raises:
      KjaxError: as :func:`Conv`.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.ConvTranspose(4, (3,), strides=(2,))
      >>> kernel_fn(jnp.ones((2, 4, 3)), get="nngp").shape
      (2, 2, 9, 9)
      >>> _, _, kernel_fn = stax.ConvTranspose(4, (3,), strides=(2,), padding="CIRCULAR")
      >>> kernel_fn(jnp.ones((2, 4, 3)), get="nngp").shape
      (2, 2, 8, 8)

    References:
      Novak et al. Neural Tangents. ICLR 2020 (ConvTranspose layer).
    """
    return _conv("ConvTranspose", True, out_chan, filter_shape, strides, padding, W_std, b_std,
                 dimension_numbers, parameterization, s, transpose=True)


def _conv(name, shared, out_chan, filter_shape, strides, padding, W_std, b_std, dimension_numbers,
          parameterization, s, transpose=False) -> Layer:
    fn = f"{STAX}.{name}"
    out_chan = check_int(fn, "out_chan", out_chan, minimum=1)
    filter_shape = tuple(filter_shape)  # () is a convolution over no spatial axes (NT allows it)
    filter_shape = tuple_of_ints(fn, "filter_shape", filter_shape) if filter_shape else ()
    nsp = len(filter_shape)
    if strides is None or (nsp == 0 and isinstance(strides, tuple | list) and not strides):
        strides = (1,) * nsp  # () is the strides of a convolution over no spatial axes
    else:
        strides = tuple_of_ints(fn, "strides", strides, nsp)
    padding = canonical_padding(fn, padding)
    check_std(fn, W_std, b_std)
    param = check_parameterization(fn, parameterization)
    lhs, rhs, out = conv_dimension_numbers(fn, dimension_numbers, nsp)
    width_out = out_chan if param == "ntk" else out_chan * s[1]
    dn = (lhs, rhs, out)
    fsize = math.prod(filter_shape)
    b_ax, c_ax = lhs.index("N"), lhs.index("C")
    b_out, c_out = out.index("N"), out.index("C")
    rhs_sp = [c for c in rhs if c not in "IO"]
    lhs_sp = [c for c in lhs if c not in "NC"]
    # filter sizes and strides in the order of the activations' spatial axes
    f_k = tuple(filter_shape[rhs_sp.index(c)] for c in lhs_sp)
    s_k = tuple(strides[rhs_sp.index(c)] for c in lhs_sp)
    # out's spatial axis d is lhs's spatial axis perm[d] (out may reorder them, as NT allows:
    # the kernels' spatial axes are permuted the same way, NT's ``Kernel.transpose``)
    perm = tuple(lhs_sp.index(c) for c in out if c not in "NC")

    def out_shape_of(shape, where):
        if transpose:  # lax.conv_transpose's VALID length is L s + max(w - s, 0)
            spatial = tuple(L * st if padding != "VALID" else L * st + max(w - st, 0)
                            for L, w, st in zip(shape[1:-1], f_k, s_k, strict=True))
        else:
            spatial = spatial_out_shape(f"{fn} {where}", "filter_shape", shape, f_k, s_k, padding)
        return (shape[0], *(spatial[p] for p in perm), width_out)

    def canon(shape, where, arg):
        check_spatial_rank(f"{fn} {where}", arg, tuple(shape), nsp, ("filter_shape", filter_shape))
        return K.canonical_shape(tuple(shape), b_ax, c_ax)

    def init_fn(rng, input_shape):
        input_shape = tuple(input_shape)
        shape = out_shape_of(canon(input_shape, "init_fn", "input_shape"), "init_fn")
        c_in = input_shape[c_ax]
        k1, k2 = jax.random.split(rng)
        logical = K.logical_shape(shape, b_out, c_out)
        if shared:
            sizes = iter(filter_shape)
            w_shape = tuple(width_out if c == "O" else c_in if c == "I" else next(sizes)
                            for c in rhs)
            b_shape = tuple(width_out if c == "C" else 1 for c in out)
        else:
            w_shape = tuple(width_out if c == "O" else c_in * fsize if c == "I"
                            else logical[out.index(c)] for c in rhs)
            b_shape = tuple(1 if c == "N" else logical[i] for i, c in enumerate(out))
        W = jax.random.normal(k1, w_shape)
        b = None if b_std is None else jax.random.normal(k2, b_shape)
        if param == "standard":
            W = W * (W_std / (c_in * fsize / s[0]) ** 0.5)
            b = None if b is None else b * b_std
        return logical, (W, b)

    def apply_fn(params, inputs, **kwargs):
        W, b = params
        shape = canon(inputs.shape, "apply_fn", "inputs")
        out_shape_of(shape, "apply_fn")
        c_in = inputs.shape[c_ax]
        w_in = W.shape[rhs.index("I")] // (1 if shared else fsize)
        if w_in != c_in:
            fail(f"{fn} apply_fn", "inputs", f"have {w_in} channels (W's input channels)",
                 f"shape {inputs.shape}")
        x, pad = inputs, padding
        if padding == "CIRCULAR" and transpose:
            pad = "VALID"  # NT: VALID transposed convolution, then fold (below)
        elif padding == "CIRCULAR":
            widths = [(0, 0)] * inputs.ndim
            for i, c in enumerate(lhs_sp):
                ax = lhs.index(c)
                widths[ax] = K.same_padding(inputs.shape[ax], f_k[i], s_k[i])
            x, pad = jnp.pad(inputs, widths, mode="wrap"), "VALID"
        if transpose:
            y = jax.lax.conv_transpose(x, W, strides, pad, dimension_numbers=dn,
                                       precision=jax.lax.Precision.HIGHEST)
            if padding == "CIRCULAR":
                for i, c in enumerate(lhs_sp):
                    y = _circular_fold(y, out.index(c), inputs.shape[lhs.index(c)] * s_k[i])
        elif shared:
            y = jax.lax.conv_general_dilated(x, W, strides, pad, dimension_numbers=dn,
                                             precision=jax.lax.Precision.HIGHEST)
        else:
            y = jax.lax.conv_general_dilated_local(x, W, strides, pad, filter_shape,
                                                   dimension_numbers=dn,
                                                   precision=jax.lax.Precision.HIGHEST)
        if param == "ntk":
            y = W_std / (c_in * fsize) ** 0.5 * y
            if b is not None:
                y = y + b_std * b
        else:
            y = y / s[0] ** 0.5
            if b is not None:
                y = y + b
        return y

    def conv(mat, diag):
        if transpose:
            # CIRCULAR: the VALID transposed convolution, then each axis folded onto L s
            # positions (exact on the diagonal too: outputs L s apart share no tap)
            pad = "VALID" if padding == "CIRCULAR" else padding
            for d in range(nsp):
                w = f_k[d]
                axes = (2 + d,) if diag else (2 + 2 * d, 3 + 2 * d)
                n_out = mat.shape[axes[0]] * s_k[d]
                if diag:  # same tap on both sides: a window sum of the diagonal
                    mat = _conv_transpose_axes(mat, axes, jnp.ones((w,), mat.dtype) / w,
                                               s_k[d], pad)
                else:
                    mat = _conv_transpose_axes(mat, axes, jnp.eye(w, dtype=mat.dtype) / w,
                                               s_k[d], pad)
                if padding == "CIRCULAR":
                    for ax in axes:
                        mat = _circular_fold(mat, ax, n_out)
            return mat
        if not shared and not diag:  # independent positions: only the diagonal survives
            return _embed_diagonal(conv(_spatial_diagonal(mat, nsp), True))
        for d in range(nsp):
            if diag:  # on the spatial diagonal the filter is a window average of one axis
                mat = K.pool_axis(mat, 2 + d, f_k[d], s_k[d], padding, False)
            else:
                mat = K.conv_pair(mat, 2 + 2 * d, f_k[d], s_k[d], padding)
        return mat

    def to_out_order(mat, diag):
        """The kernel's spatial axes (pairs, or singles with ``diag``) in ``out``'s order."""
        if perm == tuple(range(nsp)):
            return mat
        sp = [(2 + p,) if diag else (2 + 2 * p, 3 + 2 * p) for p in perm]
        return jnp.transpose(mat, (0, 1, *(a for pair in sp for a in pair)))

    def shift(mat, value, diag):
        """``mat + value`` on the positions a bias reaches (all if shared, else the diagonal)."""
        if shared or diag:
            return mat + value
        ones = _embed_diagonal(jnp.ones((1, 1) + mat.shape[2::2], mat.dtype))
        return mat + value * ones

    def transform(st):
        st = single_branch(fn, st)
        check_spatial_rank(f"{fn} kernel_fn", "x1", st.shape1, nsp,
                           ("filter_shape", filter_shape))
        check_axes(f"{fn} kernel_fn", st, b_ax, c_ax)
        shape1, shape2 = out_shape_of(st.shape1, "kernel_fn"), out_shape_of(st.shape2, "kernel_fn")
        b2 = 0.0 if b_std is None else b_std**2
        nngp_c = to_out_order(conv(st.nngp, st.diag), st.diag)
        ntk_c = to_out_order(conv(st.ntk, st.diag), st.diag)
        nngp = shift(W_std**2 * nngp_c, b2, st.diag)
        if param == "ntk":
            ntk = W_std**2 * ntk_c + nngp
        else:
            fan_in = st.shape1[-1] * fsize / s[0]
            ntk = shift(fan_in * nngp_c + W_std**2 * ntk_c, 0.0 if b_std is None else 1.0,
                        st.diag)
        return st.replace(nngp=nngp, ntk=ntk, is_gaussian=True, shape1=shape1, shape2=shape2,
                          batch_axis=b_out, channel_axis=c_out)

    def mask_fn(mask, input_shape):
        # NT's Conv mask_fn: a position is masked iff all its channels are; an output position
        # takes the mask of its window's centre (transposed: masked if any masked input reaches it)
        mask = jnp.all(mask, axis=c_ax, keepdims=True)
        m = K.to_canonical(jnp.broadcast_to(mask, tuple(
            1 if i == c_ax else d for i, d in enumerate(input_shape))), b_ax, c_ax)
        if transpose:
            sp = "ABDEFGHJKLM"[:nsp]
            ones = jnp.ones(f_k + (1, 1), jnp.float32)
            m = jax.lax.conv_transpose(m.astype(jnp.float32), ones, s_k,
                                       "SAME" if padding == "CIRCULAR" else padding,
                                       dimension_numbers=("N" + sp + "C", sp + "IO",
                                                          "N" + sp + "C")) > 0
        else:
            m = K.pool_mask(m, f_k, s_k, padding, tuple(range(1, 1 + nsp)))
        m = jnp.transpose(m, (0, *(1 + p for p in perm), 1 + nsp))
        return K.from_canonical(m, b_out, c_out)

    return make_layer(init_fn, apply_fn, transform, f"{name}({out_chan}, {filter_shape})",
                      reqs={"batch_axis": b_ax, "channel_axis": c_ax, "_reset": True},
                      mask_fn=mask_fn, remask=True)


def _conv_transpose_axes(mat: jax.Array, axes: tuple[int, ...], filt: jax.Array, stride: int,
                         padding: str) -> jax.Array:
    """``jax.lax.conv_transpose`` of ``mat`` over ``axes`` (all other axes are batch) with the
    single-channel filter ``filt`` (one filter axis per entry of ``axes``) and ``stride``."""
    k = len(axes)
    moved = jnp.moveaxis(mat, axes, tuple(range(-k, 0)))
    lead = moved.shape[:-k]
    x = moved.reshape((-1,) + moved.shape[-k:] + (1,))
    sp = "ABDEFGHJKLM"[:k]
    y = jax.lax.conv_transpose(x, filt.reshape(filt.shape + (1, 1)), (stride,) * k, padding,
                               dimension_numbers=("N" + sp + "C", sp + "IO", "N" + sp + "C"),
                               precision=jax.lax.Precision.HIGHEST)
    y = y.reshape(lead + y.shape[1:-1])
    return jnp.moveaxis(y, tuple(range(-k, 0)), axes)


def _circular_fold(x: jax.Array, axis: int, n: int) -> jax.Array:
    """NT's ``_same_pad_for_filter_shape_transpose`` on one axis: the ``M >= n`` entries of a
    VALID transposed convolution summed onto ``n`` periodic positions, entry ``j`` onto
    ``(j - (M - n) // 2) mod n`` (the adjoint of circular padding)."""
    m = x.shape[axis]
    r = (-((m - n) // 2)) % n  # front zeros so that entry j lands on (j + r) mod n
    total = -(-(m + r) // n) * n
    widths = [(0, 0)] * x.ndim
    widths[axis] = (r, total - m - r)
    x = jnp.moveaxis(jnp.pad(x, widths), axis, -1)
    x = x.reshape(x.shape[:-1] + (total // n, n)).sum(axis=-2)
    return jnp.moveaxis(x, -1, axis)


def _spatial_diagonal(mat: jax.Array, nsp: int) -> jax.Array:
    """``[N, N, X, X', Y, Y'] -> [N, N, X, Y]``: the entries with equal positions."""
    for _ in range(nsp):
        mat = jnp.diagonal(mat, axis1=2, axis2=3)  # the diagonal goes last
    return mat


def _embed_diagonal(mat: jax.Array) -> jax.Array:
    """``[N, N, X, Y] -> [N, N, X, X', Y, Y']`` with zeros off the spatial diagonal."""
    out = mat.reshape(mat.shape[:2] + tuple(d for n in mat.shape[2:] for d in (n, 1)))
    for i, n in enumerate(mat.shape[2:]):
        shape = [1] * out.ndim
        shape[2 + 2 * i] = shape[3 + 2 * i] = n
        out = out * jnp.eye(n, dtype=mat.dtype).reshape(shape)
    return out


def conv_dimension_numbers(fn: str, dimension_numbers, nsp: int) -> tuple[str, str, str]:
    """``(lhs, rhs, out)`` layout strings, checked; None is NT's ``("NHWC", "HWIO", "NHWC")``."""
    if dimension_numbers is None:
        sp = "ABDEFGHJKLM"[:nsp]
        return "N" + sp + "C", sp + "IO", "N" + sp + "C"
    ok = isinstance(dimension_numbers, tuple | list) and len(dimension_numbers) == 3 and all(
        isinstance(d, str) for d in dimension_numbers)
    if ok:
        lhs, rhs, out = (str(d) for d in dimension_numbers)
        lsp = [c for c in lhs if c not in "NC"]
        ok = (len(lhs) == len(rhs) == len(out) == nsp + 2 and len(set(lhs)) == len(lhs)
              and "N" in lhs and "C" in lhs and "I" in rhs and "O" in rhs
              and sorted(lsp) == sorted(c for c in rhs if c not in "IO")
              and sorted(lhs) == sorted(out) and len(set(rhs)) == len(rhs))
    if not ok:
        fail(fn, "dimension_numbers", f"be None or (lhs, rhs, out) layout strings for {nsp} "
             "spatial axes, e.g. ('NCHW', 'OIHW', 'NCHW'): lhs / out with N, C and the spatial "
             "letters (in any order), rhs with I, O and the same spatial letters",
             repr(dimension_numbers))
    return lhs, rhs, out



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


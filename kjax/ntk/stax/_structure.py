"""Structural layers: ``Index`` (with its ``Slice`` helper) and ``Dropout``.

``Index`` selects examples and positions as NumPy indexing does (the covariance is indexed on both
positions of each spatial pair); ``Dropout`` in ``"train"`` mode scales the variance of every
activation by ``1 / rate`` in the infinite-width limit. Layout as in :mod:`kjax.ntk.stax`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxError, KjaxNotImplementedError, check_in, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import STAX, Layer, axis_arg, check_axes, make_layer, single_branch


class _Slice:
    """``Slice[1:10, :, ::-1]`` is ``(slice(1, 10), slice(None), slice(None, None, -1))``."""

    def __getitem__(self, idx: Any) -> Any:
        return idx

    def __repr__(self) -> str:
        return "kjax.ntk.stax.Slice"


#: Pass ``idx=stax.Slice[::2, :4, 0]`` to :func:`Index` (NT's helper: slices can't be written as
#: function arguments).
Slice = _Slice()


def _expand(fn: str, idx: Any, ndim: int) -> list:
    """``idx`` as one entry per axis (``Ellipsis`` expanded, missing trailing axes ``:``)."""
    items = list(idx) if isinstance(idx, tuple) else [idx]
    for it in items:
        if it is None or not (it is Ellipsis or isinstance(it, slice | int | np.integer)) or \
                isinstance(it, bool):
            fail(fn, "idx", "hold only ints, slices and one Ellipsis (build it with stax.Slice; "
                 "None / arrays are not supported)", repr(idx))
    if sum(it is Ellipsis for it in items) > 1:
        fail(fn, "idx", "hold at most one Ellipsis", repr(idx))
    if Ellipsis in items:
        i = items.index(Ellipsis)
        fill = ndim - (len(items) - 1)
        items = items[:i] + [slice(None)] * fill + items[i + 1:]
    if len(items) > ndim:
        fail(fn, "idx", f"index at most {ndim} axes (the rank of the input)", repr(idx))
    return items + [slice(None)] * (ndim - len(items))


def Index(idx: Any, batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    """Index the activations as ``x[idx]`` (NumPy basic indexing).

    The kernels are indexed alike: a slice of the batch axis selects examples of both ``x1`` and
    ``x2``; an index of a spatial axis selects positions on both axes of its covariance pair (an
    int removes the axis).

    Args:
      idx: the index, written with the :data:`Slice` helper, e.g. ``stax.Slice[::2, :4, 0]``:
        ints, slices and one ``...``.
      batch_axis: batch axis of the input.
      channel_axis: channel axis of the input.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``.

    Raises:
      KjaxError: an ``idx`` with other entries; (``kernel_fn``) an index of the channel axis
        other than ``:`` (its width is infinite), or an int on the batch axis (the kernels need
        it) -- these two are also ``NotImplementedError``s, as in neural-tangents --, or an index
        that leaves an axis empty.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Conv(8, (2,)), stax.Index(stax.Slice[:, 1:3]))
      >>> kernel_fn(jnp.ones((2, 6, 3)), get="nngp").shape
      (2, 2, 2, 2)

    References:
      Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{STAX}.Index"
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    channel_axis = axis_arg(fn, "channel_axis", channel_axis)
    _expand(fn, idx, 64)  # entry types

    def init_fn(rng, input_shape):
        return np.broadcast_to(np.zeros((), np.int8), tuple(input_shape))[idx].shape, ()

    def apply_fn(params, inputs, **kwargs):
        return inputs[idx]

    def transform(st):
        st = single_branch(fn, st)
        kfn = f"{fn} kernel_fn"
        check_axes(kfn, st, batch_axis, channel_axis)
        b, c = st.axes()
        nd = len(st.shape1)
        items = _expand(kfn, idx, nd)
        if items[c] != slice(None):
            fail(kfn, "idx", f"not index the channel axis {c} (its width is infinite): use ':'",
                 repr(idx), cls=KjaxNotImplementedError)
        if not isinstance(items[b], slice):
            fail(kfn, "idx", f"index the batch axis {b} with a slice (the kernels keep a batch "
                 "axis)", repr(idx), cls=KjaxNotImplementedError)
        spatial = [items[i] for i in range(nd) if i not in (b, c)]
        n1, n2 = st.shape1[0], st.shape2[0]
        rows1 = np.arange(n1)[items[b]]
        rows2 = np.arange(n2)[items[b]]
        sizes = [len(range(*s.indices(L))) if isinstance(s, slice) else 1
                 for s, L in zip(spatial, st.shape1[1:-1], strict=True)]
        if rows1.size == 0 or rows2.size == 0 or 0 in sizes:
            fail(kfn, "idx", f"leave every axis non-empty on inputs of shape "
                 f"{K.logical_shape(st.shape1, b, c)}", repr(idx))
        rows = np.concatenate([rows1, st.n1 + rows2]) if st.has_x2 else rows1
        nngp, ntk = st.nngp, st.ntk

        def take(m):
            m = jnp.take(jnp.take(m, rows, axis=0), rows, axis=1)
            for d in reversed(range(len(spatial))):
                ix = spatial[d]
                if isinstance(ix, slice) and ix == slice(None):
                    continue
                axes = (2 + d,) if st.diag else (2 + 2 * d, 3 + 2 * d)
                for ax in reversed(axes):
                    m = m[(slice(None),) * ax + (ix,)]
            return m

        kept = [isinstance(ix, slice) for ix in spatial]
        sp1 = [s for s, k in zip(sizes, kept, strict=True) if k]
        shape1 = (rows1.size, *sp1, st.shape1[-1])
        shape2 = (rows2.size, *sp1, st.shape2[-1])
        removed = [i for i in range(nd) if i not in (b, c) and not isinstance(items[i], slice)]
        nb = b - sum(i < b for i in removed)
        nc = c - sum(i < c for i in removed)
        mask = st.mask
        if mask is not None:  # NT's mask_fn, mask[idx], on the rows of x1 and of x2
            rows = np.concatenate([rows1, n1 + rows2]) if st.has_x2 else rows1
            mask = jnp.broadcast_to(mask, (st.nngp.shape[0], *st.shape1[1:-1], mask.shape[-1]))
            mask = mask[(rows, *spatial, slice(None))]
        return st.replace(nngp=take(nngp), ntk=take(ntk), n1=rows1.size, shape1=shape1,
                          shape2=shape2, batch_axis=nb, channel_axis=nc, mask=mask)

    def mask_fn(mask, input_shape):
        return jnp.broadcast_to(mask, tuple(
            d if i != channel_axis % len(input_shape) else mask.shape[i]
            for i, d in enumerate(input_shape)))[idx]

    return make_layer(init_fn, apply_fn, transform, f"Index({idx!r})",
                      reqs={"batch_axis": batch_axis, "channel_axis": channel_axis, "_reset": True},
                      mask_fn=mask_fn, kernel_mask=False)


def Dropout(rate: float, mode: str = "train") -> Layer:
    r"""Dropout with keep probability ``rate``: ``x / rate`` where kept, 0 elsewhere.

    In ``"train"`` mode the infinite-width kernels of an activation with itself (same example,
    same position; between ``x1`` and ``x2`` only when they are the same inputs) are multiplied by
    ``1 / rate``; other covariances are unchanged. In ``"test"`` mode the layer is the identity.

    Args:
      rate: keep probability in ``(0, 1]`` (neural-tangents' convention: ``rate=1`` keeps all).
      mode: ``"train"`` or ``"test"``.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; in ``"train"`` mode ``apply_fn(params, x, rng=key)``
      needs a PRNG key.

    Raises:
      KjaxError: ``rate`` outside ``(0, 1]``, an unknown ``mode``, or (``apply_fn`` in ``"train"``
        mode) no ``rng``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(4), stax.Dropout(0.5))
      >>> kernel_fn(jnp.ones((1, 3)), get="nngp").tolist()
      [[2.0]]

    References:
      Srivastava et al. Dropout: A Simple Way to Prevent Neural Networks from Overfitting. JMLR
      2014. Novak et al. Neural Tangents. ICLR 2020.
    """
    fn = f"{STAX}.Dropout"
    check_in(fn, "mode", mode, ("train", "test"))
    try:
        ok = 0.0 < float(rate) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        fail(fn, "rate", "be a keep probability in (0, 1]", repr(rate))
    rate = float(rate)

    def init_fn(rng, input_shape):
        return input_shape, ()

    def apply_fn(params, inputs, **kwargs):
        if mode == "test":
            return inputs
        rng = kwargs.get("rng")
        if rng is None:
            raise KjaxError(f"{fn} apply_fn: `rng` must be given in 'train' mode "
                            "(apply_fn(params, x, rng=key)); got None.")
        keep = jax.random.bernoulli(rng, rate, inputs.shape)
        return jnp.where(keep, inputs / rate, jnp.zeros((), inputs.dtype))

    def transform(st):
        st = single_branch(fn, st)
        if mode == "test":
            return st
        big = st.nngp.shape[0]
        eye = jnp.eye(big, dtype=bool)
        if st.has_x2:  # x1[i] with x2[i], when x2 is x1
            shifted = jnp.eye(big, k=st.n1, dtype=bool) | jnp.eye(big, k=-st.n1, dtype=bool)
            eye = eye | (shifted & st.x1_is_x2)
        ns = st.n_spatial
        mask = eye.reshape((big, big) + (1,) * (st.nngp.ndim - 2))
        if not st.diag:
            for d in range(ns):
                size = st.nngp.shape[2 + 2 * d]
                shape = [1] * st.nngp.ndim
                shape[2 + 2 * d], shape[3 + 2 * d] = size, size
                mask = mask & jnp.eye(size, dtype=bool).reshape(shape)
        factor = jnp.where(mask, 1.0 / rate, 1.0).astype(st.nngp.dtype)
        return st.replace(nngp=st.nngp * factor, ntk=st.ntk * factor, is_gaussian=False)

    return make_layer(init_fn, apply_fn, transform, f"Dropout({rate}, {mode!r})")

r"""Fixed linear layers: ``DotGeneral`` (a constant factor), ``ImageResize`` and ``Aggregate``
(graph message passing).

None of them has weights: each is a linear map :math:`L` of every channel of the activations,
so in the infinite-width limit the covariances map as :math:`K' = L K L^\top` (both sides of a
covariance pair see the same map; for ``Aggregate`` each example has its own graph) and the NTK
the same way. They mix positions, so they need the full spatial covariance, unless the map keeps
each output position tied to one input position (``DotGeneral`` without spatial contraction, a
resize that leaves the spatial axes alone).

Layout: activations ``[n, *spatial, C]`` in the layout given by ``batch_axis`` / ``channel_axis``;
kernels ``[n1, n2, *spatial pairs]`` in neural-tangents' zipped order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import check_in, fail
from kjax.ntk.stax import _kernel as K
from kjax.ntk.stax._core import (
    STAX,
    Layer,
    axis_arg,
    batch_channel_axes,
    check_axes,
    make_layer,
    single_branch,
)
from kjax.ntk.stax._requirements import AggregateImplementation

_HI = jax.lax.Precision.HIGHEST


def unzip_pairs(mat: jax.Array) -> jax.Array:
    """``[N, N', X, X', Y, Y'] -> [N, N', X, Y, X', Y']``."""
    return jnp.transpose(mat, (0, 1, *range(2, mat.ndim, 2), *range(3, mat.ndim, 2)))


def zip_pairs(mat: jax.Array) -> jax.Array:
    """Inverse of :func:`unzip_pairs`."""
    nsp = (mat.ndim - 2) // 2
    perm = [0, 1]
    for d in range(nsp):
        perm += [2 + d, 2 + nsp + d]
    return jnp.transpose(mat, perm)


def _dims(fn: str, arg: str, value) -> tuple[int, ...]:
    if not isinstance(value, tuple | list | range) or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value):
        fail(fn, arg, "be a tuple of ints", repr(value))
    return tuple(int(v) for v in value)


def _check_dimension_numbers(fn: str, dn) -> tuple:
    ok = isinstance(dn, tuple | list) and len(dn) == 2 and all(
        isinstance(p, tuple | list) and len(p) == 2 for p in dn)
    if not ok:
        fail(fn, "dimension_numbers", "be ((lhs_contracting, rhs_contracting), (lhs_batch, "
             "rhs_batch)), tuples of ints", repr(dn))
    (lc, rc), (lb, rb) = dn
    out = ((_dims(fn, "dimension_numbers", lc), _dims(fn, "dimension_numbers", rc)),
           (_dims(fn, "dimension_numbers", lb), _dims(fn, "dimension_numbers", rb)))
    if len(out[0][0]) != len(out[0][1]) or len(out[1][0]) != len(out[1][1]):
        fail(fn, "dimension_numbers", "pair as many lhs as rhs contracting / batch dimensions",
             repr(dn))
    return out


def DotGeneral(*, lhs: jax.Array | float | None = None, rhs: jax.Array | float | None = None,
               dimension_numbers: tuple = (((), ()), ((), ())), precision=None,
               batch_axis: int = 0, channel_axis: int = -1) -> Layer:
    r"""A constant (non-trainable) ``jax.lax.dot_general`` with the layer's inputs.

    ``apply_fn`` is ``lax.dot_general(inputs, rhs, dimension_numbers, precision)`` when ``rhs`` is
    given, ``lax.dot_general(lhs, inputs, ...)`` when ``lhs`` is, and the identity when neither
    is. Any fixed linear map of the non-channel axes can be written so (scaling, summing or
    permuting positions, a fixed filter, ...). With :math:`y = L x` on every channel, the kernels
    map as :math:`K' = L K L^\top` and :math:`\Theta' = L \Theta L^\top`.

    Args:
      lhs: a constant left factor (an array or a scalar), or None (the inputs are the left
        factor).
      rhs: a constant right factor, or None. At most one of ``lhs`` / ``rhs`` may be given.
      dimension_numbers: ``((lhs_contracting, rhs_contracting), (lhs_batch, rhs_batch))`` as in
        ``jax.lax.dot_general``. The inputs' channel axis may not appear (it is the infinite axis);
        the batch axis may be a batch dimension (then the constant has one slice per example and
        ``x1`` / ``x2`` must have that many), but ``kernel_fn`` refuses contracting it.
      precision: ``jax.lax.Precision`` of ``apply_fn`` (the kernels use ``HIGHEST``).
      batch_axis: batch axis of the inputs.
      channel_axis: channel axis of the inputs. The output's batch and channel axes are where
        ``dot_general`` puts them (set the following layers' axes accordingly).

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no params.

    Raises:
      KjaxError: both ``lhs`` and ``rhs`` given, malformed ``dimension_numbers``; (in
        ``kernel_fn``) the channel axis in ``dimension_numbers``, a contracted batch axis, a
        batch-dimension constant whose size is not the number of examples, or
        ``diagonal_spatial=True`` with a contracted spatial axis.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(  # the difference of the two rows of an [n, 2, W, C] input
      ...     stax.Conv(8, (1, 2)), stax.Relu(),
      ...     stax.DotGeneral(rhs=jnp.array([1.0, -1.0]), dimension_numbers=(((1,), (0,)), ((), ()))),
      ...     stax.GlobalAvgPool())
      >>> kernel_fn(jnp.ones((3, 2, 4, 2)), get="nngp").shape
      (3, 3)

    References:
      Novak et al. Neural Tangents: Fast and Easy Infinite Neural Networks in Python. ICLR 2020.
    """
    fn = f"{STAX}.DotGeneral"
    if lhs is not None and rhs is not None:
        fail(fn, "rhs", "be None when `lhs` is given (the other factor is the layer's inputs)",
             "both lhs and rhs")
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    channel_axis = axis_arg(fn, "channel_axis", channel_axis)
    dn = _check_dimension_numbers(fn, dimension_numbers)
    identity = lhs is None and rhs is None
    is_lhs = rhs is None
    other = None if identity else jnp.asarray(lhs if is_lhs else rhs)
    (lc, rc), (lb, rb) = dn
    in_cs, in_bs = (rc, rb) if is_lhs else (lc, lb)
    oth_cs, oth_bs = (lc, lb) if is_lhs else (rc, rb)

    def dot_fn(x, oth, prec=precision):
        args = (x, oth.astype(x.dtype))[::(-1 if is_lhs else 1)]
        return jax.lax.dot_general(*args, dn, prec)

    def init_fn(rng, input_shape):
        if identity:
            return tuple(input_shape), ()
        out = jax.eval_shape(dot_fn, jax.ShapeDtypeStruct(tuple(input_shape), other.dtype), other)
        return out.shape, ()

    def apply_fn(params, inputs, **kwargs):
        return inputs if identity else dot_fn(inputs, other)

    def out_axis(p: int, nd: int) -> int:
        """Where ``dot_general`` puts the inputs' axis ``p``."""
        ics, ibs = tuple(a % nd for a in in_cs), tuple(a % nd for a in in_bs)
        if p in ibs:
            return ibs.index(p)
        free = [a for a in range(nd) if a not in ics + ibs]
        n_other_free = other.ndim - len(oth_cs) - len(oth_bs)
        return len(ibs) + (n_other_free if is_lhs else 0) + free.index(p)

    def transform(st):
        st = single_branch(fn, st)
        kfn = f"{fn} kernel_fn"
        check_axes(kfn, st, batch_axis, channel_axis)
        if identity:
            return st
        b, c = st.axes()
        nd = len(st.shape1)
        ics = tuple(a % nd for a in in_cs)
        ibs = tuple(a % nd for a in in_bs)
        if c in ics + ibs:
            fail(kfn, "dimension_numbers", f"leave the channel axis {c} alone (it is the "
                 "infinite axis)", repr(dimension_numbers))
        if b in ics:
            fail(kfn, "dimension_numbers", f"not contract the batch axis {b} (kjax's kernel_fn "
                 "keeps one kernel entry per pair of examples)", repr(dimension_numbers))
        oth = other
        if b in ibs:  # one slice of the constant per example: stack it for [x1; x2]
            k_o = oth_bs[ibs.index(b)] % other.ndim
            n2 = st.shape2[0]
            for arg, n in (("x1", st.n1), ("x2", n2 if st.has_x2 else st.n1)):
                if n != other.shape[k_o]:
                    fail(kfn, arg, f"have {other.shape[k_o]} examples, the size of the "
                         "constant's batch dimension paired with the batch axis", f"{n}")
            if st.has_x2:
                oth = jnp.concatenate([other, other], axis=k_o)
        ob, oc = out_axis(b, nd), out_axis(c, nd)

        def side(m):  # m: [N, *S, R] canonical, R carried in the channel slot
            y = dot_fn(K.from_canonical(m, b, c), oth, _HI)
            return K.to_canonical(y, ob, oc)

        def full(mat):
            N, N2 = mat.shape[:2]
            u = unzip_pairs(mat)  # [N, N', S..., S'...]
            nsp = (u.ndim - 2) // 2
            sp = u.shape[2:2 + nsp]
            u = jnp.moveaxis(u, 1, 1 + nsp)  # [N, S..., N', S'...]
            y = side(u.reshape((N, *sp, -1)))  # [N, So..., R]
            so = y.shape[1:-1]
            y = y.reshape((N, *so, N2, *sp))
            y = jnp.moveaxis(y, tuple(range(1 + len(so))),
                             tuple(range(1 + nsp, 2 + nsp + len(so))))  # [N', S'..., N, So...]
            z = side(y.reshape((N2, *sp, -1)))  # [N', So'..., N*So]
            z = z.reshape((N2, *so, N, *so))
            z = jnp.moveaxis(z, 1 + len(so), 0)  # [N, N', So'..., So...]
            nso = len(so)
            return zip_pairs(jnp.transpose(z, (0, 1, *range(2 + nso, 2 + 2 * nso), *range(2, 2 + nso))))

        def diag(mat):
            # no spatial contraction: each output position comes from one input position, times
            # a coefficient a_i(p) of the example: K'[i, j, p] = a_i(p) a_j(p) K[i, j, s(p)]
            left = side(jnp.moveaxis(mat, 1, -1))  # [N, So..., N']
            coef = side(jnp.ones(mat.shape[:1] + mat.shape[2:] + (1,), mat.dtype))[..., 0]
            return jnp.moveaxis(left, -1, 1) * coef[None]

        op = diag if st.diag else full
        if st.diag and any(a not in (b, c) for a in ics):
            fail(kfn, "diagonal_spatial", "be None or False: the layer contracts a spatial "
                 "axis, which needs the full spatial covariance", "True")
        nngp, ntk = op(st.nngp), op(st.ntk)
        so = nngp.shape[2:] if st.diag else nngp.shape[2::2]
        mask = st.mask
        if mask is not None:  # NT's mask_fn ~dot(~mask): masked iff no unmasked entry reaches it
            m = jnp.broadcast_to(mask, (st.nngp.shape[0], *st.shape1[1:-1], mask.shape[-1]))
            y = jax.lax.dot_general(*(K.from_canonical(~m, b, c).astype(jnp.float32),
                                      (oth != 0).astype(jnp.float32))[::(-1 if is_lhs else 1)],
                                    dn)
            mask = K.to_canonical(y <= 0, ob, oc)
        return st.replace(nngp=nngp, ntk=ntk, shape1=(st.shape1[0], *so, st.shape1[-1]),
                          shape2=(st.shape2[0], *so, st.shape2[-1]),
                          batch_axis=ob, channel_axis=oc, mask=mask)

    def mask_fn(mask, input_shape):
        if identity:
            return mask
        shape = list(input_shape)
        shape[channel_axis] = mask.shape[channel_axis]
        m = (~jnp.broadcast_to(mask, tuple(shape))).astype(jnp.float32)
        return dot_fn(m, (other != 0).astype(jnp.float32)) <= 0

    needs_full = bool(in_cs) and set(in_cs) != {batch_axis}
    return make_layer(init_fn, apply_fn, transform, "DotGeneral", needs_full=needs_full,
                      reqs={"batch_axis": batch_axis, "channel_axis": channel_axis,
                            "_reset": True}, mask_fn=mask_fn, kernel_mask=False)


_RESIZE = {"nearest": "nearest", "linear": "linear", "bilinear": "linear",
           "trilinear": "linear", "triangle": "linear"}


def ImageResize(shape: Sequence[int], method: str | jax.image.ResizeMethod, antialias: bool = True,
                precision=jax.lax.Precision.HIGHEST, batch_axis: int = 0,
                channel_axis: int = -1) -> Layer:
    r"""Resize the spatial axes as ``jax.image.resize`` does (a fixed linear interpolation).

    Resizing is separable and linear, :math:`y = (L_1 \otimes L_2 \otimes \dots) x`, so the
    kernels are resized the same way on both positions of each pair:
    :math:`K'_{p p'} = \sum_{s, s'} L_{p s} L_{p' s'} K_{s s'}`, i.e. ``jax.image.resize`` of the
    covariance with every spatial pair resized, as neural-tangents does.

    Args:
      shape: the output shape, one entry per axis of the inputs (batch and channel included);
        ``-1`` keeps an axis. ``kernel_fn`` needs ``-1`` at the channel and batch axes.
      method: ``"linear"`` (or ``"bilinear"``, ``"trilinear"``, ``"triangle"``), ``"nearest"``,
        or a ``jax.image.ResizeMethod``; ``apply_fn`` also takes ``"cubic"``, ``"lanczos3"``,
        ``"lanczos5"``, which ``kernel_fn`` refuses (as neural-tangents does).
      antialias: use an antialiasing filter when downsampling (linear only).
      precision: precision of the interpolation.
      batch_axis: batch axis of the inputs.
      channel_axis: channel axis of the inputs.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no params.

    Raises:
      KjaxError: ``shape`` not a sequence of ints (positive or -1); (in ``kernel_fn``) a method
        other than linear / nearest, a resized channel axis (not defined in the infinite-width
        limit), a resized batch axis (not supported in kjax), ``diagonal_spatial=True`` with a
        resized spatial axis, or inputs whose rank is not ``len(shape)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Conv(8, (2,)), stax.Relu(),
      ...                               stax.ImageResize((-1, 6, -1), "linear"))
      >>> kernel_fn(jnp.ones((2, 4, 3)), get="nngp").shape
      (2, 2, 6, 6)

    References:
      Novak et al. Neural Tangents: Fast and Easy Infinite Neural Networks in Python. ICLR 2020.
    """
    fn = f"{STAX}.ImageResize"
    if not isinstance(shape, tuple | list) or not shape or not all(
            isinstance(s, int | np.integer) and not isinstance(s, bool) and (s >= 1 or s == -1)
            for s in shape):
        fail(fn, "shape", "be a non-empty sequence of positive ints or -1 (one per input axis)",
             repr(shape))
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    channel_axis = axis_arg(fn, "channel_axis", channel_axis)
    for arg, a in (("batch_axis", batch_axis), ("channel_axis", channel_axis)):
        if not -nd <= a < nd:
            fail(fn, arg, f"be in [-{nd}, {nd}) for `shape` of length {nd}", repr(a))
    b_ax, c_ax = batch_axis % nd, channel_axis % nd
    if b_ax == c_ax:
        fail(fn, "channel_axis", "differ from `batch_axis`", repr(channel_axis))
    name = getattr(method, "name", method)
    if not isinstance(name, str):
        fail(fn, "method", "be a string or a jax.image.ResizeMethod", repr(method))
    kernel_method = _RESIZE.get(name.lower())
    spatial = [i for i in range(nd) if i not in (b_ax, c_ax)]

    def out_shape(input_shape):
        return tuple(s if s != -1 else input_shape[i] for i, s in enumerate(shape))

    def check_rank(where, arg, input_shape):
        if len(input_shape) != nd:
            fail(f"{fn} {where}", arg, f"have rank {nd} (the length of `shape`)",
                 f"shape {tuple(input_shape)}")

    def init_fn(rng, input_shape):
        check_rank("init_fn", "input_shape", input_shape)
        return out_shape(tuple(input_shape)), ()

    def apply_fn(params, inputs, **kwargs):
        check_rank("apply_fn", "inputs", inputs.shape)
        return jax.image.resize(inputs, out_shape(inputs.shape), method=method,
                                antialias=antialias, precision=precision)

    def transform(st):
        st = single_branch(fn, st)
        kfn = f"{fn} kernel_fn"
        check_rank("kernel_fn", "x1", st.shape1)
        check_axes(kfn, st, b_ax, c_ax)
        if kernel_method is None:
            fail(kfn, "method", "be 'linear' or 'nearest' (neural-tangents has no kernel for the "
                 "other methods; they work in apply_fn only)", repr(method))
        if shape[c_ax] != -1:
            fail(kfn, "shape", f"be -1 at the channel axis {c_ax} (resizing the channels is not "
                 "defined in the infinite-width limit)", repr(shape))
        if shape[b_ax] != -1:
            fail(kfn, "shape", f"be -1 at the batch axis {b_ax} (kjax's kernel_fn does not "
                 "resize the batch)", repr(shape))
        out_sp = tuple(shape[a] if shape[a] != -1 else st.shape1[1 + i]
                       for i, a in enumerate(spatial))
        if out_sp == tuple(st.shape1[1:-1]):
            return st
        if st.diag:
            fail(kfn, "diagonal_spatial", "be None or False: resizing spatial axes needs the "
                 "full spatial covariance", "True")

        def resize(mat):
            new = mat.shape[:2] + tuple(d for s in out_sp for d in (s, s))
            return jax.image.resize(mat, new, method=kernel_method, antialias=antialias,
                                    precision=precision)

        return st.replace(nngp=resize(st.nngp), ntk=resize(st.ntk),
                          shape1=(st.shape1[0], *out_sp, st.shape1[-1]),
                          shape2=(st.shape2[0], *out_sp, st.shape2[-1]))

    def mask_fn(mask, input_shape):
        # NT: resize the unmasked indicator, so an output is masked only if every input that
        # reaches it is masked (content wins over the mask)
        new = tuple(mask.shape[i] if i in (b_ax, c_ax) else d
                    for i, d in enumerate(out_shape(tuple(input_shape))))
        return ~jax.image.resize(~mask, new, method=method, antialias=antialias,
                                 precision=precision).astype(bool)

    needs_full = any(shape[a] != -1 for a in spatial)
    return make_layer(init_fn, apply_fn, transform, f"ImageResize({shape})", needs_full=needs_full,
                      reqs={"batch_axis": batch_axis, "channel_axis": channel_axis},
                      mask_fn=mask_fn, remask=True)


def _agg_axes(fn, aggregate_axis, nd, b, c):
    if aggregate_axis is None:
        return tuple(i for i in range(nd) if i not in (b, c))
    axes = (aggregate_axis,) if isinstance(aggregate_axis, int | np.integer) else aggregate_axis
    axes = _dims(fn, "aggregate_axis", axes)
    for a in axes:
        if not -nd <= a < nd:
            fail(fn, "aggregate_axis", f"hold axes in [-{nd}, {nd}) for inputs of rank {nd}",
                 repr(aggregate_axis))
    axes = tuple(sorted({a % nd for a in axes}))  # NT's canonicalize_axis: sorted, unique
    if b in axes or c in axes:
        fail(fn, "aggregate_axis", f"hold spatial axes only (not the batch axis {b} or the "
             f"channel axis {c})", repr(aggregate_axis))
    return axes


def _edges(fn, arg, pattern, n, k):
    """NT's ``(batch, n_edges, K, 2)`` (or ``(batch, n_edges, 2)`` when K = 1) edge lists, as
    tails and heads ``[n, E, K]``."""
    pattern = jnp.asarray(pattern)
    if not jnp.issubdtype(pattern.dtype, jnp.integer):
        fail(fn, arg, "be an integer array of edges (tails, heads) for implementation 'SPARSE'",
             f"dtype {pattern.dtype}")
    if pattern.ndim < 1 or pattern.shape[-1] != 2:
        fail(fn, arg, "have a trailing dimension of 2 (tails, heads)", f"shape {pattern.shape}")
    s, r = pattern[..., 0], pattern[..., 1]
    if k == 1 and s.ndim == 2:
        s, r = s[..., None], r[..., None]
    if s.ndim != 3 or s.shape[2] != k or s.shape[0] != n:
        fail(fn, arg, f"have shape ({n}, n_edges, {k}, 2) (one edge list per example, "
             f"{k} aggregate axes)", f"shape {pattern.shape}")
    return s, r


def _ravel(idx, agg_shape):
    """Flat vertex index of ``[..., K]`` coordinates (NT's ``ravel_multi_index`` with 'wrap'),
    -1 where a coordinate is negative."""
    flat = jnp.zeros(idx.shape[:-1], jnp.int32)
    for d, size in enumerate(agg_shape):
        flat = flat * size + jnp.mod(idx[..., d], size)
    return jnp.where(jnp.all(idx >= 0, axis=-1), flat, -1)


def Aggregate(aggregate_axis: int | Sequence[int] | None = None, batch_axis: int = 0,
              channel_axis: int = -1, to_dense: Callable | None = lambda p: p,
              implementation: str = AggregateImplementation.DENSE.value) -> Layer:
    r"""Graph aggregation: every vertex is replaced by the (weighted) sum of its predecessors.

    The vertices are the positions along ``aggregate_axis`` (``K`` axes of sizes ``X_1 .. X_K``);
    each example ``n`` has its own graph, passed as ``pattern`` to ``apply_fn(params, x,
    pattern=p)`` and ``kernel_fn(x1, x2, pattern=(p1, p2))``. With the weighted adjacency
    :math:`P_n[t, h]` (an arc from tail ``t`` to head ``h``), :math:`y_n[h] = \sum_t P_n[t, h]
    x_n[t]` on every channel, so

    .. math::
        K'_{ij}[h, h'] = \sum_{t, t'} P_i[t, h] P_j[t', h'] K_{ij}[t, t'],

    and the NTK the same way (the Graph Neural Tangent Kernel of Du et al.).

    Patterns: with ``implementation="DENSE"``, ``to_dense(pattern)`` must be ``[n, X_1..X_K,
    X_1..X_K]`` (tails then heads); with ``"SPARSE"``, ``pattern`` is an integer edge list
    ``[n, n_edges, K, 2]`` (``[n, n_edges, 2]`` when ``K = 1``) of (tail, head) coordinates, an
    edge repeated ``m`` times has weight ``m``, and an edge whose head has a negative coordinate
    is dropped (padding; a negative tail wraps as in NumPy indexing, as in neural-tangents).
    ``pattern=None`` is the identity.

    Args:
      aggregate_axis: the spatial axes of the vertices; None is all spatial axes.
      batch_axis: batch axis of the inputs.
      channel_axis: channel axis of the inputs.
      to_dense: ``"DENSE"`` only: maps ``pattern`` to the dense adjacency (default identity).
      implementation: ``"DENSE"`` (``dot_general``) or ``"SPARSE"`` (``segment_sum`` in
        ``apply_fn``; ``kernel_fn`` builds the dense adjacency from the edges), or an
        :class:`AggregateImplementation`.

    Returns:
      ``(init_fn, apply_fn, kernel_fn)``; no params; the output has the input's shape.

    Raises:
      KjaxError: a bad ``implementation`` / ``aggregate_axis``; a ``pattern`` of the wrong shape
        or dtype (``apply_fn`` / ``kernel_fn``); exactly one of ``pattern1`` / ``pattern2`` None
        with ``x2``; ``diagonal_spatial=True``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Aggregate(),
      ...                               stax.GlobalAvgPool())
      >>> x = jnp.ones((2, 3, 4))  # 2 graphs of 3 vertices with 4 features
      >>> p = jnp.ones((2, 3, 3))  # complete graphs
      >>> kernel_fn(x, None, "nngp", pattern=(p, p)).shape
      (2, 2)

    References:
      Du et al. Graph Neural Tangent Kernel: Fusing Graph Neural Networks with Graph Kernels.
      NeurIPS 2019.
    """
    fn = f"{STAX}.Aggregate"
    impl = str(getattr(implementation, "value", implementation)).upper()
    check_in(fn, "implementation", impl, ("DENSE", "SPARSE"))
    batch_axis = axis_arg(fn, "batch_axis", batch_axis)
    channel_axis = axis_arg(fn, "channel_axis", channel_axis)
    if aggregate_axis is not None:
        axes0 = ((aggregate_axis,) if isinstance(aggregate_axis, int | np.integer)
                 else aggregate_axis)
        _dims(fn, "aggregate_axis", axes0)
    if impl == "DENSE" and not callable(to_dense):
        fail(fn, "to_dense", "be a function (pattern -> dense adjacency)", repr(to_dense))

    def layout(where, nd):
        b, c = batch_channel_axes(f"{fn} {where}", batch_axis, channel_axis, nd)
        return b, c, _agg_axes(f"{fn} {where}", aggregate_axis, nd, b, c)

    def dense_of(where, arg, pattern, n, agg_shape):
        """The dense adjacency ``[n, V, V]`` (tails, heads) of ``pattern``."""
        V = math.prod(agg_shape)
        if impl == "DENSE":
            p = jnp.asarray(to_dense(pattern))
            want = (n, *agg_shape, *agg_shape)
            if p.shape != want:
                fail(f"{fn} {where}", arg, f"be (after to_dense) a dense adjacency of shape {want} "
                     "[n, tails, heads]", f"shape {p.shape}")
            return p.reshape((n, V, V))
        s, r = _edges(f"{fn} {where}", arg, pattern, n, len(agg_shape))
        s, r = _ravel(s, agg_shape), _ravel(r, agg_shape)
        s = jnp.where(s < 0, V - 1, s)  # a negative tail indexes the last vertex (NumPy wrap)
        flat = jnp.where(r >= 0, s * V + r, V * V)  # dropped heads fall outside the segments
        counts = jax.vmap(lambda f: jax.ops.segment_sum(jnp.ones(f.shape), f,
                                                        num_segments=V * V))(flat)
        return counts.reshape((n, V, V))

    def init_fn(rng, input_shape):
        layout("init_fn", len(input_shape))
        return tuple(input_shape), ()

    def apply_fn(params, inputs, *, pattern=None, **kwargs):
        if pattern is None:
            return inputs
        b, c, agg = layout("apply_fn", inputs.ndim)
        x = jnp.moveaxis(inputs, (b, *agg), tuple(range(1 + len(agg))))
        agg_shape = x.shape[1:1 + len(agg)]
        V, n = math.prod(agg_shape), x.shape[0]
        x = x.reshape((n, V) + x.shape[1 + len(agg):])
        if impl == "DENSE":
            P = dense_of("apply_fn", "pattern", pattern, n, agg_shape).astype(x.dtype)
            y = jnp.einsum("nt...,nth->nh...", x, P, precision=_HI)
        else:
            s, r = _edges(f"{fn} apply_fn", "pattern", pattern, n, len(agg_shape))
            s, r = _ravel(s, agg_shape), _ravel(r, agg_shape)
            y = jax.vmap(lambda s, r, x: jax.ops.segment_sum(x[s], r, num_segments=V))(s, r, x)
        y = y.reshape((n, *agg_shape) + y.shape[2:])
        return jnp.moveaxis(y, tuple(range(1 + len(agg))), (b, *agg))

    def transform(st):
        st = single_branch(fn, st)
        kfn = f"{fn} kernel_fn"
        check_axes(kfn, st, batch_axis, channel_axis)
        pattern = (st.extra or {}).get("pattern")
        if pattern is None or (pattern[0] is None and (pattern[1] is None or not st.has_x2)):
            return st
        p1, p2 = pattern
        if p1 is None or (st.has_x2 and p2 is None):
            fail(kfn, "pattern", "give both pattern1 and pattern2 (or neither)",
                 "(None, array)" if p1 is None else "(array, None)")
        if st.diag:
            fail(kfn, "diagonal_spatial", "be None or False: aggregation mixes positions, which "
                 "needs the full spatial covariance", "True")
        nd = len(st.shape1)
        b, c, agg = layout("kernel_fn", nd)
        # canonical spatial index of each aggregate axis
        spatial = [a for a in range(nd) if a not in (b, c)]
        agg_c = tuple(spatial.index(a) for a in agg)
        agg_shape = tuple(st.shape1[1 + d] for d in agg_c)
        P = dense_of("kernel_fn", "pattern", p1, st.n1, agg_shape)
        if st.has_x2:
            P2 = dense_of("kernel_fn", "pattern", p2, st.shape2[0], agg_shape)
            P = jnp.concatenate([P, P2.astype(P.dtype)], axis=0)
        P = P.reshape((P.shape[0], *agg_shape, *agg_shape))
        nsp = st.n_spatial
        lo, up = "abcdefgh"[:nsp], "ABCDEFGH"[:nsp]
        hl, hu = "pqrstuvw"[:nsp], "PQRSTUVW"[:nsp]
        mat_ix = "ij" + "".join(lo[d] + up[d] for d in range(nsp))
        out_ix = "ij" + "".join((hl[d] + hu[d]) if d in agg_c else (lo[d] + up[d])
                                for d in range(nsp))
        p_i = "i" + "".join(lo[d] for d in agg_c) + "".join(hl[d] for d in agg_c)
        p_j = "j" + "".join(up[d] for d in agg_c) + "".join(hu[d] for d in agg_c)
        spec = f"{p_i},{mat_ix},{p_j}->{out_ix}"

        def agg_mat(mat):
            Pm = P.astype(mat.dtype)
            return jnp.einsum(spec, Pm, mat, Pm, precision=_HI, optimize=True)

        return st.replace(nngp=agg_mat(st.nngp), ntk=agg_mat(st.ntk))

    return make_layer(init_fn, apply_fn, transform, "Aggregate", needs_full=True,
                      reqs={"batch_axis": batch_axis, "channel_axis": channel_axis}, remask=True)

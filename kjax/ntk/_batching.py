"""neural-tangents' ``nt.batch``: any kernel function evaluated block by block, over devices.

Built on :func:`kjax._src.blockwise.blockwise_gram` (blocks of rows of ``x1`` against blocks of
rows of ``x2``, split over a 1-D device mesh when ``device_count`` asks for several devices).
Works for analytic (:mod:`kjax.ntk.stax`) and empirical kernel functions alike: the output of
``kernel_fn`` (an array, a namedtuple / dict of arrays, or a :class:`kjax.ntk.stax.Kernel`) is
read leaf by leaf: ``[n1, n2, ...]`` leaves are assembled from blocks, ``cov1`` / ``cov2`` (per
example) from row / column blocks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from kjax._src.blockwise import blockwise_gram, leading_dim
from kjax._src.errors import check_int, fail
from kjax.ntk._model import all_none

_FN = "kjax.ntk.batch"
_ROW_FIELDS = ("cov1", "mask1")
_COL_FIELDS = ("cov2", "mask2")


def _mesh(device_count: int) -> Mesh | None:
    devices = jax.local_devices()
    count = len(devices) if device_count == -1 else min(device_count, len(devices))
    if count <= 1:
        return None
    return Mesh(np.array(devices[:count]), ("batch",))


def _field(path) -> str:
    names = [getattr(k, "name", getattr(k, "key", None)) for k in path]
    return str(names[-1]) if names else ""


def _all_kernels(x, cls) -> bool:
    if isinstance(x, list | tuple):
        return bool(x) and all(_all_kernels(v, cls) for v in x)
    return isinstance(x, cls)


def _example_pairs(kwargs: dict, n1: int, n2: int, x2_none: bool) -> dict:
    """The keyword arguments given as NT's ``(for x1, for x2)`` pairs of per-example arrays
    (leading axes ``n1`` / ``n2``; with ``x2=None`` the second may be None or like the first)."""
    out = {}
    for k, v in kwargs.items():
        if k == "rng" or not (isinstance(v, tuple) and len(v) == 2):
            continue
        a, b = v
        if x2_none and b is None:
            b = a
        lead = [np.shape(leaf)[:1] for leaf in jax.tree.leaves(a)] + \
            [np.shape(leaf)[:1] for leaf in jax.tree.leaves(b)]
        if a is not None and jax.tree.leaves(a) and jax.tree.leaves(b) and all(
                s == (n1,) for s in lead[:len(jax.tree.leaves(a))]) and all(
                s == ((n1,) if x2_none else (n2,)) for s in lead[len(jax.tree.leaves(a)):]):
            out[k] = (a, b)
    return out


def _x1_is_x2(x1, x2) -> jax.Array:
    """What a stax ``kernel_fn`` reports as ``x1_is_x2`` for the whole inputs: True for
    ``x2=None``, else equal shapes and values within 1e-12 (:func:`kjax.ntk.stax` inputs)."""
    if x2 is None:
        return jnp.asarray(True)
    l1, l2 = jax.tree.leaves(x1), jax.tree.leaves(x2)
    if len(l1) != len(l2) or any(jnp.shape(a) != jnp.shape(b) for a, b in zip(l1, l2, strict=True)):
        return jnp.asarray(False)
    return jnp.all(jnp.stack([jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))) < 1e-12
                              for a, b in zip(l1, l2, strict=True)]))


def batch(kernel_fn: Callable, batch_size: int = 0, device_count: int = -1,
          store_on_device: bool = True) -> Callable:
    r"""``kernel_fn`` computed over blocks of ``batch_size`` examples, in parallel over devices.

    neural-tangents' ``nt.batch``, with its signature and defaults: the returned function has
    ``kernel_fn``'s signature (``batched(x1, x2=None, *args, **kwargs)``; for a stax
    ``kernel_fn`` the ``get`` default stays ``kernel_fn``'s, None: the whole
    :class:`kjax.ntk.stax.Kernel`) and gives ``kernel_fn(x1, x2, *args, **kwargs)``'s values.
    ``kernel_fn`` may be a :mod:`kjax.ntk.stax` ``kernel_fn``, :func:`kjax.ntk.empirical_kernel_fn`,
    :func:`kjax.ntk.empirical_ntk_fn` / :func:`kjax.ntk.empirical_nngp_fn` (``*args`` carry
    ``get`` and ``params``) or any function of two batches whose outputs are ``[n1, n2, ...]``.

    Keyword arguments given as NT's ``(for x1, for x2)`` pairs of per-example arrays (e.g.
    ``Aggregate``'s ``pattern=(pattern1, pattern2)``) are split into the blocks with the rows of
    ``x1`` / ``x2``; ``x2`` may be a list of Nones (NT's ``(None, None)`` for parallel inputs).
    Blocks are assembled by :func:`kjax._src.blockwise.blockwise_gram`; ``device_count`` maps onto
    a 1-D mesh over the first ``device_count`` local devices (``-1``: all of them, ``0`` or ``1``:
    one), over which block pairs are split. Unlike NT, ``n1`` and ``n2`` need not be multiples of
    ``batch_size`` (the last block is padded). For blocks with a memory guard see
    :func:`kjax.ntk.stax.batch` (kjax's own blockwise stax kernel, with ``mesh=`` and ``out=``).

    Args:
      kernel_fn: a kernel function ``kernel_fn(x1, x2, *args, **kwargs)``.
      batch_size: examples per block; 0 means one block (or one per device).
      device_count: devices to split blocks over: ``-1`` all local devices, ``0`` none.
      store_on_device: False streams blocks to host memory: the kernels are NumPy arrays.

    Returns:
      ``batched(x1_or_kernel, x2=None, *args, **kwargs)``. A :class:`kjax.ntk.stax.Kernel` given
      instead of inputs is passed to ``kernel_fn`` unbatched.

    Raises:
      KjaxError: a negative ``batch_size``, ``device_count < -1``, or an output leaf that is not
        ``[n1, n2, ...]`` nor a per-example ``cov1`` / ``cov2`` (e.g. ``diagonal_batch=False``).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import batch, stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
      >>> x = jnp.linspace(-1, 1, 12).reshape(6, 2)
      >>> k = batch(kernel_fn, batch_size=2)(x, None, "ntk")
      >>> bool(jnp.allclose(k, kernel_fn(x, None, "ntk")))
      True

    References:
      Novak et al. Neural Tangents: Fast and Easy Infinite Neural Networks in Python. ICLR 2020.
    """
    batch_size = check_int(_FN, "batch_size", batch_size, minimum=0)
    device_count = check_int(_FN, "device_count", device_count, minimum=-1)
    if not callable(kernel_fn):
        fail(_FN, "kernel_fn", "be a kernel function", type(kernel_fn).__name__)

    def batched(x1_or_kernel, x2=None, *args, **kwargs):
        from kjax.ntk.stax._kernel import Kernel

        if _all_kernels(x1_or_kernel, Kernel):  # a Kernel, or (nested) lists of them
            return kernel_fn(x1_or_kernel, x2, *args, **kwargs)
        x1 = x1_or_kernel
        x2 = None if all_none(x2) else x2  # NT: (None, None) for parallel inputs is x2 = x1
        n1 = leading_dim(_FN, "x1", x1)
        n2 = n1 if x2 is None else leading_dim(_FN, "x2", x2)
        mesh = _mesh(device_count)
        ndev = 1 if mesh is None else mesh.shape["batch"]
        b1 = batch_size or math.ceil(n1 / ndev)
        b2 = batch_size or n2
        b1, b2 = min(b1, n1), min(b2, n2)
        x1_orig, x2_orig = x1, x2
        f = lambda a, b: kernel_fn(a, b, *args, **kwargs)
        pairs = _example_pairs(kwargs, n1, n2, x2 is None)
        if pairs:
            # NT's per-example keyword pairs (Aggregate's pattern=(pattern1, pattern2)): their
            # halves travel with the rows of x1 / x2 through the blocks
            other = {k: v for k, v in kwargs.items() if k not in pairs}
            x1 = (x1, {k: v[0] for k, v in pairs.items()})
            x2 = None if x2 is None else (x2, {k: v[1] for k, v in pairs.items()})

            def f(a, b):
                bb = a if b is None else b
                return kernel_fn(a[0], None if b is None else b[0], *args, **other,
                                 **{k: (a[1][k], bb[1][k]) for k in pairs})
        xb_ref = x1 if x2 is None else x2
        # the output's structure is that of the unbatched call (with x2=None: no cov2); blocks are
        # always computed against explicit rows of x2 (or x1) and their leaves matched by path
        ref = jax.eval_shape(f, x1, x2)
        flat, treedef = jax.tree_util.tree_flatten_with_path(ref)
        paths = [path for path, _ in flat]
        kinds = []
        for path, leaf in flat:
            name, shape = _field(path), tuple(leaf.shape)
            if name in _ROW_FIELDS and shape[:1] == (n1,) and not (len(shape) > 1 and shape[1] == n1):
                kinds.append("row")
            elif name in _COL_FIELDS and shape[:1] == (n2,) and not (len(shape) > 1 and shape[1] == n2):
                kinds.append("col")
            elif len(shape) >= 2 and shape[:2] == (n1, n2) and name not in _ROW_FIELDS + _COL_FIELDS:
                kinds.append("pair")
            elif len(shape) == 0:
                kinds.append("scalar")
            else:
                fail(_FN, "kernel_fn", "return leaves [n1, n2, ...] or per-example cov1 / cov2 [n, ...] "
                     "(diagonal_batch=True)", f"{name or 'a leaf'} of shape {shape} for n1={n1}, n2={n2}")

        def gather(kind, xa_all, xb_all, block):
            """The leaves of ``kind`` as one ``[na, nb, F]`` array, assembled blockwise."""
            idx = [i for i, k in enumerate(kinds) if k == kind]
            if not idx:
                return idx, None

            def fn(xa, xb):
                by_path = dict(jax.tree_util.tree_flatten_with_path(f(xa, xb))[0])
                leaves = [by_path.get(p) for p in paths]
                ba, bb = jax.tree.leaves(xa)[0].shape[0], jax.tree.leaves(xb)[0].shape[0]
                parts = []
                for i in idx:
                    a = jnp.asarray(leaves[i])
                    if kind == "row":
                        a = jnp.broadcast_to(a.reshape(ba, 1, -1), (ba, bb, a[0].size))
                    elif kind == "col":
                        a = jnp.broadcast_to(a.reshape(1, bb, -1), (ba, bb, a[0].size))
                    parts.append(a.reshape(ba, bb, -1))
                return jnp.concatenate(parts, axis=-1)

            na = leading_dim(_FN, "x1", xa_all)
            nb = na if xb_all is None else leading_dim(_FN, "x2", xb_all)
            out = None
            if not store_on_device:
                skip = 2 if kind == "pair" else 1
                width = sum(int(np.prod(flat[i][1].shape[skip:])) for i in idx)
                out = np.empty((na, nb, width), flat[idx[0]][1].dtype)
            res = blockwise_gram(fn, xa_all, xb_all, block_size=block, symmetric=False, mesh=mesh,
                                 out=out, fn_name=_FN)
            return idx, res

        first = lambda x: jax.tree.map(lambda a: a[:1], x)
        pieces: dict[int, Any] = {}
        for kind, xa, xb, block in (("pair", x1, x2, (b1, b2)), ("row", x1, first(xb_ref), (b1, 1)),
                                    ("col", first(x1), xb_ref, (1, b2))):
            idx, res = gather(kind, xa, xb, block)
            offset = 0
            for i in idx:
                shape = tuple(flat[i][1].shape)
                width = int(np.prod(shape[2:] if kind == "pair" else shape[1:]))
                part = res[..., offset:offset + width]
                offset += width
                part = part[:, 0] if kind == "row" else (part[0] if kind == "col" else part)
                pieces[i] = part.reshape(shape)
        if "scalar" in kinds:
            small = jax.tree.leaves(f(first(x1), None if x2 is None else first(x2)))
            for i, k in enumerate(kinds):
                if k == "scalar":
                    # x1_is_x2 is a property of the whole inputs, not of their first rows (NT takes
                    # the first block's, wrong when x2's first rows equal x1's)
                    pieces[i] = (_x1_is_x2(x1_orig, x2_orig) if _field(paths[i]) == "x1_is_x2"
                                 else small[i])
        return jax.tree_util.tree_unflatten(treedef, [pieces[i] for i in range(len(kinds))])

    return batched


__all__ = ["batch"]

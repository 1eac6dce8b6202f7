"""Kernels over datasets: ``kernel_fn`` evaluated blockwise (and sharded) through the foundation's map."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from kjax._src.blockwise import blockwise_gram
from kjax._src.errors import check_int, fail
from kjax.ntk.stax import _kernel as K

_FN = "kjax.ntk.stax.batch"


def batch(kernel_fn: Callable, batch_size: int = 1024, *, mesh: Mesh | None = None,
          mesh_axis: str | None = None, progress: bool = False) -> Callable:
    r"""``kernel_fn`` over large inputs, block by block (NT's ``nt.batch``).

    ``kernel_fn(x1[a], x2[b])`` is evaluated on blocks of ``batch_size`` rows by
    :func:`kjax._src.blockwise.blockwise_gram`: with ``x2=None`` only blocks ``a <= b`` are computed
    and mirrored; with ``mesh`` the blocks are split over the devices of ``mesh_axis``; with
    ``out`` (a NumPy array or memmap) or ``progress`` a host loop streams blocks to host memory, so
    an ``n x n`` kernel never has to fit on a device. Peak device memory is that of one block
    (times the number of devices).

    Args:
      kernel_fn: a :mod:`kjax.ntk.stax` ``kernel_fn``.
      batch_size: rows per block.
      mesh: a ``jax.sharding.Mesh`` to split blocks over.
      mesh_axis: the mesh axis (default: the only one).
      progress: show a tqdm bar (host loop).

    Returns:
      ``batched(x1, x2=None, get="nngp", *, out=None)``: ``[n1, n2, *spatial pairs]`` for a
      string ``get``, a namedtuple for a tuple of ``"nngp"`` / ``"ntk"``; values equal to
      ``kernel_fn(x1, x2, get)``.

    Raises:
      KjaxError: a ``get`` other than ``"nngp"``, ``"ntk"`` or a tuple of them (``cov1`` /
        ``cov2`` are per-example: call ``kernel_fn`` on the rows you need), or a bad
        ``batch_size``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
      >>> x = jnp.linspace(-1, 1, 14).reshape(7, 2)
      >>> batched = stax.batch(kernel_fn, batch_size=3)
      >>> bool(jnp.allclose(batched(x, None, "ntk"), kernel_fn(x, None, "ntk")))
      True

    References:
      Novak et al. Neural Tangents: Fast and Easy Infinite Neural Networks in Python. ICLR 2020.
    """
    batch_size = check_int(_FN, "batch_size", batch_size, minimum=1)

    def batched(x1, x2=None, get="nngp", *, out: np.ndarray | None = None):
        single, names = K.canonical_get(_FN, get)
        if names is None or any(n not in ("nngp", "ntk") for n in names):
            fail(_FN, "get", "be 'nngp', 'ntk' or a tuple of them", repr(get))
        x1 = K.to_float(_FN, "x1", x1)
        x2 = None if x2 is None else K.to_float(_FN, "x2", x2)
        n_sp = x1.ndim - 2

        def block(xa, xb):
            res = kernel_fn(xa, xb, names)
            return jnp.stack([getattr(res, n) for n in names], axis=-1)

        def transpose(b):
            perm = [1, 0]
            for d in range(n_sp):
                perm += [3 + 2 * d, 2 + 2 * d]
            return jnp.transpose(b, perm + [b.ndim - 1])

        if out is not None and not single:
            fail(_FN, "out", "be used with a single `get` string", repr(get))
        if out is not None:
            buf = out[..., None]
        else:
            buf = None
        res = blockwise_gram(block, x1, x2, block_size=batch_size, block_transpose=transpose,
                             mesh=mesh, mesh_axis=mesh_axis, out=buf, progress=progress, fn_name=_FN)
        if out is not None:
            return out
        if single:
            return res[..., 0]
        return K.namedtuple_for(names)(*(res[..., i] for i in range(len(names))))

    return batched



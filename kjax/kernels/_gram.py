"""Gram matrices, kernel matvecs and diagonals of any kernel, blockwise and sharded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float

from kjax._src import blockwise, dtypes
from kjax._src.errors import KjaxTypeError, check_rank, check_same_dim, fail
from kjax.kernels._precomputed import index_kernel

Kernel = Callable[..., jax.Array]


def _inputs(fn: str, kernel: Any, x1, x2, names=("x1", "x2"), rows=("n1", "n2")):
    if not callable(kernel):
        fail(fn, "kernel", "be a callable k(x1, x2) -> [n1, n2], e.g. "
             "functools.partial(kjax.kernels.rbf, lengthscale=2.0)", type(kernel).__name__,
             cls=KjaxTypeError)
    a1, a2 = names
    ik = index_kernel(kernel)
    if ik is not None:  # indices into a stored matrix / operator (kjax.kernels.precomputed)
        x1 = ik.index_data(fn, a1, x1, column=x2 is None, mark=False)
        return x1, None if x2 is None else ik.index_data(fn, a2, x2, mark=False)
    x1 = dtypes.as_float_array(fn, a1, x1)
    check_rank(fn, a1, x1, 2, layout=f"[{rows[0]}, d]")
    _nonempty(fn, a1, x1, rows[0])
    if x2 is not None:
        x2 = dtypes.as_float_array(fn, a2, x2)
        check_rank(fn, a2, x2, 2, layout=f"[{rows[1]}, d]")
        check_same_dim(fn, a1, x1, a2, x2, -1, what="the feature dimension d")
        _nonempty(fn, a2, x2, rows[1])
    return x1, x2


def _check_v(fn: str, v, rows: int, name: str) -> None:
    if v.ndim not in (1, 2):
        fail(fn, "v", f"have shape [{name}] or [{name}, k]", f"shape {v.shape}")
    if v.shape[0] != rows:
        fail(fn, "v", f"have {rows} rows ({name})", f"shape {v.shape}")


def _nonempty(fn: str, arg: str, x, n: str) -> None:
    if 0 in x.shape:
        fail(fn, arg, f"have {n} >= 1 points and d >= 1 features in [{n}, d]", f"shape {x.shape}")


def gram(
    kernel: Kernel,
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None = None,
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    progress: bool = False,
    out: np.ndarray | None = None,
    symmetric: bool | None = None,
) -> Float[Array, "n1 n2"]:
    r"""The Gram matrix :math:`K_{ij} = k(x_{1,i}, x_{2,j})`, assembled block by block.

    Blocks of ``block_size`` rows (against all columns, or ``(rows, cols)`` blocks) are evaluated
    with ``lax.map`` (or a host loop when ``out`` or ``progress`` is given), so temporaries are
    ``O(block_size x n)``. With ``x2=None`` the result is exactly symmetric; with
    ``symmetric=True`` (the default for the host loop) only the upper block triangle is evaluated
    and mirrored, which halves the kernel evaluations and pays off for expensive kernels. With
    ``mesh`` the blocks are split over the mesh's devices.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``, e.g. ``functools.partial(kjax.kernels.rbf,
        lengthscale=2.0)``.
      x1: ``[n1, d]`` points.
      x2: ``[n2, d]`` points, or None for ``x1`` (symmetric, half the kernel evaluations).
      block_size: rows per block, int or ``(rows, cols)``; default 1024 rows, clamped to n.
      mesh: optional ``jax.sharding.Mesh`` to split the blocks over.
      mesh_axis: the mesh axis to use (default: the mesh's only axis).
      progress: show a tqdm progress bar (host loop; not under ``jit``).
      out: optional writable NumPy array / ``np.memmap`` ``[n1, n2]`` to stream the result into
        (host loop; returned instead of a jax array).
      symmetric: with ``x2=None``, evaluate only block pairs on or above the diagonal; default
        True for the host loop, False on the device.

    Returns:
      ``[n1, n2]``, dtype at least float32.

    Raises:
      ValueError: ranks other than 2, mismatched ``d``, bad ``block_size``, ``out`` of the wrong
        shape or dtype, ``out``/``progress`` under a transformation.
      TypeError: ``kernel`` not callable.

    Example:
      >>> import functools, jax.numpy as jnp
      >>> from kjax.kernels import gram, rbf
      >>> x = jnp.linspace(0.0, 1.0, 10)[:, None]
      >>> k = gram(functools.partial(rbf, lengthscale=0.5), x, block_size=4)
      >>> bool(jnp.allclose(k, rbf(x, lengthscale=0.5), atol=1e-6))
      True
    """
    fn = "kjax.kernels.gram"
    x1, x2 = _inputs(fn, kernel, x1, x2)
    host = out is not None or progress
    ik = index_kernel(kernel)
    if ik is not None and not host and (mesh is None or not ik.has_entries):
        return ik(x1, x2)  # one gather from the stored matrix
    if symmetric is None:
        # Evaluating only the upper block triangle halves the kernel evaluations but costs a loop
        # over block pairs and a scatter; for closed-form kernels that is slower than whole row
        # slabs on the device (5x at n = 2000), so it is the default only for the host loop.
        symmetric = x2 is None and host
    if symmetric or host:
        return blockwise.blockwise_gram(kernel, x1, x2, block_size=block_size, mesh=mesh,
                                        mesh_axis=mesh_axis, progress=progress, out=out,
                                        symmetric=symmetric if x2 is None else False, fn_name=fn)
    n2 = x1.shape[0] if x2 is None else x2.shape[0]
    # an int is rows per block: each block of rows against all columns (one pass, no pair loop)
    bs = block_size
    if block_size is None or (isinstance(block_size, int) and not isinstance(block_size, bool)):
        bs = (blockwise.DEFAULT_GRAM_BLOCK if block_size is None else block_size, n2)
    k = blockwise.blockwise_gram(kernel, x1, x1 if x2 is None else x2, block_size=bs, mesh=mesh,
                                 mesh_axis=mesh_axis, symmetric=False, fn_name=fn)
    if x2 is None:  # exactly symmetric, as Cholesky and eigh callers expect
        k = blockwise.mirror_upper(k, lambda m: jnp.swapaxes(m, 0, 1))
    return k


def kernel_matvec(
    kernel: Kernel,
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None,
    v: Float[ArrayLike, " n2 *batch"],
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> Float[Array, " n1 *batch"]:
    r"""The product :math:`K(x_1, x_2)\, v` without forming :math:`K`.

    Each block of ``x1`` rows scans over blocks of ``x2`` rows and accumulates
    :math:`K_{ab} v_b` in at least float32; peak memory is ``O(rows x cols)`` per device for
    ``block_size=(rows, cols)`` (default ``(256, 4096)``), whatever n is. Differentiable in
    ``x1``, ``x2``, ``v`` and the kernel's hyperparameters (the scan body is rematerialised in the
    backward pass, so the gradient keeps the same memory bound). With ``mesh`` the row blocks (or,
    when ``x1`` is short, the column blocks) are split over the devices.

    ``x2=None`` takes :math:`K(x_1, x_1)` as symmetric (as :func:`gram` does) and evaluates each
    off-diagonal ``b x b`` block once (``b`` = ``block_size``, the smaller of a pair, default
    384: small blocks stay in cache, see ``python benchmarks/bench_regression.py --matvec-n``
    in docs/benchmarks.md), adding
    :math:`K_{ab} v_b` to rows ``a`` and :math:`K_{ab}^\top v_a` to rows ``b``: half the kernel
    evaluations of ``x2=x1``, for the products inside full-KRR conjugate gradients. With
    ``mesh`` the block pairs are split over the devices and one ``[n1, k]`` ``psum`` adds them.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x1: ``[n1, d]`` points.
      x2: ``[n2, d]`` points, or None for ``x1`` (a symmetric product, above).
      v: ``[n2]`` or ``[n2, k]``.
      block_size: int or ``(rows, cols)`` (one square block size for ``x2=None``).
      mesh: optional ``jax.sharding.Mesh``.
      mesh_axis: the mesh axis to use (default: the mesh's only axis).

    Returns:
      ``[n1]`` or ``[n1, k]``, dtype at least float32.

    Raises:
      ValueError: ``v`` whose length is not ``n2``, ``v`` of rank other than 1 or 2, and the input
        errors of :func:`gram`.

    Example:
      >>> import functools, jax.numpy as jnp
      >>> from kjax.kernels import kernel_matvec, rbf
      >>> x = jnp.linspace(0.0, 1.0, 100)[:, None]
      >>> v = jnp.ones(100)
      >>> mv = kernel_matvec(rbf, x, None, v, block_size=(16, 32))
      >>> bool(jnp.allclose(mv, rbf(x) @ v, rtol=1e-5))
      True
    """
    fn = "kjax.kernels.kernel_matvec"
    x1, x2 = _inputs(fn, kernel, x1, x2)
    same = x2 is None
    x2 = x1 if x2 is None else x2
    v = dtypes.as_float_array(fn, "v", v)
    ik = index_kernel(kernel)
    if ik is not None and (mesh is None or not ik.has_entries):
        _check_v(fn, v, x2.shape[0], "n2")
        return ik.matvec(x1, x2, v)
    return blockwise.blockwise_matvec(kernel, x1, None if same else x2, v, block_size=block_size, mesh=mesh,
                                      mesh_axis=mesh_axis, fn_name=fn)


def kernel_normal_matvec(
    kernel: Kernel,
    x: Float[ArrayLike, "n d"],
    centers: Float[ArrayLike, "m d"],
    v: Float[ArrayLike, " m *batch"],
    w: Float[ArrayLike, " n *batch"] | None = None,
    *,
    block_size: int | tuple[int, int] | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
) -> Float[Array, " m *batch"]:
    r"""The normal-equations product :math:`K_{nm}^\top (K_{nm} v + w)`, :math:`K_{nm} = k(x, c)`,
    evaluating each block of :math:`K_{nm}` once.

    This is the product inside Falkon's conjugate gradients (:math:`K_{nM}^\top K_{nM} v`) and
    EigenPro 3's gradient (:math:`K_{nM}^\top (K_{nM} a - y)`). Two :func:`kernel_matvec` calls
    give the same result but evaluate the kernel twice; here each block of ``block_size`` rows of
    ``x`` against all centres is evaluated once and used for both products, accumulating an
    ``[m, k]`` result in at least float32 (about twice as fast for cheap kernels; see
    ``python benchmarks/cpu_limits.py``). Peak memory is ``O(rows x m)`` per device; with
    ``mesh`` the row blocks are split over the devices and summed. Differentiable in every input.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points (the tall side).
      centers: ``[m, d]`` centres.
      v: ``[m]`` or ``[m, k]``.
      w: optional ``[n]`` or ``[n, k]`` (the layout of ``v``), added to :math:`K_{nm} v`.
      block_size: rows of ``x`` per block (an int, or the rows of a ``(rows, cols)`` pair; all
        centres are used in every block); default about ``80_000 / m`` rows.
      mesh: optional ``jax.sharding.Mesh``.
      mesh_axis: the mesh axis to use (default: the mesh's only axis).

    Returns:
      ``[m]`` or ``[m, k]``, dtype at least float32.

    Raises:
      ValueError: ``v`` whose length is not ``m``, ``w`` whose shape is not ``v``'s with ``n``
        rows, and the input errors of :func:`gram`.

    Example:
      >>> import functools, jax.numpy as jnp
      >>> from kjax.kernels import kernel_normal_matvec, rbf
      >>> x = jnp.linspace(0.0, 1.0, 100)[:, None]
      >>> c, v = x[::10], jnp.ones(10)
      >>> knm = rbf(x, c)
      >>> bool(jnp.allclose(kernel_normal_matvec(rbf, x, c, v, block_size=16), knm.T @ (knm @ v),
      ...                   rtol=1e-5))
      True
    """
    fn = "kjax.kernels.kernel_normal_matvec"
    x, centers = _inputs(fn, kernel, x, centers, ("x", "centers"), ("n", "m"))
    v = dtypes.as_float_array(fn, "v", v)
    if w is not None:
        w = dtypes.as_float_array(fn, "w", w)
    ik = index_kernel(kernel)
    if ik is not None and (mesh is None or not ik.has_entries):
        _check_v(fn, v, centers.shape[0], "m")
        if w is not None and w.shape != (x.shape[0], *v.shape[1:]):
            fail(fn, "w", f"have shape {(x.shape[0], *v.shape[1:])} (v's layout with n rows)",
                 f"shape {w.shape}")
        return ik.normal_matvec(x, centers, v, w)
    return blockwise.blockwise_normal_matvec(kernel, x, centers, v, w, block_size=block_size,
                                             mesh=mesh, mesh_axis=mesh_axis, fn_name=fn)


def kernel_diag(
    kernel: Kernel,
    x: Float[ArrayLike, "n d"],
    *,
    block_size: int | None = None,
) -> Float[Array, " n"]:
    r"""The diagonal :math:`k(x_i, x_i)` without the matrix, in blocks of ``block_size`` rows.

    Args:
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points.
      block_size: rows per block (default 1024).

    Returns:
      ``[n]``, dtype at least float32.

    Raises:
      ValueError: ``x`` of rank other than 2.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import kernel_diag, linear
      >>> print(kernel_diag(linear, jnp.array([[1.0, 2.0], [3.0, 0.0]])))
      [5. 9.]
    """
    fn = "kjax.kernels.kernel_diag"
    x, _ = _inputs(fn, kernel, x, None, ("x", "x2"), ("n", "n2"))
    ik = index_kernel(kernel)
    if ik is not None:
        return ik.diag(x)
    return blockwise.blockwise_diag(kernel, x, block_size=block_size, fn_name=fn)



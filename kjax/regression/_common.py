"""Shared pieces of kjax.regression: input checks, ridge scaling, mesh and block-size checks.

Status codes and the jittered Cholesky live in ``kjax._src.status`` and ``kjax._src.linalg`` (shared
with ``kjax.ntk.predict``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src import blockwise, dtypes, sharding
from kjax._src.errors import (
    KjaxTypeError,
    check_in,
    check_positive,
    check_rank,
    check_same_dim,
    fail,
)
from kjax._src.partition import partition

#: accepted values of ``ridge_scaling``: ``"none"`` (``K + ridge I``, the default everywhere), ``"n"``
#: (``K + n ridge I``) and ``"sklearn"``, an alias of ``"none"`` (the name of earlier releases)
RIDGE_SCALINGS = ("none", "n", "sklearn")

Kernel = Callable[..., jax.Array]


@jax.tree_util.register_static
class Layout:
    """Static shape facts of a fitted state: whether ``y`` was ``[n]`` and ``ridge`` a path."""

    def __init__(self, vector: bool, path: bool):
        self.vector, self.path = bool(vector), bool(path)

    def __hash__(self):
        return hash((self.vector, self.path))

    def __eq__(self, other):
        return isinstance(other, Layout) and (self.vector, self.path) == (other.vector, other.path)

    def __repr__(self):
        return f"Layout(vector={self.vector}, path={self.path})"


@jax.tree_util.register_pytree_node_class
class HeldKernel:
    """The kernel a solver holds (and its state stores), as a pytree.

    A ``functools.partial`` of a kjax kernel function becomes a :class:`kjax.kernels.Kernel`, whose
    numeric hyperparameters are leaves: ``jit`` traces them, so a new lengthscale does not recompile,
    and ``grad`` reaches them. Any other callable is held as static data (compiled per object).
    """

    def __init__(self, fn: Callable[..., jax.Array]):
        from kjax.kernels import as_kernel

        self.fn = as_kernel(fn.fn if isinstance(fn, HeldKernel) else fn)

    def __call__(self, x1, x2=None):
        return self.fn(x1, x2)

    def tree_flatten(self):
        return partition(self.fn)

    @classmethod
    def tree_unflatten(cls, static, dyn):
        obj = object.__new__(cls)
        obj.fn = static.join(dyn)
        return obj

    def __repr__(self):
        return f"HeldKernel({self.fn!r})"


def kernel_jit(*, static_argnums: tuple[int, ...] = ()):
    """``jax.jit`` for a function whose first argument is a kernel: the kernel travels as a pytree
    (:class:`HeldKernel`), so new hyperparameter values are data, not a recompilation."""
    def deco(f):
        jf = jax.jit(f, static_argnums=tuple(i for i in static_argnums if i != 0))

        @functools.wraps(f)
        def call(kern, *args):
            return jf(kern if isinstance(kern, HeldKernel) else HeldKernel(kern), *args)
        call.jitted = jf
        return call
    return deco


def check_kernel(fn: str, kernel: Any, *, entries: bool = True) -> HeldKernel:
    """``kernel`` as a :class:`HeldKernel`. A precomputed Gram matrix with NaN / inf raises when
    concrete; with ``entries`` a :func:`kjax.kernels.operator` (matvecs only) raises."""
    if not callable(kernel):
        fail(fn, "kernel", "be a callable k(x1, x2) -> [n1, n2], e.g. "
             "functools.partial(kjax.kernels.rbf, lengthscale=2.0)", type(kernel).__name__,
             cls=KjaxTypeError)
    ik = index_kernel(kernel)
    if ik is not None:
        if entries:
            require_entries(fn, ik)
        g = getattr(ik, "gram", None)
        if g is not None and is_concrete(g):
            with jax.ensure_compile_time_eval():  # a concrete matrix closed over inside jit
                bad = int(jnp.sum(~jnp.isfinite(g)))
            if bad:
                fail(fn, "kernel", "hold only finite values (the precomputed Gram matrix has NaN or "
                     "inf)", f"{bad} non-finite entries")
    return HeldKernel(kernel)


def index_kernel(kern: Any) -> Any:
    """The precomputed / operator kernel inside ``kern`` (None for kernels of data)."""
    from kjax.kernels._precomputed import index_kernel as ik

    return ik(kern)


def require_entries(fn: str, ik: Any, what: str = "this solver") -> None:
    if not ik.has_entries:
        fail(fn, "kernel", f"have kernel entries for {what} (a KernelOperator only has matvecs; "
             "pass kjax.kernels.precomputed(gram), or use krr_fit(..., solver='pcg') / "
             "kjax.ntk.predict with solver='cg')", "a KernelOperator", cls=KjaxTypeError)


def is_concrete(*xs: Any) -> bool:
    """True when no leaf is a tracer (values can be read at trace time)."""
    return all(not isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(xs))


def all_finite_eager(a: Any) -> bool | None:
    """True/False on concrete inputs, None under tracing."""
    if isinstance(a, jax.core.Tracer):
        return None
    return bool(np.all(np.isfinite(np.asarray(a))))


def check_finite(fn: str, arg: str, a: Any) -> None:
    """Raise on NaN/inf in a concrete ``a``; traced values pass (the status reports them)."""
    if all_finite_eager(a) is False:
        fail(fn, arg, "contain only finite values (no NaN or inf)",
             f"{int(np.sum(~np.isfinite(np.asarray(a))))} non-finite entries")


def check_x(fn: str, arg: str, x: Any, kern: Any = None, *, column: bool = True) -> jax.Array:
    """``x`` as a float ``[n, d]`` array with ``n, d >= 1``; NaN/inf raise on concrete inputs.

    For a precomputed / operator kernel ``kern`` (:func:`kjax.kernels.precomputed`), ``x`` holds
    indices (``None``: all points), returned as ``[n, 1]`` floats; ``column``: they are used as
    the second argument of ``k`` (must be stored columns of a ``columns=`` Gram matrix).
    """
    ik = index_kernel(kern)
    if ik is not None:
        return ik.index_data(fn, arg, x, column=column)
    x = dtypes.as_float_array(fn, arg, x)
    check_rank(fn, arg, x, 2, layout="[n, d]")
    if x.shape[0] == 0 or x.shape[1] == 0:
        fail(fn, arg, "have at least one row and one feature ([n, d] with n, d >= 1)", f"shape {x.shape}")
    check_finite(fn, arg, x)
    return x


def check_xy(fn: str, x: Any, y: Any, names: tuple[str, str] = ("x", "y"), kern: Any = None, *,
             column: bool = True) -> tuple[jax.Array, jax.Array, bool]:
    """Validate ``x: [n, d]`` and ``y: [n]`` or ``[n, O]``; returns ``(x, y2d, was_vector)``
    (``x`` indices for a precomputed / operator ``kern``: see :func:`check_x`)."""
    ax, ay = names
    all_points = x is None and index_kernel(kern) is not None
    x = check_x(fn, ax, x, kern, column=column)
    y = dtypes.as_float_array(fn, ay, y)
    check_rank(fn, ay, y, (1, 2), layout="[n] or [n, O]")
    if y.shape[0] != x.shape[0]:
        if all_points:
            fail(fn, ay, f"have {x.shape[0]} rows, one per point of the {index_kernel(kern).kind} "
                 f"({ax}=None means all its N={x.shape[0]} points): it does not match y", f"shape {y.shape}")
        fail(fn, ay, f"have {x.shape[0]} rows (one per row of {ax})", f"shape {y.shape}")
    if y.ndim == 2 and y.shape[1] == 0:
        fail(fn, ay, "have at least one output column", f"shape {y.shape}")
    check_finite(fn, ay, y)
    vec = y.ndim == 1
    return x, (y[:, None] if vec else y), vec


def check_x_new(fn: str, x_new: Any, x_train: jax.Array, kern: Any = None) -> jax.Array:
    """``x_new: [m, d]`` with the training ``d`` (``m = 0`` allowed); NaN/inf raise when concrete.

    Under ``jit`` non-finite rows give non-finite predictions in those rows only (documented NaN
    propagation; :func:`gp_posterior` also reports it in ``status``).
    """
    ik = index_kernel(kern)
    if ik is not None:  # indices (None: all points)
        return ik.index_data(fn, "x_new", x_new, column=False, allow_empty=True)
    x_new = dtypes.as_float_array(fn, "x_new", x_new)
    check_rank(fn, "x_new", x_new, 2, layout="[m, d]")
    check_same_dim(fn, "x", x_train, "x_new", x_new, -1, what="the feature dimension d")
    check_finite(fn, "x_new", x_new)
    return x_new


def empty_rows(out_shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """The prediction for ``m = 0`` query points (no kernel evaluation)."""
    return jnp.zeros(out_shape, dtype)


def check_ridge(fn: str, ridge: Any, ridge_scaling: str, n: int, *, arg: str = "ridge",
                allow_array: bool = False) -> jax.Array:
    """Validate ``ridge`` (> 0) and return the unscaled diagonal shift ``alpha`` of ``K + alpha I``.

    ``ridge_scaling="none"`` (or its alias ``"sklearn"``): ``alpha = ridge``; ``"n"``:
    ``alpha = n * ridge`` (Falkon's lambda).
    """
    check_in(fn, "ridge_scaling", ridge_scaling, RIDGE_SCALINGS)
    if ridge is None:
        fail(fn, arg, "be given (a positive number)", None)
    check_positive(fn, arg, ridge)
    r = jnp.asarray(ridge)
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(dtypes.default_float())
    if r.ndim > (1 if allow_array else 0):
        want = "a scalar or a 1-D array of values" if allow_array else "a scalar"
        fail(fn, arg, f"be {want}", f"shape {r.shape}")
    if r.ndim == 1 and r.shape[0] == 0:
        fail(fn, arg, "have at least one value", "an empty array")
    return r * n if ridge_scaling == "n" else r


def ridge_or_noise(fn: str, ridge: Any, noise: Any, *, stacklevel: int = 4) -> Any:
    """The GPs' ``ridge``, with ``noise`` as its deprecated alias (warns)."""
    if noise is not None:
        if ridge is not None:
            fail(fn, "noise", "not be given together with `ridge` (it is the deprecated name of "
                 "`ridge`)", "both")
        warnings.warn(f"{fn}: `noise` is deprecated; pass the same number as `ridge` (the noise "
                      "variance added to the kernel's diagonal).", DeprecationWarning, stacklevel=stacklevel)
        return noise
    if ridge is None:
        fail(fn, "ridge", "be given (the noise variance added to the diagonal, > 0)", None)
    return ridge


def check_jitter(fn: str, jitter: Any) -> float | None:
    if jitter is None:
        return None
    if not isinstance(jitter, int | float | np.floating | np.integer) or isinstance(jitter, bool):
        fail(fn, "jitter", "be None or a positive Python float", repr(jitter), cls=KjaxTypeError)
    check_positive(fn, "jitter", jitter)
    return float(jitter)


def check_mesh(fn: str, mesh: Any, mesh_axis: Any) -> str | None:
    """Validate ``mesh`` / ``mesh_axis`` for ``fn`` and return the axis to shard over (None: no mesh).

    Done here, with the caller's name, so that ``kjax.kernels``' blockwise helpers (which name
    themselves in their errors and take no ``fn_name``) never see a bad mesh.
    """
    if mesh is None:
        if mesh_axis is not None:
            fail(fn, "mesh_axis", "be None when no `mesh` is given", repr(mesh_axis))
        return None
    return sharding.check_mesh(fn, mesh, mesh_axis)[1]


def check_block_size(fn: str, block_size: Any) -> Any:
    """Validate ``block_size`` (a positive int, a pair of them, or None) for ``fn``."""
    if block_size is not None:
        blockwise.block_sizes(fn, block_size, 1, 1, 1)
    return block_size

"""Shared pieces of kjax.regression: input checks, ridge scaling, status codes, robust Cholesky."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src import dtypes
from kjax._src.errors import (
    KjaxTypeError,
    check_in,
    check_positive,
    check_rank,
    check_same_dim,
    fail,
    is_static_number,
)

#: ``status`` codes reported in the states of kjax.regression
STATUS_OK = 0
#: the inputs (``x`` or ``y``) contained NaN or inf (only detectable under ``jit`` from the values)
STATUS_NONFINITE_INPUT = 1
#: a Gram matrix was not numerically positive definite; jitter was added (or eigenvalues clipped)
STATUS_JITTER = 2
#: the factorisation failed even with the largest jitter; the result is not usable
STATUS_FAILED = 3

STATUS_NAMES = {STATUS_OK: "ok", STATUS_NONFINITE_INPUT: "non-finite input",
                STATUS_JITTER: "jitter added (matrix not numerically PSD)",
                STATUS_FAILED: "factorisation failed"}

RIDGE_SCALINGS = ("sklearn", "n")

Kernel = Callable[..., jax.Array]


def status_name(status: Any) -> str:
    """The meaning of the ``status`` code of a kjax.regression state.

    ``0`` ok, ``1`` non-finite input (NaN/inf in ``x`` or ``y``, seen under ``jit``), ``2`` jitter
    added to a Cholesky factor or negative eigenvalues clipped (matrix not numerically PSD),
    ``3`` the factorisation or the iteration failed.

    Args:
      status: an int or a scalar int array (a state's ``status``).

    Returns:
      a short description.

    Raises:
      TypeError: a ``status`` that is not an integer scalar (e.g. a traced value).

    Example:
      >>> from kjax.regression import status_name
      >>> status_name(2)
      'jitter added (matrix not numerically PSD)'

    References:
      The house style (docs/design.md): value-dependent failures are reported, never silent NaN.
    """
    return STATUS_NAMES.get(int(status), f"unknown status {int(status)}")


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


@jax.tree_util.register_static
class StaticKernel:
    """A kernel callable stored in a state as static pytree data (so states cross ``jit``)."""

    def __init__(self, fn: Callable[..., jax.Array]):
        self.fn = fn.fn if isinstance(fn, StaticKernel) else fn

    def __call__(self, x1, x2=None):
        return self.fn(x1, x2)

    def __hash__(self):
        return hash(self.fn)

    def __eq__(self, other):
        return isinstance(other, StaticKernel) and other.fn == self.fn

    def __repr__(self):
        return f"StaticKernel({self.fn!r})"


def check_kernel(fn: str, kernel: Any) -> StaticKernel:
    if not callable(kernel):
        fail(fn, "kernel", "be a callable k(x1, x2) -> [n1, n2], e.g. "
             "functools.partial(kjax.kernels.rbf, lengthscale=2.0)", type(kernel).__name__,
             cls=KjaxTypeError)
    return StaticKernel(kernel)


def _all_finite_eager(a) -> bool | None:
    """True/False on concrete inputs, None under tracing."""
    if isinstance(a, jax.core.Tracer):
        return None
    return bool(np.all(np.isfinite(np.asarray(a))))


def check_x(fn: str, arg: str, x: Any) -> jax.Array:
    """``x`` as a float ``[n, d]`` array; NaN/inf raise eagerly on concrete inputs."""
    x = dtypes.as_float_array(fn, arg, x)
    check_rank(fn, arg, x, 2, layout="[n, d]")
    if _all_finite_eager(x) is False:
        fail(fn, arg, "contain only finite values (no NaN or inf)",
             f"{int(np.sum(~np.isfinite(np.asarray(x))))} non-finite entries")
    return x


def check_xy(fn: str, x: Any, y: Any) -> tuple[jax.Array, jax.Array, bool]:
    """Validate ``x: [n, d]`` and ``y: [n]`` or ``[n, O]``; returns ``(x, y2d, was_vector)``."""
    x = check_x(fn, "x", x)
    y = dtypes.as_float_array(fn, "y", y)
    check_rank(fn, "y", y, (1, 2), layout="[n] or [n, O]")
    if y.shape[0] != x.shape[0]:
        fail(fn, "y", f"have {x.shape[0]} rows (one per row of x)", f"shape {y.shape}")
    if _all_finite_eager(y) is False:
        fail(fn, "y", "contain only finite values (no NaN or inf)",
             f"{int(np.sum(~np.isfinite(np.asarray(y))))} non-finite entries")
    vec = y.ndim == 1
    return x, (y[:, None] if vec else y), vec


def check_x_new(fn: str, x_new: Any, x_train: jax.Array) -> jax.Array:
    x_new = dtypes.as_float_array(fn, "x_new", x_new)
    check_rank(fn, "x_new", x_new, 2, layout="[n_new, d]")
    check_same_dim(fn, "x", x_train, "x_new", x_new, -1, what="the feature dimension d")
    return x_new


def finite_status(*arrays: jax.Array) -> jax.Array:
    """STATUS_NONFINITE_INPUT if any array has a non-finite entry, else STATUS_OK (traceable)."""
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))
    return jnp.where(ok, STATUS_OK, STATUS_NONFINITE_INPUT).astype(jnp.int32)


def check_ridge(fn: str, ridge: Any, ridge_scaling: str, n: int, *, arg: str = "ridge",
                allow_array: bool = False) -> jax.Array:
    """Validate ``ridge`` (> 0) and return the unscaled diagonal shift ``alpha`` of ``K + alpha I``.

    ``ridge_scaling="sklearn"``: ``alpha = ridge``; ``"n"``: ``alpha = n * ridge`` (Falkon).
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
    return r * n if ridge_scaling == "n" else r


def robust_cholesky(a: jax.Array, *, jitter: float | None = None, tries: int = 5
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Lower Cholesky factor of a symmetric matrix (its lower triangle is read), adding jitter until
    it succeeds.

    The first try is plain; try ``k >= 1`` adds ``jitter * 10**(k-1) * mean(diag(a))`` to the
    diagonal (``jitter`` defaults to ``10 * eps`` of the dtype). Traceable (nested ``lax.cond``).

    Returns:
      ``(L, jitter_added, status)``: status ``STATUS_OK``, ``STATUS_JITTER`` or ``STATUS_FAILED``.
    """
    dt = a.dtype
    base = float(10 * np.finfo(dt).eps) if jitter is None else float(jitter)
    scale = jnp.maximum(jnp.mean(jnp.abs(jnp.diagonal(a))), jnp.finfo(dt).tiny)
    eye = jnp.eye(a.shape[0], dtype=dt)

    # nested lax.cond rather than a while_loop, so reverse-mode differentiation works; the
    # jittered factorisations only run when the previous one failed
    def attempt(k):
        add = jnp.asarray(0.0 if k == 0 else base * 10.0 ** (k - 1), dt) * scale
        # LAPACK semantics: only the lower triangle is read (no symmetrising pass over a)
        low = jax.lax.linalg.cholesky(a if k == 0 else a + add * eye, symmetrize_input=False)
        if k == tries:
            return low, add
        ok = jnp.all(jnp.isfinite(low))
        return jax.lax.cond(ok, lambda: (low, add), lambda: attempt(k + 1))

    low, add = attempt(0)
    ok = jnp.all(jnp.isfinite(low))
    status = jnp.where(~ok, STATUS_FAILED, jnp.where(add > 0, STATUS_JITTER, STATUS_OK))
    return low, add, status.astype(jnp.int32)


def combine_status(*statuses: jax.Array) -> jax.Array:
    """The most telling of several status codes (NONFINITE input > FAILED > JITTER > OK)."""
    order = jnp.asarray([0, 3, 1, 2])  # rank of codes 0..3: a NaN input explains a failure
    s = jnp.stack([jnp.asarray(t, jnp.int32) for t in statuses])
    return s[jnp.argmax(order[s])]


def is_concrete(*xs: Any) -> bool:
    return all(not isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(xs))


def static_float(x: Any) -> float | None:
    return float(np.asarray(x)) if is_static_number(x) and np.ndim(x) == 0 else None

"""Error helpers: every message names the function, the argument, what was expected and what came.

All checks run at trace time on static information (shapes, dtypes, Python scalars), so they fire
once per compilation and cost nothing at run time.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


class KjaxError(ValueError):
    """Base class of kjax's input errors (a ``ValueError``, so ``except ValueError`` still works)."""


class KjaxTypeError(TypeError):
    """A wrong dtype or Python type for an argument."""


class KjaxNotImplementedError(KjaxError, NotImplementedError):
    """A kjax error that is also ``NotImplementedError`` (neural-tangents raises that for layers
    without an ``apply_fn`` / ``kernel_fn`` and unsupported arguments; kjax.ntk keeps the class)."""


class KjaxRuntimeError(RuntimeError):
    """A value that went wrong at run time (non-PSD matrix, NaN) and was reported, not propagated."""


def fail(fn: str, arg: str, expected: str, got: Any, *, cls: type[Exception] = KjaxError) -> None:
    """Raise ``cls`` with the house message: ``fn: `arg` must <expected>; got <got>.``"""
    raise cls(f"{fn}: `{arg}` must {expected}; got {got}.")


def shape_of(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def check_rank(fn: str, arg: str, x: Any, ranks: int | Sequence[int], *, layout: str = "") -> None:
    """Check that ``x.ndim`` is in ``ranks``; ``layout`` names the axes, e.g. ``"[n, d]"``."""
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    nd = np.ndim(x)
    if nd not in ranks:
        want = " or ".join(str(r) for r in ranks)
        lay = f" {layout}" if layout else ""
        fail(fn, arg, f"have rank {want}{lay}", f"shape {shape_of(x)} (rank {nd})")


def check_same_dim(fn: str, a: str, xa: Any, b: str, xb: Any, axis: int = -1, *, what: str = "") -> None:
    """Check that ``xa.shape[axis] == xb.shape[axis]`` (e.g. the feature dimensions of x1 and x2)."""
    da, db = shape_of(xa)[axis], shape_of(xb)[axis]
    if da != db:
        what = what or f"axis {axis}"
        fail(fn, b, f"match `{a}` in {what} ({da})", f"shape {shape_of(xb)}")


def is_static_number(x: Any) -> bool:
    """True when ``x`` is known at trace time (a Python/NumPy scalar or a concrete array)."""
    if isinstance(x, numbers.Number) or isinstance(x, np.ndarray | np.generic):
        return True
    return isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)


def check_positive(fn: str, arg: str, x: Any, *, allow_zero: bool = False) -> None:
    """Check positivity of a hyperparameter when it is static; traced values pass through.

    Traced hyperparameters (under ``grad`` of a marginal likelihood, say) cannot be checked at trace
    time; functions that take them document that the caller keeps them positive (e.g. through
    ``softplus``).
    """
    if x is None or not is_static_number(x):
        return
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        fail(fn, arg, "be finite", _fmt(arr))
    bad = np.any(arr < 0) if allow_zero else np.any(arr <= 0)
    if bad:
        fail(fn, arg, "be >= 0" if allow_zero else "be > 0", _fmt(arr))


def check_in(fn: str, arg: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        fail(fn, arg, f"be one of {tuple(allowed)!r}", repr(value))


def check_int(fn: str, arg: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(fn, arg, "be a Python int", repr(value), cls=KjaxTypeError)
    if minimum is not None and value < minimum:
        fail(fn, arg, f"be >= {minimum}", repr(value))
    return int(value)


def _fmt(arr: np.ndarray) -> str:
    return repr(arr.item()) if arr.ndim == 0 else f"array with values {np.array2string(arr, threshold=6)}"

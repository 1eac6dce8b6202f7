"""Input checks shared by the kjax.ssm functions (all at trace time, on static shapes and dtypes).

Every helper takes ``fn``, the public name the user called, so messages name it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, fail, is_static_number

MODES = ("causal", "circular", "bidirectional")


def real_float(fn: str, arg: str, x: Any):
    """``x`` as a real floating array, by the package dtype policy: integer and bool inputs are
    promoted to the default float dtype, complex inputs are rejected (naming ``arg``)."""
    return dtypes.as_float_array(fn, arg, x)


def seq(fn: str, arg: str, u: Any):
    """A sequence batch ``[B, L, D]`` with ``L >= 1`` (``B = 0`` is an empty batch)."""
    u = real_float(fn, arg, u)
    if u.ndim != 3:
        fail(fn, arg, "have rank 3 [B, L, D] (batch, length, channels)",
             f"shape {tuple(u.shape)} (rank {u.ndim})")
    if u.shape[1] < 1:
        fail(fn, arg, "have a sequence length L >= 1 (axis 1 of [B, L, D])", f"shape {tuple(u.shape)}")
    return u


def params(fn: str, p: Any, cls: type, axes: Mapping[str, Sequence[str]], made_by: str) -> dict[str, int]:
    """Check a parameter NamedTuple: its type, and every field real with the named axes consistent
    across fields (e.g. ``{"log_dt": ("D",), "a_imag": ("D", "M")}``); returns the sizes by name.

    Integer fields are accepted (promoted where used); complex fields are rejected.
    """
    if not isinstance(p, cls):
        fail(fn, "params", f"be a kjax.ssm.{cls.__name__} (from kjax.ssm.{made_by})",
             f"{type(p).__name__}", cls=KjaxTypeError)
    sizes: dict[str, int] = {}
    for field, names in axes.items():
        x = getattr(p, field)
        real_float(fn, f"params.{field}", x)
        shape = tuple(np.shape(x))
        if len(shape) != len(names):
            fail(fn, "params", f"have `{field}` of rank {len(names)} [{', '.join(names)}]",
                 f"`{field}` of shape {shape}")
        for name, size in zip(names, shape, strict=True):
            if sizes.setdefault(name, size) != size:
                fail(fn, "params", f"have `{field}` with {name}={sizes[name]}, as its other fields",
                     f"`{field}` of shape {shape}")
    return sizes


def step_input(fn: str, arg: str, x: Any, d: int):
    """One time step ``[B, D]`` of a recurrence with ``D = d`` channels (promoted to float)."""
    x = real_float(fn, arg, x)
    if x.ndim != 2:
        fail(fn, arg, "have rank 2 [B, D] (one time step of a batch)",
             f"shape {tuple(x.shape)} (rank {x.ndim})")
    if x.shape[1] != d:
        fail(fn, arg, f"have D={d} channels (axis 1 of [B, D]), as the parameters", f"shape {tuple(x.shape)}")
    return x


def state(fn: str, s: Any, cls: type, shapes: Mapping[str, tuple[int, ...]], made_by: str,
          why: str, *, complex_ok: bool = False) -> None:
    """Check a recurrent state NamedTuple against the shapes the parameters and input imply; the
    message names ``state`` (never the input) and says ``why`` those shapes. Fields must be real
    unless ``complex_ok`` (the diagonal complex states of S4D)."""
    if not isinstance(s, cls):
        fail(fn, "state", f"be a kjax.ssm.{cls.__name__} (from kjax.ssm.{made_by})", f"{type(s).__name__}",
             cls=KjaxTypeError)
    for field, want in shapes.items():
        value = getattr(s, field)
        got = tuple(np.shape(value))
        if got != tuple(want):
            fail(fn, "state", f"have `{field}` of shape {tuple(want)} ({why})", f"`{field}` of shape {got}")
        dt = value.dtype if hasattr(value, "dtype") else np.result_type(value)
        if not complex_ok and np.issubdtype(dt, np.complexfloating):
            fail(fn, "state", f"have a real `{field}` (from kjax.ssm.{made_by})", f"dtype {dt}",
                 cls=KjaxTypeError)


def in_range(fn: str, arg: str, x: Any, low: float, high: float, *, low_open: bool = True,
             high_open: bool = False) -> None:
    """Check a static scalar hyperparameter is finite and in the interval; traced values pass
    (the caller documents the domain)."""
    if x is None or not is_static_number(x):
        return
    arr = np.asarray(x, dtype=np.float64) if np.isrealobj(x) else np.asarray(x)
    if np.iscomplexobj(arr) or not np.all(np.isfinite(arr)):
        fail(fn, arg, "be a finite real number", repr(x))
    lo_ok = np.all(arr > low) if low_open else np.all(arr >= low)
    hi_ok = np.all(arr < high) if high_open else np.all(arr <= high)
    if not (lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
        fail(fn, arg, f"be in {interval}", repr(arr.item()) if arr.ndim == 0 else repr(arr))


def finite(fn: str, arg: str, x: Any) -> None:
    """Check a static scalar is finite (traced values pass)."""
    in_range(fn, arg, x, -math.inf, math.inf, low_open=False, high_open=False)


def _num(v: float) -> str:
    return "inf" if v == math.inf else "-inf" if v == -math.inf else repr(v)

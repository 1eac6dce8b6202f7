"""The memory guard: peak memory estimated from shapes, checked against the free memory first.

Infinite-width kernels of conv nets and full eNTKs grow as ``n^2`` times the square of the spatial
or output size, so a call that looks small can ask for tens of gigabytes and fail late, deep
inside XLA or at an unrelated host copy. The kernels of :mod:`kjax.ntk` estimate their peak memory
from shapes before they run and raise :class:`KjaxMemoryError` when it exceeds what is free,
naming a block or batch size that fits.

Free memory is read from the default device: ``bytes_limit - bytes_in_use`` of
``Device.memory_stats()`` on accelerators, ``MemAvailable`` of ``/proc/meminfo`` (or
``os.sysconf``) for the host on CPU. Set the environment variable ``KJAX_MEMORY_GUARD=0`` to turn
the guard off (for instance when the estimate is wrong for an unusual model), or
``KJAX_MEMORY_LIMIT`` (bytes, with an optional ``K``/``M``/``G`` suffix) to cap what it
considers free.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import numpy as np
from jax.extend import core as jcore

from kjax._src.errors import KjaxError

#: XLA's buffer assignment on CPU held up to ~2.6x the live set of the unfused jaxpr for the conv
#: nets of tests/ntk/stax_archs.py (1x-0.4x for MLPs); stax estimates are scaled by this factor
XLA_FACTOR = 3.0
#: fraction of the free memory a suggested block size may use
HEADROOM = 0.8


class KjaxMemoryError(KjaxError, MemoryError):
    """A computation whose estimated peak memory exceeds the free memory (raised before it runs)."""


def _parse_bytes(text: str) -> int | None:
    text = text.strip().upper().removesuffix("B")
    scale = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(text[-1:], 1)
    try:
        return int(float(text[:-1] if scale > 1 else text) * scale)
    except ValueError:
        return None


def host_available_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf``'s available pages; None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes() -> int | None:
    """Free bytes on the default device (see the module docstring); None when unknown or off."""
    if os.environ.get("KJAX_MEMORY_GUARD", "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    free = None
    device = jax.devices()[0]
    if device.platform != "cpu":
        try:
            stats = device.memory_stats()
        except Exception:  # pragma: no cover - backends without memory statistics
            stats = None
        if stats and "bytes_limit" in stats:
            free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    if free is None:
        free = host_available_bytes()
    limit = _parse_bytes(os.environ.get("KJAX_MEMORY_LIMIT", "")) if os.environ.get(
        "KJAX_MEMORY_LIMIT") else None
    if limit is not None:
        free = limit if free is None else min(free, limit)
    return free


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def check_memory(fn: str, need: float, what: str, advice: Callable[[int], str]) -> None:
    """Raise :class:`KjaxMemoryError` when ``need`` bytes exceed the free memory.

    The message is ``"{fn}: {what} needs about X but Y are free; {advice(free)}."``.
    """
    free = available_bytes()
    if free is None or need <= free:
        return
    raise KjaxMemoryError(f"{fn}: {what} needs about {format_bytes(need)} of memory but "
                          f"{format_bytes(free)} are free; {advice(free)} (the estimate comes "
                          "from shapes; KJAX_MEMORY_GUARD=0 turns this check off).")


def largest_fitting(need: Callable[[int], float], hi: int, budget: float) -> int:
    """The largest ``b`` in ``[1, hi]`` with ``need(b) <= budget`` (``need`` increasing), or 0."""
    if hi < 1 or need(1) > budget:
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if need(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


# ------------------------------------------------------------------------- jaxpr live set


def _nbytes(v) -> int:
    aval = getattr(v, "aval", None)
    shape, dtype = getattr(aval, "shape", None), getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    try:
        return int(np.prod(shape)) * np.dtype(dtype).itemsize
    except TypeError:  # extended dtypes (PRNG keys)
        return 0


def _sub_jaxprs(eqn):
    for p in eqn.params.values():
        for v in p if isinstance(p, tuple | list) else (p,):
            if isinstance(v, jcore.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jcore.Jaxpr):
                yield v


def jaxpr_peak_bytes(jaxpr) -> int:
    """Peak bytes of the values alive at once when the equations of ``jaxpr`` run in order.

    Each value lives from the equation that makes it to its last use; nested jaxprs (jit, custom
    derivatives, loops, branches) count their own peak while they run. No fusion is assumed, so
    elementwise chains count every intermediate; XLA's buffer assignment can hold more or less.
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    last = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, jcore.Literal):
                last[v] = i
    for v in jaxpr.outvars:
        if not isinstance(v, jcore.Literal):
            last[v] = len(jaxpr.eqns)
    live = {v: _nbytes(v) for v in [*jaxpr.invars, *jaxpr.constvars]}
    current = sum(live.values())
    peak = current
    for i, eqn in enumerate(jaxpr.eqns):
        inner = max((jaxpr_peak_bytes(s) for s in _sub_jaxprs(eqn)), default=0)
        out = sum(_nbytes(v) for v in eqn.outvars)
        peak = max(peak, current + max(inner, out))
        for v in eqn.outvars:
            if v in last:  # outputs never read again are freed at once
                live[v] = _nbytes(v)
                current += live[v]
        for v in {v for v in eqn.invars if not isinstance(v, jcore.Literal)}:
            if last.get(v) == i and v in live:
                current -= live.pop(v)
        peak = max(peak, current)
    return peak

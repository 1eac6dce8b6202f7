"""``neural_tangents._src.utils.utils``: the small axis helpers NT's stax tests import.

Re-implemented from their NT docstrings (test scaffolding, not kjax API); anything else is a stub.
"""

from __future__ import annotations

import jax.numpy as jnp

from tests.nt_compat.nt._src import internal


def zip_flat(x, y) -> tuple:
    """``(x0, y0, x1, y1, ...)``."""
    return tuple(c for pair in zip(x, y, strict=False) for c in pair)


def unzip_axes(x, start_axis: int = 0, end_axis: int | None = None):
    """``[..., X, X', Y, Y', ...] -> [..., X, Y, ..., X', Y', ...]`` between the two axes."""
    end_axis = x.ndim if end_axis is None else end_axis % (x.ndim + 1)
    pairs = range(start_axis, end_axis)
    perm = list(range(start_axis)) + list(pairs[0::2]) + list(pairs[1::2]) + list(range(end_axis, x.ndim))
    return jnp.transpose(x, perm)


def axis_after_dot(axis: int, contracting_dims, batch_dims, lhs_ndim: int | None = None) -> int:
    """Where ``axis`` of an operand lands in the output of ``lax.dot_general``."""
    if axis in batch_dims:
        return list(batch_dims).index(axis)
    return (axis - sum(1 for i in contracting_dims if i < axis) + sum(1 for i in batch_dims if i > axis)
            + (0 if lhs_ndim is None else lhs_ndim - len(batch_dims) - len(contracting_dims)))


def canonicalize_idx(idx, ndim: int) -> tuple:
    """An index expression as a tuple of ``ndim`` ints / slices (``...`` expanded)."""
    if idx is Ellipsis or isinstance(idx, int | slice):
        idx = (idx,) + (slice(None),) * (ndim - 1)
    for i, s in enumerate(idx):
        if s is Ellipsis:
            idx = idx[:i] + (slice(None),) * (ndim - len(idx) + 1) + idx[i + 1:]
    return tuple(idx) + (slice(None),) * (ndim - len(idx))


def __getattr__(name: str):
    return internal("utils.utils", name)

"""Output axes of an eNTK: neural-tangents' ``trace_axes`` / ``diagonal_axes`` and the zipped layout.

For outputs ``f(x1): [N1, X, Y, ...]`` and ``f(x2): [N2, X, Y, ...]`` the full kernel has one pair
of axes per output axis. An axis in ``trace_axes`` is averaged over (its pairs ``(a, a)``), one in
``diagonal_axes`` is kept once (only ``(a, a)``), and the others stay as zipped pairs: with
``trace_axes=(-1,)`` the kernel of ``[N, O]`` outputs is ``[N1, N2]``, with ``()`` it is
``[N1, N2, O, O]``. The batch axis is output axis 0 and follows the same rules, as in
neural-tangents 0.6.5: ``trace_axes=(0,)`` averages ``Theta(x1[i], x2[i])`` over ``i`` and needs
``N1 == N2``.
"""

from __future__ import annotations

import string

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxTypeError, fail


def canonical_axes(fn: str, trace_axes, diagonal_axes, ndim: int) -> tuple[tuple, tuple]:
    """Normalise and validate trace / diagonal axes against an output of rank ``ndim``."""

    def norm(name, axes):
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        out = []
        for a in axes:
            if isinstance(a, bool) or not isinstance(a, int | np.integer):
                fail(fn, name, "contain Python ints", repr(axes), cls=KjaxTypeError)
            if not -ndim <= a < ndim:
                fail(fn, name, f"be axes of the output of rank {ndim} (in [-{ndim}, {ndim}))",
                     repr(axes))
            out.append(int(a) % ndim)
        # a repeated axis counts once, as neural-tangents' canonicalize_axis does (sorted(set(...)))
        return tuple(sorted(set(out)))

    t, d = norm("trace_axes", trace_axes), norm("diagonal_axes", diagonal_axes)
    if set(t) & set(d):
        fail(fn, "diagonal_axes", f"not overlap `trace_axes` {t}", repr(d))
    return t, d


def check_batch_pairing(fn: str, trace: tuple, diag: tuple, n1: int, n2: int) -> None:
    """A traced or diagonal batch axis pairs ``x1[i]`` with ``x2[i]``: the batches must match."""
    for name, axes in (("trace_axes", trace), ("diagonal_axes", diag)):
        if 0 in axes and n1 != n2:
            fail(fn, "x2", f"have as many examples as `x1` ({n1}) when `{name}` contains the batch "
                 "axis 0 (the kernel pairs x1[i] with x2[i], as in neural-tangents)", n2)


def result_shape(shape1: tuple, shape2: tuple, trace: tuple, diag: tuple) -> tuple[int, ...]:
    """The kernel's shape for outputs of shapes ``shape1`` and ``shape2`` (NT's zipped order)."""
    res = []
    for i, (a, b) in enumerate(zip(shape1, shape2, strict=True)):
        if i in trace:
            continue
        res += [a] if i in diag else [a, b]
    return tuple(res)


class Letters:
    """Fresh einsum letters."""

    def __init__(self):
        self._it = iter(string.ascii_letters)

    def __call__(self, n=1):
        return "".join(next(self._it) for _ in range(n))


def out_letters(ndim: int, trace: tuple, diag: tuple, letters: Letters):
    """Letters for the output axes of f(x1) and f(x2), and the result's letters (NT's order)."""
    l1 = [letters() for _ in range(ndim)]
    l2 = [c if (i in trace or i in diag) else letters() for i, c in enumerate(l1)]
    res = []
    for i in range(ndim):
        if i in trace:
            continue
        res += [l1[i]] if i in diag else [l1[i], l2[i]]
    return l1, l2, "".join(res)


def trace_and_diagonal(full: jax.Array, trace: tuple, diag: tuple) -> jax.Array:
    """From ``[N1, X, Y, ..., N2, X, Y, ...]`` to NT's traced / diagonalised, zipped layout."""
    nd = full.ndim // 2
    l1, l2, res = out_letters(nd, trace, diag, Letters())
    out = jnp.einsum(f"{''.join(l1)}{''.join(l2)}->{res}", full)
    size = int(np.prod([full.shape[i] for i in trace])) if trace else 1
    return out / size


def contract_outputs(o1: jax.Array, o2: jax.Array, trace: tuple, diag: tuple,
                     extra: int = 0, precision=jax.lax.Precision.HIGHEST) -> jax.Array:
    """``sum`` over the last ``extra`` axes of ``o1[*out1, ...] o2[*out2, ...]`` in NT's layout,
    averaged over the traced axes (the NNGP, and the sketches of :func:`projected_ntk`)."""
    nd = o1.ndim - extra
    letters = Letters()
    l1, l2, res = out_letters(nd, trace, diag, letters)
    r = letters(extra)
    k = jnp.einsum(f"{''.join(l1)}{r},{''.join(l2)}{r}->{res}", o1, o2, precision=precision)
    size = int(np.prod([o1.shape[i] for i in trace])) if trace else 1
    return k / size

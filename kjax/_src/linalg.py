"""Dense linear algebra that XLA:CPU does slowly: triangular solves with a few right-hand sides.

``jax.lax.linalg.triangular_solve`` with one right-hand side runs 25-30x slower than SciPy's on
the CPU backend (a ``[5000, 5000]`` float32 factor: about 130-160 ms against 5 ms; see
``python benchmarks/cpu_limits.py``), while a matrix-vector product over the same matrix takes
about 5 ms. Falkon's conjugate gradients make four such solves per iteration and the exact
kernel ridge fit two, so :func:`solve_triangular` does blocked substitution instead: panels of
``block`` rows, each updated by one matrix-vector product with the solved part and finished by a
small ``block x block`` triangular solve.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: rows per panel of the blocked substitution
TRI_BLOCK = 128


def _panel_solve(diag, r, transpose):
    return jax.lax.linalg.triangular_solve(diag, r, left_side=True, lower=True,
                                           transpose_a=transpose)


def solve_triangular(low: jax.Array, b: jax.Array, *, transpose: bool = False,
                     block: int = TRI_BLOCK) -> jax.Array:
    """``low^-1 b`` (or ``low^-T b`` with ``transpose``) for a lower-triangular ``low: [m, m]`` and
    ``b: [m]`` or ``[m, k]``, by blocked forward (backward) substitution.

    Each step reads one panel of ``block`` rows (columns, when transposed) of ``low`` and
    multiplies it with the part of the solution found so far (zeros elsewhere), so the whole solve
    costs about two passes over ``low`` in matrix-vector products plus ``m / block`` small
    triangular solves. Only the lower triangle of ``low`` is used. Differentiable (a ``fori_loop``
    with a fixed trip count).
    """
    vec = b.ndim == 1
    b2 = b[:, None] if vec else b
    m = low.shape[0]
    bs = max(1, min(block, m))
    nfull = m // bs
    hi = jax.lax.Precision.HIGHEST
    dt = jnp.result_type(low.dtype, b2.dtype)
    low = low.astype(dt)
    b2 = b2.astype(dt)

    # the diagonal blocks, gathered once: a 2-D dynamic slice of `low` inside the loop ran ~50x
    # slower than the small solve itself on XLA:CPU
    idx = jnp.arange(nfull)[:, None] * bs + jnp.arange(bs)[None, :]
    diags = low[idx[:, :, None], idx[:, None, :]]  # [nfull, bs, bs]

    def update(x, start, size, diag):
        if transpose:  # rows start..start+size of low^T: a column panel of low
            panel = jax.lax.dynamic_slice_in_dim(low, start, size, axis=1)  # [m, size]
            r = jnp.einsum("mi,mk->ik", panel, x, precision=hi)
        else:
            panel = jax.lax.dynamic_slice_in_dim(low, start, size, axis=0)  # [size, m]
            r = jnp.matmul(panel, x, precision=hi)
        rhs = jax.lax.dynamic_slice_in_dim(b2, start, size, axis=0) - r
        xi = _panel_solve(diag, rhs, transpose)
        return jax.lax.dynamic_update_slice_in_dim(x, xi, start, axis=0)

    x = jnp.zeros_like(b2)
    rem = m - nfull * bs
    last = nfull * bs
    if not transpose:
        x = jax.lax.fori_loop(0, nfull, lambda i, x: update(x, i * bs, bs, diags[i]), x)
        if rem:
            x = update(x, last, rem, low[last:, last:])
    else:  # backward: the last (partial) panel first
        if rem:
            x = update(x, last, rem, low[last:, last:])
        x = jax.lax.fori_loop(
            0, nfull, lambda i, x: update(x, (nfull - 1 - i) * bs, bs, diags[nfull - 1 - i]), x)
    return x[:, 0] if vec else x


#: above this many right-hand sides, LAPACK's triangular solve (compute-bound) is used as it is
FEW_RHS = 64


def cho_solve(low: jax.Array, b: jax.Array) -> jax.Array:
    """``(low low^T)^-1 b`` from a lower Cholesky factor: two :func:`solve_triangular` calls for a
    few right-hand sides, ``jax.scipy.linalg.cho_solve`` for many (``> FEW_RHS`` columns)."""
    if b.ndim == 2 and b.shape[1] > FEW_RHS:
        return jax.scipy.linalg.cho_solve((low, True), b)
    return solve_triangular(low, solve_triangular(low, b), transpose=True)

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

import functools

import jax
import jax.numpy as jnp

#: rows per panel of the blocked substitution
TRI_BLOCK = 128


def _panel_solve(diag, r, transpose):
    return jax.lax.linalg.triangular_solve(diag, r, left_side=True, lower=True,
                                           transpose_a=transpose)


def _diag_indices(m, bs):
    nfull = m // bs
    return jnp.arange(nfull)[:, None] * bs + jnp.arange(bs)[None, :]


def block_inverses(low: jax.Array, *, block: int = TRI_BLOCK):
    """Inverses of the diagonal blocks of ``low`` that :func:`solve_triangular` uses, for
    ``diag_inv=``: ``([m // block, block, block], [m % block, m % block] or None)``.

    With them a solve is matrix products only, no LAPACK call: XLA:CPU runs the replicated part of
    a sharded program on every device at once, and concurrent calls into threaded OpenBLAS from
    those threads intermittently returned NaN (Falkon on 2 CPU devices; see
    kjax/regression/_falkon.py). Compute them once, outside the sharded program.
    """
    m = low.shape[0]
    bs = max(1, min(block, m))
    idx = _diag_indices(m, bs)
    diags = low[idx[:, :, None], idx[:, None, :]]
    eye = jnp.eye(bs, dtype=low.dtype)
    inv = jax.vmap(lambda d: jax.lax.linalg.triangular_solve(d, eye, left_side=True, lower=True))(diags)
    last = (m // bs) * bs
    rem = None
    if last < m:
        rem = jax.lax.linalg.triangular_solve(low[last:, last:], jnp.eye(m - last, dtype=low.dtype),
                                              left_side=True, lower=True)
    return inv, rem


def solve_triangular(low: jax.Array, b: jax.Array, *, transpose: bool = False,
                     block: int = TRI_BLOCK, diag_inv=None) -> jax.Array:
    """``low^-1 b`` (or ``low^-T b`` with ``transpose``) for a lower-triangular ``low: [m, m]`` and
    ``b: [m]`` or ``[m, k]``, by blocked forward (backward) substitution.

    Each step reads one panel of ``block`` rows (columns, when transposed) of ``low`` and
    multiplies it with the part of the solution found so far (zeros elsewhere), so the whole solve
    costs about two passes over ``low`` in matrix-vector products plus ``m / block`` small
    triangular solves. Only the lower triangle of ``low`` is used. Differentiable (a ``fori_loop``
    with a fixed trip count). With ``diag_inv`` from :func:`block_inverses` (same ``block``) the
    small solves are matrix products with the inverted diagonal blocks.
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
    if diag_inv is None:
        idx = _diag_indices(m, bs)
        diags = low[idx[:, :, None], idx[:, None, :]]  # [nfull, bs, bs]
        solve = functools.partial(_panel_solve, transpose=transpose)
    else:
        diags = diag_inv[0].astype(dt)

        def solve(inv, r):
            return jnp.matmul(inv.T if transpose else inv, r, precision=hi)

    def update(x, start, size, diag):
        if transpose:  # rows start..start+size of low^T: a column panel of low
            panel = jax.lax.dynamic_slice_in_dim(low, start, size, axis=1)  # [m, size]
            r = jnp.einsum("mi,mk->ik", panel, x, precision=hi)
        else:
            panel = jax.lax.dynamic_slice_in_dim(low, start, size, axis=0)  # [size, m]
            r = jnp.matmul(panel, x, precision=hi)
        rhs = jax.lax.dynamic_slice_in_dim(b2, start, size, axis=0) - r
        xi = solve(diag, rhs)
        return jax.lax.dynamic_update_slice_in_dim(x, xi, start, axis=0)

    x = jnp.zeros_like(b2)
    rem = m - nfull * bs
    last = nfull * bs
    rem_diag = None
    if rem:
        rem_diag = low[last:, last:] if diag_inv is None else diag_inv[1].astype(dt)
    if not transpose:
        x = jax.lax.fori_loop(0, nfull, lambda i, x: update(x, i * bs, bs, diags[i]), x)
        if rem:
            x = update(x, last, rem, rem_diag)
    else:  # backward: the last (partial) panel first
        if rem:
            x = update(x, last, rem, rem_diag)
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

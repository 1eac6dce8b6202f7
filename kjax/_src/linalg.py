"""Dense linear algebra shared by every pillar: jittered Cholesky, PSD eigendecompositions and
pseudo-inverse solves with a status (:mod:`kjax._src.status`), and the triangular solves that
XLA:CPU does slowly.

Factorisations never return a silent NaN: :func:`robust_cholesky` retries with jitter and reports
what it did, :func:`psd_eigh` clips negative eigenvalues and reports them, and :func:`psd_factor`
falls back from a Cholesky factor to a pseudo-inverse when the matrix is singular or indefinite.

Triangular solves with a few right-hand sides:

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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from kjax._src import status as st
from kjax._src.status import Status

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

#: rows of the diagonal blocks that :func:`unit_lower_inverse` inverts by substitution
UNIT_LOWER_BLOCK = 16


def unit_lower_inverse(strict: Float[Array, "*batch c c"], *, block: int = UNIT_LOWER_BLOCK
                       ) -> Float[Array, "*batch c c"]:
    """``(I + strict)^-1`` for a batch of strictly lower-triangular ``strict: [..., c, c]``, by matrix
    products only (no LAPACK call).

    Why not ``jax.lax.linalg.triangular_solve``: on the CPU backend a batched triangular solve is
    jaxlib's LAPACK kernel, which splits the batch over XLA's intra-op thread pool and waits for
    the parts; when two such solves run at once (XLA runs independent operations concurrently, e.g.
    a forward and a backward solve of the chunked delta rule) on a pool of two threads, both
    threads wait for parts that no thread is left to run, and the program hangs (observed with
    jax 0.10.2 on a 2-core machine: gdb showed both pool threads in ``ParallelBatchMap`` of
    ``TriMatrixEquationSolver`` and every other thread idle).

    Method: the ``block x block`` diagonal blocks are inverted by forward substitution, one row at
    a time (``block`` steps, vectorised over the batch and the blocks), and the off-diagonal blocks
    follow from ``T_ij = -T_ii sum_{j <= k < i} N_ik T_kj``. Stable like substitution (no power
    series); differentiable; the cost is ``O(c^3)`` per matrix, small next to the chunk's other
    products for the chunk sizes of linear attention (``c <= 128``).
    """
    c = strict.shape[-1]
    hi = jax.lax.Precision.HIGHEST
    bs = max(1, min(block, c))
    nb = -(-c // bs)
    cp = nb * bs
    if cp != c:
        pad = [(0, 0)] * (strict.ndim - 2) + [(0, cp - c), (0, cp - c)]
        strict = jnp.pad(strict, pad)
    eye = jnp.eye(bs, dtype=strict.dtype)
    blk = lambda i, j: strict[..., i * bs:(i + 1) * bs, j * bs:(j + 1) * bs]
    diag = jnp.stack([blk(i, i) for i in range(nb)], axis=-3)          # [..., nb, bs, bs]
    rows = [jnp.broadcast_to(eye[0], diag.shape[:-2] + (bs,))]
    for r in range(1, bs):
        done = jnp.stack(rows, axis=-2)                                   # [..., nb, r, bs]
        rows.append(eye[r] - jnp.einsum("...j,...jk->...k", diag[..., r, :r], done, precision=hi))
    dinv = jnp.stack(rows, axis=-2)                                       # [..., nb, bs, bs]
    t = [[None] * nb for _ in range(nb)]
    for i in range(nb):
        t[i][i] = dinv[..., i, :, :]
        for j in range(i - 1, -1, -1):
            acc = sum(jnp.matmul(blk(i, k), t[k][j], precision=hi) for k in range(j, i))
            t[i][j] = -jnp.matmul(t[i][i], acc, precision=hi)
    zero = jnp.zeros_like(t[0][0])
    full = jnp.concatenate([jnp.concatenate([t[i][j] if j <= i else zero for j in range(nb)], axis=-1)
                            for i in range(nb)], axis=-2)
    return full[..., :c, :c]


def cho_solve(low: jax.Array, b: jax.Array) -> jax.Array:
    """``(low low^T)^-1 b`` from a lower Cholesky factor: two :func:`solve_triangular` calls for a
    few right-hand sides, ``jax.scipy.linalg.cho_solve`` for many (``> FEW_RHS`` columns)."""
    if b.ndim == 2 and b.shape[1] > FEW_RHS:
        return jax.scipy.linalg.cho_solve((low, True), b)
    return solve_triangular(low, solve_triangular(low, b), transpose=True)


# --------------------------------------------------------------------------------------------
# factorisations with a status


class CholeskyResult(NamedTuple):
    """What :func:`robust_cholesky` returns; unpacks as ``low, jitter, status``."""

    factor: Float[Array, "n n"]
    jitter: Float[Array, ""]
    status: Int[Array, ""]


#: jittered retries of :func:`robust_cholesky` after the plain attempt
CHOLESKY_TRIES = 5


def default_jitter(dtype: Any) -> float:
    """The default relative jitter of :func:`robust_cholesky`: ``10 eps`` of ``dtype``."""
    return float(10 * np.finfo(dtype).eps)


def robust_cholesky(a: Float[Array, "n n"], *, jitter: float | None = None,
                    tries: int = CHOLESKY_TRIES) -> CholeskyResult:
    r"""Lower Cholesky factor of a symmetric matrix (its lower triangle is read), adding jitter
    until it succeeds.

    The first try is plain; try ``k >= 1`` factors :math:`A + j\,10^{k-1}\,\overline{|a_{ii}|}\,I`
    (``j = jitter``, default ``10 eps`` of the dtype, relative to the mean absolute diagonal).
    Traceable and reverse-differentiable (nested ``lax.cond``: the jittered factorisations only run
    when the previous one failed).

    Args:
      a: ``[n, n]`` symmetric matrix, at least float32.
      jitter: relative jitter of the first retry (> 0).
      tries: number of jittered retries.

    Returns:
      :class:`CholeskyResult` ``(factor [n, n], jitter added (absolute), status)``; ``status`` is
      ``OK``, ``JITTER`` (jitter was needed), ``NOT_PSD`` (every retry failed: ``factor`` has NaN)
      or ``NONFINITE_VALUES`` (``a`` has NaN or inf: callers that build ``a`` from their inputs
      combine this with :func:`kjax._src.status.nonfinite_input` of those inputs).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax._src.linalg import robust_cholesky
      >>> low, added, status = robust_cholesky(jnp.ones((3, 3)))
      >>> int(status), bool(added > 0), bool(jnp.all(jnp.isfinite(low)))
      (2, True, True)
    """
    dt = a.dtype
    base = default_jitter(dt) if jitter is None else float(jitter)
    scale = jnp.maximum(jnp.mean(jnp.abs(jnp.diagonal(a))), jnp.finfo(dt).tiny)
    eye = jnp.eye(a.shape[0], dtype=dt)

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
    code = jnp.where(~ok, Status.NOT_PSD, jnp.where(add > 0, Status.JITTER, Status.OK))
    finite = jnp.all(jnp.isfinite(jnp.tril(a)))
    code = jnp.where(finite, code, Status.NONFINITE_VALUES).astype(jnp.int32)
    return CholeskyResult(low, add, code)


def null_tolerance(s: Float[Array, " n"], rcond: float | None = None) -> jax.Array:
    """Eigenvalues at or below this are numerically zero: ``rcond * max|s|``, ``rcond`` defaulting
    to ``n * eps`` (NumPy's ``pinv`` / ``matrix_rank`` rule)."""
    r = s.shape[-1] * float(np.finfo(s.dtype).eps) if rcond is None else rcond
    return r * jnp.max(jnp.abs(s))


class EighResult(NamedTuple):
    """What :func:`psd_eigh` returns; unpacks as ``eigenvalues, eigenvectors, status``."""

    eigenvalues: Float[Array, " n"]
    eigenvectors: Float[Array, "n n"]
    status: Int[Array, ""]


def psd_eigh(a: Float[Array, "n n"], *, rcond: float | None = None) -> EighResult:
    """Eigendecomposition of a symmetric matrix meant to be PSD: negative eigenvalues are clipped to
    zero and reported.

    Args:
      a: ``[n, n]`` symmetric matrix.
      rcond: eigenvalues below ``-rcond * max|s|`` count as negative (default ``n * eps``).

    Returns:
      :class:`EighResult` ``(eigenvalues [n] ascending, clipped at 0; eigenvectors [n, n]; status)``:
      ``OK``; ``JITTER`` when some eigenvalue was negative beyond the tolerance (clipped);
      ``NOT_PSD`` when none is positive beyond it while some is negative (e.g. a negative-definite
      matrix); ``NONFINITE_VALUES`` for NaN or inf in ``a``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax._src.linalg import psd_eigh
      >>> s, _, status = psd_eigh(jnp.diag(jnp.array([2.0, -1.0, 0.0])))
      >>> s.tolist(), int(status)
      ([0.0, 0.0, 2.0], 2)
    """
    s, u = jnp.linalg.eigh(a)
    tol = null_tolerance(s, rcond)
    neg = jnp.min(s) < -tol
    code = jnp.where(neg, jnp.where(jnp.max(s) <= tol, Status.NOT_PSD, Status.JITTER), Status.OK)
    code = jnp.where(jnp.all(jnp.isfinite(a)), code, Status.NONFINITE_VALUES).astype(jnp.int32)
    return EighResult(jnp.maximum(s, 0.0), u, code)


class PSDFactor(NamedTuple):
    """A factor of a PSD matrix for solves: a Cholesky factor, or a pseudo-inverse factor.

    Attributes:
      factor: ``[n, n]``; the lower Cholesky factor ``L`` (``A = L L^T``) when ``pinv`` is False, or
        ``W = U diag(1/sqrt(s))`` over the eigenvalues above the null tolerance (zero columns
        elsewhere, ``A^+ = W W^T``) when it is True.
      pinv: bool scalar, which of the two.
      status: ``OK`` for a Cholesky factor; ``SINGULAR``, ``JITTER`` (negative eigenvalues dropped),
        ``NOT_PSD`` (nothing positive) or ``NONFINITE_VALUES`` for the pseudo-inverse.
    """

    factor: Float[Array, "n n"]
    pinv: Bool[Array, ""]
    status: Int[Array, ""]


def is_concrete(*xs: Any) -> bool:
    """True when no leaf of ``xs`` is a tracer (values are known: Python control flow is fine)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(xs))


def branch(pred: Any, true_fn, false_fn):
    """``true_fn()`` if ``pred`` else ``false_fn()``: a Python branch when ``pred`` is concrete (only
    one side runs, and is traced), ``lax.cond`` when it is traced."""
    if is_concrete(pred):
        return true_fn() if bool(pred) else false_fn()
    return jax.lax.cond(pred, true_fn, false_fn)


def psd_factor(a: Float[Array, "n n"], *, rcond: float | None = None) -> PSDFactor:
    """Factor a PSD matrix for :func:`psd_solve`: Cholesky when it succeeds without jitter, otherwise
    (singular, indefinite) the pseudo-inverse from :func:`psd_eigh` with eigenvalues at or below
    ``rcond * max|s|`` (default ``n * eps``) treated as zero.

    The pseudo-inverse is the limit of ``(A + r I)^-1`` on the range of ``A`` as ``r -> 0`` and zero
    on its null space: the minimum-norm least-squares solution, what gradient flow on a quadratic
    with this Hessian reaches at infinite time when started from zero. Jitter would instead amplify
    rounding noise along the null space by ``1 / jitter``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax._src.linalg import psd_factor, psd_solve
      >>> f = psd_factor(jnp.ones((2, 2)))
      >>> [round(float(v), 6) for v in psd_solve(f, jnp.array([2.0, 2.0]))], int(f.status)
      ([1.0, 1.0], 6)
    """
    low = jax.lax.linalg.cholesky(a, symmetrize_input=False)
    ok = jnp.all(jnp.isfinite(low))

    def chol():
        return PSDFactor(low, jnp.asarray(False), st.as_status(Status.OK))

    def pinv():
        s, u, code = psd_eigh(a, rcond=rcond)
        keep = s > null_tolerance(s, rcond)
        w = u * jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, s, 1.0)), 0.0)
        code = jnp.where(code == Status.OK, Status.SINGULAR, code).astype(jnp.int32)
        return PSDFactor(w, jnp.asarray(True), code)

    return branch(ok, chol, pinv)


def psd_solve(f: PSDFactor, b: Float[Array, " n *k"]) -> Float[Array, " n *k"]:
    """``A^-1 b`` (``A^+ b`` for a pseudo-inverse factor) from :func:`psd_factor`."""
    return branch(f.pinv, lambda: f.factor @ (f.factor.T @ b), lambda: cho_solve(f.factor, b))


def robust_cholesky_np(a: np.ndarray, *, jitter: float | None = None,
                       tries: int = CHOLESKY_TRIES) -> tuple[np.ndarray | None, Status]:
    """:func:`robust_cholesky` in NumPy, for host loops (BLESS / SQUEAK dictionaries) that factor many
    small matrices of changing sizes: the same jitter schedule, ``(low or None, status)``."""
    a = np.asarray(a)
    if not np.all(np.isfinite(a)):
        return None, Status.NONFINITE_VALUES
    base = default_jitter(a.dtype) if jitter is None else float(jitter)
    scale = max(float(np.mean(np.abs(np.diag(a)))), np.finfo(a.dtype).tiny)
    eye = np.eye(a.shape[0], dtype=a.dtype)
    for k in range(tries + 1):
        add = 0.0 if k == 0 else base * 10.0 ** (k - 1) * scale
        try:
            return np.linalg.cholesky(a + add * eye), (Status.OK if k == 0 else Status.JITTER)
        except np.linalg.LinAlgError:
            continue
    return None, Status.NOT_PSD

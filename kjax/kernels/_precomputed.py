"""Kernels given by their values: a precomputed Gram matrix, or a linear operator (matvecs only).

Both are *index kernels*: their data are integer indices into one fixed set of ``N`` points, as
``[n]`` or ``[n, 1]`` int arrays (integer-valued floats are accepted too, so a solver's state can
hold them in its float dtype). ``k(i, j)`` reads the stored entries; nothing is recomputed.

* :func:`precomputed` stores a square ``[N, N]`` Gram matrix (train and test points together: fit
  on the training indices, predict on the test ones), or only some of its columns
  (``columns=idx``: ``[N, M]``, e.g. Falkon's :math:`K_{nM}` where ``N x N`` does not fit).
* :func:`operator` is a symmetric PSD operator known through ``v -> K v`` only: the solvers that
  only multiply by ``K`` (``krr_fit(solver="pcg")``, ``kjax.ntk.predict``'s CG) take it.

The blockwise helpers of :mod:`kjax.kernels` (:func:`~kjax.kernels.gram`,
:func:`~kjax.kernels.kernel_matvec`, :func:`~kjax.kernels.kernel_normal_matvec`,
:func:`~kjax.kernels.kernel_diag`) recognise index kernels and multiply with the stored matrix
directly (without ``mesh``): ``K_{ab} v`` is one product with the stored matrix after scattering
``v`` to its columns, so a Falkon iteration on a stored ``[N, M]`` costs two ``[N, M]`` matvecs and
copies nothing. Smaller requests gather the rows or the sub-matrix instead, whichever reads less.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, check_int, fail
from kjax.kernels._pytree import Kernel

#: indices coded in float32 are exact up to this many points
_F32_EXACT = 2**24


def _concrete(*xs: Any) -> bool:
    return all(not isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(xs))


def _as_index(x: Any) -> jax.Array:
    """``[n]`` or ``[n, 1]`` (int or integer-valued float) as an int32 ``[n]`` vector."""
    x = jnp.asarray(x)
    if x.ndim == 2:
        x = x[:, 0]
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = jnp.round(x)
    return x.astype(jnp.int32)


def _matmul(a, b):
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


class IndexKernel(Kernel):
    """Shared behaviour of :class:`PrecomputedKernel` and :class:`KernelOperator`.

    Subclasses define ``num_points`` (``N``), ``dtype`` (the float dtype of the coded indices and
    of the results), ``has_entries``, :meth:`_apply` (the full product with the stored operator)
    and, for columns, :meth:`_col_pos`.
    """

    has_entries: bool = True
    kind: str = "index kernel"

    def _col_pos(self, j: jax.Array) -> jax.Array:
        return j

    def _valid_cols(self, j: jax.Array) -> jax.Array:
        return jnp.ones(j.shape, bool)

    def _stored_finite(self) -> jax.Array | None:
        return None

    def index_data(self, fn: str, arg: str, x: Any, *, column: bool = True,
                   allow_empty: bool = False, mark: bool = True) -> Float[Array, "n 1"]:
        """``x`` (indices, or None for all ``N`` points) as the ``[n, 1]`` float data the solvers
        carry. Concrete indices are checked (integers in ``[0, N)``; with ``column`` and a
        ``columns=`` store, one of the stored columns); under ``jit`` an invalid index, or NaN / inf
        in a traced stored matrix, makes its row NaN, which the solvers report as status 1
        (non-finite input); ``mark=False`` (the blockwise helpers, called inside the solvers on
        data checked once) skips that."""
        n_pts = self.num_points
        if x is None:
            x = np.arange(n_pts)
        if not isinstance(x, jax.Array | np.ndarray):
            x = np.asarray(x)
        dt = np.dtype(x.dtype)
        if dt == np.bool_ or not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating)):
            fail(fn, arg, f"be integer indices into the N={n_pts} points of the {self.kind} "
                 "([n] or [n, 1] ints)", f"dtype {dt}", cls=KjaxTypeError)
        if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] != 1):
            fail(fn, arg, f"be indices [n] or [n, 1] into the N={n_pts} points of the {self.kind}",
                 f"shape {tuple(x.shape)}")
        if x.shape[0] == 0 and not allow_empty:
            fail(fn, arg, "hold at least one index", f"shape {tuple(x.shape)}")
        if _concrete(x):
            v = np.asarray(x).reshape(-1)
            if np.issubdtype(dt, np.floating) and not np.all(np.isfinite(v) & (v == np.round(v))):
                fail(fn, arg, "be integer indices (integer-valued)", f"values such as "
                     f"{v[~(np.isfinite(v) & (v == np.round(v)))][:3].tolist()}")
            bad = v[(v < 0) | (v >= n_pts)]
            if bad.size:
                fail(fn, arg, f"be indices in [0, {n_pts}) (the points of the {self.kind})",
                     f"{bad.size} out of range, e.g. {bad[:3].tolist()}")
            if column:
                self._check_columns(fn, arg, v.astype(np.int64))
        out = jnp.asarray(x).reshape(-1, 1).astype(self.dtype)
        if not mark:
            return out
        fin = self._stored_finite()
        if not _concrete(x) or fin is not None:
            i = _as_index(out)
            ok = (out[:, 0] == jnp.round(out[:, 0])) & (i >= 0) & (i < n_pts)
            if column:
                ok = ok & self._valid_cols(i)
            if fin is not None:
                ok = ok & fin
            out = jnp.where(ok[:, None], out, jnp.nan)
        return out

    def _check_columns(self, fn: str, arg: str, v: np.ndarray) -> None:
        return None

    # -- products used by kjax.kernels' blockwise helpers (no mesh) -----------------------------

    def _num_cols(self) -> int:
        return self.num_points

    def _out_dtype(self, v) -> np.dtype:
        return dtypes.accum_dtype(jnp.result_type(self.dtype, v.dtype))

    def matvec(self, x1, x2, v) -> jax.Array:
        """``k(x1, x2) @ v`` for ``v: [n2]`` or ``[n2, k]``; the cheapest of a sub-matrix gather,
        a row gather, or one product with the whole stored matrix."""
        r1, j2 = _as_index(x1), _as_index(x2)
        vec = v.ndim == 1
        v2 = v[:, None] if vec else v
        n1, n2, big_n, cols = r1.shape[0], j2.shape[0], self.num_points, self._num_cols()
        dt = self.dtype
        if self.has_entries and 3 * n1 * n2 <= min(3 * n1 * cols, big_n * cols):
            out = _matmul(self(x1, x2).astype(dt), v2.astype(dt))
        else:
            w = jnp.zeros((cols, v2.shape[1]), dt).at[self._col_pos(j2)].add(v2.astype(dt))
            out = self._apply(w, r1) if 2 * n1 < big_n else self._apply(w, None)[r1]
        out = out.astype(self._out_dtype(v2))
        return out[:, 0] if vec else out

    def rmatvec(self, x1, x2, u) -> jax.Array:
        """``k(x1, x2)^T u`` for ``u: [n1]`` or ``[n1, k]``, reading the store with ``x1`` as rows
        (so a ``columns=`` store needs only ``x2`` among its columns)."""
        r1, j2 = _as_index(x1), _as_index(x2)
        vec = u.ndim == 1
        u2 = u[:, None] if vec else u
        n1, n2, big_n, cols = r1.shape[0], j2.shape[0], self.num_points, self._num_cols()
        dt = self.dtype
        if self.has_entries and 3 * n1 * n2 <= big_n * cols:
            out = _matmul(self(x1, x2).astype(dt).T, u2.astype(dt))
        else:
            s = jnp.zeros((big_n, u2.shape[1]), dt).at[r1].add(u2.astype(dt))
            out = self._apply_t(s)[self._col_pos(j2)]
        out = out.astype(self._out_dtype(u2))
        return out[:, 0] if vec else out

    def normal_matvec(self, x, z, v, w=None) -> jax.Array:
        r"""``k(x, z)^T (k(x, z) v + w)``: two products with the stored matrix (nothing copied) or,
        when ``x`` and ``z`` are small next to it, with the gathered ``[n, m]`` sub-matrix."""
        vec = v.ndim == 1
        v2 = v[:, None] if vec else v
        w2 = None if w is None else (w[:, None] if w.ndim == 1 else w)
        r, j = _as_index(x), _as_index(z)
        n, m, big_n, cols = r.shape[0], j.shape[0], self.num_points, self._num_cols()
        dt = self.dtype
        if self.has_entries and 4 * n * m <= 2 * big_n * cols:
            knm = self(x, z).astype(dt)
            u = _matmul(knm, v2.astype(dt))
            if w2 is not None:
                u = u + w2.astype(dt)
            out = _matmul(knm.T, u)
        else:
            u = self.matvec(x, z, v2).astype(dt)
            if w2 is not None:
                u = u + w2.astype(dt)
            s = jnp.zeros((big_n, u.shape[1]), dt).at[r].add(u)
            out = self._apply_t(s)[self._col_pos(j)]
        out = out.astype(self._out_dtype(v2))
        return out[:, 0] if vec else out


@jax.tree_util.register_pytree_node_class
class PrecomputedKernel(IndexKernel):
    """A kernel given by a stored Gram matrix; its data are indices (see :func:`precomputed`).

    Attributes:
      gram: ``[N, N]`` (square) or ``[N, M]`` (the stored ``columns``) kernel values (a leaf).
      columns: None, or ``[M]`` sorted int indices of the stored columns (a leaf).
    """

    kind = "precomputed Gram matrix"

    def __init__(self, gram: jax.Array, columns: jax.Array | None = None):
        self.gram, self.columns = gram, columns
        self.fn, self.hyperparameters = None, {}

    @property
    def num_points(self) -> int:
        return int(self.gram.shape[0])

    @property
    def dtype(self) -> np.dtype:
        return dtypes.accum_dtype(self.gram.dtype)

    def _num_cols(self) -> int:
        return int(self.gram.shape[1])

    def _col_pos(self, j):
        if self.columns is None:
            return j
        return jnp.clip(jnp.searchsorted(self.columns, j), 0, self.columns.shape[0] - 1)

    def _valid_cols(self, j):
        if self.columns is None:
            return jnp.ones(j.shape, bool)
        return self.columns[self._col_pos(j)] == j

    def _check_columns(self, fn, arg, v):
        if self.columns is None or not _concrete(self.columns):
            return
        missing = v[~np.isin(v, np.asarray(self.columns))]
        if missing.size:
            fail(fn, arg, "be among the stored `columns` of the kernel (precomputed(..., columns=idx) "
                 "holds k(i, j) only for j in idx; here they are the centres / training points)",
                 f"{missing.size} other indices, e.g. {missing[:3].tolist()}")

    def _stored_finite(self):
        if _concrete(self.gram):
            return None  # checked by the solvers (they raise, naming `kernel`)
        return jnp.all(jnp.isfinite(self.gram))

    def __call__(self, x1, x2=None):
        r1 = _as_index(x1)
        c2 = self._col_pos(r1 if x2 is None else _as_index(x2))
        return self.gram.at[r1[:, None], c2[None, :]].get(mode="clip")

    def diag(self, x) -> jax.Array:
        r = _as_index(x)
        return self.gram.at[r, self._col_pos(r)].get(mode="clip")

    def _apply(self, w, rows):
        g = self.gram if rows is None else jnp.take(self.gram, rows, axis=0, mode="clip")
        return _matmul(g.astype(self.dtype), w)

    def _apply_t(self, s):
        return _matmul(self.gram.astype(self.dtype).T, s)

    def tree_flatten(self):
        if self.columns is None:
            return [self.gram], False
        return [self.gram, self.columns], True

    @classmethod
    def tree_unflatten(cls, has_columns, leaves):
        return cls(leaves[0], leaves[1] if has_columns else None)

    def __repr__(self) -> str:
        cols = "" if self.columns is None else f", columns=[{self.columns.shape[0]}]"
        return f"precomputed(gram={tuple(self.gram.shape)}{cols})"


@jax.tree_util.register_pytree_node_class
class KernelOperator(IndexKernel):
    """A symmetric PSD operator known by its matvec; its data are indices (see :func:`operator`).

    It has no entries: calling it (or a solver that needs ``k(x1, x2)``) raises.
    """

    kind = "kernel operator"
    has_entries = False

    def __init__(self, matvec: Callable, n: int, diag: jax.Array | None = None, dtype: Any = None,
                 vectorized: bool = True):
        self.mv, self.n, self.diag_values = matvec, int(n), diag
        self._dtype = np.dtype(dtype)
        self.vectorized = bool(vectorized)
        self.fn, self.hyperparameters = None, {}

    @property
    def num_points(self) -> int:
        return self.n

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def __call__(self, x1, x2=None):
        fail("kjax.kernels.operator", "kernel", "have entries k(x1, x2) for this use (a KernelOperator "
             "only multiplies vectors: use it with krr_fit(..., solver='pcg') or kjax.ntk.predict's "
             "solver='cg', or pass kjax.kernels.precomputed(gram))", "a KernelOperator",
             cls=KjaxTypeError)

    def _call_mv(self, w):
        out = self.mv(w) if self.vectorized else jax.vmap(self.mv, in_axes=1, out_axes=1)(w)
        return jnp.asarray(out).astype(self.dtype)

    def _apply(self, w, rows):
        out = self._call_mv(w)
        return out if rows is None else out[rows]

    def _apply_t(self, s):  # symmetric
        return self._call_mv(s)

    def diag(self, x) -> jax.Array:
        if self.diag_values is None:
            fail("kjax.kernels.operator", "diag", "be given to read the diagonal of the operator",
                 None)
        return self.diag_values[_as_index(x)]

    def tree_flatten(self):
        aux = (self.mv, self.n, self._dtype, self.vectorized, self.diag_values is None)
        return ([] if self.diag_values is None else [self.diag_values]), aux

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        mv, n, dt, vectorized, no_diag = aux
        return cls(mv, n, None if no_diag else leaves[0], dt, vectorized)

    def __repr__(self) -> str:
        return f"operator({getattr(self.mv, '__name__', self.mv)!r}, n={self.n})"


def index_kernel(k: Any) -> IndexKernel | None:
    """The :class:`IndexKernel` inside ``k`` (itself, or the kernel a solver holds), else None."""
    if isinstance(k, IndexKernel):
        return k
    inner = getattr(k, "fn", None)
    return inner if isinstance(inner, IndexKernel) else None


def precomputed(
    gram: Float[ArrayLike, "N M"],
    *,
    columns: Int[ArrayLike, " M"] | None = None,
) -> PrecomputedKernel:
    r"""A stored Gram matrix as a kernel of indices: ``k(i1, i2) = gram[i1][:, i2]``.

    The kernel's data are integer indices into one set of ``N`` points, ``[n]`` or ``[n, 1]``
    int arrays: ``krr_fit(precomputed(K), train_idx, y)`` then ``krr_predict(state, test_idx)``
    with ``K`` the ``[N, N]`` Gram matrix of the training and test points together. Every solver
    of :mod:`kjax.regression` takes it (``krr_fit``, ``spectral_fit``, ``gp_*``, ``falkon_fit``,
    ``eigenpro_fit``, ``nystrom_centers``, ...), and ``x=None`` means all ``N`` points
    (``krr_fit(precomputed(K), None, y)``). The matrix is a pytree leaf: ``jit`` traces it, ``grad``
    reaches it.

    With ``columns=idx`` (sorted, distinct ints ``[M]``) only the columns ``gram = K[:, idx]``
    (``[N, M]``) are stored, e.g. Falkon's :math:`K_{nM}` at ``N`` where ``N x N`` does not fit:
    ``falkon_fit(key, precomputed(K_nm, columns=idx), None, y, ridge=..., centers=idx)``. Then
    ``k(i, j)`` is defined for ``j`` in ``idx`` only: concrete indices are checked by the solvers
    (the centres, or the training points of a solver that needs ``k(x, x)``); under ``jit`` an
    index outside ``idx`` makes the solver's status 1 (non-finite input). A Falkon iteration on a
    stored ``[N, M]`` costs two ``[N, M]`` matvecs with it and copies nothing.

    NaN or inf in a concrete ``gram`` raise (here, naming ``gram``, and in the solvers, naming
    ``kernel``, for a kernel whose leaves were replaced); under ``jit`` they give the solvers'
    status 1 (non-finite input), never a silent NaN. Indices are coded in the matrix's float
    dtype inside the solvers' states, exact up to ``2**24`` points in float32.

    Args:
      gram: ``[N, N]`` symmetric PSD kernel matrix, or ``[N, M]`` columns of one (with
        ``columns``). Integer or low-precision input is promoted (at least float32).
      columns: optional ``[M]`` sorted, distinct int indices in ``[0, N)`` of the stored columns.

    Returns:
      A :class:`PrecomputedKernel` (a :class:`kjax.kernels.Kernel`): ``k(i1, i2=None) -> [n1, n2]``.

    Raises:
      ValueError: ``gram`` not 2-D, empty, not square without ``columns``, with NaN / inf
        (concrete); ``columns`` not 1-D with
        ``M`` entries (``gram.shape[1]``), not sorted and distinct or out of ``[0, N)`` (concrete);
        ``N > 2**24`` in float32 (indices would not be exact).
      TypeError: complex ``gram``, non-integer ``columns``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import precomputed, rbf
      >>> from kjax.regression import krr_fit, krr_predict
      >>> x = jnp.linspace(0.0, 3.0, 12)[:, None]
      >>> k = precomputed(rbf(x))                     # the 12 x 12 Gram matrix, train and test
      >>> train, test = jnp.arange(0, 12, 2), jnp.arange(1, 12, 2)
      >>> state = krr_fit(k, train, jnp.sin(x[train, 0]), ridge=1e-3)
      >>> ref = krr_fit(rbf, x[train], jnp.sin(x[train, 0]), ridge=1e-3)
      >>> bool(jnp.allclose(krr_predict(state, test), krr_predict(ref, x[test]), atol=1e-5))
      True
    """
    fn = "kjax.kernels.precomputed"
    g = dtypes.as_float_array(fn, "gram", gram)
    if g.ndim != 2:
        fail(fn, "gram", "be a 2-D kernel matrix [N, N] (or [N, M] with `columns`)", f"shape {g.shape}")
    if 0 in g.shape:
        fail(fn, "gram", "have at least one row and one column", f"shape {g.shape}")
    g = g.astype(dtypes.accum_dtype(g.dtype))
    if _concrete(g):
        with jax.ensure_compile_time_eval():
            bad = int(jnp.sum(~jnp.isfinite(g)))
        if bad:
            fail(fn, "gram", "contain only finite values (no NaN or inf)", f"{bad} non-finite entries")
    if g.dtype == np.float32 and g.shape[0] > _F32_EXACT:
        fail(fn, "gram", "have at most 2**24 rows in float32 (indices are coded in its dtype); use "
             "float64", f"shape {g.shape}")
    cols = None
    if columns is None:
        if g.shape[0] != g.shape[1]:
            fail(fn, "gram", "be square [N, N] (or pass `columns=idx` for stored columns [N, M])",
                 f"shape {g.shape}")
    else:
        if not isinstance(columns, jax.Array | np.ndarray):
            columns = np.asarray(columns)
        if not np.issubdtype(np.dtype(columns.dtype), np.integer):
            fail(fn, "columns", "be integer indices of the stored columns", f"dtype {columns.dtype}",
                 cls=KjaxTypeError)
        if columns.ndim != 1 or columns.shape[0] != g.shape[1]:
            fail(fn, "columns", f"have shape [M] with M={g.shape[1]} (one index per column of `gram`)",
                 f"shape {tuple(columns.shape)}")
        if _concrete(columns):
            c = np.asarray(columns)
            if np.any(np.diff(c) <= 0):
                fail(fn, "columns", "be sorted and distinct (reorder gram's columns with it: "
                     "o = np.argsort(idx); precomputed(K_nm[:, o], columns=idx[o]))", "unsorted values")
            if c[0] < 0 or c[-1] >= g.shape[0]:
                fail(fn, "columns", f"be indices in [0, {g.shape[0]}) (rows of `gram`)",
                     f"range [{c[0]}, {c[-1]}]")
        cols = jnp.asarray(columns).astype(jnp.int32)
    return PrecomputedKernel(g, cols)


def operator(
    matvec: Callable[[jax.Array], jax.Array],
    n: int,
    *,
    diag: Float[ArrayLike, " n"] | None = None,
    dtype: Any = None,
) -> KernelOperator:
    r"""A symmetric PSD linear operator ``K`` (``v -> K v``) as a kernel of indices.

    For solvers that only multiply by ``K``: ``krr_fit(operator(mv, n), None, y, ridge=...,
    solver="pcg")`` (preconditioned by Jacobi, ``1 / (diag + alpha)``, when ``diag`` is given, else
    plain CG; RPCholesky needs kernel columns) and ``kjax.ntk.predict.gp_inference`` /
    ``gradient_descent_mse`` with ``solver="cg"`` (as ``k_train_train``). ``krr_predict`` of such a
    state gives the fitted values at training indices (``K c`` restricted to them). Solvers that need
    entries (Cholesky, Falkon, EigenPro, GPs, leverage scores) raise, naming ``kernel``.

    Args:
      matvec: ``v: [n, k] -> K v: [n, k]`` (a function of ``[n]`` only is vectorised with
        ``jax.vmap``; checked with ``jax.eval_shape``).
      n: the number of points ``N`` (a Python int >= 1).
      diag: optional ``[n]`` diagonal of ``K`` (Jacobi preconditioner, relative regularisers).
      dtype: the float dtype of the products (default: ``diag``'s, else the default float).

    Returns:
      A :class:`KernelOperator`.

    Raises:
      TypeError: ``matvec`` not callable, or it does not map ``[n, k]`` (or ``[n]``) to the same
        shape; ``dtype`` not a float dtype.
      ValueError: ``n < 1``, ``diag`` not ``[n]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import operator, rbf
      >>> from kjax.regression import krr_fit, krr_predict
      >>> x = jnp.linspace(0.0, 3.0, 20)[:, None]
      >>> k = rbf(x)
      >>> op = operator(lambda v: k @ v, 20, diag=jnp.diagonal(k))
      >>> state = krr_fit(op, None, jnp.sin(x[:, 0]), ridge=1e-2, solver="pcg")
      >>> ref = krr_fit(rbf, x, jnp.sin(x[:, 0]), ridge=1e-2)
      >>> bool(jnp.allclose(state.coef, ref.coef, atol=1e-4)), int(state.status)
      (True, 0)
    """
    fn = "kjax.kernels.operator"
    if not callable(matvec) or isinstance(matvec, jax.Array | np.ndarray):
        fail(fn, "matvec", "be a callable v -> K v ([n, k] -> [n, k]); an object with a `.matvec` "
             "method: pass obj.matvec", type(matvec).__name__, cls=KjaxTypeError)
    n = check_int(fn, "n", n, minimum=1)
    d = None
    if diag is not None:
        d = dtypes.as_float_array(fn, "diag", diag)
        if d.shape != (n,):
            fail(fn, "diag", f"have shape [n] = ({n},)", f"shape {d.shape}")
    if dtype is None:
        dt = d.dtype if d is not None else dtypes.default_float()
    else:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = np.dtype(object)
        if not np.issubdtype(dt, np.floating):
            fail(fn, "dtype", "be a real floating dtype", repr(dtype), cls=KjaxTypeError)
    dt = dtypes.accum_dtype(dt)
    d = None if d is None else d.astype(dt)
    vectorized = _probe(fn, matvec, n, dt)
    return KernelOperator(matvec, n, d, dt, vectorized)


def _probe(fn: str, matvec: Callable, n: int, dt: np.dtype) -> bool:
    """True if ``matvec`` maps ``[n, 2]`` to ``[n, 2]``, False if only ``[n] -> [n]``; else raise."""
    def shape_of(shape):
        try:
            out = jax.eval_shape(matvec, jax.ShapeDtypeStruct(shape, dt))
        except Exception:  # noqa: BLE001 - any failure means "does not take this shape"
            return None
        return getattr(out, "shape", None)

    if shape_of((n, 2)) == (n, 2):
        return True
    if shape_of((n,)) == (n,):
        return False
    fail(fn, "matvec", f"map v: [n, k] (or [n]) to K v of the same shape with n={n}",
         f"output shape {shape_of((n, 2))} for input ({n}, 2)", cls=KjaxTypeError)
    return True  # pragma: no cover

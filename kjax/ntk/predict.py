"""Closed-form training dynamics of infinitely wide networks (neural-tangents' ``predict``).

Layout: kernels ``k_train_train: [N, N]``, ``k_test_train: [M, N]``; targets and outputs
``y: [N, O]`` (the output axis is traced: the kernel is :math:`\\Theta \\otimes I_O`). Times ``t``
are scalars or arrays of any shape; results get ``t``'s shape as leading axes.

Other ``trace_axes`` (:func:`gradient_descent_mse`, :func:`gradient_descent_mse_ensemble`,
:func:`gradient_descent`) follow NT: targets ``[N, ...]``, the kernel zips the non-traced axes of the
targets (``[N, N, A, A, ...]``; ``trace_axes=()`` gives ``[N, N, O, O]``), flattened to ``[P, P]``
with the traced axes as ``R`` independent outputs (``P R`` = ``y.size``). Outputs carry the
kernel's floating dtype (NT's rule) at every ``t``, ``None`` and ``inf`` included.

The loss is NT's mean squared error :math:`\\frac{1}{2 N O}\\lVert f(X) - Y\\rVert^2`, so under gradient
flow with learning rate :math:`\\eta` the training outputs follow

.. math::
    f_t(X) = Y + e^{-\\eta \\Theta t / (N O)} (f_0(X) - Y),\\qquad
    f_t(x) = f_0(x) + \\Theta_{x X} \\Theta^{-1} (I - e^{-\\eta \\Theta t / (N O)}) (Y - f_0(X)).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src import linalg, solvers
from kjax._src import status as st
from kjax._src.errors import KjaxError, KjaxTypeError, check_in, check_int, check_positive, fail
from kjax._src.status import Status
from kjax.ntk.stax._kernel import Kernel as _StaxKernel

_P = "kjax.ntk.predict"


class Gaussian(NamedTuple):
    """A Gaussian over outputs: ``mean`` and ``covariance`` (NT's ``predict.Gaussian``)."""

    mean: jax.Array
    covariance: jax.Array


def _is_concrete(*xs) -> bool:
    return linalg.is_concrete(*xs)


def _check_finite(fn: str, arg: str, a) -> None:
    """NaN / inf in a concrete array raise; traced values pass (the status reports them)."""
    if _is_concrete(a) and not bool(np.all(np.isfinite(np.asarray(a)))):
        fail(fn, arg, "contain only finite values (no NaN or inf)",
             f"{int(np.sum(~np.isfinite(np.asarray(a))))} non-finite entries")


def _real(fn: str, arg: str, a) -> jax.Array:
    """``a`` as a real floating (or integer) array: complex raises; bfloat16 / float16 are promoted to
    float32 (solves and eigendecompositions run in at least float32)."""
    a = jnp.asarray(a)
    if jnp.issubdtype(a.dtype, jnp.complexfloating):
        fail(fn, arg, "be a real array", f"dtype {a.dtype}", cls=KjaxTypeError)
    if jnp.issubdtype(a.dtype, jnp.floating) and jnp.finfo(a.dtype).bits < 32:
        a = a.astype(jnp.float32)
    return a


def _exact(fn: str, arg: str, v, shape, dtype) -> jax.Array:
    """``v`` a scalar (broadcast) or exactly ``shape``."""
    v = _real(fn, arg, v)
    if v.ndim and tuple(v.shape) != tuple(shape):
        fail(fn, arg, f"be a scalar or have shape {tuple(shape)}", f"shape {v.shape}")
    return jnp.broadcast_to(v.astype(dtype), shape)


def _check_kernel(fn: str, k, y) -> tuple[jax.Array, jax.Array]:
    k = _real(fn, "k_train_train", k)
    y = _real(fn, "y_train", y)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        fail(fn, "k_train_train", "be a square matrix [N, N]", f"shape {k.shape}")
    if k.shape[0] == 0:
        fail(fn, "k_train_train", "have at least one training point (N >= 1)", f"shape {k.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != k.shape[0]:
        fail(fn, "y_train", f"have shape [N] or [N, O] with N = {k.shape[0]}", f"shape {y.shape}")
    _check_finite(fn, "k_train_train", k)
    _check_finite(fn, "y_train", y)
    return k, y


class _OperatorMatvec:
    """A :func:`kjax.kernels.operator` as the ``v -> K v`` function of the CG solver (``[N]`` or
    ``[N, O]``); ``mean_diag`` (from its ``diag``) makes a relative ``diag_reg`` possible."""

    def __init__(self, op):
        self.op, self.n = op, op.n
        self.mean_diag = None if op.diag_values is None else jnp.mean(op.diag_values)

    def __call__(self, v):
        v2 = v[:, None] if v.ndim == 1 else v
        out = self.op._call_mv(v2).astype(jnp.result_type(v.dtype, self.op.dtype))
        return out[:, 0] if v.ndim == 1 else out


def _train_kernel(fn: str, k, solver: str):
    """``k_train_train`` given as a kernel of kjax.kernels: a :func:`~kjax.kernels.precomputed`
    Gram matrix becomes its matrix, a :func:`~kjax.kernels.operator` its matvec (``solver='cg'``
    only); anything else that is neither array-like nor callable raises."""
    from kjax.kernels._precomputed import KernelOperator, PrecomputedKernel

    if isinstance(k, PrecomputedKernel):
        if k.columns is not None:
            fail(fn, "k_train_train", "be a square precomputed Gram matrix [N, N] (no `columns`)",
                 f"precomputed columns of shape {tuple(k.gram.shape)}")
        return k.gram
    if isinstance(k, KernelOperator):
        if solver != "cg":
            fail(fn, "k_train_train", "be an [N, N] array or kjax.kernels.precomputed(...) unless "
                 "solver='cg' (a KernelOperator only has matvecs; a Cholesky needs kernel entries)",
                 "a KernelOperator")
        return _OperatorMatvec(k)
    if isinstance(k, tuple) or hasattr(k, "shape") or callable(k) or isinstance(k, _StaxKernel):
        return k
    if isinstance(k, list | int | float | np.generic):
        return k
    fail(fn, "k_train_train", "be an [N, N] array, kjax.kernels.precomputed(gram), or (with "
         "solver='cg') a kjax.kernels.operator / a matvec function v -> K v", type(k).__name__,
         cls=KjaxTypeError)
    return k  # pragma: no cover


def _trace_mode(fn: str, trace_axes, *, allow_none: bool = False) -> str | None:
    """``"traced"`` for NT's default ``(-1,)`` (also ``-1``, ``(1,)``); ``None`` for ``()`` (the
    kernel carries the output axes: ``[N, N, O, O]``); anything else raises."""
    axes = (trace_axes,) if isinstance(trace_axes, int | np.integer) else trace_axes
    try:
        axes = tuple(int(a) for a in axes)
    except TypeError:
        axes = None
    if axes in ((-1,), (1,)):
        return "traced"
    if axes == () and allow_none:
        return None
    fail(fn, "trace_axes", "be (-1,) (the output axis traced)" + (" or () (not traced)" if allow_none
                                                                   else ""), repr(trace_axes))
    return None


def _nt_axes(fn: str, trace_axes, ndim: int) -> tuple[int, ...]:
    """NT's ``trace_axes`` for targets of rank ``ndim``: an int or a sequence of ints in
    ``[-ndim, ndim)`` (repeats allowed), as sorted unique negative axes."""
    axes = (trace_axes,) if isinstance(trace_axes, int | np.integer) else trace_axes
    try:
        axes = tuple(int(a) for a in axes)
    except TypeError:
        axes = None
    if axes is None or any(not -ndim <= a < ndim for a in axes):
        fail(fn, "trace_axes", f"be an int or a tuple of ints in [-{ndim}, {ndim}) (axes of `y_train`)",
             repr(trace_axes))
    return tuple(sorted({a % ndim - ndim for a in axes}))


def _zipped(shape) -> tuple[int, ...]:
    return tuple(d for d in shape for _ in (0, 1))


def _make_2d(k) -> jax.Array:
    """NT's ``make_2d``: zipped pairs ``[A1, B1, A2, B2, ...]`` -> ``[A1 A2 ..., B1 B2 ...]``."""
    k = jnp.asarray(k)
    if k.ndim == 2:
        return k
    n = k.ndim
    return jnp.transpose(k, (*range(0, n, 2), *range(1, n, 2))).reshape(
        int(np.prod(k.shape[0::2])), int(np.prod(k.shape[1::2])))


class _Layout(NamedTuple):
    """How NT lays out targets ``y: [N, ...]`` and kernels for ``trace_axes`` (negative axes of
    ``y``): the kernel zips the non-traced axes (``[P, P]`` once flattened), the traced axes are
    ``R`` independent right-hand sides."""

    taxes: tuple[int, ...]
    ndim: int
    nt_shape: tuple[int, ...]  # y's non-traced axes
    tr_shape: tuple[int, ...]  # y's traced axes

    @classmethod
    def of(cls, y_shape, taxes):
        nd = len(y_shape)
        return cls(taxes, nd, tuple(s for i, s in enumerate(y_shape) if i - nd not in taxes),
                   tuple(y_shape[a] for a in taxes))

    @property
    def r(self) -> int:
        return int(np.prod(self.tr_shape))

    def flat(self, a) -> jax.Array:
        """``[..., *y-shaped]`` -> ``[..., P, R]`` (traced axes last)."""
        a = jnp.moveaxis(a, self.taxes, tuple(range(-len(self.taxes), 0)))
        lead = a.shape[:a.ndim - self.ndim]
        return a.reshape(*lead, -1, self.r)

    def full_shape(self, nt_shape) -> tuple[int, ...]:
        """The outputs' shape for non-traced axes ``nt_shape`` (NT's ``_get_fx_test_shape``)."""
        shape = list(nt_shape)
        for i in range(self.ndim):
            if i - self.ndim in self.taxes:
                shape.insert(i, self.tr_shape[self.taxes.index(i - self.ndim)])
        return tuple(shape)

    def unflat(self, a, nt_shape) -> jax.Array:
        """``[*lead, Q, R]`` -> ``[*lead, *full_shape(nt_shape)]``."""
        a = a.reshape(*a.shape[:-2], *nt_shape, *self.tr_shape)
        return jnp.moveaxis(a, tuple(range(-len(self.taxes), 0)), self.taxes)

    def check_kernel(self, fn: str, arg: str, k, rows=None, default_fits: bool = False) -> None:
        """``k`` must zip ``(rows, nt_shape)`` pairs (``rows=None``: the training set's)."""
        k_shape = tuple(jnp.shape(k))
        ok = len(k_shape) == 2 * len(self.nt_shape) and k_shape[1::2] == self.nt_shape
        if rows is None:
            ok = ok and k_shape[0::2] == self.nt_shape
        if ok:
            return
        want = (_zipped(self.nt_shape) if rows is None
                else "zip(test shape, " + str(self.nt_shape) + ")")
        if default_fits:
            fail(fn, "trace_axes", f"match `{arg}` of shape {k_shape} (the kernel zips the non-traced axes "
                 f"of `y_train`, {want} here)", repr(self.taxes))
        fail(fn, arg, f"have shape {want} (the non-traced axes of `y_train` zipped, trace_axes="
             f"{self.taxes})", f"shape {k_shape}")


def _canonical_gets(fn: str, get, allowed: tuple[str, ...], default: tuple[str, ...]):
    """NT's ``get`` rules: None -> ``default``; a string or a non-empty tuple of unique names,
    case-insensitive. Returns ``(single, names)``."""
    if get is None:
        return False, default
    single = isinstance(get, str)
    names = (get,) if single else get
    expected = f"be None, one of {allowed} (any case) or a non-empty tuple of them"
    if not isinstance(names, tuple | list) or not names or not all(isinstance(g, str) for g in names):
        fail(fn, "get", expected, repr(get))
    names = tuple(g.lower() for g in names)
    for g in names:
        if g not in allowed:
            fail(fn, "get", expected, repr(get))
    if len(set(names)) < len(names):
        fail(fn, "get", "name each kernel once", repr(get))
    return single, names


def _check_common(fn: str, diag_reg, trace_axes, *, solver=None, cg_tol=None, cg_maxiter=None,
                  learning_rate=None, allow_untraced: bool = False):
    """Checks the hyperparameters; ``trace_axes=None`` skips ``trace_axes`` (checked against
    ``y_train`` by :func:`_nt_axes`)."""
    if solver is not None:
        check_in(fn, "solver", solver, ("cholesky", "cg"))
    check_positive(fn, "diag_reg", diag_reg, allow_zero=True)
    if learning_rate is not None:
        check_positive(fn, "learning_rate", learning_rate)
    if cg_tol is not None:
        check_positive(fn, "cg_tol", cg_tol, allow_zero=True)
    if cg_maxiter is not None:
        check_int(fn, "cg_maxiter", cg_maxiter, minimum=1)
    if trace_axes is not None:
        _trace_mode(fn, trace_axes, allow_none=allow_untraced)


def _check_t(fn: str, t) -> None:
    if t is not None and jnp.issubdtype(jnp.result_type(t), jnp.complexfloating):
        fail(fn, "t", "be real", f"dtype {jnp.result_type(t)}", cls=KjaxTypeError)
    if t is not None and _is_concrete(t):
        arr = np.asarray(t)
        if np.any(np.isnan(arr)) or np.any(arr < 0):
            fail(fn, "t", "be >= 0 (training time; None or inf for infinite time)",
                 repr(arr.item()) if arr.ndim == 0 else "an array with negative or non-finite values")


def _check_test(fn: str, kst, n: int):
    kst = _real(fn, "k_test_train", kst)
    if kst.ndim != 2 or kst.shape[1] != n:
        fail(fn, "k_test_train", f"have shape [M, N] with N = {n}", f"shape {kst.shape}")
    _check_finite(fn, "k_test_train", kst)
    return kst


def _broadcast(fn: str, arg: str, v, shape, dtype):
    v = jnp.asarray(v, dtype)
    try:
        return jnp.broadcast_to(v, shape)
    except ValueError:
        fail(fn, arg, f"broadcast to {shape}", f"shape {v.shape}")


def _regularise(k: jax.Array, diag_reg, absolute: bool) -> jax.Array:
    n = k.shape[0]
    scale = diag_reg if absolute else diag_reg * jnp.trace(k) / n
    return k + scale * jnp.eye(n, dtype=k.dtype)


def _cached(cache: dict, key: str, compute: Callable, *deps):
    """``cache[key]``, computed on first use; values computed from tracers (in ``value`` or ``deps``)
    are not kept, so a ``predict_fn`` called under ``jit`` does not leak them into later calls."""
    if key in cache:
        return cache[key]
    value = compute()
    if _is_concrete(value, *[d for d in deps if hasattr(d, "shape")]):
        cache[key] = value
    return value


def _gf_filter(lam: jax.Array, s: jax.Array) -> jax.Array:
    r""":math:`(1 - e^{-\lambda s}) / \lambda`, and its limit :math:`s` where :math:`\lambda = 0`.

    ``-expm1(-lam s) / lam`` is accurate for every ``lam > 0`` (no cancellation, even subnormal);
    only ``lam = 0`` needs the ``where`` (0/0 otherwise).
    """
    pos = lam > 0
    return jnp.where(pos, -jnp.expm1(-lam * s) / jnp.where(pos, lam, 1.0), s)


class _Solver(NamedTuple):
    """``(K + reg I)^{-1}`` by a Cholesky factor (pseudo-inverse when singular / indefinite) or CG."""

    a: Any  # the regularised matrix, or None for CG
    factor: Any  # linalg.PSDFactor, or None for CG
    matvec: Any
    cg_tol: float
    cg_maxiter: int | None
    fn: str

    def status(self):
        if self.factor is None:
            return st.as_status(Status.OK)
        return st.combine(self.factor.status, st.nonfinite_input(self.a))

    def solve(self, b):
        """``(x, status)``."""
        if self.factor is not None:
            return linalg.psd_solve(self.factor, b), self.status()
        x, code, _ = solvers.cg(self.matvec, b, tol=self.cg_tol, maxiter=self.cg_maxiter, fn_name=self.fn)
        return x, code

    def null_part(self, d):
        """The component of ``d`` in the null space that a pseudo-inverse left alone (zero for a
        Cholesky factor and for CG)."""
        f = self.factor
        if f is None:
            return jnp.zeros_like(d)
        return linalg.branch(f.pinv, lambda: d - f.factor @ (f.factor.T @ (self.a @ d)),
                             lambda: jnp.zeros_like(d))


def _make_solver(fn: str, k, diag_reg, absolute, solver: str, cg_tol: float, cg_maxiter) -> _Solver:
    if solver == "cholesky":
        a = _regularise(k, diag_reg, absolute)
        return _Solver(a, linalg.psd_factor(a), None, cg_tol, cg_maxiter, fn)
    # the matvec computes its regulariser itself: a closure over a value computed here would hold a
    # tracer when this runs under jit, and the solver is cached across calls
    if callable(k) and not hasattr(k, "shape"):
        # CG on the user's matvec; the relative regulariser needs the trace, so it is absolute here
        # (relative for a kjax.kernels.operator given its `diag`)
        scale = getattr(k, "mean_diag", None)
        reg = diag_reg if absolute or scale is None else diag_reg * scale
        mv = lambda v: k(v) + reg * v
    else:
        mv = lambda v: k @ v + (diag_reg if absolute else diag_reg * jnp.trace(k) / k.shape[0]) * v
    return _Solver(None, None, mv, cg_tol, cg_maxiter, fn)


def _check_predict_inputs(fn: str, fx_train_0, fx_test_0, k_test_train) -> None:
    if fx_train_0 is None and fx_test_0 is None:
        fail(fn, "fx_train_0", "or `fx_test_0` be given (otherwise nothing is predicted)", "both None")
    if fx_test_0 is not None and k_test_train is None:
        fail(fn, "k_test_train", "be given to predict on the test set (`fx_test_0` is set)", None)


def gradient_descent_mse(
    k_train_train: jax.Array,
    y_train: jax.Array,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: tuple[int, ...] = (-1,),
    *,
    solver: str = "cholesky",
    cg_tol: float = 1e-10,
    cg_maxiter: int | None = None,
) -> Callable:
    r"""Outputs of a network trained by gradient flow on MSE in its NTK (linearised) regime.

    .. math::
        f_t(X) = f_0(X) + (e^{-\eta \Theta t / (N O)} - I)(f_0(X) - Y),\quad
        f_t(x) = f_0(x) - \Theta_{xX} \Theta^{-1}(e^{-\eta\Theta t/(NO)} - I)(f_0(X) - Y),

    with :math:`\Theta` = ``k_train_train`` + ``diag_reg`` (times the mean diagonal unless
    ``diag_reg_absolute_scale``). The eigendecomposition (finite ``t``) and the factorisation
    (``t=None``) are computed on first use and cached. ``solver="cg"`` replaces the factorisation at
    ``t=None`` by conjugate gradients (:func:`kjax._src.solvers.cg`) on matvecs with
    ``k_train_train`` (which may then also be a function ``v -> K v``, e.g. a blockwise kernel
    matvec), for problems too large to factor.

    Singular and indefinite kernels give finite results, never NaN. At finite ``t`` the filter
    :math:`\Theta^{-1}(I - e^{-\eta\Theta t/(NO)})` is evaluated per eigenvalue as
    ``-expm1(-lam s) / lam`` with its limit ``s`` (:math:`= \eta t / (N O)`) at ``lam = 0``;
    negative eigenvalues are clipped to zero. At ``t = None`` the Cholesky factor is used when it
    exists; otherwise (a singular or indefinite kernel) the pseudo-inverse (eigenvalues at or below
    ``N eps`` times the largest count as zero), so on the null space the outputs keep their initial
    values, the infinite-time limit of the flow. What happened is reported by
    ``predict_fn(..., return_status=True)`` (:mod:`kjax._src.status`: 2 negative eigenvalues
    clipped, 3 no positive eigenvalue, 6 singular, 4 CG stopped at ``cg_maxiter``).

    Args:
      k_train_train: ``[N, N]`` NTK on the training set, or :func:`kjax.kernels.precomputed` of
        it (or, with ``solver="cg"``, a matvec function ``v: [N, O] -> K v`` or a
        :func:`kjax.kernels.operator`, whose ``diag`` makes a relative ``diag_reg`` possible).
      y_train: ``[N, O]`` (or ``[N]``) targets; ``[N, ...]`` with other ``trace_axes``.
      learning_rate: :math:`\eta > 0`; only ``t * learning_rate`` matters.
      diag_reg: diagonal regulariser (>= 0).
      diag_reg_absolute_scale: ``diag_reg`` in absolute units instead of relative to
        ``trace(K) / N``.
      trace_axes: axes of ``y_train`` along which the kernel is block-diagonal (NT's; default
        ``(-1,)``, the output axis); the kernel then zips the other axes (module docstring).
      solver: ``"cholesky"`` (exact) or ``"cg"`` (iterative; infinite time only).
      cg_tol: relative residual tolerance of CG (>= 0).
      cg_maxiter: CG iteration cap (default ``10 N``).

    Returns:
      ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None, *,
      return_status=False)`` returning ``fx_train_t`` ``[*t.shape, N, O]``, or
      ``(fx_train_t, fx_test_t)`` when ``fx_test_0`` is given, or ``fx_test_t`` alone when
      ``fx_train_0`` is None; with ``return_status=True``, ``(that, status)``. ``t=None`` is
      infinite time; ``t`` must be >= 0. Outputs are in the kernel's floating dtype at every
      ``t`` (NT's rule; the targets' for a matvec kernel), ``y_train``-shaped (``[*t.shape,
      *y.shape]``) for other ``trace_axes``.

    Raises:
      KjaxError: a non-square or empty kernel, targets of the wrong shape, NaN/inf in concrete
        inputs, ``learning_rate <= 0``, ``diag_reg < 0``, ``trace_axes`` out of range or not matching
        the kernel's shape, an
        unknown ``solver``, a negative ``t``, a finite ``t`` with ``solver="cg"``, or a call that
        asks for test predictions without ``k_test_train`` (or with one of the wrong shape); a
        :func:`kjax.kernels.operator` without ``solver="cg"``, a ``columns=`` precomputed kernel.
      KjaxTypeError: ``k_train_train`` neither array-like, a kjax kernel nor callable.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import predict, stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
      >>> x, y = jnp.linspace(-1, 1, 6).reshape(3, 2), jnp.array([[1.0], [0.0], [-1.0]])
      >>> predict_fn = predict.gradient_descent_mse(kernel_fn(x, None, "ntk"), y)
      >>> bool(jnp.allclose(predict_fn(None), y)), predict_fn(jnp.array([0.0, 1.0])).shape
      (True, (2, 3, 1))

    References:
      Jacot, Gabriel, Hongler. Neural Tangent Kernel. NeurIPS 2018.
      Lee et al. Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
      Descent. NeurIPS 2019.
    """
    fn = f"{_P}.gradient_descent_mse"
    _check_common(fn, diag_reg, None, solver=solver, cg_tol=cg_tol, cg_maxiter=cg_maxiter,
                  learning_rate=learning_rate)
    taxes = _nt_axes(fn, trace_axes, max(jnp.ndim(y_train), 1))
    k_train_train = _train_kernel(fn, k_train_train, solver)
    if jnp.ndim(y_train) > 1 and not (jnp.ndim(y_train) == 2 and taxes == (-1,)):
        return _nd_mse(fn, k_train_train, y_train, taxes, learning_rate, diag_reg, diag_reg_absolute_scale,
                       solver=solver, cg_tol=cg_tol, cg_maxiter=cg_maxiter)
    matvec_only = callable(k_train_train) and not hasattr(k_train_train, "shape")
    if matvec_only and solver != "cg":
        fail(fn, "k_train_train", "be an [N, N] array unless solver='cg'", "a function")
    y = _real(fn, "y_train", y_train)
    if matvec_only:
        if y.ndim not in (1, 2) or y.shape[0] == 0:
            fail(fn, "y_train", "have shape [N] or [N, O] with N >= 1", f"shape {y.shape}")
        if isinstance(k_train_train, _OperatorMatvec) and y.shape[0] != k_train_train.n:
            fail(fn, "y_train", f"have N = {k_train_train.n} rows, as the operator `k_train_train`",
                 f"shape {y.shape}")
        _check_finite(fn, "y_train", y)
        k = k_train_train
    else:
        k, y = _check_kernel(fn, k_train_train, y)
    n = y.shape[0]
    vec = y.ndim == 1
    y2 = y[:, None] if vec else y
    # NT: the outputs carry the kernel's (floating) dtype, at every t (a matvec has none: y's)
    kdt = getattr(k, "dtype", None) if not isinstance(k, _OperatorMatvec) else k.op.dtype
    y2 = y2.astype(jnp.result_type(y2.dtype if kdt is None else kdt, float))
    size = y.size
    cache: dict[str, Any] = {}

    def eig():
        def compute():
            lam, u, code = linalg.psd_eigh(_regularise(k, diag_reg, diag_reg_absolute_scale))
            return lam, u, st.combine(code, st.nonfinite_input(k))

        return _cached(cache, "eig", compute, k, diag_reg)

    def solver_():
        make = lambda: _make_solver(fn, k, diag_reg, diag_reg_absolute_scale, solver, cg_tol, cg_maxiter)
        # CG precomputes nothing (and its matvec closes over arrays): only factorisations are cached
        return make() if solver == "cg" else _cached(cache, "solver", make, k, diag_reg)

    def shape_out(a):
        return a[..., 0] if vec else a

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None, *, return_status=False):
        pfn = f"{fn} predict_fn"
        _check_predict_inputs(pfn, fx_train_0, fx_test_0, k_test_train)
        _check_t(pfn, t)
        f0 = None if fx_train_0 is None else _broadcast(
            pfn, "fx_train_0", jnp.asarray(fx_train_0).reshape(-1, 1) if vec and jnp.ndim(fx_train_0) == 1
            else fx_train_0, y2.shape, y2.dtype)
        g0 = kst = None
        if fx_test_0 is not None:
            kst = _check_test(pfn, k_test_train, n)
            g0 = _real(pfn, "fx_test_0", fx_test_0)
            g0 = g0[:, None] if vec and g0.ndim == 1 else g0
            g0 = _exact(pfn, "fx_test_0", g0, (kst.shape[0], y2.shape[1]), y2.dtype)
        d = -y2 if f0 is None else f0 - y2  # f_0(X) - Y
        if t is None:
            sv = solver_()
            code = sv.status()
            out = []
            if f0 is not None:
                # on the null space a pseudo-inverse leaves alone, the outputs keep their initial values
                out.append(shape_out(y2 + sv.null_part(d)))
            if g0 is not None:
                x, code = sv.solve(-d)
                out.append(shape_out(g0 + kst @ x))
        else:
            if solver == "cg":
                fail(pfn, "t", "be None (infinite time) with solver='cg'", "a finite t")
            s_t = jnp.asarray(t, y2.dtype) * learning_rate / size
            lam, evecs, code = eig()
            coef = evecs.T @ d  # [N, O]
            out = []
            if f0 is not None:
                e = jnp.expm1(-lam * s_t[..., None])  # [*t, N]
                out.append(shape_out(f0 + jnp.einsum("ij,...j,jo->...io", evecs, e, coef)))
            if g0 is not None:
                g = _gf_filter(lam, s_t[..., None])  # [*t, N]
                out.append(shape_out(g0 - jnp.einsum("mi,ij,...j,jo->...mo", kst, evecs, g, coef)))
        out = [a.astype(y2.dtype) for a in out]
        res = out[0] if len(out) == 1 else tuple(out)
        return (res, code) if return_status else res

    return predict_fn


def _nd_mse(fn, k, y, taxes, learning_rate, diag_reg, absolute, **solver_kw) -> Callable:
    """``gradient_descent_mse`` with targets ``[N, ...]`` and any ``trace_axes`` (NT's layout, see
    :class:`_Layout`): the flow runs on the flattened ``[P, P]`` kernel with ``R`` outputs."""
    y = _real(fn, "y_train", y)
    if callable(k) and not hasattr(k, "shape"):
        fail(fn, "k_train_train", f"be an array with targets of shape {y.shape} and trace_axes={taxes}",
             "a matvec")
    k = _real(fn, "k_train_train", k)
    lay = _Layout.of(y.shape, taxes)
    lay.check_kernel(fn, "k_train_train", k, default_fits=tuple(k.shape) == _zipped(y.shape[:-1]))
    flat = gradient_descent_mse(_make_2d(k), lay.flat(y), learning_rate, diag_reg, absolute, **solver_kw)

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None, *, return_status=False):
        pfn = f"{fn} predict_fn"
        _check_predict_inputs(pfn, fx_train_0, fx_test_0, k_test_train)
        dt = jnp.result_type(k.dtype, float)
        f0 = None if fx_train_0 is None else lay.flat(_broadcast(pfn, "fx_train_0", fx_train_0, y.shape, dt))
        kst = g0 = None
        nt_test = None
        if fx_test_0 is not None:
            kst = _real(pfn, "k_test_train", k_test_train)
            lay.check_kernel(pfn, "k_test_train", kst, rows="test")
            nt_test = tuple(kst.shape[0::2])
            g0 = lay.flat(_broadcast(pfn, "fx_test_0", fx_test_0, lay.full_shape(nt_test), dt))
            kst = _make_2d(kst)
        out, code = flat(t, f0, g0, kst, return_status=True)
        if f0 is not None and g0 is not None:
            out = (lay.unflat(out[0], lay.nt_shape), lay.unflat(out[1], nt_test))
        else:
            out = lay.unflat(out, lay.nt_shape if g0 is None else nt_test)
        return (out, code) if return_status else out

    return predict_fn


def _get_field(fn: str, k, name: str):
    if isinstance(k, tuple) and hasattr(k, "_fields"):
        if name not in k._fields or getattr(k, name) is None:
            fail(fn, "kernels", f"contain a `{name}` field", f"fields {k._fields}")
        return jnp.asarray(getattr(k, name))
    if isinstance(k, _StaxKernel):  # a whole kernel_fn(x1, x2) result, as NT accepts
        if getattr(k, name) is None:
            fail(fn, "kernels", f"contain a `{name}` field", f"a stax.Kernel with {name}=None")
        return jnp.asarray(getattr(k, name))
    return jnp.asarray(k)


def gp_inference(
    k_train_train: Any,
    y_train: jax.Array,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: tuple[int, ...] = (-1,),
    *,
    solver: str = "cholesky",
    cg_tol: float = 1e-10,
    cg_maxiter: int | None = None,
) -> Callable:
    r"""Posterior of the NNGP, or the infinite-time distribution of an NTK-trained ensemble.

    NNGP: :math:`\mu = K_{xX}(K + \lambda I)^{-1} Y`,
    :math:`\Sigma = K_{xx} - K_{xX}(K + \lambda I)^{-1}K_{Xx}`. NTK:
    :math:`\mu = \Theta_{xX}(\Theta + \lambda I)^{-1} Y`, :math:`\Sigma = K_{xx} + \Theta_{xX}\Theta^{-1}
    K \Theta^{-1}\Theta_{Xx} - (\Theta_{xX}\Theta^{-1}K_{Xx} + \text{h.c.})` (``"ntkgp"``: the GP
    with the NTK as covariance).

    The regularised kernel is factored by Cholesky; when that fails (a singular kernel at the
    default ``diag_reg=0``, or an indefinite one) the pseudo-inverse is used instead (eigenvalues at
    or below ``N eps`` times the largest count as zero; negative ones are dropped), so results
    stay finite; ``predict_fn(..., return_status=True)`` reports it (:mod:`kjax._src.status`:
    6 singular, 2 negative eigenvalues dropped, 3 no positive eigenvalue, 4 CG stopped at
    ``cg_maxiter``).

    Args:
      k_train_train: ``[N, N]`` kernel, or a namedtuple (e.g. ``kernel_fn(x, None, ("nngp",
        "ntk"))``) with ``nngp`` and / or ``ntk`` fields, or :func:`kjax.kernels.precomputed` of
        the matrix, or (``solver="cg"``) a :func:`kjax.kernels.operator` (one kernel for every
        ``get``; a relative ``diag_reg`` needs its ``diag``, else it is absolute).
      y_train: ``[N, O]`` targets.
      diag_reg: diagonal regulariser :math:`\lambda \ge 0` (relative to ``trace / N`` unless
        ``diag_reg_absolute_scale``).
      diag_reg_absolute_scale: see ``diag_reg``.
      trace_axes: must be ``(-1,)``.
      solver: ``"cholesky"`` or ``"cg"`` (conjugate gradients on the same system).
      cg_tol: CG tolerance (>= 0).
      cg_maxiter: CG iteration cap (default ``10 N``).

    Returns:
      ``predict_fn(get=None, k_test_train=None, k_test_test=None, *, return_status=False)``: for
      each ``g`` in ``get`` (default ``("nngp", "ntk")``) the mean ``[M, O]``, or a
      :class:`Gaussian` with the covariance ``[M, M]`` when ``k_test_test`` is given; a namedtuple
      ``Gaussians`` for a tuple ``get``; with ``return_status=True``, ``(that, status)``. Without
      ``k_test_train`` the mean is ``y_train``.

    Raises:
      KjaxError: an unknown ``get``, a kernel without the field ``get`` names, a kernel or targets
        of the wrong shape or with NaN/inf (concrete), ``diag_reg < 0``, an unknown
        ``solver``; a :func:`kjax.kernels.operator` without ``solver="cg"``, a ``columns=``
        precomputed kernel.
      KjaxTypeError: ``k_train_train`` neither array-like, a kjax kernel nor a matvec.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import predict
      >>> k = jnp.array([[2.0, 1.0], [1.0, 2.0]])
      >>> predict_fn = predict.gp_inference(k, jnp.array([[1.0], [-1.0]]))
      >>> predict_fn("nngp", k_test_train=k).round(6).tolist()
      [[1.0], [-1.0]]

    References:
      Rasmussen, Williams. Gaussian Processes for Machine Learning, eq. 2.19. MIT Press 2006.
      Lee et al. Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
      Descent. NeurIPS 2019.
    """
    fn = f"{_P}.gp_inference"
    _check_common(fn, diag_reg, trace_axes, solver=solver, cg_tol=cg_tol, cg_maxiter=cg_maxiter)
    k_train_train = _train_kernel(fn, k_train_train, solver)
    y = _real(fn, "y_train", y_train)
    if y.ndim not in (1, 2):
        fail(fn, "y_train", "have shape [N] or [N, O]", f"shape {y.shape}")
    _check_finite(fn, "y_train", y)
    op = k_train_train if isinstance(k_train_train, _OperatorMatvec) else None
    if op is not None and y.shape[0] != op.n:
        fail(fn, "y_train", f"have N = {op.n} rows, as the operator `k_train_train`", f"shape {y.shape}")
    for leaf in ([] if op is not None else jax.tree.leaves(k_train_train)):
        _real(fn, "k_train_train", leaf)
        if jnp.ndim(leaf) == 2 and jnp.shape(leaf)[0] != y.shape[0]:
            fail(fn, "y_train", f"have N = {jnp.shape(leaf)[0]} rows, as `k_train_train`", f"shape {y.shape}")
    cache: dict[str, Any] = {}

    def solve(g, b, codes):
        kg = op if op is not None else _check_kernel(fn, _get_field(fn, k_train_train, g), y)[0]
        make = lambda: _make_solver(fn, kg, diag_reg, diag_reg_absolute_scale, solver, cg_tol, cg_maxiter)
        # CG precomputes nothing (and its matvec closes over arrays): only factorisations are cached
        sv = make() if solver == "cg" else _cached(cache, g, make, *jax.tree.leaves(k_train_train), y,
                                                   diag_reg)
        x, code = sv.solve(b)
        codes.append(code)
        return x

    def predict_fn(get=None, k_test_train=None, k_test_test=None, *, return_status=False):
        pfn = f"{fn} predict_fn"
        single, gets = _canonical_gets(pfn, get, ("nngp", "ntk", "ntkgp"), ("nngp", "ntk"))
        if "ntk" in gets and k_test_test is not None and k_test_train is not None:
            # NT: the NTK covariance needs the NNGP of the train and test-train pairs
            for arg, kern in (("k_train_train", k_train_train), ("k_test_train", k_test_train)):
                if getattr(kern, "nngp", None) is None:
                    fail(pfn, "get", f"not contain 'ntk' when `k_test_test` is given and `{arg}` has no "
                         "`nngp` field (the NTK covariance needs the NNGP: pass namedtuples from "
                         "kernel_fn(..., get=('nngp', 'ntk')))", repr(get))
        codes: list = []
        out = {}
        for g in gets:
            kg = "ntk" if g == "ntkgp" else g
            if k_test_train is None:
                mean = y.astype(jnp.result_type(y.dtype, float))
                if k_test_test is not None:
                    n_tr = y.shape[0]
                    kd = (jnp.zeros((n_tr, n_tr), mean.dtype) if op is not None
                          else jnp.zeros_like(_get_field(fn, k_train_train, kg)))
                    out[g] = Gaussian(mean, kd)
                else:
                    out[g] = mean
                continue
            ktd = _check_test(f"{fn} predict_fn", _get_field(fn, k_test_train, kg), y.shape[0])
            mean = ktd @ solve(kg, y, codes)
            if k_test_test is None:
                out[g] = mean
                continue
            g_init = "ntk" if g == "ntkgp" else "nngp"
            ktd_init = _get_field(fn, k_test_train, g_init)
            ktt = _real(f"{fn} predict_fn", "k_test_test", _get_field(fn, k_test_test, g_init))
            m = ktd.shape[0]
            if ktt.shape != (m, m):
                fail(f"{fn} predict_fn", "k_test_test", f"have shape [M, M] with M = {m}",
                     f"shape {ktt.shape}")
            if g in ("nngp", "ntkgp"):
                cov = ktt - ktd @ solve(kg, ktd_init.T, codes)
            else:
                kdd_nngp = _get_field(fn, k_train_train, "nngp")
                term_1 = solve(kg, ktd.T, codes)  # Theta^-1 Theta_Xx : [N, M]
                cov = term_1.T @ kdd_nngp @ term_1
                term_2 = ktd @ solve(kg, ktd_init.T, codes)
                cov = ktt + cov - term_2 - term_2.T
            out[g] = Gaussian(mean, cov)
        out = {g: _as_dtype(v, _kernel_dtype(k_train_train, "ntk" if g == "ntkgp" else g, y.dtype))
               for g, v in out.items()}
        res = out[gets[0]] if single else _gaussians(tuple(out))(*out.values())
        if return_status:
            return res, st.combine(Status.OK, *codes)
        return res

    return predict_fn


def _kernel_dtype(k, g: str, fallback):
    """The floating dtype of the kernel ``g`` of ``k`` (an array, a namedtuple / stax.Kernel, an
    operator), or of ``fallback`` (a matvec, a missing field): NT's outputs carry the kernel's
    dtype."""
    if isinstance(k, _OperatorMatvec):
        dt = k.op.dtype
    elif (isinstance(k, tuple) and hasattr(k, "_fields")) or isinstance(k, _StaxKernel):
        v = getattr(k, g, None)
        dt = fallback if v is None else jnp.result_type(v)
    elif hasattr(k, "dtype"):
        dt = k.dtype
    elif callable(k):
        dt = fallback
    else:
        dt = jnp.result_type(k)
    dt = jnp.result_type(dt, float)
    if jnp.finfo(dt).bits < 32:
        dt = jnp.float32
    return dt


def _as_dtype(v, dtype):
    """Every array of ``v`` (an array, a Gaussian) in ``dtype``: NT's outputs carry the kernel's
    dtype, here at every ``t`` (``None``, ``inf`` and finite)."""
    return jax.tree.map(lambda a: a.astype(dtype), v)


class _FlatKernel(NamedTuple):
    """``kernel_fn``'s ``nngp`` / ``ntk`` as matrices (:func:`_make_2d`)."""

    nngp: jax.Array | None = None
    ntk: jax.Array | None = None


_GAUSSIANS: dict[tuple[str, ...], type] = {}


def _gaussians(names: tuple[str, ...]) -> type:
    if names not in _GAUSSIANS:
        _GAUSSIANS[names] = collections.namedtuple("Gaussians", names)
    return _GAUSSIANS[names]


def gradient_descent_mse_ensemble(
    kernel_fn: Callable,
    x_train: jax.Array,
    y_train: jax.Array,
    learning_rate: float = 1.0,
    diag_reg: float = 0.0,
    diag_reg_absolute_scale: bool = False,
    trace_axes: tuple[int, ...] = (-1,),
    **kernel_fn_train_train_kwargs: Any,
) -> Callable:
    r"""Mean (and covariance) of an infinite ensemble of infinite-width networks trained on MSE.

    For ``get="ntk"`` the outputs at time :math:`t` are Gaussian with mean
    :math:`\Theta_{xX}\Theta^{-1}(I - e^{-\eta\Theta t/(NO)})Y` and the covariance of Lee et al.
    (2019), eq. 16; for ``get="nngp"`` the same with the NNGP (training only the readout, i.e.
    Bayesian inference as :math:`t \to \infty`). ``t=None`` is infinite time (:func:`gp_inference`).

    Args:
      kernel_fn: ``kernel_fn(x1, x2, get)`` returning a namedtuple with ``nngp`` / ``ntk`` (a
        :mod:`kjax.ntk.stax` kernel_fn, or a Monte Carlo one).
      x_train: ``[N, ...]`` training inputs.
      y_train: ``[N, O]`` targets (``[N, ..., O]`` with kernels zipping the non-traced axes, as NT).
      learning_rate: :math:`\eta > 0`.
      diag_reg: diagonal regulariser (>= 0; relative to the mean diagonal unless
        ``diag_reg_absolute_scale``).
      diag_reg_absolute_scale: see ``diag_reg``.
      trace_axes: axes of ``y_train`` traced in ``kernel_fn``'s kernels (NT's; default ``(-1,)``).

    Returns:
      ``predict_fn(t=None, x_test=None, get=None, compute_cov=False, *, return_status=False)``:
      the mean ``[*t.shape, M, O]`` (``x_test=None``: on the training inputs), or a
      :class:`Gaussian` with covariance ``[*t.shape, M, M]`` when ``compute_cov``; a namedtuple
      ``Gaussians`` over a tuple ``get`` (default ``("nngp", "ntk")``); with
      ``return_status=True``, ``(that, status)`` (see :func:`gradient_descent_mse`; zero and
      negative eigenvalues give finite results, as there). In the kernel's floating dtype at
      every ``t``; for targets ``[N, ..., O]`` the mean is ``[*t.shape, M, ..., O]`` and the
      covariance zips the non-traced axes, ``[*t.shape, M, M, ..., ...]`` (NT's shapes).

    Raises:
      KjaxError: an unknown ``get``, ``trace_axes`` out of range or not matching the kernels,
        ``y_train`` of rank < 2, with ``N = 0`` or with NaN/inf, ``learning_rate <= 0``, ``diag_reg < 0``, a
        negative ``t``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import predict, stax
      >>> _, _, kernel_fn = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
      >>> x, y = jnp.linspace(-1, 1, 6).reshape(3, 2), jnp.array([[1.0], [0.0], [-1.0]])
      >>> predict_fn = predict.gradient_descent_mse_ensemble(kernel_fn, x, y, diag_reg=1e-4)
      >>> out = predict_fn(t=jnp.array([1.0, 10.0]), x_test=x[:2], get="ntk", compute_cov=True)
      >>> out.mean.shape, out.covariance.shape
      ((2, 2, 1), (2, 2, 2))

    References:
      Lee et al. Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
      Descent. NeurIPS 2019.
    """
    fn = f"{_P}.gradient_descent_mse_ensemble"
    _check_common(fn, diag_reg, None, learning_rate=learning_rate)
    y_nd = _real(fn, "y_train", y_train)
    if y_nd.ndim < 2 or y_nd.shape[0] == 0:
        fail(fn, "y_train", "have shape [N, O] (or [N, ..., O]) with N >= 1", f"shape {y_nd.shape}")
    _check_finite(fn, "y_train", y_nd)
    lay = _Layout.of(y_nd.shape, _nt_axes(fn, trace_axes, y_nd.ndim))
    y = lay.flat(y_nd)  # [P, R]: the non-traced axes flattened, the traced ones last
    y = y.astype(jnp.result_type(y.dtype, float))
    x_train = jax.tree.map(lambda a: _real(fn, "x_train", a), x_train)
    n_x = {jnp.shape(a)[0] if jnp.ndim(a) else 0 for a in jax.tree.leaves(x_train)}
    if n_x and n_x != {y_nd.shape[0]}:
        fail(fn, "y_train", f"have as many rows as `x_train` ({sorted(n_x)})", f"shape {y_nd.shape}")
    cache: dict[str, Any] = {}

    def call(arg, *args, **kw):
        """``kernel_fn(*args)``; its input errors are re-raised naming this function and ``arg``."""
        try:
            return kernel_fn(*args, **kw)
        except (KjaxError, KjaxTypeError) as e:
            fail(fn, arg, "be an input that `kernel_fn` accepts", str(e), cls=type(e))

    kw_dd = dict(kernel_fn_train_train_kwargs)

    def flat_kernels(k, arg, test: bool):
        """The ``nngp`` / ``ntk`` of ``kernel_fn``'s output (zipped pairs of the non-traced axes)
        checked against ``y_train``'s layout and flattened to matrices; and the rows' axes."""
        fields = {}
        rows = None
        for g in ("nngp", "ntk"):
            v = getattr(k, g, None)
            if v is None:
                fields[g] = None
                continue
            v = jnp.asarray(v)
            shape = tuple(v.shape)
            ok = len(shape) == 2 * len(lay.nt_shape) and shape[1::2] == lay.nt_shape
            if not ok or (not test and shape[0::2] != lay.nt_shape):
                blame = "y_train" if lay.taxes == (-1,) or test else "trace_axes"
                fail(fn, blame if not test else arg,
                     f"give kernels zipping the non-traced axes of `y_train` {_zipped(lay.nt_shape)} "
                     f"(trace_axes={lay.taxes})", f"`kernel_fn` {g} of shape {shape}")
            rows = shape[0::2]
            fields[g] = _make_2d(v)
        return _FlatKernel(**fields), rows

    def k_dd():
        return _cached(cache, "kdd", lambda: flat_kernels(
            call("x_train", x_train, None, ("nngp", "ntk"), **kw_dd), "x_train", False)[0])

    def test_kwargs(pfn, kw_tt):
        """NT's rule: a test-time keyword overrides the train-time one only for arrays (e.g. masks);
        other values must agree. Returns the keywords of the test-train and test-test calls: a
        pair ``(for x1, for x2)`` of arrays (Aggregate's ``pattern``) is ``(test's first, train's
        first)`` for the test-train kernel, as in NT."""
        kw_td, kw = dict(kw_dd), dict(kw_dd)
        for name, v in kw_tt.items():
            v_dd = kw_dd.get(name, v)
            arrays = all(hasattr(a, "shape") for a in jax.tree.leaves((v, v_dd)))
            if not arrays and v_dd is not v and v_dd != v:
                fail(pfn, name, f"equal its train-time value {v_dd!r} (kernel_fn keywords are shared)",
                     repr(v))
            kw[name] = kw_td[name] = v
            if arrays and all(isinstance(a, tuple) and len(a) == 2 for a in (v, v_dd)):
                kw_td[name] = (v[0], v_dd[0])
        return kw_td, kw

    def eig(g):
        return _cached(cache, f"eig_{g}", lambda: linalg.psd_eigh(
            _regularise(jnp.asarray(getattr(k_dd(), g)), diag_reg, diag_reg_absolute_scale)))

    def gp():
        return _cached(cache, "gp", lambda: gp_inference(k_dd(), y, diag_reg, diag_reg_absolute_scale),
                       *jax.tree.leaves(k_dd()), y, diag_reg)

    def predict_fn(t=None, x_test=None, get=None, compute_cov=False, *, return_status=False,
                   **kernel_fn_test_test_kwargs):
        pfn = f"{fn} predict_fn"
        single, gets = _canonical_gets(pfn, get, ("nngp", "ntk"), ("nngp", "ntk"))
        _check_t(pfn, t)
        kdd = k_dd()
        kw_td, kw = test_kwargs(pfn, kernel_fn_test_test_kwargs)
        if x_test is not None:
            x_test = jax.tree.map(lambda a: _real(pfn, "x_test", a), x_test)
        k_td, nt_out = None, lay.nt_shape
        if x_test is not None:
            k_td, nt_out = flat_kernels(call("x_test", x_test, x_train, ("nngp", "ntk"), **kw_td), "x_test",
                                        True)
        nngp_tt = None
        if compute_cov:
            nngp_tt = kdd.nngp if x_test is None else _make_2d(call("x_test", x_test, None, "nngp", **kw))

        def unflat(g, v, lead):
            """``[*lead, Q, R]`` means / ``[*lead, Q, Q]`` covariances back to NT's shapes."""
            mean = lay.unflat(v.mean if isinstance(v, Gaussian) else v, nt_out)
            if not isinstance(v, Gaussian):
                return _as_dtype(mean, _kernel_dtype(kdd, g, y.dtype))
            nq, nl = len(nt_out), len(lead)
            cov = v.covariance.reshape(*lead, *nt_out, *nt_out)
            cov = jnp.transpose(cov, (*range(nl), *[nl + i + j * nq for i in range(nq) for j in (0, 1)]))
            return _as_dtype(Gaussian(mean, cov), _kernel_dtype(kdd, g, y.dtype))

        if t is None:
            res, code = gp()(gets, k_td, nngp_tt, return_status=True)
            res = {g: unflat(g, getattr(res, g), ()) for g in gets}
            res = res[gets[0]] if single else _gaussians(tuple(res))(*res.values())
            return (res, code) if return_status else res
        s_t = jnp.asarray(t, y.dtype) * learning_rate / y.size
        tt = s_t[..., None]
        out = {}
        codes = []
        for g in gets:
            lam, evecs, code = eig(g)
            codes.append(code)
            decay = -jnp.expm1(-lam * tt)  # I - e^{-Theta s}, per eigenvalue
            filt = _gf_filter(lam, tt)  # Theta^-1 (I - e^{-Theta s}), finite at lam = 0
            if k_td is None:
                mean = jnp.einsum("ji,...i,ki,ko->...jo", evecs, decay, evecs, y)
            else:
                ktd = jnp.asarray(getattr(k_td, g))
                mean = jnp.einsum("lj,ji,...i,ki,ko->...lo", ktd, evecs, filt, evecs, y)
            if not compute_cov:
                out[g] = mean
                continue
            nngp_dd = jnp.asarray(kdd.nngp)
            if k_td is None:
                if g == "nngp":
                    cov = jnp.einsum("ji,...i,ki->...jk", evecs, lam * jnp.exp(-2 * lam * tt), evecs)
                else:
                    ex = jnp.einsum("mi,...i,ki->...mk", evecs, jnp.exp(-lam * tt), evecs)
                    cov = jnp.einsum("...mk,kl,...nl->...mn", ex, nngp_dd, ex)
            else:
                nngp_ss = jnp.asarray(nngp_tt)
                if g == "nngp":
                    cov = nngp_ss - jnp.einsum("mj,ji,...i,ki,lk->...ml", ktd, evecs, _gf_filter(lam, 2 * tt),
                                               evecs, ktd)
                else:
                    term_1 = jnp.einsum("mi,...i,ki,lk->...ml", evecs, filt, evecs, ktd)
                    term_2 = jnp.einsum("mj,ji,...i,ki,lk->...ml", ktd, evecs, filt, evecs,
                                        jnp.asarray(k_td.nngp))
                    term_2 = term_2 + jnp.swapaxes(term_2, -1, -2)
                    cov = jnp.einsum("...ji,jk,...kl->...il", term_1, nngp_dd, term_1) - term_2 + nngp_ss
            out[g] = Gaussian(mean, cov)
        out = {g: unflat(g, v, tt.shape[:-1]) for g, v in out.items()}
        res = out[gets[0]] if single else _gaussians(tuple(out))(*out.values())
        return (res, st.combine(Status.OK, *codes)) if return_status else res

    return predict_fn


class ODEState(NamedTuple):
    """State of :func:`gradient_descent`'s ODE (NT's ``predict.ODEState``): outputs on the training
    and test sets, and the auxiliary (momentum) variables. Build one with
    ``ODEState(fx_train_0, fx_test_0)``; unset fields are None."""

    fx_train: jax.Array | None = None
    fx_test: jax.Array | None = None
    qx_train: jax.Array | None = None
    qx_test: jax.Array | None = None


def gradient_descent(
    loss: Callable[[jax.Array, jax.Array], jax.Array],
    k_train_train: jax.Array,
    y_train: jax.Array,
    learning_rate: float = 1.0,
    momentum: float | None = None,
    trace_axes: tuple[int, ...] = (-1,),
) -> Callable:
    r"""Function-space gradient descent (with momentum) on any loss, by an ODE solver (NT's API).

    In the linearised regime the outputs follow :math:`\dot f_t(X) = -\eta\,\Theta\,\nabla_f
    \mathcal L(f_t(X), Y)` and :math:`\dot f_t(x) = -\eta\,\Theta_{xX}\nabla_f\mathcal L`; with
    ``momentum`` :math:`\mu` the continuous-time heavy ball :math:`\dot f = q,\ \dot q =
    -\Theta\nabla\mathcal L + \frac{\mu - 1}{\sqrt\eta} q` in units of :math:`\sqrt\eta`. Solved
    by ``jax.experimental.ode.odeint`` (Dormand-Prince); ``t=None`` integrates to ``inf``, which
    need not converge. For MSE use :func:`gradient_descent_mse` (closed form).

    Args:
      loss: ``loss(fx_train, y_train) -> scalar``, treating batch and output axes symmetrically.
      k_train_train: ``[N, N]`` NTK (``trace_axes=(-1,)``), ``[N, N, O, O]`` (``trace_axes=()``), or
        in general the non-traced axes of ``y_train`` zipped (NT's layout).
      y_train: ``[N, O]`` targets (``[N, ...]`` in general).
      learning_rate: :math:`\eta > 0`.
      momentum: None (plain gradient flow) or :math:`\mu`.
      trace_axes: axes of ``y_train`` traced in the kernel (NT's; default ``(-1,)``).

    Returns:
      ``predict_fn(t=None, fx_train_or_state_0=0., fx_test_0=None, k_test_train=None)``: as
      :func:`gradient_descent_mse`'s (times ``t`` increasing, leading axes ``t.shape``), or an
      :class:`ODEState` at ``t`` when given one.

    Raises:
      KjaxError: ``learning_rate <= 0``, a bad ``trace_axes``, a kernel or targets of the wrong
        shape, momentum variables without ``momentum``, or test outputs without ``k_test_train``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import predict
      >>> k, y = jnp.array([[2.0, 1.0], [1.0, 2.0]]), jnp.array([[1.0], [-1.0]])
      >>> mse = lambda fx, y: 0.5 * jnp.mean((fx - y) ** 2)
      >>> ode = predict.gradient_descent(mse, k, y)(1.0, 0.0)
      >>> closed = predict.gradient_descent_mse(k, y)(1.0, 0.0)
      >>> bool(jnp.allclose(ode, closed, atol=1e-5))
      True

    References:
      Lee et al. Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
      Descent. NeurIPS 2019.
    """
    from jax.experimental import ode as _ode

    fn = f"{_P}.gradient_descent"
    check_positive(fn, "learning_rate", learning_rate)
    if not callable(loss):
        fail(fn, "loss", "be a function loss(fx, y) -> scalar", type(loss).__name__)
    y = jnp.asarray(y_train)
    k = jnp.asarray(k_train_train)
    if y.ndim < 1 or y.shape[0] == 0:
        fail(fn, "y_train", "have shape [N, ...] with N >= 1", f"shape {y.shape}")
    lay = _Layout.of(y.shape, _nt_axes(fn, trace_axes, y.ndim))
    n = y.shape[0]
    if k.ndim >= 2 and k.shape[0] == k.shape[1] and k.shape[0] != n and 0 - y.ndim not in lay.taxes:
        fail(fn, "y_train", f"have N = {k.shape[0]} rows, as `k_train_train`", f"shape {y.shape}")
    lay.check_kernel(fn, "k_train_train", k, default_fits=tuple(k.shape) == _zipped(y.shape[:-1]))
    kk = _make_2d(k)
    # NT: the outputs (and the ODE state) carry the kernel's (floating) dtype
    dtype = _kernel_dtype(k, "ntk", y.dtype)
    grad_loss = jax.grad(lambda fx: loss(fx, y))
    lr = learning_rate if momentum is None else learning_rate ** 0.5
    mom = None if momentum is None else (momentum - 1.0) / lr

    def apply(kmat, g, nt_out):
        """The kernel (flattened, ``[Q, P]``) applied to ``g`` (``y_train``-shaped), block-diagonal
        along the traced axes; the result has non-traced axes ``nt_out``."""
        return lay.unflat(kmat @ lay.flat(g), nt_out)

    def predict_fn(t=None, fx_train_or_state_0=0.0, fx_test_0=None, k_test_train=None):
        pfn = f"{fn} predict_fn"
        is_state = isinstance(fx_train_or_state_0, ODEState)
        if is_state:
            st0 = fx_train_or_state_0
            f0, fx_test_0, q0, qt0 = st0.fx_train, st0.fx_test, st0.qx_train, st0.qx_test
        else:
            f0, q0, qt0 = fx_train_or_state_0, None, None
        _check_predict_inputs(pfn, f0 if not is_state else 0.0, fx_test_0, k_test_train)
        kst = nt_test = test_shape = None
        if k_test_train is not None:
            kst = _real(pfn, "k_test_train", k_test_train)
            lay.check_kernel(pfn, "k_test_train", kst, rows="test")
            nt_test = tuple(kst.shape[0::2])
            test_shape = lay.full_shape(nt_test)
            kst = _make_2d(kst)
        f0 = jnp.zeros(y.shape, dtype) if f0 is None else _broadcast(pfn, "fx_train_0", f0, y.shape, dtype)
        g0 = None if fx_test_0 is None else _broadcast(pfn, "fx_test_0", fx_test_0, test_shape, dtype)
        if mom is None:
            if q0 is not None or qt0 is not None:
                fail(pfn, "fx_train_or_state_0", "carry no momentum variables (momentum is None)",
                     "an ODEState with qx_train / qx_test")
        else:
            q0 = jnp.zeros(y.shape, dtype) if q0 is None else _broadcast(pfn, "qx_train", q0, y.shape, dtype)
            qt0 = None if g0 is None else (jnp.zeros(test_shape, dtype) if qt0 is None
                                           else _broadcast(pfn, "qx_test", qt0, test_shape, dtype))

        def rhs(state, _):
            fx, gx, qx, qt = state
            d = grad_loss(fx)
            dfx = -apply(kk, d, lay.nt_shape)
            dgx = None if gx is None else -apply(kst, d, nt_test)
            if mom is None:
                return ODEState(dfx, dgx, None, None)
            dfx = dfx + mom * qx
            dgx = None if gx is None else dgx + mom * qt
            return ODEState(qx, qt, dfx, dgx)

        ts = jnp.asarray(jnp.inf if t is None else t, dtype) * lr
        t_shape = ts.shape
        ts = ts.reshape(-1)
        # odeint needs the initial time first and strictly increasing times
        t0 = jnp.where(ts[0] == 0, jnp.full((1,), -1e-24, dtype), jnp.zeros((1,), dtype))
        sol = _ode.odeint(rhs, ODEState(f0, g0, q0, qt0), jnp.concatenate([t0, ts]))
        sol = jax.tree.map(lambda a: a[1:].reshape(t_shape + a.shape[1:]), sol)
        if is_state:
            return sol
        if fx_train_or_state_0 is not None and fx_test_0 is None:
            return sol.fx_train
        if fx_train_or_state_0 is None:
            return sol.fx_test
        return sol.fx_train, sol.fx_test

    return predict_fn


def max_learning_rate(
    ntk_train_train: jax.Array,
    y_train_size: int | None = None,
    momentum: float = 0.0,
    eps: float = 1e-12,
) -> float:
    r"""The largest stable learning rate of (momentum) gradient descent on NT's MSE (NT's API).

    With the loss :math:`\frac{1}{2 N O}\lVert f - y\rVert^2`, gradient descent in the NTK regime
    contracts iff :math:`\eta < 2 (1 + \mu) N O / \lambda_{max}(\Theta)` (for momentum :math:`\mu`,
    Goh, *Why Momentum Really Works*).

    Args:
      ntk_train_train: ``[N, N]`` NTK, or ``[N, N, O, O, ...]`` zipped pairs (flattened to
        ``[N O, N O]``).
      y_train_size: ``N O`` (default: the flattened kernel's side, i.e. ``trace_axes=()``).
      momentum: :math:`\mu \ge 0`.
      eps: added to :math:`\lambda_{max}` to avoid dividing by zero.

    Returns:
      The learning rate, a Python float for a concrete kernel (a scalar array under ``jit``).

    Raises:
      KjaxError: a kernel that is not square in its zipped pairs, or a negative ``momentum``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import predict
      >>> round(predict.max_learning_rate(jnp.array([[2.0, 0.0], [0.0, 1.0]])), 6)
      2.0

    References:
      Lee et al. Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
      Descent. NeurIPS 2019. Goh. Why Momentum Really Works. Distill 2017.
    """
    fn = f"{_P}.max_learning_rate"
    check_positive(fn, "momentum", momentum, allow_zero=True)
    k = jnp.asarray(ntk_train_train)
    if k.ndim < 2 or k.ndim % 2 or k.shape[0::2] != k.shape[1::2]:
        fail(fn, "ntk_train_train", "be a square kernel [N, N] or zipped pairs [N, N, O, O, ...]",
             f"shape {k.shape}")
    side = int(np.prod(k.shape[0::2]))
    k2 = jnp.transpose(k, list(range(0, k.ndim, 2)) + list(range(1, k.ndim, 2))).reshape(side, side)
    factor = side if y_train_size is None else check_int(fn, "y_train_size", y_train_size, minimum=1)
    if _is_concrete(k2):
        import scipy.linalg

        top = float(scipy.linalg.eigvalsh(np.asarray(k2), subset_by_index=(side - 1, side - 1))[-1])
        return 2 * (1 + momentum) * factor / (top + eps)
    return 2 * (1 + momentum) * factor / (jnp.linalg.eigvalsh(k2)[-1] + eps)


__all__ = ["Gaussian", "ODEState", "gp_inference", "gradient_descent", "gradient_descent_mse",
           "gradient_descent_mse_ensemble", "max_learning_rate"]

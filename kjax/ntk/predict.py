"""Closed-form training dynamics of infinitely wide networks (neural-tangents' ``predict``).

Layout: kernels ``k_train_train: [N, N]``, ``k_test_train: [M, N]``; targets and outputs
``y: [N, O]`` (the output axis is traced: the kernel is :math:`\\Theta \\otimes I_O`). Times ``t``
are scalars or arrays of any shape; results get ``t``'s shape as leading axes.

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
from kjax._src.errors import check_in, check_int, check_positive, fail
from kjax._src.status import Status

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


def _check_kernel(fn: str, k, y) -> tuple[jax.Array, jax.Array]:
    k = jnp.asarray(k)
    y = jnp.asarray(y)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        fail(fn, "k_train_train", "be a square matrix [N, N]", f"shape {k.shape}")
    if k.shape[0] == 0:
        fail(fn, "k_train_train", "have at least one training point (N >= 1)", f"shape {k.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != k.shape[0]:
        fail(fn, "y_train", f"have shape [N] or [N, O] with N = {k.shape[0]}", f"shape {y.shape}")
    _check_finite(fn, "k_train_train", k)
    _check_finite(fn, "y_train", y)
    return k, y


def _check_common(fn: str, diag_reg, trace_axes, *, solver=None, cg_tol=None, cg_maxiter=None,
                  learning_rate=None):
    if solver is not None:
        check_in(fn, "solver", solver, ("cholesky", "cg"))
    check_positive(fn, "diag_reg", diag_reg, allow_zero=True)
    if learning_rate is not None:
        check_positive(fn, "learning_rate", learning_rate)
    if cg_tol is not None:
        check_positive(fn, "cg_tol", cg_tol, allow_zero=True)
    if cg_maxiter is not None:
        check_int(fn, "cg_maxiter", cg_maxiter, minimum=1)
    if tuple(trace_axes) not in ((-1,), (1,)):
        fail(fn, "trace_axes", "be (-1,) (kjax traces the output axis only)", repr(trace_axes))


def _check_t(fn: str, t) -> None:
    if t is not None and _is_concrete(t):
        arr = np.asarray(t)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            fail(fn, "t", "be >= 0 and finite (training time; None for infinite time)",
                 repr(arr.item()) if arr.ndim == 0 else "an array with negative or non-finite values")


def _check_test(fn: str, kst, n: int):
    kst = jnp.asarray(kst)
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
        mv = lambda v: k(v) + diag_reg * v
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
      k_train_train: ``[N, N]`` NTK on the training set (or, with ``solver="cg"``, a matvec
        function ``v: [N, O] -> K v``).
      y_train: ``[N, O]`` (or ``[N]``) targets.
      learning_rate: :math:`\eta > 0`; only ``t * learning_rate`` matters.
      diag_reg: diagonal regulariser (>= 0).
      diag_reg_absolute_scale: ``diag_reg`` in absolute units instead of relative to
        ``trace(K) / N``.
      trace_axes: must be ``(-1,)`` (the output axis is traced, NT's default).
      solver: ``"cholesky"`` (exact) or ``"cg"`` (iterative; infinite time only).
      cg_tol: relative residual tolerance of CG (>= 0).
      cg_maxiter: CG iteration cap (default ``10 N``).

    Returns:
      ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None, *,
      return_status=False)`` returning ``fx_train_t`` ``[*t.shape, N, O]``, or
      ``(fx_train_t, fx_test_t)`` when ``fx_test_0`` is given, or ``fx_test_t`` alone when
      ``fx_train_0`` is None; with ``return_status=True``, ``(that, status)``. ``t=None`` is
      infinite time; ``t`` must be >= 0.

    Raises:
      KjaxError: a non-square or empty kernel, targets of the wrong shape, NaN/inf in concrete
        inputs, ``learning_rate <= 0``, ``diag_reg < 0``, ``trace_axes`` other than ``(-1,)``, an
        unknown ``solver``, a negative ``t``, a finite ``t`` with ``solver="cg"``, or a call that
        asks for test predictions without ``k_test_train`` (or with one of the wrong shape).

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
    _check_common(fn, diag_reg, trace_axes, solver=solver, cg_tol=cg_tol, cg_maxiter=cg_maxiter,
                  learning_rate=learning_rate)
    matvec_only = callable(k_train_train) and not hasattr(k_train_train, "shape")
    if matvec_only and solver != "cg":
        fail(fn, "k_train_train", "be an [N, N] array unless solver='cg'", "a function")
    y = jnp.asarray(y_train)
    if matvec_only:
        if y.ndim not in (1, 2) or y.shape[0] == 0:
            fail(fn, "y_train", "have shape [N] or [N, O] with N >= 1", f"shape {y.shape}")
        _check_finite(fn, "y_train", y)
        k = k_train_train
    else:
        k, y = _check_kernel(fn, k_train_train, y)
    n = y.shape[0]
    vec = y.ndim == 1
    y2 = y[:, None] if vec else y
    y2 = y2.astype(jnp.result_type(y2.dtype, float))
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
            g0 = jnp.asarray(fx_test_0)
            g0 = g0[:, None] if vec and g0.ndim == 1 else g0
            g0 = _broadcast(pfn, "fx_test_0", g0, (kst.shape[0], y2.shape[1]), y2.dtype)
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
        res = out[0] if len(out) == 1 else tuple(out)
        return (res, code) if return_status else res

    return predict_fn


def _get_field(fn: str, k, name: str):
    if isinstance(k, tuple) and hasattr(k, "_fields"):
        if name not in k._fields or getattr(k, name) is None:
            fail(fn, "kernels", f"contain a `{name}` field", f"fields {k._fields}")
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
        "ntk"))``) with ``nngp`` and / or ``ntk`` fields.
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
        of the wrong shape or with NaN/inf (concrete), ``diag_reg < 0``, or an unknown
        ``solver``.

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
    y = jnp.asarray(y_train)
    if y.ndim not in (1, 2):
        fail(fn, "y_train", "have shape [N] or [N, O]", f"shape {y.shape}")
    _check_finite(fn, "y_train", y)
    cache: dict[str, Any] = {}

    def solve(g, b, codes):
        make = lambda: _make_solver(fn, _check_kernel(fn, _get_field(fn, k_train_train, g), y)[0], diag_reg,
                                    diag_reg_absolute_scale, solver, cg_tol, cg_maxiter)
        # CG precomputes nothing (and its matvec closes over arrays): only factorisations are cached
        sv = make() if solver == "cg" else _cached(cache, g, make, *jax.tree.leaves(k_train_train), y,
                                                   diag_reg)
        x, code = sv.solve(b)
        codes.append(code)
        return x

    def predict_fn(get=None, k_test_train=None, k_test_test=None, *, return_status=False):
        single = isinstance(get, str)
        gets = ("nngp", "ntk") if get is None else ((get,) if single else tuple(get))
        for g in gets:
            check_in(f"{fn} predict_fn", "get", g, ("nngp", "ntk", "ntkgp"))
        codes: list = []
        out = {}
        for g in gets:
            kg = "ntk" if g == "ntkgp" else g
            if k_test_train is None:
                mean = y.astype(jnp.result_type(y.dtype, float))
                if k_test_test is not None:
                    kd = _get_field(fn, k_train_train, kg)
                    out[g] = Gaussian(mean, jnp.zeros_like(kd))
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
            ktt = _get_field(fn, k_test_test, g_init)
            if g in ("nngp", "ntkgp"):
                cov = ktt - ktd @ solve(kg, ktd_init.T, codes)
            else:
                kdd_nngp = _get_field(fn, k_train_train, "nngp")
                term_1 = solve(kg, ktd.T, codes)  # Theta^-1 Theta_Xx : [N, M]
                cov = term_1.T @ kdd_nngp @ term_1
                term_2 = ktd @ solve(kg, ktd_init.T, codes)
                cov = ktt + cov - term_2 - term_2.T
            out[g] = Gaussian(mean, cov)
        res = out[gets[0]] if single else _gaussians(tuple(out))(*out.values())
        if return_status:
            return res, st.combine(Status.OK, *codes)
        return res

    return predict_fn


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
      y_train: ``[N, O]`` targets.
      learning_rate: :math:`\eta > 0`.
      diag_reg: diagonal regulariser (>= 0; relative to the mean diagonal unless
        ``diag_reg_absolute_scale``).
      diag_reg_absolute_scale: see ``diag_reg``.
      trace_axes: must be ``(-1,)``.

    Returns:
      ``predict_fn(t=None, x_test=None, get=None, compute_cov=False, *, return_status=False)``:
      the mean ``[*t.shape, M, O]`` (``x_test=None``: on the training inputs), or a
      :class:`Gaussian` with covariance ``[*t.shape, M, M]`` when ``compute_cov``; a namedtuple
      ``Gaussians`` over a tuple ``get`` (default ``("nngp", "ntk")``); with
      ``return_status=True``, ``(that, status)`` (see :func:`gradient_descent_mse`; zero and
      negative eigenvalues give finite results, as there).

    Raises:
      KjaxError: an unknown ``get``, ``trace_axes`` other than ``(-1,)``, ``y_train`` not
        ``[N, O]`` with ``N >= 1`` or with NaN/inf, ``learning_rate <= 0``, ``diag_reg < 0``, a
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
    _check_common(fn, diag_reg, trace_axes, learning_rate=learning_rate)
    y = jnp.asarray(y_train)
    if y.ndim != 2 or y.shape[0] == 0:
        fail(fn, "y_train", "have shape [N, O] with N >= 1", f"shape {y.shape}")
    _check_finite(fn, "y_train", y)
    cache: dict[str, Any] = {}

    def k_dd():
        return _cached(cache, "kdd", lambda: kernel_fn(x_train, None, ("nngp", "ntk")))

    def eig(g):
        return _cached(cache, f"eig_{g}", lambda: linalg.psd_eigh(
            _regularise(jnp.asarray(getattr(k_dd(), g)), diag_reg, diag_reg_absolute_scale)))

    def gp():
        return _cached(cache, "gp", lambda: gp_inference(k_dd(), y, diag_reg, diag_reg_absolute_scale),
                       *jax.tree.leaves(k_dd()), y, diag_reg)

    def predict_fn(t=None, x_test=None, get=None, compute_cov=False, *, return_status=False):
        pfn = f"{fn} predict_fn"
        single = isinstance(get, str)
        gets = ("nngp", "ntk") if get is None else ((get,) if single else tuple(get))
        for g in gets:
            check_in(pfn, "get", g, ("nngp", "ntk"))
        _check_t(pfn, t)
        kdd = k_dd()
        k_td = None if x_test is None else kernel_fn(x_test, x_train, ("nngp", "ntk"))
        nngp_tt = None
        if compute_cov:
            nngp_tt = kdd.nngp if x_test is None else kernel_fn(x_test, None, "nngp")
        if t is None:
            res, code = gp()(gets, k_td, nngp_tt, return_status=True)
            res = getattr(res, gets[0]) if single else res
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
        res = out[gets[0]] if single else _gaussians(tuple(out))(*out.values())
        return (res, st.combine(Status.OK, *codes)) if return_status else res

    return predict_fn


__all__ = ["Gaussian", "gp_inference", "gradient_descent_mse", "gradient_descent_mse_ensemble"]

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

from kjax._src.errors import check_in, check_positive, fail

_P = "kjax.ntk.predict"


class Gaussian(NamedTuple):
    """A Gaussian over outputs: ``mean`` and ``covariance`` (NT's ``predict.Gaussian``)."""

    mean: jax.Array
    covariance: jax.Array


def _check_kernel(fn: str, k, y) -> tuple[jax.Array, jax.Array]:
    k = jnp.asarray(k)
    y = jnp.asarray(y)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        fail(fn, "k_train_train", "be a square matrix [N, N]", f"shape {k.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != k.shape[0]:
        fail(fn, "y_train", f"have shape [N] or [N, O] with N = {k.shape[0]}", f"shape {y.shape}")
    return k, y


def _regularise(k: jax.Array, diag_reg, absolute: bool) -> jax.Array:
    n = k.shape[0]
    scale = diag_reg if absolute else diag_reg * jnp.trace(k) / n
    return k + scale * jnp.eye(n, dtype=k.dtype)


def _cg(matvec: Callable, b: jax.Array, tol: float, maxiter: int | None) -> jax.Array:
    x, _ = jax.scipy.sparse.linalg.cg(matvec, b, tol=tol, maxiter=maxiter)
    return x


def _solver(fn: str, k, diag_reg, absolute, solver: str, cg_tol: float, cg_maxiter):
    """``solve(b) = (K + reg I)^{-1} b`` by Cholesky or by conjugate gradients."""
    if solver == "cholesky":
        a = _regularise(k, diag_reg, absolute)
        c = jax.scipy.linalg.cho_factor(a, lower=False)

        def solve(b):
            return jax.scipy.linalg.cho_solve(c, b)

        return solve
    scale = diag_reg if absolute else diag_reg * jnp.trace(k) / k.shape[0]

    def matvec(v):
        return k @ v + scale * v

    def solve(b):
        return _cg(matvec, b, cg_tol, cg_maxiter)

    return solve


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
    ``diag_reg_absolute_scale``). The eigendecomposition (finite ``t``) and the Cholesky factor
    (``t=None``) are computed on first use and cached. ``solver="cg"`` replaces the Cholesky
    factor at ``t=None`` by conjugate gradients on matvecs with ``k_train_train`` (which may then
    also be a function ``v -> K v``, e.g. a blockwise kernel matvec), for problems too large to
    factor.

    Args:
      k_train_train: ``[N, N]`` NTK on the training set (or, with ``solver="cg"``, a matvec
        function ``v: [N, O] -> K v``).
      y_train: ``[N, O]`` (or ``[N]``) targets.
      learning_rate: :math:`\eta`; only ``t * learning_rate`` matters.
      diag_reg: diagonal regulariser.
      diag_reg_absolute_scale: ``diag_reg`` in absolute units instead of relative to
        ``trace(K) / N``.
      trace_axes: must be ``(-1,)`` (the output axis is traced, NT's default).
      solver: ``"cholesky"`` (exact) or ``"cg"`` (iterative; infinite time only).
      cg_tol: relative residual tolerance of CG.
      cg_maxiter: CG iteration cap (default: scipy's).

    Returns:
      ``predict_fn(t=None, fx_train_0=0., fx_test_0=None, k_test_train=None)`` returning
      ``fx_train_t`` ``[*t.shape, N, O]``, or ``(fx_train_t, fx_test_t)`` when ``fx_test_0`` is
      given, or ``fx_test_t`` alone when ``fx_train_0`` is None. ``t=None`` is infinite time.

    Raises:
      KjaxError: a non-square kernel, targets of the wrong shape, ``trace_axes`` other than
        ``(-1,)``, an unknown ``solver``, a finite ``t`` with ``solver="cg"``, or a call that
        asks for test predictions without ``k_test_train``.

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
    check_in(fn, "solver", solver, ("cholesky", "cg"))
    check_positive(fn, "diag_reg", diag_reg, allow_zero=True)
    if tuple(trace_axes) not in ((-1,), (1,)):
        fail(fn, "trace_axes", "be (-1,) (kjax traces the output axis only)", repr(trace_axes))
    matvec_only = callable(k_train_train) and not hasattr(k_train_train, "shape")
    if matvec_only and solver != "cg":
        fail(fn, "k_train_train", "be an [N, N] array unless solver='cg'", "a function")
    y = jnp.asarray(y_train)
    if not matvec_only:
        k, y = _check_kernel(fn, k_train_train, y)
    vec = y.ndim == 1
    y2 = y[:, None] if vec else y
    size = y.size
    cache: dict[str, Any] = {}

    def eig():
        if "eig" not in cache:
            a = _regularise(k, diag_reg, diag_reg_absolute_scale)
            cache["eig"] = jnp.linalg.eigh(a)
        return cache["eig"]

    def solve(b):
        if "solve" not in cache:
            if matvec_only:
                # CG on the user's matvec; the regulariser needs the trace, so it is absolute here
                scale = diag_reg

                def mv(v):
                    return k_train_train(v) + scale * v

                cache["solve"] = lambda b: _cg(mv, b, cg_tol, cg_maxiter)
            else:
                cache["solve"] = _solver(fn, k, diag_reg, diag_reg_absolute_scale, solver, cg_tol,
                                         cg_maxiter)
        return cache["solve"](b)

    def shape_out(a):
        return a[..., 0] if vec else a

    def predict_fn(t=None, fx_train_0=0.0, fx_test_0=None, k_test_train=None):
        _check_predict_inputs(f"{fn} predict_fn", fx_train_0, fx_test_0, k_test_train)
        f0 = None if fx_train_0 is None else jnp.broadcast_to(
            jnp.asarray(fx_train_0, y2.dtype).reshape(-1, 1) if vec and jnp.ndim(fx_train_0) == 1
            else jnp.asarray(fx_train_0, y2.dtype), y2.shape)
        g0 = None
        if fx_test_0 is not None:
            kst = jnp.asarray(k_test_train)
            g0 = jnp.asarray(fx_test_0)
            g0 = g0[:, None] if vec and g0.ndim == 1 else g0
            g0 = jnp.broadcast_to(g0, (kst.shape[0], y2.shape[1]))
        if t is None:
            train = y2.astype(jnp.result_type(y2.dtype, float))
            if g0 is None:
                return shape_out(train)
            rhs = y2 if f0 is None else y2 - f0
            test = g0 + kst @ solve(rhs)
            return shape_out(test) if f0 is None else (shape_out(train), shape_out(test))
        if solver == "cg":
            fail(f"{fn} predict_fn", "t", "be None (infinite time) with solver='cg'", "a finite t")
        t_arr = jnp.asarray(t) * learning_rate
        evals, evecs = eig()
        lam = jnp.maximum(evals, 0.0)
        e = jnp.expm1(-lam * t_arr[..., None] / size)  # [*t, N]
        rhs = -y2 if f0 is None else f0 - y2
        coef = evecs.T @ rhs  # [N, O]
        out = []
        if f0 is not None:
            train = f0 + jnp.einsum("ij,...j,jo->...io", evecs, e, coef)
            out.append(shape_out(train))
        if g0 is not None:
            inv = e / jnp.abs(evals)
            test = g0 + jnp.einsum("mi,ij,...j,jo->...mo", kst, evecs, inv, coef)
            out.append(shape_out(test))
        return out[0] if len(out) == 1 else tuple(out)

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

    Args:
      k_train_train: ``[N, N]`` kernel, or a namedtuple (e.g. ``kernel_fn(x, None, ("nngp",
        "ntk"))``) with ``nngp`` and / or ``ntk`` fields.
      y_train: ``[N, O]`` targets.
      diag_reg: diagonal regulariser :math:`\lambda` (relative to ``trace / N`` unless
        ``diag_reg_absolute_scale``).
      diag_reg_absolute_scale: see ``diag_reg``.
      trace_axes: must be ``(-1,)``.
      solver: ``"cholesky"`` or ``"cg"`` (conjugate gradients on the same system).
      cg_tol: CG tolerance.
      cg_maxiter: CG iteration cap.

    Returns:
      ``predict_fn(get=None, k_test_train=None, k_test_test=None)``: for each ``g`` in ``get``
      (default ``("nngp", "ntk")``) the mean ``[M, O]``, or a :class:`Gaussian` with the
      covariance ``[M, M]`` when ``k_test_test`` is given; a namedtuple ``Gaussians`` for a tuple
      ``get``. Without ``k_test_train`` the mean is ``y_train``.

    Raises:
      KjaxError: an unknown ``get``, a kernel without the field ``get`` names, or an unknown
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
    check_in(fn, "solver", solver, ("cholesky", "cg"))
    if tuple(trace_axes) not in ((-1,), (1,)):
        fail(fn, "trace_axes", "be (-1,) (kjax traces the output axis only)", repr(trace_axes))
    y = jnp.asarray(y_train)
    cache: dict[str, Callable] = {}

    def solve(g, b):
        if g not in cache:
            k, _ = _check_kernel(fn, _get_field(fn, k_train_train, g), y)
            cache[g] = _solver(fn, k, diag_reg, diag_reg_absolute_scale, solver, cg_tol, cg_maxiter)
        return cache[g](b)

    def predict_fn(get=None, k_test_train=None, k_test_test=None):
        single = isinstance(get, str)
        gets = ("nngp", "ntk") if get is None else ((get,) if single else tuple(get))
        for g in gets:
            check_in(f"{fn} predict_fn", "get", g, ("nngp", "ntk", "ntkgp"))
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
            ktd = _get_field(fn, k_test_train, kg)
            mean = ktd @ solve(kg, y)
            if k_test_test is None:
                out[g] = mean
                continue
            g_init = "ntk" if g == "ntkgp" else "nngp"
            ktd_init = _get_field(fn, k_test_train, g_init)
            ktt = _get_field(fn, k_test_test, g_init)
            if g in ("nngp", "ntkgp"):
                cov = ktt - ktd @ solve(kg, ktd_init.T)
            else:
                kdd_nngp = _get_field(fn, k_train_train, "nngp")
                term_1 = solve(kg, ktd.T)  # Theta^-1 Theta_Xx : [N, M]
                cov = term_1.T @ kdd_nngp @ term_1
                term_2 = ktd @ solve(kg, ktd_init.T)
                cov = ktt + cov - term_2 - term_2.T
            out[g] = Gaussian(mean, cov)
        if single:
            return out[gets[0]]
        return _gaussians(tuple(out))(*out.values())

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
      learning_rate: :math:`\eta`.
      diag_reg: diagonal regulariser (relative to the mean diagonal unless
        ``diag_reg_absolute_scale``).
      diag_reg_absolute_scale: see ``diag_reg``.
      trace_axes: must be ``(-1,)``.

    Returns:
      ``predict_fn(t=None, x_test=None, get=None, compute_cov=False)``: the mean ``[*t.shape, M,
      O]`` (``x_test=None``: on the training inputs), or a :class:`Gaussian` with covariance
      ``[*t.shape, M, M]`` when ``compute_cov``; a namedtuple ``Gaussians`` over a tuple ``get``
      (default ``("nngp", "ntk")``).

    Raises:
      KjaxError: an unknown ``get`` or ``trace_axes`` other than ``(-1,)``.

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
    if tuple(trace_axes) not in ((-1,), (1,)):
        fail(fn, "trace_axes", "be (-1,) (kjax traces the output axis only)", repr(trace_axes))
    y = jnp.asarray(y_train)
    if y.ndim != 2:
        fail(fn, "y_train", "have shape [N, O]", f"shape {y.shape}")
    cache: dict[str, Any] = {}

    def k_dd():
        if "kdd" not in cache:
            cache["kdd"] = kernel_fn(x_train, None, ("nngp", "ntk"))
        return cache["kdd"]

    def eig(g):
        key = f"eig_{g}"
        if key not in cache:
            a = _regularise(jnp.asarray(getattr(k_dd(), g)), diag_reg, diag_reg_absolute_scale)
            cache[key] = jnp.linalg.eigh(a)
        return cache[key]

    def predict_fn(t=None, x_test=None, get=None, compute_cov=False):
        single = isinstance(get, str)
        gets = ("nngp", "ntk") if get is None else ((get,) if single else tuple(get))
        for g in gets:
            check_in(f"{fn} predict_fn", "get", g, ("nngp", "ntk"))
        kdd = k_dd()
        k_td = None if x_test is None else kernel_fn(x_test, x_train, ("nngp", "ntk"))
        nngp_tt = None
        if compute_cov:
            nngp_tt = kdd.nngp if x_test is None else kernel_fn(x_test, None, "nngp")
        if t is None:
            if "gp" not in cache:
                cache["gp"] = gp_inference(kdd, y, diag_reg, diag_reg_absolute_scale)
            res = cache["gp"](gets, k_td, nngp_tt)
            return getattr(res, gets[0]) if single else res
        t_arr = jnp.asarray(t) * learning_rate
        tt = t_arr[..., None]
        out = {}
        for g in gets:
            evals, evecs = eig(g)
            lam = jnp.maximum(evals, 0.0)

            def expm1(s, lam=lam):
                return jnp.expm1(-lam * s / y.size)

            def inv_expm1(s, lam=lam, evals=evals):
                return jnp.expm1(-lam * s / y.size) / jnp.abs(evals)

            if k_td is None:
                mean = jnp.einsum("ji,...i,ki,ko->...jo", evecs, -expm1(tt), evecs, y)
            else:
                ktd = jnp.asarray(getattr(k_td, g))
                mean = jnp.einsum("lj,ji,...i,ki,ko->...lo", ktd, evecs, -inv_expm1(tt), evecs, y)
            if not compute_cov:
                out[g] = mean
                continue
            nngp_dd = jnp.asarray(kdd.nngp)
            if k_td is None:
                if g == "nngp":
                    cov = jnp.einsum("ji,...i,ki->...jk", evecs, lam * jnp.exp(-2 * lam * tt / y.size),
                                     evecs)
                else:
                    ex = jnp.einsum("mi,...i,ki->...mk", evecs, jnp.exp(-lam * tt / y.size), evecs)
                    cov = jnp.einsum("...mk,kl,...nl->...mn", ex, nngp_dd, ex)
            else:
                nngp_ss = jnp.asarray(nngp_tt)
                if g == "nngp":
                    cov = nngp_ss - jnp.einsum("mj,ji,...i,ki,lk->...ml", ktd, evecs, -inv_expm1(2 * tt),
                                               evecs, ktd)
                else:
                    term_1 = jnp.einsum("mi,...i,ki,lk->...ml", evecs, -inv_expm1(tt), evecs, ktd)
                    term_2 = jnp.einsum("mj,ji,...i,ki,lk->...ml", ktd, evecs, -inv_expm1(tt), evecs,
                                        jnp.asarray(k_td.nngp))
                    term_2 = term_2 + jnp.swapaxes(term_2, -1, -2)
                    cov = jnp.einsum("...ji,jk,...kl->...il", term_1, nngp_dd, term_1) - term_2 + nngp_ss
            out[g] = Gaussian(mean, cov)
        if single:
            return out[gets[0]]
        return _gaussians(tuple(out))(*out.values())

    return predict_fn


__all__ = ["Gaussian", "gp_inference", "gradient_descent_mse", "gradient_descent_mse_ensemble"]

"""Taylor expansions of a model in its parameters, NTK-vector products, and NT's implementation enum.

``f(params, *args, **kwargs)`` returns any pytree; parameters are any pytree. These are
neural-tangents' ``linearize``, ``taylor_expand``, ``empirical_ntk_vp_fn`` and
``NtkImplementation``, written on ``jax.jvp`` / ``jax.vjp``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import jax

from kjax._src.errors import check_int, fail
from kjax.ntk._model import split_kwargs


class NtkImplementation(enum.IntEnum):
    """neural-tangents' ``NtkImplementation``: which empirical-NTK algorithm to run.

    The values are NT's integers; every kjax function that takes ``implementation=`` accepts them
    (and these members) and maps them to kjax's implementations (:mod:`kjax.ntk._implementations`):
    ``AUTO`` -> ``None`` (kjax's cost model picks, among those whose memory fits),
    ``JACOBIAN_CONTRACTION`` -> ``"jacobian_contraction"``, ``NTK_VECTOR_PRODUCTS`` ->
    ``"ntk_vector_products"``, ``STRUCTURED_DERIVATIVES`` -> ``"structured"``.

    Example:
      >>> from kjax.ntk import NtkImplementation
      >>> int(NtkImplementation.STRUCTURED_DERIVATIVES)
      3

    References:
      Novak, Sohl-Dickstein, Schoenholz. Fast Finite Width Neural Tangent Kernel. ICML 2022.
    """

    AUTO = 0
    JACOBIAN_CONTRACTION = 1
    NTK_VECTOR_PRODUCTS = 2
    STRUCTURED_DERIVATIVES = 3


def _check_f(fn: str, f: Any) -> None:
    if not callable(f):
        fail(fn, "f", "be a function f(params, *args, **kwargs)", type(f).__name__)


def _sub(a, b):
    return jax.tree.map(lambda u, v: u - v, a, b)


def linearize(f: Callable, params: Any) -> Callable:
    r"""The first-order Taylor expansion of ``f`` in its parameters about ``params``.

    .. math::
        f_{lin}(\theta, x) = f(\theta_0, x) + J_{\theta_0}(x)\,(\theta - \theta_0),

    computed by one ``jax.jvp`` per call (the Jacobian is never formed).

    Args:
      f: ``f(params, *args, **kwargs) -> pytree``.
      params: :math:`\theta_0`, any pytree.

    Returns:
      ``f_lin(new_params, *args, **kwargs)`` with ``f``'s signature and output structure.

    Raises:
      KjaxError: ``f`` not callable.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import linearize
      >>> f = lambda p, x: jnp.sin(p * x)
      >>> f_lin = linearize(f, 0.0)
      >>> round(float(f_lin(0.1, 2.0)), 6)  # sin(0) + cos(0) * 2 * 0.1
      0.2

    References:
      Lee et al. Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
      Descent. NeurIPS 2019.
    """
    _check_f("kjax.ntk.linearize", f)

    def f_lin(p, *args, **kwargs):
        out, tangent = jax.jvp(lambda q: f(q, *args, **kwargs), (params,), (_sub(p, params),))
        return jax.tree.map(lambda a, b: a + b, out, tangent)

    return f_lin


def taylor_expand(f: Callable, params: Any, degree: int) -> Callable:
    r"""The Taylor expansion of ``f`` in its parameters about ``params``, to order ``degree``.

    .. math::
        f_{tayl}(\theta, x) = \sum_{k=0}^{d} \frac{1}{k!} D^k_\theta f(\theta_0, x)[\delta^{\otimes k}],
        \qquad \delta = \theta - \theta_0,

    by nested ``jax.jvp`` (directional derivatives along :math:`\delta`), as NT's
    ``taylor_expand``. ``degree=1`` is :func:`linearize`.

    Args:
      f: ``f(params, *args, **kwargs) -> pytree``.
      params: :math:`\theta_0`, any pytree.
      degree: the order :math:`d \ge 0`.

    Returns:
      ``f_tayl(new_params, *args, **kwargs)`` with ``f``'s signature and output structure.

    Raises:
      KjaxError: ``f`` not callable, ``degree`` not a non-negative int.

    Example:
      >>> from kjax.ntk import taylor_expand
      >>> f = lambda p, x: p ** 3 * x
      >>> float(taylor_expand(f, 1.0, 2)(2.0, 1.0))  # 1 + 3 + 3
      7.0

    References:
      Lee et al. Wide Neural Networks of Any Depth Evolve as Linear Models Under Gradient
      Descent. NeurIPS 2019.
    """
    fn = "kjax.ntk.taylor_expand"
    _check_f(fn, f)
    degree = check_int(fn, "degree", degree, minimum=0)

    def f_tayl(p, *args, **kwargs):
        delta = _sub(p, params)
        g = lambda q: f(q, *args, **kwargs)
        # terms[k] = D^k g(theta_0)[delta^k]: differentiate the directional derivative k times
        total, deriv, factorial = g(params), g, 1.0
        for k in range(1, degree + 1):
            deriv = (lambda h: lambda q: jax.jvp(h, (q,), (delta,))[1])(deriv)
            factorial *= k
            total = jax.tree.map(lambda a, b, c=factorial: a + b / c, total, deriv(params))
        return total

    return f_tayl


def empirical_ntk_vp_fn(f: Callable, x1: Any, x2: Any, params: Any, **apply_fn_kwargs) -> Callable:
    r"""NTK-vector products :math:`v \mapsto \Theta(x_1, x_2)\, v` without forming the NTK.

    .. math::
        \Theta(x_1, x_2)\,v = J_\theta f(x_1)\,\big(J_\theta f(x_2)^\top v\big),

    one VJP through ``f(params, x2)`` and one JVP through ``f(params, x1)``: the cost of
    :math:`\approx 3` forward passes and the memory of one VJP (Novak et al. 2022, section L).
    Keyword arguments are split as in :func:`kjax.ntk.empirical_ntk_fn` (a pair ``(a, b)`` gives
    ``a`` to ``x1`` and ``b`` to ``x2``; an ``rng`` key is split when ``x2`` is given).

    Args:
      f: ``f(params, x, **kwargs) -> pytree``.
      x1: first inputs ``[N1, ...]`` (any pytree ``f`` takes).
      x2: second inputs ``[N2, ...]``; None means ``x1``.
      params: parameters, any pytree.
      **apply_fn_kwargs: keyword arguments of ``f``.

    Returns:
      ``ntk_vp_fn(cotangents)``: ``cotangents`` shaped like ``f(params, x2)``, returns a pytree
      shaped like ``f(params, x1)``.

    Raises:
      KjaxError: ``f`` not callable.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import empirical_ntk_fn, empirical_ntk_vp_fn
      >>> f = lambda p, x: jnp.tanh(x @ p)
      >>> x, p, v = jnp.ones((3, 2)), jnp.eye(2), jnp.ones((3, 2))
      >>> ntk = empirical_ntk_fn(f, trace_axes=())(x, None, p)  # [3, 3, 2, 2]
      >>> vp = empirical_ntk_vp_fn(f, x, None, p)(v)
      >>> bool(jnp.allclose(vp, jnp.einsum("ijab,jb->ia", ntk, v)))
      True

    References:
      Novak, Sohl-Dickstein, Schoenholz. Fast Finite Width Neural Tangent Kernel. ICML 2022.
    """
    _check_f("kjax.ntk.empirical_ntk_vp_fn", f)
    kw1, kw2 = split_kwargs(apply_fn_kwargs) if x2 is not None else (apply_fn_kwargs, apply_fn_kwargs)
    x2 = x1 if x2 is None else x2
    f1 = lambda p: f(p, x1, **kw1)
    f2 = lambda p: f(p, x2, **kw2)

    def ntk_vp_fn(cotangents):
        (dparams,) = jax.vjp(f2, params)[1](cotangents)
        return jax.jvp(f1, (params,), (dparams,))[1]

    return ntk_vp_fn


__all__ = ["NtkImplementation", "empirical_ntk_vp_fn", "linearize", "taylor_expand"]

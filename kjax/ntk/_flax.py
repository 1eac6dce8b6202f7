"""flax adapters: turn an nnx module or a linen module into ``f(params, x), params``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kjax._src.errors import KjaxTypeError, fail


def from_nnx(model: Any, wrt: Any = None) -> tuple[Callable, Any]:
    """Split a ``flax.nnx`` module into a pure ``f(params, x, **kwargs)`` and its parameters.

    ``wrt`` is an nnx filter selecting the variables the kernel differentiates (default
    ``nnx.Param``), e.g. ``nnx.All(nnx.Param, nnx.PathContains("head"))`` for the last layer only;
    every other variable (other parameters, batch statistics, RNG state) is held fixed. Calls of
    ``f`` rebuild the module with ``nnx.merge`` and do not mutate ``model``.

    Args:
      model: an ``nnx.Module``.
      wrt: an nnx filter; default ``nnx.Param``.

    Returns:
      ``(f, params)`` with ``params`` an ``nnx.State`` (a pytree), ready for
      :func:`empirical_ntk_fn` / :func:`empirical_ntk`.

    Raises:
      TypeError: ``model`` is not an ``nnx.Module``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from kjax.ntk import empirical_ntk, from_nnx
      >>> model = nnx.Sequential(nnx.Linear(3, 16, rngs=nnx.Rngs(0)), nnx.relu,
      ...                        nnx.Linear(16, 2, rngs=nnx.Rngs(1)))
      >>> f, params = from_nnx(model)
      >>> empirical_ntk(f, params, jnp.ones((5, 3))).shape
      (5, 5)
    """
    from flax import nnx

    if not isinstance(model, nnx.Module):
        fail("kjax.ntk.from_nnx", "model", "be a flax.nnx.Module", type(model).__name__,
             cls=KjaxTypeError)
    wrt = nnx.Param if wrt is None else wrt
    graphdef, params, rest = nnx.split(model, wrt, ...)

    def f(p, x, **kwargs):
        return nnx.merge(graphdef, p, rest)(x, **kwargs)

    return f, params


def from_linen(module: Any, variables: dict, *, params_collection: str = "params",
               method: Any = None) -> tuple[Callable, Any]:
    """Turn a ``flax.linen`` module and its variables into ``f(params, x, **kwargs)`` and params.

    Collections other than ``params_collection`` (e.g. ``batch_stats``) are held fixed.

    Args:
      module: a ``flax.linen.Module``.
      variables: the variables from ``module.init``.
      params_collection: the collection differentiated (default ``"params"``).
      method: optional method passed to ``module.apply``.

    Returns:
      ``(f, params)``.

    Raises:
      ValueError: ``variables`` without ``params_collection``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> import flax.linen as nn
      >>> from kjax.ntk import empirical_ntk, from_linen
      >>> mlp = nn.Sequential([nn.Dense(16), nn.relu, nn.Dense(2)])
      >>> variables = mlp.init(jax.random.key(0), jnp.ones((1, 3)))
      >>> f, params = from_linen(mlp, variables)
      >>> empirical_ntk(f, params, jnp.ones((4, 3))).shape
      (4, 4)
    """
    if params_collection not in variables:
        fail("kjax.ntk.from_linen", "variables", f"contain the collection {params_collection!r}",
             f"collections {sorted(variables)}")
    rest = {k: v for k, v in variables.items() if k != params_collection}

    def f(p, x, **kwargs):
        return module.apply({params_collection: p, **rest}, x, method=method, **kwargs)

    return f, variables[params_collection]

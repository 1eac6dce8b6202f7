"""Kernels as pytrees: hyperparameters are traced leaves, and kernels add, multiply and scale.

A :class:`Kernel` wraps one of the kernel functions of this package (or any
``f(x1, x2=None, **hyperparameters)``) together with its hyperparameters. Numeric hyperparameters
are pytree leaves, so ``jax.jit`` sees a new lengthscale as new data (no recompilation) and
``jax.grad`` differentiates with respect to them; integer-like structural choices (``matern``'s
``nu``, ``polynomial``'s ``degree``, ``arccos``'s ``order``) are static. :func:`as_kernel` turns a
``functools.partial`` of a kjax kernel function into a :class:`Kernel`, so existing code keeps
working and gains the same caching.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxTypeError, fail
from kjax._src.partition import is_array_leaf

#: hyperparameters that select a structure, never traced
STATIC_HYPERPARAMETERS = frozenset({"nu", "degree", "order"})


def _is_leaf_value(name: str, value: Any) -> bool:
    return name not in STATIC_HYPERPARAMETERS and is_array_leaf(value)


@jax.tree_util.register_pytree_node_class
class Kernel:
    """A kernel ``k(x1, x2=None) -> [n1, n2]`` whose numeric hyperparameters are pytree leaves.

    Args:
      fn: the kernel function, ``fn(x1, x2=None, **hyperparameters)`` (e.g. :func:`kjax.kernels.rbf`).
      **hyperparameters: its keyword arguments; numbers and arrays become leaves, the structural
        ones (``nu``, ``degree``, ``order``) and anything non-numeric stay static.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import Kernel, rbf
      >>> k = Kernel(rbf, lengthscale=2.0)
      >>> x = jnp.array([[0.0], [1.0]])
      >>> print(jnp.round(k(x), 4))
      [[1.     0.8825]
       [0.8825 1.    ]]
      >>> g = jax.grad(lambda k: k(x)[0, 1])(k)          # d k / d lengthscale
      >>> print(round(float(g.hyperparameters["lengthscale"]), 4))
      0.1103
    """

    def __init__(self, fn: Callable, **hyperparameters: Any):
        if not callable(fn):
            fail("kjax.kernels.Kernel", "fn", "be a kernel function f(x1, x2=None, **hyperparameters)",
                 type(fn).__name__, cls=KjaxTypeError)
        self.fn = fn
        self.hyperparameters = dict(hyperparameters)

    def __call__(self, x1, x2=None):
        return self.fn(x1, x2, **self.hyperparameters)

    def tree_flatten(self):
        names = sorted(self.hyperparameters)
        dyn = tuple(n for n in names if _is_leaf_value(n, self.hyperparameters[n]))
        static = tuple((n, self.hyperparameters[n]) for n in names if n not in dyn)
        return [self.hyperparameters[n] for n in dyn], (self.fn, dyn, static)

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        fn, dyn, static = aux
        return cls(fn, **dict(zip(dyn, leaves, strict=True)), **dict(static))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.hyperparameters.items()))
        return f"Kernel({getattr(self.fn, '__name__', self.fn)!r}, {args})"

    # kernel algebra (as scikit-learn's and tinygp's kernels)
    def __add__(self, other):
        return Sum(self, as_kernel(other)) if callable(other) else NotImplemented

    def __radd__(self, other):
        return Sum(as_kernel(other), self) if callable(other) else NotImplemented

    def __mul__(self, other):
        if callable(other):
            return Product(self, as_kernel(other))
        return Scale(self, other)

    def __rmul__(self, other):
        if callable(other):
            return Product(as_kernel(other), self)
        return Scale(self, other)


def _check_callable(fn: str, arg: str, k) -> None:
    if not callable(k):
        fail(fn, arg, "be a kernel k(x1, x2=None) (a Kernel or a kernel function)", type(k).__name__,
             cls=KjaxTypeError)


def _combine(fn_name: str, op):
    def call(self, x1, x2=None):
        return op(self.k1(x1, x2), self.k2(x1, x2))
    call.__name__ = fn_name
    return call


@jax.tree_util.register_pytree_node_class
class Sum(Kernel):
    """``k1 + k2`` (a sum of kernels is a kernel)."""

    def __init__(self, k1, k2):
        name = f"kjax.kernels.{type(self).__name__}"
        for arg, k in (("k1", k1), ("k2", k2)):
            _check_callable(name, arg, k)
        self.k1, self.k2 = k1, k2
        self.fn, self.hyperparameters = None, {}

    __call__ = _combine("sum", jnp.add)

    def tree_flatten(self):
        return [self.k1, self.k2], None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __repr__(self) -> str:
        return f"({self.k1!r} + {self.k2!r})"


@jax.tree_util.register_pytree_node_class
class Product(Sum):
    """``k1 * k2`` elementwise (a product of kernels is a kernel)."""

    __call__ = _combine("product", jnp.multiply)

    def __repr__(self) -> str:
        return f"({self.k1!r} * {self.k2!r})"


@jax.tree_util.register_pytree_node_class
class Scale(Kernel):
    """``c * k`` for a scalar ``c >= 0`` (a traced leaf)."""

    def __init__(self, k, c):
        _check_callable("kjax.kernels.Scale", "k", k)
        if is_array_leaf(c) and not isinstance(c, jax.core.Tracer) and np.ndim(c) == 0:
            if not np.isfinite(float(c)) or float(c) < 0:
                fail("kjax.kernels.Scale", "c", "be a finite scalar >= 0 (a scaled kernel stays positive "
                     "semi-definite)", repr(c))
        self.k, self.c = k, c
        self.fn, self.hyperparameters = None, {}

    def __call__(self, x1, x2=None):
        out = self.k(x1, x2)
        return jnp.asarray(self.c, out.dtype) * out

    def tree_flatten(self):
        return [self.k, self.c], None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)

    def __repr__(self) -> str:
        return f"({self.c!r} * {self.k!r})"


def white_noise(x1, x2=None, *, variance: float = 1.0):
    r"""White noise: :math:`k(x, y) = \sigma^2 [x = y]`, i.e. ``variance * I`` on a set of distinct points.

    Add it to a kernel to model observation noise (``rbf_kernel + Kernel(white_noise, variance=0.1)``),
    as scikit-learn's ``WhiteKernel``; points are compared exactly, so predictions at new points see
    no noise.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.kernels import white_noise
      >>> print(white_noise(jnp.array([[0.0], [1.0]]), variance=0.5))
      [[0.5 0. ]
       [0.  0.5]]
    """
    from kjax.kernels._functions import prepare_inputs, scale_by_variance

    fn = "kjax.kernels.white_noise"
    x1, x2, _ = prepare_inputs(fn, x1, x2)
    same = jnp.all(x1[:, None, :] == x2[None, :, :], axis=-1).astype(x1.dtype)
    # NaN points propagate NaN (as the other kernels), rather than comparing unequal to everything
    nan = jnp.isnan(x1).any(axis=1)[:, None] | jnp.isnan(x2).any(axis=1)[None, :]
    return scale_by_variance(fn, variance, jnp.where(nan, jnp.nan, same))


def _kjax_kernel_functions():
    from kjax.kernels import _functions as F

    return {F.rbf, F.laplace, F.matern, F.rational_quadratic, F.polynomial, F.linear, F.arccos, white_noise}


def as_kernel(k: Any) -> Any:
    """``functools.partial(kjax_kernel_fn, **hyperparameters)`` (or the bare function) as a
    :class:`Kernel`; a :class:`Kernel` or any other callable is returned as it is."""
    if isinstance(k, Kernel):
        return k
    _check_callable("kjax.kernels.as_kernel", "k", k)
    if isinstance(k, functools.partial) and not k.args and k.func in _kjax_kernel_functions():
        return Kernel(k.func, **k.keywords)
    try:
        known = k in _kjax_kernel_functions()
    except TypeError:  # an unhashable callable
        known = False
    return Kernel(k) if known else k

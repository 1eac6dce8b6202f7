"""The eNTK of a model as a kernel of data, for every solver of kjax.regression.

:func:`ntk_kernel` closes a model and its parameters into a :class:`kjax.kernels.Kernel`
``k(x1, x2) -> [n1, n2]``: the parameters are pytree leaves (a new checkpoint does not recompile
a solver), the model and the mode are static. Solvers call it on blocks of rows through their
blockwise maps (sharded over a mesh, streamed, with progress bars), so the n x n eNTK is never
formed unless the solver forms its Gram matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from kjax._src.errors import KjaxError, KjaxTypeError, check_in, check_int, fail
from kjax.kernels import Kernel
from kjax.ntk._dataset import empirical_ntk
from kjax.ntk._model import check_x_pair

PyTree = Any
KERNEL_MODES = ("trace", "pntk")


def _ntk_block(x1, x2=None, *, f, params, mode, implementation, block_size):
    return empirical_ntk(f, params, x1, x2, mode=mode, implementation=implementation, block_size=block_size)


@jax.tree_util.register_pytree_node_class
class NTKKernel(Kernel):
    """The eNTK of ``f`` at ``params`` as a kernel ``k(x1, x2) -> [n1, n2]`` (see :func:`ntk_kernel`)."""

    def __init__(self, f: Callable, params: PyTree, *, mode: str = "trace", implementation: Any = None,
                 block_size: int | None = None):
        self.f, self.params, self.mode = f, params, mode
        self.implementation, self.block_size = implementation, block_size
        self.fn = _ntk_block
        self.hyperparameters = {}

    def __call__(self, x1, x2=None):
        fn = "kjax.ntk.ntk_kernel"
        check_x_pair(fn, x1, x2)
        for name, x in (("x1", x1), ("x2", x2)):
            if x is None:
                continue
            try:
                jax.eval_shape(lambda xx: self.f(self.params, xx), jax.tree.map(lambda a: a[:1], x))
            except (TypeError, ValueError) as e:
                if isinstance(e, KjaxError):
                    raise
                fail(fn, name, "be inputs the model takes (a batch [n, ...] of its examples)",
                     f"an error from the model: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return _ntk_block(x1, x2, f=self.f, params=self.params, mode=self.mode,
                          implementation=self.implementation, block_size=self.block_size)

    def tree_flatten(self):
        leaves, treedef = jax.tree.flatten(self.params)
        return leaves, (self.f, treedef, self.mode, self.implementation, self.block_size)

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        f, treedef, mode, implementation, block_size = aux
        return cls(f, jax.tree.unflatten(treedef, leaves), mode=mode, implementation=implementation,
                   block_size=block_size)

    def __repr__(self) -> str:
        return f"ntk_kernel({getattr(self.f, '__name__', self.f)!r}, mode={self.mode!r})"


def ntk_kernel(f: Callable, params: PyTree, *, mode: str = "trace", implementation: Any = None,
               block_size: int | None = None) -> NTKKernel:
    r"""The empirical NTK of ``f`` at ``params`` as a kernel of data, for the regression solvers.

    ``k(x1, x2)`` is :func:`kjax.ntk.empirical_ntk` of the given ``mode``: ``"trace"`` (the
    eNTK averaged over the outputs, :math:`\frac1O\operatorname{tr}\Theta(x, x')`; neural-tangents'
    default ``trace_axes=(-1,)``) or ``"pntk"`` (the pseudo-NTK of
    :math:`\frac{1}{\sqrt O}\sum_o f_o`, one backward pass per example instead of ``O``). Both are
    scalar PSD kernels, so every solver takes them: ``krr_fit``, ``gp_*``, ``falkon_fit``,
    ``eigenpro_fit``, ``nystrom_centers``. The parameters are pytree leaves of the kernel: fitting
    at a new checkpoint reuses the compiled solver. (The full matrix-valued eNTK as an operator is
    :func:`kjax.ntk.analysis.ntk_matvec`.)

    Args:
      f: ``f(params, x) -> [n, ...]``; it must treat examples independently (it is evaluated on
        one example at a time, as :func:`kjax.ntk.empirical_ntk`).
      params: parameters (integer leaves are held fixed).
      mode: ``"trace"`` or ``"pntk"``.
      implementation: as in :func:`kjax.ntk.empirical_ntk_fn` (None: the cost model picks).
      block_size: examples per eNTK block inside one kernel call (None: automatic).

    Returns:
      An :class:`NTKKernel` (a :class:`kjax.kernels.Kernel`): ``k(x1, x2=None) -> [n1, n2]``.

    Raises:
      ValueError: an unknown ``mode``, ``block_size < 1``; at call time, inputs the model cannot
        take (naming ``x1`` or ``x2``).
      TypeError: ``f`` not callable.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import ntk_kernel
      >>> from kjax.regression import krr_fit, krr_predict
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> p = {"w1": jax.random.normal(k1, (2, 16)), "w2": jax.random.normal(k2, (16, 3))}
      >>> x = jax.random.normal(k1, (20, 2)); y = jnp.sin(x[:, 0])
      >>> state = krr_fit(ntk_kernel(f, p), x, y, ridge=1e-3)
      >>> krr_predict(state, x[:4]).shape
      (4,)

    References:
      Jacot, Gabriel, Hongler, *Neural Tangent Kernel*, NeurIPS 2018; Mohamadi, Bae, Sutherland,
      *A Fast, Well-Founded Approximation to the Empirical Neural Tangent Kernel*, ICML 2023.
    """
    fn = "kjax.ntk.ntk_kernel"
    if not callable(f):
        fail(fn, "f", "be a callable f(params, x) -> [n, ...]", type(f).__name__, cls=KjaxTypeError)
    check_in(fn, "mode", mode, KERNEL_MODES)
    if block_size is not None:
        check_int(fn, "block_size", block_size, minimum=1)
    leaves = jax.tree.leaves(params)
    if not any(np.issubdtype(leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf), np.inexact)
               for leaf in leaves):
        fail(fn, "params", "have at least one floating-point leaf", "none", cls=KjaxTypeError)
    return NTKKernel(f, params, mode=mode, implementation=implementation, block_size=block_size)


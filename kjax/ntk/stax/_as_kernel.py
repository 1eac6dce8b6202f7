"""An infinite-width network's kernel as a kernel of data, for the regression solvers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from kjax._src.errors import KjaxTypeError, check_in, fail
from kjax.kernels import Kernel


def _stax_block(x1, x2=None, *, kernel_fn, get):
    out = kernel_fn(x1, x2, get)
    if np.ndim(out) != 2:
        fail("kjax.ntk.stax.as_kernel", "kernel_fn", f"give a [n1, n2] {get} kernel (end the network with "
             "Flatten or a global pooling layer before the readout)", f"shape {np.shape(out)}")
    return out


def as_kernel(kernel_fn: Callable, get: str = "ntk") -> Kernel:
    r"""An infinite-width network's ``kernel_fn`` as a kernel of data, for the regression solvers.

    ``k(x1, x2) = kernel_fn(x1, x2, get)``: the NTK (``get="ntk"``, the kernel of gradient
    descent to convergence) or the NNGP (``get="nngp"``, the Bayesian posterior's kernel) of a
    :mod:`kjax.ntk.stax` network. Solvers evaluate it on blocks of rows, so
    ``falkon_fit(key, as_kernel(kernel_fn), x, y, ...)`` regresses with the infinite-width kernel
    on datasets whose n x n kernel does not fit in memory.

    Args:
      kernel_fn: the third element of a stax network ``(init_fn, apply_fn, kernel_fn)``; its
        output must be one ``[n1, n2]`` kernel (a network that ends in a dense readout).
      get: ``"ntk"`` or ``"nngp"``.

    Returns:
      A :class:`kjax.kernels.Kernel`.

    Raises:
      ValueError: an unknown ``get``; at call time, a network whose kernel is not ``[n1, n2]``.
      TypeError: ``kernel_fn`` not callable.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import stax
      >>> from kjax.regression import krr_fit, krr_predict
      >>> _, _, kernel_fn = stax.serial(stax.Dense(64), stax.Relu(), stax.Dense(1))
      >>> x = jax.random.normal(jax.random.key(0), (20, 3)); y = jnp.sin(x[:, 0])
      >>> state = krr_fit(stax.as_kernel(kernel_fn), x, y, ridge=1e-3)
      >>> krr_predict(state, x[:2]).shape
      (2,)
    """
    fn = "kjax.ntk.stax.as_kernel"
    if not callable(kernel_fn):
        fail(fn, "kernel_fn", "be a stax network's kernel_fn", type(kernel_fn).__name__, cls=KjaxTypeError)
    check_in(fn, "get", get, ("ntk", "nngp"))
    return Kernel(_stax_block, kernel_fn=kernel_fn, get=get)

"""Monte Carlo estimates of infinite-width kernels: empirical kernels averaged over initialisations."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import check_int, fail
from kjax.ntk._empirical import make_nngp_fn, make_ntk_fn
from kjax.ntk.stax import _kernel as K

_FN = "kjax.ntk.monte_carlo_kernel_fn"


def monte_carlo_kernel_fn(
    init_fn: Callable,
    apply_fn: Callable,
    key: jax.Array,
    n_samples: int | Sequence[int],
    batch_size: int = 0,
    device_count: int = -1,
    store_on_device: bool = True,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: Any = None,
) -> Callable:
    r"""Average of empirical NNGP / NTK kernels over ``n_samples`` random initialisations (NT's API).

    .. math::
        \hat K(x_1, x_2) = \frac1S \sum_{s=1}^S f_{\theta_s}(x_1) f_{\theta_s}(x_2)^\top,\qquad
        \hat\Theta(x_1, x_2) = \frac1S \sum_{s=1}^S J_{\theta_s}(x_1) J_{\theta_s}(x_2)^\top,
        \qquad \theta_s \sim \texttt{init\_fn}(k_s),

    which converge to a :mod:`kjax.ntk.stax` network's ``kernel_fn`` as the width and ``S`` grow.
    Built on :func:`kjax.ntk.empirical_ntk_fn` and :func:`kjax.ntk.empirical_nngp_fn`.

    Args:
      init_fn: ``init_fn(key, input_shape) -> (output_shape, params)``.
      apply_fn: ``apply_fn(params, x, **kwargs) -> [n, ...]``.
      key: PRNG key; sample ``s`` uses ``jax.random.split(key, max(n_samples))[s]``.
      n_samples: number of initialisations, or a sequence of them (then ``kernel_fn`` returns a
        generator of the running estimates at those counts, as NT does).
      batch_size: accepted for NT compatibility; use :func:`kjax.ntk.stax.batch` to block.
      device_count: accepted for NT compatibility (ignored).
      store_on_device: accepted for NT compatibility (ignored).
      trace_axes: output axes averaged over (as in :func:`kjax.ntk.empirical_ntk_fn`).
      diagonal_axes: output axes kept diagonal.
      vmap_axes: passed to :func:`kjax.ntk.empirical_ntk_fn`.
      implementation: passed to :func:`kjax.ntk.empirical_ntk_fn`.

    Returns:
      ``kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs)``: a namedtuple ``Kernel(nngp, ntk)``
      for ``get=None``, the array for a string, a namedtuple for a tuple.

    Raises:
      KjaxError: ``n_samples`` not a positive int (or sequence of them), or an unknown ``get``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import monte_carlo_kernel_fn, stax
      >>> init_fn, apply_fn, kernel_fn = stax.serial(stax.Dense(256), stax.Relu(), stax.Dense(1))
      >>> mc = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), n_samples=4)
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8]])
      >>> err = jnp.abs(mc(x, None, "ntk") - kernel_fn(x, None, "ntk")).max()
      >>> bool(err < 0.2)
      True

    References:
      Novak et al. Neural Tangents: Fast and Easy Infinite Neural Networks in Python. ICLR 2020.
    """
    single_count = isinstance(n_samples, int | np.integer) and not isinstance(n_samples, bool)
    try:
        counts = (n_samples,) if single_count else tuple(n_samples)
    except TypeError:
        counts = ()
    if not counts or isinstance(n_samples, str):
        fail(_FN, "n_samples", "be a positive int or a non-empty sequence of them", repr(n_samples))
    counts = tuple(check_int(_FN, "n_samples", c, minimum=1) for c in counts)
    ntk_fn = make_ntk_fn(_FN, apply_fn, trace_axes, diagonal_axes, vmap_axes, implementation)
    nngp_fn = make_nngp_fn(_FN, apply_fn, trace_axes, diagonal_axes)
    keys = jax.random.split(key, max(counts))

    def one(k, x1, x2, names, kwargs):
        _, params = init_fn(k, x1.shape)
        vals = []
        for n in names:
            f = ntk_fn if n == "ntk" else nngp_fn
            vals.append(f(x1, x2, params, **kwargs))
        return vals

    def estimates(x1, x2, get, kwargs) -> Generator:
        single, names = K.canonical_get(_FN, get)
        names = ("nngp", "ntk") if names is None else names
        for n in names:
            if n not in ("nngp", "ntk"):
                fail(_FN, "get", "be None, 'nngp', 'ntk' or a tuple of them", repr(get))
        def seg_sum(ks, a, b):
            """Sum of the per-sample kernels over the keys ``ks`` (one compiled scan)."""
            zeros = [jnp.zeros(v.shape, v.dtype) for v in jax.eval_shape(
                lambda: one(ks[0], a, b, names, kwargs))]

            def body(acc, k):
                vals = one(k, a, b, names, kwargs)
                return [t + v for t, v in zip(acc, vals, strict=True)], None

            return jax.lax.scan(body, zeros, ks)[0]

        seg_jit = jax.jit(seg_sum)
        total, done = None, 0
        for c in sorted(set(counts)):
            part = seg_jit(keys[done:c], x1, x2)
            total = part if total is None else [t + p for t, p in zip(total, part, strict=True)]
            done = c
            mean = [t / c for t in total]
            yield mean[0] if single else K.namedtuple_for(names)(*mean)

    def kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs):
        x1 = jnp.asarray(x1)
        x2 = None if x2 is None else jnp.asarray(x2)
        for arg, x in (("x1", x1), ("x2", x2)):
            if x is not None and (x.ndim == 0 or x.shape[0] == 0):
                fail(_FN, arg, "hold at least one example [n, ...] (n >= 1)", f"shape {x.shape}")
        gen = estimates(x1, x2, get, apply_fn_kwargs)
        if single_count:
            return next(gen)
        return gen

    _ = (batch_size, device_count, store_on_device)
    return kernel_fn

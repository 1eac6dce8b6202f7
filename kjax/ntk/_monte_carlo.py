"""Monte Carlo estimates of infinite-width kernels: empirical kernels averaged over initialisations."""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable, Generator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxError, KjaxTypeError, check_int, fail
from kjax.ntk._batching import batch
from kjax.ntk._empirical import make_nngp_fn, make_ntk_fn
from kjax.ntk._model import all_none
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
      key: PRNG key. As in NT, sample ``s`` uses ``key, k = split(key)`` then ``init_key,
        rng = split(k)``: ``init_fn(init_key, x1.shape)`` and ``apply_fn(..., rng=rng)`` when
        ``apply_fn`` takes ``rng``; the keys are split with the pre-0.5 threefry
        (``jax.threefry_partitionable(False)``), so the same key draws the same samples as NT
        on jax 0.4.
      n_samples: number of initialisations, or a sequence of them (then ``kernel_fn`` returns a
        generator of the running estimates at those counts, as NT does; the estimate at ``n``
        equals the ``n``-sample estimate exactly: samples are summed in order, then divided).
      batch_size: per-sample kernels are computed by :func:`kjax.ntk.batch` in blocks of this
        many examples (0: one block).
      device_count: devices for :func:`kjax.ntk.batch` (``-1``: all).
      store_on_device: see :func:`kjax.ntk.batch`.
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
    wanted = set(counts)
    batch_size = check_int(_FN, "batch_size", batch_size, minimum=0)
    ntk_fn = make_ntk_fn(_FN, apply_fn, trace_axes, diagonal_axes, vmap_axes, implementation)
    nngp_fn = make_nngp_fn(_FN, apply_fn, trace_axes, diagonal_axes)
    takes_rng = _accepts_rng(apply_fn)

    def sample_once(x1, x2, k, names, kwargs):
        """One initialisation's kernels, NT's key use: ``init_key, dropout_key = split(k)``."""
        init_key, dropout_key = jax.random.split(k, 2)
        try:
            _, params = init_fn(init_key, jax.tree.map(jnp.shape, x1))
        except (KjaxError, KjaxTypeError) as e:
            fail(_FN, "x1", "have a shape that `init_fn` accepts", str(e), cls=type(e))
        kw = dict(kwargs, rng=dropout_key) if takes_rng and "rng" not in kwargs else kwargs
        return [(ntk_fn if n == "ntk" else nngp_fn)(x1, x2, params, **kw) for n in names]

    def estimates(x1, x2, get, kwargs) -> Generator:
        single, names = K.canonical_get(_FN, get)
        names = ("nngp", "ntk") if names is None else names
        for n in names:
            if n not in ("nngp", "ntk"):
                fail(_FN, "get", "be None, 'nngp', 'ntk' (any case) or a tuple of them", repr(get))
        order = sorted(wanted)

        def running(a, b, kwargs=kwargs):
            """The running means at each count in ``order``: one sequential scan over NT's key
            stream (``key, k = split(key)`` per sample), summed in order, so that the estimate at
            ``n`` is exactly the ``n``-sample estimate."""
            _, keys = jax.lax.scan(lambda c, _: tuple(jax.random.split(c)), key, None, length=order[-1])
            # one kernel per name; a pytree of kernels when apply_fn returns a pytree (as in NT)
            zeros = jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype),
                                 jax.eval_shape(lambda k: sample_once(a, b, k, names, kwargs), keys[0]))

            def body(total, k):
                return jax.tree.map(jnp.add, total, sample_once(a, b, k, names, kwargs)), None

            total, done, means = zeros, 0, []
            for c in order:
                total = jax.lax.scan(body, total, keys[done:c])[0]
                done = c
                means.append(jax.tree.map(lambda t, c=c: t / c, total))
            return means

        batched = bool(batch_size) or device_count > 1
        if batched:  # kwargs through batch: NT's (for x1, for x2) pairs are split into blocks too
            run = batch(lambda a, b, **kw: running(a, b, kw), batch_size, device_count,
                        store_on_device)
        else:
            run = jax.jit(running)
        kind = K.namedtuple_for(names) if get is None else _mc_type(names)
        # the pre-0.5 (non-partitionable) threefry: the same key draws the same parameters as NT
        with jax.threefry_partitionable(False):
            means = run(x1, x2, **kwargs) if batched else run(x1, x2)
        for mean in means:
            yield mean[0] if single else jax.tree.map(lambda *leaves: kind(*leaves), *mean)

    def kernel_fn(x1, x2=None, get=None, **apply_fn_kwargs):
        x2 = None if all_none(x2) else x2  # NT: (None, None) for parallel inputs is x2 = x1
        for arg, x in (("x1", x1), ("x2", x2)):
            for leaf in jax.tree.leaves(x):
                if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] == 0:
                    fail(_FN, arg, "hold at least one example [n, ...] (n >= 1)", f"shape {jnp.shape(leaf)}")
        gen = estimates(x1, x2, get, apply_fn_kwargs)
        if single_count:
            return next(gen)
        return gen

    return kernel_fn


def _accepts_rng(apply_fn: Callable) -> bool:
    """Whether ``apply_fn`` takes an ``rng`` keyword (NT passes one to every sample, for dropout)."""
    try:
        params = inspect.signature(apply_fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "rng" for p in params)


_MC_TYPES: dict[tuple[str, ...], type] = {}


def _mc_type(names: tuple[str, ...]) -> type:
    if names not in _MC_TYPES:
        _MC_TYPES[names] = collections.namedtuple("MonteCarloKernel", names)
    return _MC_TYPES[names]

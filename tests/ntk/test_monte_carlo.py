"""monte_carlo_kernel_fn: averaged empirical kernels converge to stax's kernel_fn as width grows."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from kjax._src.errors import KjaxError
from kjax.ntk import monte_carlo_kernel_fn, stax


def _net(width):
    return stax.serial(stax.Dense(width, W_std=1.5, b_std=0.1), stax.Relu(),
                       stax.Dense(1, W_std=1.5, b_std=0.1))


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def test_monte_carlo_ntk_converges_with_width():
    x = np.random.default_rng(0).standard_normal((4, 3))
    errs = {}
    for width in (8, 1024):
        init_fn, apply_fn, kernel_fn = _net(width)
        mc = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(1), n_samples=4)
        errs[width] = _rel(mc(x, None, "ntk"), kernel_fn(x, None, "ntk"))
    # the eNTK's fluctuations shrink like 1/sqrt(width): 8 -> 1024 is a factor ~11
    assert errs[1024] < 0.05, errs
    assert errs[1024] < errs[8] / 3, errs


def test_monte_carlo_nngp_and_generator_semantics():
    x = np.random.default_rng(0).standard_normal((3, 2))
    init_fn, apply_fn, kernel_fn = _net(64)
    mc = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(2), n_samples=(1, 2))
    ests = list(mc(x, None, ("nngp", "ntk")))
    assert len(ests) == 2 and ests[0]._fields == ("nngp", "ntk")
    single = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(2), n_samples=1)(x, None)
    np.testing.assert_allclose(single.ntk, ests[0].ntk, rtol=1e-12)
    np.testing.assert_allclose(single.nngp, ests[0].nngp, rtol=1e-12)
    # the NNGP estimate is a sample covariance of the outputs: its error shrinks like 1/sqrt(S)
    exact = kernel_fn(x, None, "nngp")
    big = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(3), n_samples=400)(x, None, "nngp")
    assert _rel(big, exact) < 0.2
    assert _rel(big, exact) < _rel(ests[0].nngp, exact)


def test_monte_carlo_errors():
    init_fn, apply_fn, _ = _net(4)
    with pytest.raises(KjaxError, match=r"monte_carlo_kernel_fn: `n_samples` must be >= 1; got 0"):
        monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), 0)
    mc = monte_carlo_kernel_fn(init_fn, apply_fn, jax.random.key(0), 1)
    with pytest.raises(KjaxError, match=r"`get` must be None"):
        mc(np.ones((2, 3)), None, "cov3")

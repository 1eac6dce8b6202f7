"""Blocked triangular solves (kjax._src.linalg) against SciPy in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from jax.test_util import check_grads

from kjax._src import linalg
from tests.conformance import assert_close

RNG = np.random.default_rng(0)


def _factor(m):
    a = RNG.normal(size=(m, m)) / np.sqrt(m)
    return np.linalg.cholesky(a @ a.T + np.eye(m))


@pytest.mark.parametrize("m,block", [(1, 128), (7, 3), (128, 128), (300, 64), (513, 128)])
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("transpose", [False, True])
def test_solve_triangular_equals_scipy(m, block, k, transpose):
    low = _factor(m)
    b = RNG.normal(size=(m,) if k is None else (m, k))
    want = scipy.linalg.solve_triangular(low, b, lower=True, trans=1 if transpose else 0)
    got = linalg.solve_triangular(jnp.asarray(low), jnp.asarray(b), transpose=transpose, block=block)
    assert got.shape == b.shape
    assert_close(got, want, 1e-12)
    # only the lower triangle matters (finite values above it are multiplied by zeros)
    noisy = low + np.triu(RNG.normal(size=(m, m)), 1)
    assert_close(linalg.solve_triangular(jnp.asarray(noisy), jnp.asarray(b), transpose=transpose,
                                         block=block), want, 1e-12)


def test_cho_solve_few_and_many_rhs_and_grads():
    low = _factor(200)
    spd = low @ low.T
    for k in (1, 5, linalg.FEW_RHS + 1):
        b = RNG.normal(size=(200, k))
        assert_close(linalg.cho_solve(jnp.asarray(low), jnp.asarray(b)), np.linalg.solve(spd, b), 1e-10)
    b = jnp.asarray(RNG.normal(size=(200, 2)))
    check_grads(lambda lo, b: linalg.solve_triangular(jnp.tril(lo), b, transpose=True, block=64),
                (jnp.asarray(low), b), order=1, modes=("rev", "fwd"))
    f = jax.jit(jax.vmap(lambda bb: linalg.cho_solve(jnp.asarray(low), bb), in_axes=1, out_axes=1))
    assert_close(f(b), np.linalg.solve(spd, np.asarray(b)), 1e-10)


@pytest.mark.parametrize("m,block", [(300, 64), (513, 128), (5, 8)])
def test_solve_with_inverted_diagonal_blocks(m, block):
    low = _factor(m)
    b = RNG.normal(size=(m, 2))
    inv = linalg.block_inverses(jnp.asarray(low), block=block)
    for transpose in (False, True):
        want = scipy.linalg.solve_triangular(low, b, lower=True, trans=1 if transpose else 0)
        got = linalg.solve_triangular(jnp.asarray(low), jnp.asarray(b), transpose=transpose,
                                      block=block, diag_inv=inv)
        assert_close(got, want, 1e-11)

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
    check_grads(jax.jit(lambda lo, b: linalg.solve_triangular(jnp.tril(lo), b, transpose=True, block=64)),
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


# --------------------------------------------------------------------------------------------
# factorisations with a status


def test_robust_cholesky_statuses_and_grad():
    from kjax._src.status import Status

    spd = _factor(4) @ _factor(4).T
    # one compile for every case: PD, singular PSD (rank 1: jitter), negative definite, NaN
    cases = jnp.asarray(np.stack([spd, np.ones((4, 4)), -np.eye(4), np.where(np.eye(4) > 0, np.nan, 0.0)]))
    low, added, code = jax.jit(jax.vmap(linalg.robust_cholesky))(cases)
    assert code.tolist() == [Status.OK, Status.JITTER, Status.NOT_PSD, Status.NONFINITE_VALUES]
    assert_close(low[0], np.linalg.cholesky(spd), 1e-12)
    assert float(added[0]) == 0.0 and float(added[1]) > 0 and np.all(np.isfinite(np.asarray(low[1])))
    # reverse-mode through the nested lax.cond
    g = jax.grad(lambda a: jnp.sum(linalg.robust_cholesky(a @ a.T + jnp.eye(3)).factor))(jnp.eye(3))
    assert np.all(np.isfinite(np.asarray(g)))
    # the NumPy twin follows the same schedule
    lo, code = linalg.robust_cholesky_np(np.ones((5, 5)))
    assert code == Status.JITTER and lo is not None
    assert linalg.robust_cholesky_np(-np.eye(3))[1] == Status.NOT_PSD


def test_psd_eigh_and_pseudo_inverse_solves():
    from kjax._src.status import Status

    s, _, code = linalg.psd_eigh(jnp.diag(jnp.array([2.0, -1.0, 0.0])))
    assert s.tolist() == [0.0, 0.0, 2.0] and int(code) == Status.JITTER
    assert int(linalg.psd_eigh(-jnp.eye(3)).status) == Status.NOT_PSD
    assert int(linalg.psd_eigh(jnp.eye(3)).status) == Status.OK
    # rank-deficient PSD: the pseudo-inverse solve, NumPy's pinv as the oracle
    a = RNG.normal(size=(8, 3))
    k = a @ a.T
    b = RNG.normal(size=(8, 2))
    f = linalg.psd_factor(jnp.asarray(k))
    assert int(f.status) == Status.SINGULAR and bool(f.pinv)
    assert_close(linalg.psd_solve(f, jnp.asarray(b)), np.linalg.pinv(k, rcond=1e-10) @ b, 1e-9)
    # positive definite: the Cholesky factor, an exact solve
    spd = k + np.eye(8)
    f = linalg.psd_factor(jnp.asarray(spd))
    assert int(f.status) == Status.OK and not bool(f.pinv)
    assert_close(linalg.psd_solve(f, jnp.asarray(b)), np.linalg.solve(spd, b), 1e-12)
    # under jit both branches are compiled and the right one runs
    solve = jax.jit(lambda m, r: linalg.psd_solve(linalg.psd_factor(m), r))
    assert_close(solve(jnp.asarray(k), jnp.asarray(b)), np.linalg.pinv(k, rcond=1e-10) @ b, 1e-9)
    assert_close(solve(jnp.asarray(spd), jnp.asarray(b)), np.linalg.solve(spd, b), 1e-12)


@pytest.mark.parametrize("c", [5, 40])
def test_unit_lower_inverse_equals_numpy(c):
    # the delta rule's (I + N)^-1 with N = tril(diag(beta) K K^T, -1), unit keys, beta in [0, 2]
    k = RNG.normal(size=(2, 3, c, 8))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)
    n = np.tril(RNG.uniform(0, 2, size=(2, 3, c, 1)) * (k @ np.swapaxes(k, -1, -2)), -1)
    want = np.linalg.inv(np.eye(c) + n)
    inv = jax.jit(linalg.unit_lower_inverse)
    assert_close(inv(jnp.asarray(n)), want, 1e-13)
    # worst case for power series (all ones below the diagonal): still exact in float32
    ones = np.tril(np.ones((c, c)), -1)
    got = inv(jnp.asarray(ones, jnp.float32))
    assert np.array_equal(np.asarray(got), np.linalg.inv(np.eye(c) + ones).astype(np.float32))


def test_unit_lower_inverse_gradients():
    n = jnp.asarray(np.tril(RNG.normal(size=(20, 20)), -1) * 0.3)
    check_grads(jax.jit(linalg.unit_lower_inverse), (n,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)

"""The shared Krylov solvers (kjax._src.solvers): CG / PCG and Lanczos against NumPy in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src import solvers
from kjax._src.errors import KjaxError
from kjax._src.status import Status
from tests.conformance import assert_close

RNG = np.random.default_rng(0)


def _spd(n, cond=1e3, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    s = np.geomspace(1.0, 1.0 / cond, n)
    return (q * s) @ q.T, s


def test_cg_and_pcg_equal_numpy_solve_per_column():
    a, _ = _spd(60)
    b = RNG.normal(size=(60, 3))
    b[:, 2] = 0.0  # a zero column converges at once (x = 0), without 0/0
    want = np.linalg.solve(a, b)
    x, code, stats = solvers.cg(lambda v: jnp.asarray(a) @ v, jnp.asarray(b), tol=1e-12, maxiter=500)
    assert int(code) == Status.OK and float(stats.residual) <= 1e-12
    assert_close(x, want, 1e-9, "cg")
    its = int(stats.iterations)
    hist = np.asarray(stats.residuals)
    assert np.all(np.isfinite(hist[:its])) and np.all(np.isnan(hist[its:]))
    assert hist[its - 1] == pytest.approx(float(stats.residual))
    # a Jacobi preconditioner on a badly scaled system: fewer iterations, same solution
    d = np.geomspace(1.0, 1e3, 60)
    ad = d[:, None] * a * d[None, :]
    bd = d[:, None] * b
    _, _, plain = solvers.cg(lambda v: jnp.asarray(ad) @ v, jnp.asarray(bd), tol=1e-10, maxiter=2000)
    xp, code, pre = solvers.cg(lambda v: jnp.asarray(ad) @ v, jnp.asarray(bd), tol=1e-10, maxiter=2000,
                               preconditioner=lambda v: v / jnp.asarray(np.diag(ad))[:, None])
    assert int(code) == Status.OK and int(pre.iterations) < int(plain.iterations)
    assert_close(xp, np.linalg.solve(ad, bd), 1e-7, "pcg")
    # a vector right-hand side, an initial guess, and a monitor recorded per iteration
    x0 = want[:, 0] + 1e-3
    xv, code, stv = solvers.cg(lambda v: jnp.asarray(a) @ v, jnp.asarray(b[:, 0]), x0=jnp.asarray(x0),
                               tol=1e-12, maxiter=500, monitor=lambda x: jnp.sum(x))
    assert xv.shape == (60,) and int(code) == Status.OK
    assert_close(xv, want[:, 0], 1e-9, "x0")
    assert float(stv.monitor[int(stv.iterations) - 1]) == pytest.approx(float(jnp.sum(xv)))


def test_cg_statuses_maxiter_not_psd_nonfinite_and_jit():
    a, _ = _spd(40, cond=1e6)
    b = jnp.asarray(RNG.normal(size=40))
    mv = lambda v: jnp.asarray(a) @ v
    x, code, stats = solvers.cg(mv, b, tol=1e-12, maxiter=3)
    assert int(code) == Status.MAX_ITER and int(stats.iterations) == 3 and float(stats.residual) > 1e-12
    assert np.all(np.isfinite(np.asarray(x)))
    # an indefinite operator: CG stops at non-positive curvature with a finite iterate
    ind = np.diag(np.linspace(-1.0, 1.0, 41)[np.arange(41) != 20])
    x, code, _ = solvers.cg(lambda v: jnp.asarray(ind) @ v, jnp.ones(40), tol=1e-10, maxiter=100)
    assert int(code) == Status.NOT_PSD and np.all(np.isfinite(np.asarray(x)))
    # an indefinite preconditioner (r^T M r < 0) stops as NOT_PSD, never as converged: until
    # 2026-12-02 r^T z <= tiny counted as convergence, and float32 PCG at a tiny ridge said "ok"
    x, code, stats = solvers.cg(mv, b, preconditioner=lambda v: -v, tol=1e-10, maxiter=50)
    assert int(code) == Status.NOT_PSD and float(stats.residual) > 1e-10
    x, code, _ = solvers.cg(mv, jnp.zeros(40), preconditioner=lambda v: -v, tol=1e-10, maxiter=5)
    assert int(code) == Status.OK and not np.any(np.asarray(x))  # b = 0: converged at once
    x, code, _ = solvers.cg(mv, b.at[3].set(jnp.nan), maxiter=10)
    assert int(code) == Status.NONFINITE_INPUT
    # under jit and vmap: same results
    f = jax.jit(lambda bb: solvers.cg(mv, bb, tol=1e-10, maxiter=200)[0])
    assert_close(f(b), np.linalg.solve(a, np.asarray(b)), 1e-6, "jit")
    bb = jnp.stack([b, 2 * b])
    xs = jax.vmap(lambda v: solvers.cg(mv, v, tol=1e-10, maxiter=200)[0])(bb)
    assert_close(xs[1], 2 * xs[0], 1e-9, "vmap")
    with pytest.raises(KjaxError, match=r"kjax._src.solvers.cg: `tol` must be >= 0"):
        solvers.cg(mv, b, tol=-1.0)
    with pytest.raises(KjaxError, match=r"`b` must have rank 1 or 2"):
        solvers.cg(mv, jnp.ones((2, 2, 2)))


def test_lanczos_top_eigenpairs_restarts_and_status():
    a, s = _spd(30, cond=1e2, seed=1)
    (vals, vecs), code, stats = solvers.lanczos(jax.random.key(0), lambda v: jnp.asarray(a) @ v, 30, 4,
                                               num_iters=30)
    assert int(code) == Status.OK and float(stats.residual) < 1e-8
    assert_close(vals, np.sort(s)[::-1][:4], 1e-10, "eigenvalues")
    # eigenvectors up to sign: A v = lambda v
    assert_close(a @ np.asarray(vecs), np.asarray(vecs) * np.asarray(vals), 1e-8, "A v = lambda v")
    # repeated eigenvalues: the Krylov space of a random start is invariant after 2 steps; restarts
    # find the multiplicities
    d = jnp.asarray([3.0, 3.0, 3.0, 1.0, 1.0, 1.0])
    (vals, _), code, stats = solvers.lanczos(jax.random.key(1), lambda v: d * v, 6, 4, num_iters=6)
    assert_close(vals, [3.0, 3.0, 3.0, 1.0], 1e-12, "multiplicities")
    assert int(stats.restarts) >= 1 and int(code) == Status.OK
    # too few iterations for a flat spectrum: reported, not silent
    flat = jnp.linspace(1.0, 2.0, 60)
    _, code, stats = solvers.lanczos(jax.random.key(2), lambda v: flat * v, 60, 3, num_iters=8)
    assert int(code) == Status.MAX_ITER and float(stats.residual) > 1e-6
    with pytest.raises(KjaxError, match=r"`num_iters` must be in \[k, n\] = \[3, 60\]; got 2"):
        solvers.lanczos(jax.random.key(2), lambda v: v, 60, 3, num_iters=2)

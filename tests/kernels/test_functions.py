"""kjax.kernels functions against scikit-learn and closed forms, float64 and float32."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.gaussian_process import kernels as skk
from sklearn.metrics import pairwise

from kjax import kernels as K
from tests.conformance import assert_close, check_op, tol

RNG = np.random.default_rng(0)
X1 = RNG.normal(size=(13, 5))
X2 = RNG.normal(size=(9, 5))
LS = np.array([0.5, 1.0, 2.0, 1.5, 0.8])

SKLEARN_CASES = [
    ("rbf", dict(lengthscale=1.7, variance=2.0), lambda a, b: 2.0 * skk.RBF(1.7)(a, b)),
    ("rbf-ard", dict(lengthscale=LS), lambda a, b: skk.RBF(LS)(a, b)),
    ("laplace", dict(lengthscale=0.9), lambda a, b: skk.Matern(0.9, nu=0.5)(a, b)),
    ("matern05", dict(lengthscale=1.3, nu=0.5), lambda a, b: skk.Matern(1.3, nu=0.5)(a, b)),
    ("matern15", dict(lengthscale=1.3, nu=1.5), lambda a, b: skk.Matern(1.3, nu=1.5)(a, b)),
    ("matern25", dict(lengthscale=LS, nu=2.5), lambda a, b: skk.Matern(LS, nu=2.5)(a, b)),
    ("rq", dict(lengthscale=1.1, alpha=0.7),
     lambda a, b: skk.RationalQuadratic(length_scale=1.1, alpha=0.7)(a, b)),
    ("poly", dict(degree=3, gamma=0.3, coef0=0.5),
     lambda a, b: pairwise.polynomial_kernel(a, b, degree=3, gamma=0.3, coef0=0.5)),
    ("poly-default", dict(), lambda a, b: pairwise.polynomial_kernel(a, b)),
    ("linear", dict(), lambda a, b: pairwise.linear_kernel(a, b)),
]

FNS = {"rbf": K.rbf, "rbf-ard": K.rbf, "laplace": K.laplace, "matern05": K.matern,
       "matern15": K.matern, "matern25": K.matern, "rq": K.rational_quadratic,
       "poly": K.polynomial, "poly-default": K.polynomial, "linear": K.linear}


@pytest.mark.parametrize("name,kw,oracle", SKLEARN_CASES, ids=[c[0] for c in SKLEARN_CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_against_sklearn(name, kw, oracle, dtype):
    fn = FNS[name]
    a, b = X1.astype(dtype), X2.astype(dtype)
    got = fn(a, b, **kw)
    assert got.dtype == dtype
    assert_close(got, oracle(X1, X2), tol(dtype, 10), name)
    # x2=None is x1, with an exactly symmetric result
    sym = fn(a, **kw)
    assert_close(sym, oracle(X1, X1), tol(dtype, 10), name + " (x2=None)")
    np.testing.assert_array_equal(np.asarray(sym), np.asarray(sym).T)


def _arccos_numpy(a, b, n):
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    c = np.clip(a @ b.T / np.outer(na, nb), -1, 1)
    t = np.arccos(c)
    j = {0: np.pi - t,
         1: np.sin(t) + (np.pi - t) * np.cos(t),
         2: 3 * np.sin(t) * np.cos(t) + (np.pi - t) * (1 + 2 * np.cos(t) ** 2)}[n]
    return np.outer(na, nb) ** n * j / np.pi


@pytest.mark.parametrize("order", [0, 1, 2])
def test_arccos_closed_form_and_monte_carlo(order):
    got = K.arccos(X1, X2, order=order)
    assert_close(got, _arccos_numpy(X1, X2, order), 1e-12, "closed form")
    # Cho & Saul's integral: k_n = 2 E[step(w.x) step(w.y) (w.x)^n (w.y)^n], w ~ N(0, I)
    w = np.random.default_rng(1).normal(size=(400_000, 5))
    za, zb = X1[:4] @ w.T, X2[:4] @ w.T
    fa, fb = (za > 0) * za**order, (zb > 0) * zb**order
    mc = 2 * fa @ fb.T / w.shape[0]
    assert_close(got[:4, :4], mc, 0.03, "Monte Carlo")


def test_arccos_diagonal_and_zero_vector():
    x = np.vstack([X1[:3], np.zeros((1, 5))])
    k = K.arccos(x, order=1)
    np.testing.assert_allclose(np.diag(k)[:3], np.sum(X1[:3] ** 2, 1), rtol=1e-12)
    assert np.all(np.isfinite(k)) and float(k[3, 3]) == 0.0
    k0 = K.arccos(x, order=0)
    assert float(k0[3, 3]) == 0.5  # documented convention: cos(theta) = 0 for a zero vector


ALL = [
    functools.partial(K.rbf, lengthscale=1.3),
    functools.partial(K.rbf, lengthscale=LS),
    functools.partial(K.laplace, lengthscale=0.7),
    functools.partial(K.matern, nu=1.5),
    functools.partial(K.matern, nu=2.5),
    functools.partial(K.rational_quadratic, alpha=2.0),
    functools.partial(K.polynomial, degree=2),
    K.linear,
    functools.partial(K.arccos, order=0),
    functools.partial(K.arccos, order=1),
    functools.partial(K.arccos, order=2),
]
IDS = ["rbf", "rbf-ard", "laplace", "m15", "m25", "rq", "poly", "linear", "ac0", "ac1", "ac2"]


@pytest.mark.parametrize("kern", ALL, ids=IDS)
def test_conformance(kern, mesh):
    a, b = jnp.asarray(X1[:6]), jnp.asarray(X2[:4])
    check_op(kern, a, b, grad_argnums=(0, 1), vmap_argnums=(0, 1), expected_dtype=np.float64,
             mesh=mesh)


@pytest.mark.parametrize("kern", ALL, ids=IDS)
def test_gradients_finite_at_coincident_points(kern):
    x = jnp.asarray(X1[:4])
    g = jax.grad(lambda z: jnp.sum(kern(z, x)))(x)
    gs = jax.grad(lambda z: jnp.sum(kern(z)))(x)
    assert np.all(np.isfinite(g)) and np.all(np.isfinite(gs))


@pytest.mark.parametrize("nu", [1.5, 2.5])
def test_matern_gradient_exact_at_coincident_points(nu):
    """For nu > 1/2 the kernel is differentiable at x1 == x2 with zero gradient there."""
    x = jnp.asarray(X1[:1])
    g = jax.grad(lambda z: K.matern(z, x, nu=nu)[0, 0])(x)
    np.testing.assert_allclose(g, 0.0, atol=1e-12)


def test_hyperparameter_gradients_match_finite_differences():
    a, b = jnp.asarray(X1), jnp.asarray(X2)
    for f in [lambda s: K.rbf(a, b, lengthscale=s).sum(),
              lambda s: K.matern(a, b, lengthscale=s, nu=2.5).sum(),
              lambda s: K.rational_quadratic(a, b, lengthscale=1.0, alpha=s).sum(),
              lambda s: K.rbf(a, b, variance=s).sum()]:
        g = jax.grad(f)(1.3)
        fd = (f(1.3 + 1e-6) - f(1.3 - 1e-6)) / 2e-6
        np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_integer_inputs_are_promoted():
    xi = np.arange(12).reshape(4, 3)
    out = K.rbf(xi, lengthscale=5.0)
    assert jnp.issubdtype(out.dtype, jnp.floating)
    assert_close(out, skk.RBF(5.0)(xi.astype(float)), 1e-10)


def test_low_precision_inputs_give_float32():
    out = K.rbf(jnp.asarray(X1, jnp.bfloat16), jnp.asarray(X2, jnp.bfloat16))
    assert out.dtype == jnp.float32


def test_large_d_uses_expansion_and_matches_direct():
    a = RNG.normal(size=(7, 40))
    assert_close(K.rbf(a, lengthscale=6.0), skk.RBF(6.0)(a), 1e-12)
    d2 = K.squared_distance(jnp.asarray(a), jnp.asarray(a), same=True)
    np.testing.assert_array_equal(np.diag(d2), 0.0)


# ----------------------------------------------------------------------------- bad input

BAD = [
    (lambda: K.rbf(X1, X2[:, :3]), ValueError, "kjax.kernels.rbf: `x2` must match `x1` in the feature dimension d (5)"),
    (lambda: K.rbf(X1[0]), ValueError, "kjax.kernels.rbf: `x1` must have rank 2 [n1, d]"),
    (lambda: K.matern(X1, X2[None]), ValueError, "`x2` must have rank 2 [n2, d]"),
    (lambda: K.rbf(X1, lengthscale=0.0), ValueError, "`lengthscale` must be > 0; got 0.0"),
    (lambda: K.laplace(X1, lengthscale=-1.0), ValueError, "`lengthscale` must be > 0"),
    (lambda: K.rbf(X1, lengthscale=np.ones(3)), ValueError, "`lengthscale` must be a scalar or have shape (5,)"),
    (lambda: K.rbf(X1, variance=0.0), ValueError, "`variance` must be > 0"),
    (lambda: K.matern(X1, nu=1.0), ValueError, "`nu` must be one of 0.5, 1.5, 2.5; got 1.0"),
    (lambda: K.rational_quadratic(X1, alpha=0.0), ValueError, "`alpha` must be > 0"),
    (lambda: K.polynomial(X1, degree=0), ValueError, "`degree` must be >= 1"),
    (lambda: K.polynomial(X1, degree=2.5), TypeError, "`degree` must be a Python int"),
    (lambda: K.polynomial(X1, coef0=-1.0), ValueError, "`coef0` must be >= 0"),
    (lambda: K.linear(X1, bias=-1.0), ValueError, "`bias` must be >= 0"),
    (lambda: K.arccos(X1, order=3), ValueError, "`order` must be 0, 1 or 2"),
    (lambda: K.rbf(X1 + 1j), TypeError, "`x1` must be a real array"),
    (lambda: K.rbf(X1, lengthscale=np.nan), ValueError, "`lengthscale` must be finite"),
    # errors name the function called (laplace is not matern)
    (lambda: K.laplace(X1, lengthscale=-1.0), ValueError, "kjax.kernels.laplace: `lengthscale` must be > 0"),
    (lambda: K.laplace(X1[0]), ValueError, "kjax.kernels.laplace: `x1` must have rank 2 [n1, d]"),
    # empty inputs
    (lambda: K.rbf(X1[:0]), ValueError, "kjax.kernels.rbf: `x1` must have n1 >= 1 points in [n1, d]; got shape (0, 5)"),
    (lambda: K.laplace(X1, X2[:0]), ValueError, "kjax.kernels.laplace: `x2` must have n2 >= 1 points"),
    (lambda: K.polynomial(X1[:, :0]), ValueError, "kjax.kernels.polynomial: `x1` must have d >= 1 features"),
    (lambda: K.arccos(X1[:0], X2), ValueError, "kjax.kernels.arccos: `x1` must have n1 >= 1 points"),
    # hyperparameters that would broadcast silently
    (lambda: K.rbf(X1, variance=np.ones(13)), ValueError, "kjax.kernels.rbf: `variance` must be a scalar; got shape (13,)"),
    (lambda: K.rational_quadratic(X1, alpha=np.ones(2)), ValueError, "`alpha` must be a scalar"),
    (lambda: K.polynomial(X1, gamma=np.ones(13)), ValueError, "`gamma` must be a scalar"),
    (lambda: K.polynomial(X1, coef0=np.ones(13)), ValueError, "`coef0` must be a scalar"),
    (lambda: K.linear(X1, bias=np.ones(13)), ValueError, "kjax.kernels.linear: `bias` must be a scalar"),
]


@pytest.mark.parametrize("call,exc,msg", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_input(call, exc, msg):
    with pytest.raises(exc) as info:
        call()
    assert msg in str(info.value)


def test_traced_hyperparameters_are_not_checked():
    # documented: traced values cannot be validated at trace time, they pass through
    out = jax.jit(lambda s: K.rbf(X1, X2, lengthscale=s))(2.0)
    assert_close(out, skk.RBF(2.0)(X1, X2), 1e-10)


@pytest.mark.parametrize("kern", ALL, ids=IDS)
def test_nan_inputs_propagate(kern):
    """Documented: a NaN in a point gives NaN in its row (column) of the kernel matrix, never a
    plausible value (laplace / matern used to give k = 1, arccos 0), and leaves the rest finite."""
    x = X1[:4].copy()
    x[1, 2] = np.nan
    k = np.asarray(kern(x, X2[:3]))
    assert np.all(np.isnan(k[1])) and np.all(np.isfinite(np.delete(k, 1, axis=0)))
    ks = np.asarray(kern(x))
    bad = np.zeros(ks.shape, bool)
    bad[1], bad[:, 1] = True, True
    assert np.all(np.isnan(ks[bad])) and np.all(np.isfinite(ks[~bad]))


@pytest.mark.parametrize("kern", [K.rbf, K.laplace, functools.partial(K.matern, nu=2.5), K.arccos],
                         ids=["rbf", "laplace", "m25", "ac1"])
def test_nan_inputs_propagate_large_d(kern):
    # d > 8 takes the |x|^2 + |y|^2 - 2 x.y path, whose diagonal is set to zero when x2 is None
    x = RNG.normal(size=(3, 12))
    x[0, 5] = np.nan
    ks = np.asarray(kern(x))
    assert np.all(np.isnan(ks[0])) and np.all(np.isnan(ks[:, 0])) and np.all(np.isfinite(ks[1:, 1:]))

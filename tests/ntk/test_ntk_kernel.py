"""kjax.ntk.ntk_kernel: the eNTK as a kernel of data, fed to the regression solvers."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src.errors import KjaxError, KjaxTypeError
from kjax.ntk import empirical_ntk, ntk_kernel, stax
from kjax.regression import falkon_fit, falkon_predict, krr_fit, krr_predict

RNG = np.random.default_rng(0)
P = {"w1": RNG.normal(size=(2, 16)), "w2": RNG.normal(size=(16, 3)) / 4}
X = RNG.normal(size=(30, 2))
Y = np.sin(X[:, 0])


def f(p, x):
    return jnp.tanh(x @ p["w1"]) @ p["w2"]


@pytest.mark.parametrize("mode", ["trace", "pntk"])
def test_krr_with_the_ntk_kernel_equals_the_dense_solve(mode):
    k = np.asarray(empirical_ntk(f, P, X, mode=mode))
    state = krr_fit(ntk_kernel(f, P, mode=mode), X, Y, ridge=1e-2)
    coef = np.linalg.solve(k + 1e-2 * np.eye(len(X)), Y)
    np.testing.assert_allclose(krr_predict(state, X[:7]), k[:7] @ coef, rtol=1e-9, atol=1e-12)


def test_falkon_on_all_points_equals_krr():
    kern = ntk_kernel(f, P)
    st = falkon_fit(None, kern, X, Y, ridge=1e-2, centers=X, maxiter=200, tol=1e-12, block_size=8)
    k = np.asarray(empirical_ntk(f, P, X))
    coef = np.linalg.solve(k + 1e-2 * np.eye(len(X)), Y)
    np.testing.assert_allclose(falkon_predict(st, X[:5]), k[:5] @ coef, rtol=1e-6, atol=1e-8)


class _Count(logging.Handler):
    def __init__(self):
        super().__init__()
        self.n = 0

    def emit(self, record):
        self.n += "Compiling" in record.getMessage()


def _compiles(call):
    counter, logger = _Count(), logging.getLogger("jax")
    logger.addHandler(counter)
    try:
        with jax.log_compiles(True):
            out = call()
    finally:
        logger.removeHandler(counter)
    return counter.n, out


def test_a_new_checkpoint_does_not_recompile_the_solver():
    krr_fit(ntk_kernel(f, P), X, Y, ridge=1e-2)  # compile once
    p2 = jax.tree.map(lambda a: a * 1.1, P)
    n, state = _compiles(lambda: krr_fit(ntk_kernel(f, p2), X, Y, ridge=1e-2))
    assert n == 0
    assert _compiles(lambda: krr_fit(ntk_kernel(f, p2), X[:11], Y[:11], ridge=1e-2))[0] > 0  # it counts
    k2 = np.asarray(empirical_ntk(f, p2, X))
    np.testing.assert_allclose(krr_predict(state, X[:3]),
                               k2[:3] @ np.linalg.solve(k2 + 1e-2 * np.eye(len(X)), Y), rtol=1e-9)


_, _, KERNEL_FN = stax.serial(stax.Dense(32), stax.Relu(), stax.Dense(1))


@pytest.mark.parametrize("get", ["ntk", "nngp"])
def test_infinite_width_kernel_in_krr_equals_the_dense_solve(get):
    k = np.asarray(KERNEL_FN(X, None, get))
    state = krr_fit(stax.as_kernel(KERNEL_FN, get), X, Y, ridge=1e-3)
    np.testing.assert_allclose(krr_predict(state, X[:5]), k[:5] @ np.linalg.solve(k + 1e-3 * np.eye(len(X)), Y),
                               rtol=1e-9, atol=1e-12)


def test_as_kernel_bad_input():
    with pytest.raises(KjaxError, match="kjax.ntk.stax.as_kernel: `get` must be one of"):
        stax.as_kernel(KERNEL_FN, "cov1")
    with pytest.raises(KjaxTypeError, match="`kernel_fn` must be a stax network's kernel_fn"):
        stax.as_kernel(3)
    _, _, conv_fn = stax.serial(stax.Conv(4, (2,)), stax.Relu())  # no readout: [n1, n2, L, L] kernels
    with pytest.raises(KjaxError, match=r"`kernel_fn` must give a \[n1, n2\] ntk kernel"):
        stax.as_kernel(conv_fn)(np.ones((3, 5, 2)))


BAD = [
    (lambda: ntk_kernel(f, P, mode="full"), KjaxError, "`mode` must be one of"),
    (lambda: ntk_kernel(3, P), KjaxTypeError, "`f` must be a callable"),
    (lambda: ntk_kernel(f, P, block_size=0), KjaxError, "`block_size`"),
    (lambda: ntk_kernel(f, {"i": np.arange(3)}), KjaxTypeError, "`params` must have"),
    (lambda: ntk_kernel(f, P)(np.ones((4, 5))), KjaxError, "`x1` must be inputs the model takes"),
    (lambda: ntk_kernel(f, P)(X, np.ones((4, 5))), KjaxError, "`x2` must have the per-example shape of `x1`"),
]


@pytest.mark.parametrize("call,cls,msg", BAD)
def test_bad_input(call, cls, msg):
    with pytest.raises(cls, match=msg) as e:
        call()
    assert "kjax.ntk.ntk_kernel" in str(e.value)

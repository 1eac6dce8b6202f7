"""Kernels as pytrees: traced hyperparameters, gradients, algebra, no recompilation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.gaussian_process import kernels as skk

from kjax import kernels as K
from kjax._src.partition import partition
from tests.conformance import assert_close

X = np.random.default_rng(0).normal(size=(7, 3))
Y = np.random.default_rng(1).normal(size=(5, 3))


def test_kernel_equals_its_function_and_partials_convert():
    k = K.Kernel(K.matern, lengthscale=1.3, nu=1.5, variance=2.0)
    assert_close(k(X, Y), K.matern(X, Y, lengthscale=1.3, nu=1.5, variance=2.0), 1e-15)
    assert jax.tree.leaves(k) == [1.3, 2.0]  # nu is static
    p = K.as_kernel(functools.partial(K.rbf, lengthscale=0.7))
    assert isinstance(p, K.Kernel) and p.hyperparameters == {"lengthscale": 0.7}
    custom = lambda a, b=None: a @ (a if b is None else b).T
    assert K.as_kernel(custom) is custom
    assert isinstance(K.as_kernel(K.rbf), K.Kernel)


def test_gradient_with_respect_to_hyperparameters():
    k = K.Kernel(K.rbf, lengthscale=jnp.array([0.8, 1.1, 1.5]), variance=1.7)
    g = jax.grad(lambda k: jnp.sum(k(X, Y)))(k)
    eps = 1e-6
    bump = K.Kernel(K.rbf, lengthscale=jnp.array([0.8 + eps, 1.1, 1.5]), variance=1.7)
    fd = (jnp.sum(bump(X, Y)) - jnp.sum(k(X, Y))) / eps
    assert_close(g.hyperparameters["lengthscale"][0], fd, 1e-5)
    assert_close(g.hyperparameters["variance"], jnp.sum(k(X, Y)) / 1.7, 1e-12)


def test_new_hyperparameters_do_not_recompile():
    traces = []

    @jax.jit
    def f(k, x):
        traces.append(1)
        return k(x)

    for ls in (0.5, 1.0, 2.0):
        f(K.Kernel(K.rbf, lengthscale=ls), X)
    assert len(traces) == 1
    dyn, static = partition(K.as_kernel(functools.partial(K.rbf, lengthscale=3.0)))
    dyn2, static2 = partition(K.as_kernel(functools.partial(K.rbf, lengthscale=4.0)))
    assert static == static2 and hash(static) == hash(static2) and dyn == [3.0] and dyn2 == [4.0]
    assert_close(static.join(dyn)(X), K.rbf(X, lengthscale=3.0), 1e-15)


def test_algebra_matches_scikit_learn():
    k = 2.0 * K.Kernel(K.rbf, lengthscale=1.5) + K.Kernel(K.white_noise, variance=0.3)
    sk = skk.ConstantKernel(2.0) * skk.RBF(1.5) + skk.WhiteKernel(0.3)
    assert_close(k(X), sk(X), 1e-14, "gram")
    assert_close(k(X, Y), sk(X, Y), 1e-14, "cross")  # white noise is zero between distinct points
    prod = K.Kernel(K.rbf) * functools.partial(K.linear)
    assert_close(prod(X, Y), K.rbf(X, Y) * K.linear(X, Y), 1e-14)
    assert isinstance(k, K.Sum) and len(jax.tree.leaves(k)) == 3
    assert np.all(np.linalg.eigvalsh(np.asarray(k(X))) > 0)


def test_bad_kernel():
    with pytest.raises(TypeError, match="kjax.kernels.Kernel: `fn` must be a kernel function"):
        K.Kernel(3.0)
    with pytest.raises(ValueError, match="kjax.kernels.white_noise: `variance`"):
        K.white_noise(X, variance=-1.0)

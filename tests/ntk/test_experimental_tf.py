"""kjax.ntk.experimental: neural-tangents' TensorFlow eNTK (tf2jax -> kjax -> jax2tf).

Without TensorFlow (``make test``) only the ImportError runs; with the ``tf`` extra (``make
test-tf``) the kernels of a Keras model, a callable ``tf.Module`` and a ``tf.function`` are checked
against kjax's JAX kernel of the converted model and against brute-force Jacobians (NumPy einsum),
and the documented errors are triggered. NT's own TF tests are ported in
tests/nt_compat/experimental.
"""

from __future__ import annotations

import sys

import jax
import numpy as np
import pytest

from kjax.ntk import empirical_ntk_fn, experimental


@pytest.mark.parametrize("name", ["empirical_ntk_fn_tf", "get_apply_fn_and_params"])
def test_without_tensorflow_the_error_names_the_function_and_the_extra(monkeypatch, name):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    with pytest.raises(ImportError, match=rf"kjax\.ntk\.experimental\.{name} needs TensorFlow and "
                                          r"tf2jax.*kjax\[tf\]"):
        getattr(experimental, name)(object())


def _brute(apply_fn, params, x1, x2):
    """sum over parameters of J1[n, o, p] J2[m, o, p] / O (trace over the last axis)."""
    def jac(x):
        j = jax.jacobian(lambda p: apply_fn(p, x))(params)
        out = np.shape(apply_fn(params, x))
        return np.concatenate([np.asarray(a, np.float64).reshape(out + (-1,))
                               for a in jax.tree.leaves(j)], axis=-1)

    j1, j2 = jac(x1), jac(x2)
    return np.einsum("nop,mop->nm", j1, j2) / j1.shape[1]


def test_keras_module_and_function_kernels():
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tf2jax")
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(3, 5)).astype(np.float32)
    x2 = rng.normal(size=(2, 5)).astype(np.float32)

    keras = tf.keras.Sequential([tf.keras.layers.Dense(8, activation="tanh"),
                                 tf.keras.layers.Dense(3)])
    keras.build((None, 5))
    apply_fn, params = experimental.get_apply_fn_and_params(keras)
    np.testing.assert_allclose(apply_fn(params, x1), keras(x1).numpy(), rtol=1e-5, atol=1e-6)
    want = _brute(apply_fn, params, x1, x2)
    for vmap_axes in (None, 0):
        for impl in (1, 2, 3):
            got = experimental.empirical_ntk_fn_tf(keras, vmap_axes=vmap_axes,
                                                   implementation=impl)(x1, x2, params)
            assert isinstance(got, tf.Tensor) and got.shape == (3, 2)
            np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(empirical_ntk_fn(apply_fn, vmap_axes=0)(x1, x2, params), want,
                               rtol=2e-5, atol=1e-5)

    class Scaled(tf.Module):  # a callable tf.Module (NT's _MLP pattern)
        def __init__(self):
            super().__init__()
            self.input_shape = (None, 5)
            self.w = tf.Variable(rng.normal(size=(5, 2)).astype(np.float32))

        def __call__(self, x):
            return tf.sin(x @ self.w)

    module = Scaled()
    m_apply, m_params = experimental.get_apply_fn_and_params(module)
    got = experimental.empirical_ntk_fn_tf(module)(x1, None, m_params)
    np.testing.assert_allclose(got.numpy(), _brute(m_apply, m_params, x1, x1), rtol=2e-5, atol=1e-5)

    @tf.function(input_signature=[tf.TensorSpec((5, 2)), tf.TensorSpec((None, 5))])
    def f(p, x):
        return tf.tanh(x @ p)

    w = rng.normal(size=(5, 2)).astype(np.float32)
    got = experimental.empirical_ntk_fn_tf(f, trace_axes=())(x1, x2, w)
    j = lambda x: np.asarray(jax.jacobian(lambda p: jax.numpy.tanh(x @ p))(w), np.float64)
    want = np.einsum("noab,mqab->nmoq", j(x1), j(x2))
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-5, atol=1e-5)


def test_bad_models_raise_naming_f():
    tf = pytest.importorskip("tensorflow")
    pytest.importorskip("tf2jax")
    with pytest.raises(NotImplementedError, match=r"empirical_ntk_fn_tf: `f` must be a tf\.Module"):
        experimental.empirical_ntk_fn_tf(lambda p, x: x)
    with pytest.raises(NotImplementedError, match=r"get_apply_fn_and_params: `f` must be a tf\.Module"):
        experimental.get_apply_fn_and_params(lambda x: x)
    with pytest.raises(NotImplementedError, match=r"`f` must have `input_shape` set"):
        experimental.get_apply_fn_and_params(tf.keras.Sequential([tf.keras.layers.Dense(2)]))
    with pytest.raises(NotImplementedError, match=r"`f` must have an input_signature of two specs"):
        experimental.empirical_ntk_fn_tf(tf.function(lambda p, x: x))

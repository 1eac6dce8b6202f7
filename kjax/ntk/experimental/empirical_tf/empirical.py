"""neural-tangents' ``nt.experimental.empirical_tf.empirical``: the empirical NTK of TensorFlow models.

A :class:`tf.Module` (a Keras model, or any callable module with ``input_shape``) or a
:obj:`tf.function` ``f(params, x)`` is converted to JAX with `tf2jax
<https://github.com/google-deepmind/tf2jax>`_, its kernel is kjax's
:func:`kjax.ntk.empirical_ntk_fn`, and that is converted back to TensorFlow with
``jax.experimental.jax2tf`` and compiled with ``tf.function(jit_compile=True)``, exactly NT's
TF -> JAX -> TF round trip. TensorFlow and tf2jax are optional dependencies, imported only when
these functions are called: ``pip install "kjax[tf]"``.

Example (needs TensorFlow)::

    import tensorflow as tf
    from kjax.ntk import experimental

    f = tf.keras.Sequential([tf.keras.layers.Dense(16, activation="relu"),
                             tf.keras.layers.Dense(3)])
    f.build((None, 5))
    _, params = experimental.get_apply_fn_and_params(f)
    ntk_fn = experimental.empirical_ntk_fn_tf(f, vmap_axes=0)
    ntk = ntk_fn(tf.random.normal((4, 5)), tf.random.normal((2, 5)), params)  # (4, 2) tf.Tensor

As in NT the parameters are all the model's variables (trainable or not).

References:
  Novak, Sohl-Dickstein, Schoenholz. Fast Finite Width Neural Tangent Kernel. ICML 2022.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kjax._src.errors import KjaxNotImplementedError, fail
from kjax.ntk._empirical import make_ntk_fn
from kjax.ntk._linearize import NtkImplementation

__all__ = ["empirical_ntk_fn_tf", "get_apply_fn_and_params"]

_EXTRA = 'pip install "kjax[tf]" (tensorflow and tf2jax)'


def _tf_modules(fn: str):
    """``(tensorflow, tf2jax, jax2tf)``, imported on first use."""
    try:
        import tensorflow as tf
        import tf2jax
        from jax.experimental import jax2tf
    except ImportError as e:
        raise ImportError(f"{fn} needs TensorFlow and tf2jax, which kjax does not install by "
                          f"default: {_EXTRA}. ({type(e).__name__}: {e})") from e
    return tf, tf2jax, jax2tf


def _is_model(tf, f: Any) -> bool:
    """A ``tf.Module`` or a Keras model (Keras 3, TensorFlow's default since 2.16, is no
    ``tf.Module``: NT's ``isinstance(f, tf.Module)`` check turns its models away)."""
    return isinstance(f, tf.Module | tf.keras.Model)


def get_apply_fn_and_params(f: Any) -> tuple[Callable, Any]:
    """A :class:`tf.Module` as ``(apply_fn(params, x), params)`` (neural-tangents' function).

    ``f`` is traced once as a :obj:`tf.function` on ``tf.TensorSpec(f.input_shape)`` and converted
    by ``tf2jax.convert``; a Keras model runs with ``training=False``. ``params`` is the dict of the
    model's variables (``{name: array}``, trainable or not), ``apply_fn`` a JAX function.

    Args:
      f: a :class:`tf.keras.Model` (Keras 2 or 3) or a :class:`tf.Module` callable as ``f(x)``,
        with an ``input_shape`` (e.g. ``(None, 5)``; a Keras model built with ``build(shape)``).

    Returns:
      ``(apply_fn, params)``.

    Raises:
      ImportError: TensorFlow or tf2jax is not installed (``pip install "kjax[tf]"``).
      KjaxNotImplementedError: ``f`` is neither a ``tf.Module`` nor a Keras model, is a
        ``tf.Module`` that is not callable, or has no ``input_shape`` (a ``NotImplementedError``,
        as in NT).

    Example:
      See the module docstring (it needs TensorFlow).

    References:
      Novak, Sohl-Dickstein, Schoenholz. Fast Finite Width Neural Tangent Kernel. ICML 2022.
    """
    fn = "kjax.ntk.experimental.get_apply_fn_and_params"
    tf, tf2jax, _ = _tf_modules(fn)
    if not _is_model(tf, f):
        fail(fn, "f", "be a tf.Module or a tf.keras.Model", type(f).__name__,
             cls=KjaxNotImplementedError)
    is_keras = isinstance(f, tf.keras.Model)
    if not is_keras and not callable(f):
        fail(fn, "f", "be a tf.keras.Model or a callable tf.Module", type(f).__name__,
             cls=KjaxNotImplementedError)
    try:  # Keras 3 raises AttributeError for an unbuilt model
        input_shape = f.input_shape
    except AttributeError:
        input_shape = None
    if input_shape is None:
        fail(fn, "f", "have `input_shape` set (e.g. build a Keras model with model.build(shape))",
             f"a {type(f).__name__} without it", cls=KjaxNotImplementedError)

    @tf.function
    def forward_tf(x):
        return f.call(x, training=False) if is_keras else f(x)

    apply_fn_, params = tf2jax.convert(forward_tf, tf.TensorSpec(input_shape))

    def apply_fn(params, x):
        outputs, _ = apply_fn_(params, x)  # the returned (unchanged) variables are dropped
        return outputs

    return apply_fn, params


def empirical_ntk_fn_tf(
    f: Any,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: Any = NtkImplementation.JACOBIAN_CONTRACTION,
) -> Callable:
    r"""The empirical NTK of a TensorFlow model, as a TensorFlow function (neural-tangents').

    ``ntk_fn(x1, x2, params)`` (``x2`` None for ``x1``) returns :math:`\Theta(x_1, x_2) =
    \partial_\theta f(x_1) \, \partial_\theta f(x_2)^\top` as a ``tf.Tensor``, with the axes and
    implementations of :func:`kjax.ntk.empirical_ntk_fn`: the model is converted to JAX
    (``tf2jax``), its kernel function converted back (``jax2tf.convert``) and compiled with
    ``tf.function(jit_compile=True, autograph=False)``.

    Args:
      f: a :class:`tf.Module` (as in :func:`get_apply_fn_and_params`; ``params`` then come from
        it), or a :obj:`tf.function` ``f(params, x)`` with an ``input_signature`` of two specs.
      trace_axes: as in :func:`kjax.ntk.empirical_ntk_fn`.
      diagonal_axes: as in :func:`kjax.ntk.empirical_ntk_fn`.
      vmap_axes: as in :func:`kjax.ntk.empirical_ntk_fn`; NT's default ``None`` (the whole batch
        at once: right for any model; ``0`` is faster for models without BatchNorm in training).
      implementation: an :class:`kjax.ntk.NtkImplementation` or its int, or a kjax name; NT's
        default ``JACOBIAN_CONTRACTION``.

    Returns:
      ``ntk_fn(x1, x2, params) -> tf.Tensor``.

    Raises:
      ImportError: TensorFlow or tf2jax is not installed (``pip install "kjax[tf]"``).
      KjaxNotImplementedError: ``f`` is neither a ``tf.Module``, a Keras model nor a
        ``tf.function`` with a two-spec ``input_signature`` (a ``NotImplementedError``, as in
        NT), and the errors of :func:`get_apply_fn_and_params`.

    Example:
      See the module docstring (it needs TensorFlow).

    References:
      Novak, Sohl-Dickstein, Schoenholz. Fast Finite Width Neural Tangent Kernel. ICML 2022.
    """
    fn = "kjax.ntk.experimental.empirical_ntk_fn_tf"
    tf, tf2jax, jax2tf = _tf_modules(fn)
    if _is_model(tf, f):
        apply_fn, _ = get_apply_fn_and_params(f)
    elif isinstance(f, tf.types.experimental.PolymorphicFunction):
        signature = getattr(f, "input_signature", None)
        if not signature or len(signature) != 2:
            fail(fn, "f", "have an input_signature of two specs (params, x)", repr(signature),
                 cls=KjaxNotImplementedError)
        apply_fn = tf2jax.convert_functional(f, *signature)
    else:
        fail(fn, "f", "be a tf.Module, a tf.keras.Model or a tf.function f(params, x)",
             type(f).__name__, cls=KjaxNotImplementedError)
    ntk_fn = make_ntk_fn(fn, apply_fn, trace_axes, diagonal_axes, vmap_axes, implementation)
    return tf.function(jax2tf.convert(ntk_fn), jit_compile=True, autograph=False)

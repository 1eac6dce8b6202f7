"""The dtype policy, in one place.

* Inputs: integer and bool arrays are promoted to the default float dtype (float32, or float64 when
  ``jax_enable_x64`` is on); complex inputs are rejected unless a function says otherwise.
* Outputs have the input dtype.
* Accumulation (matmuls, sums, FFTs) is at least float32, so bf16/f16 inputs accumulate in float32.
* Gram matrices, kernel matvecs and linear solves are returned in at least float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxTypeError, fail


def default_float() -> np.dtype:
    return np.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)


def as_float_array(fn: str, arg: str, x: Any) -> jax.Array:
    """``x`` as a real floating jax array: ints/bools are promoted, complex is rejected."""
    dtype = np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        fail(fn, arg, "be a real array", f"dtype {dtype}", cls=KjaxTypeError)
    if not jnp.issubdtype(dtype, jnp.floating):
        if not (jnp.issubdtype(dtype, jnp.integer) or dtype == np.bool_):
            fail(fn, arg, "be a numeric array", f"dtype {dtype}", cls=KjaxTypeError)
        return jnp.asarray(x, dtype=default_float())
    return jnp.asarray(x)


def result_dtype(*xs: Any) -> np.dtype:
    """The floating dtype that the inputs promote to (weak Python scalars do not widen it)."""
    return np.dtype(jnp.result_type(*[x for x in xs if x is not None]))


def accum_dtype(dtype: Any) -> np.dtype:
    """At least float32: bf16 and f16 accumulate in float32; float64 stays float64."""
    return np.dtype(jnp.promote_types(dtype, jnp.float32))


def gram_dtype(*xs: Any) -> np.dtype:
    """The dtype of a Gram matrix / kernel matvec built from these inputs: at least float32."""
    return accum_dtype(result_dtype(*xs))

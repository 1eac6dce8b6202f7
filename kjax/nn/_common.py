"""Input checks shared by the decoding layers of kjax.nn (errors name the layer and the argument)."""

from __future__ import annotations

import inspect
from typing import Any

import jax
from flax import nnx

from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, check_rank, fail, shape_of
from kjax._src.random_features import float_dtype


class InitSignature:
    """Class attribute ``__signature__ = InitSignature()``: ``inspect.signature(Layer)`` and
    ``help(Layer)`` show ``__init__``'s parameters instead of the ``(*args, **kwargs)`` of nnx's
    metaclass; instances keep the signature of ``__call__``."""

    def __get__(self, obj, cls):
        if obj is not None:
            return None  # inspect falls back to __call__
        sig = inspect.signature(cls.__init__)
        return sig.replace(parameters=list(sig.parameters.values())[1:])


def check_bool(fn: str, arg: str, value) -> bool:
    if not isinstance(value, bool):
        fail(fn, arg, "be a Python bool", repr(value), cls=KjaxTypeError)
    return value


def check_rngs(fn: str, rngs) -> None:
    if not isinstance(rngs, nnx.Rngs):
        fail(fn, "rngs", "be an nnx.Rngs, e.g. nnx.Rngs(0)", type(rngs).__name__, cls=KjaxTypeError)


def check_dtypes(fn: str, dtype, param_dtype):
    """``(dtype or None, param_dtype)`` as real floating NumPy dtypes."""
    dtype = None if dtype is None else float_dtype(fn, "dtype", dtype)
    return dtype, float_dtype(fn, "param_dtype", param_dtype)


def check_seq(fn: str, x, features: int, arg: str = "x") -> jax.Array:
    """``x: [B, T, features]`` with ``B, T >= 1``, promoted to float."""
    x = dtypes.as_float_array(fn, arg, x)
    check_rank(fn, arg, x, 3, layout="[B, T, in_features]")
    if x.shape[-1] != features:
        fail(fn, arg, f"have in_features={features} in its last axis [B, T, in_features]", f"shape {x.shape}")
    for name, size in (("B", x.shape[0]), ("T", x.shape[1])):
        if size == 0:
            fail(fn, arg, f"have {name} >= 1 in [B, T, in_features]", f"shape {x.shape}")
    return x


def check_token(fn: str, x_t, features: int, arg: str = "x_t") -> jax.Array:
    """``x_t: [B, features]`` (one token per sequence) with ``B >= 1``, promoted to float."""
    x_t = dtypes.as_float_array(fn, arg, x_t)
    check_rank(fn, arg, x_t, 2, layout="[B, in_features] (one token)")
    if x_t.shape[-1] != features:
        fail(fn, arg, f"have in_features={features} in its last axis [B, in_features]", f"shape {x_t.shape}")
    if x_t.shape[0] == 0:
        fail(fn, arg, "have B >= 1 in [B, in_features]", f"shape {x_t.shape}")
    return x_t


def check_batch_size(fn: str, batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        fail(fn, "batch_size", "be a Python int >= 1", repr(batch_size), cls=KjaxTypeError)
    if batch_size < 1:
        fail(fn, "batch_size", "be >= 1", repr(batch_size))
    return batch_size


def check_state(fn: str, arg: str, state, cls: type, shapes: dict[str, tuple[int, ...]]) -> Any:
    """``state`` is a ``cls`` NamedTuple of arrays whose fields have ``shapes`` (a field -> shape
    dict); returned with every field as a real floating array (complex rejected)."""
    if not isinstance(state, cls):
        fail(fn, arg, f"be a {cls.__name__} (from init_state or return_state=True)", type(state).__name__,
             cls=KjaxTypeError)
    got = {f: shape_of(getattr(state, f)) for f in shapes}
    if got != shapes:
        want = ", ".join(f"{f} {s}" for f, s in shapes.items())
        have = ", ".join(f"{f} {s}" for f, s in got.items())
        fail(fn, arg, f"have {want} (batch first)", have)
    return type(state)(*(dtypes.as_float_array(fn, f"{arg}.{f}", getattr(state, f)) for f in state._fields))

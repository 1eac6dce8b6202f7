"""Input checks shared by the kjax.ssm functions (all at trace time, on static shapes and dtypes)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, fail

MODES = ("causal", "circular", "bidirectional")


def real_float(fn: str, arg: str, x: Any):
    """``x`` as a real floating array; complex, integer and bool inputs are rejected.

    Unlike the package-wide policy (which promotes integers), a long convolution of integer data is
    almost always a bug (token ids fed instead of embeddings), so it is an error here.
    """
    dtype = np.dtype(getattr(x, "dtype", None) or np.asarray(x).dtype)
    if not jnp.issubdtype(dtype, jnp.complexfloating) and not jnp.issubdtype(dtype, jnp.floating):
        fail(fn, arg, "be a real floating array (float16, bfloat16, float32 or float64)",
             f"dtype {dtype}", cls=KjaxTypeError)
    return dtypes.as_float_array(fn, arg, x)


def seq(fn: str, arg: str, u: Any):
    """A sequence batch ``[B, L, D]`` with ``L >= 1``."""
    u = real_float(fn, arg, u)
    if u.ndim != 3:
        fail(fn, arg, "have rank 3 [B, L, D] (batch, length, channels)",
             f"shape {tuple(u.shape)} (rank {u.ndim})")
    if u.shape[1] < 1:
        fail(fn, arg, "have a sequence length L >= 1 (axis 1 of [B, L, D])", f"shape {tuple(u.shape)}")
    return u

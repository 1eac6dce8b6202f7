"""Thin flax.nnx layers over kjax's pure functions (no maths lives here)."""

from kjax.nn._attention import KernelAttention

__all__: list[str] = ["KernelAttention"]

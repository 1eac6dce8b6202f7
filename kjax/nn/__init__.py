"""Thin flax.nnx layers over kjax's pure functions (no maths lives here)."""

from kjax.nn._attention import KernelAttention
from kjax.nn._ssm import S4D, STU, Hyena

__all__: list[str] = ["S4D", "STU", "Hyena", "KernelAttention"]

"""Thin flax.nnx layers over kjax's pure functions (no maths lives here)."""

__all__: list[str] = []

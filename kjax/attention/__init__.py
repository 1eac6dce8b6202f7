"""Kernel (linear) attention: feature maps, linear attention, the delta rule, RPE via FFT.

Layout everywhere: ``[B, T, H, D]`` (batch, time, heads, head dimension).
"""

__all__: list[str] = []

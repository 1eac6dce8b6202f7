"""Spectral SSM / long convolutions: fftconv, SSM and long-conv filters, recurrent steps.

Layout: sequences ``u: [B, L, D]`` (batch, length, channels); filters ``k: [L_k, D]``.
"""

__all__: list[str] = []

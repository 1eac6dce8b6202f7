"""Spectral SSM / long convolutions: fftconv, SSM and long-conv filters, recurrent steps.

Layout: sequences ``u: [B, L, D]`` (batch, length, channels); filters ``k: [L_k, D]`` (``[L, K]``
for the STU bank). Filters are pure functions ``filter(params, L)`` of NamedTuple parameters made
by ``*_init(key, ...)``; :func:`fftconv` applies any of them; ``*_step`` run the same model as a
recurrence for streaming inference.
"""

from kjax.ssm._fftconv import fftconv
from kjax.ssm._filters import (
    HyenaFilterParams,
    RTFParams,
    RTFState,
    S4DParams,
    S4DState,
    SGConvParams,
    hyena_filter,
    hyena_init,
    rtf_filter,
    rtf_init,
    rtf_initial_state,
    rtf_step,
    s4d_filter,
    s4d_init,
    s4d_initial_state,
    s4d_step,
    sgconv_filter,
    sgconv_init,
    smooth,
    squash,
    stu_filters,
)
from kjax.ssm._spectral import spectral_conv

__all__ = [
    "HyenaFilterParams",
    "RTFParams",
    "RTFState",
    "S4DParams",
    "S4DState",
    "SGConvParams",
    "fftconv",
    "hyena_filter",
    "hyena_init",
    "rtf_filter",
    "rtf_init",
    "rtf_initial_state",
    "rtf_step",
    "s4d_filter",
    "s4d_init",
    "s4d_initial_state",
    "s4d_step",
    "sgconv_filter",
    "sgconv_init",
    "smooth",
    "spectral_conv",
    "squash",
    "stu_filters",
]

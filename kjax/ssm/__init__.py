"""Spectral SSM / long convolutions: fftconv, SSM and long-conv filters, recurrent steps.

Layout: sequences ``u: [B, L, D]`` (batch, length, channels); filters ``k: [L_k, D]`` (``[L, K]``
for the STU bank). Filters are pure functions ``filter(params, L)`` of NamedTuple parameters made
by ``init_*(key, ...)``; :func:`fftconv` applies any of them; ``*_step(params, state, u_t)`` run the
same model as a recurrence for streaming inference and return ``(y_t, new_state)``.

One module per family: ``_fftconv`` (the public fftconv and its dispatch over ``_xla``,
``_reference`` and the Pallas kernels), ``_s4d``, ``_rtf``, ``_stu``, ``_hyena``, ``_sgconv``,
``_regularizers``, ``_spectral`` (FNO); shared checks in ``_checks``; the deprecated ``*_init``
names in ``_deprecated``.
"""

# deprecated aliases of the init_* functions (they warn, then call them): importable, not in __all__
from kjax.ssm._deprecated import hyena_init as hyena_init
from kjax.ssm._deprecated import rtf_init as rtf_init
from kjax.ssm._deprecated import s4d_init as s4d_init
from kjax.ssm._deprecated import sgconv_init as sgconv_init
from kjax.ssm._fftconv import fftconv
from kjax.ssm._hyena import HyenaFilterParams, hyena_filter, init_hyena
from kjax.ssm._regularizers import smooth, squash
from kjax.ssm._rtf import RTFParams, RTFState, init_rtf, rtf_filter, rtf_initial_state, rtf_step
from kjax.ssm._s4d import S4DParams, S4DState, init_s4d, s4d_filter, s4d_initial_state, s4d_step
from kjax.ssm._selective import (
    SelectiveScanState,
    selective_scan,
    selective_scan_step,
    ssm_attention_matrix,
)
from kjax.ssm._sgconv import SGConvParams, init_sgconv, sgconv_filter
from kjax.ssm._spectral import spectral_conv
from kjax.ssm._stu import stu_filters

__all__ = [
    "HyenaFilterParams",
    "RTFParams",
    "RTFState",
    "S4DParams",
    "S4DState",
    "SGConvParams",
    "SelectiveScanState",
    "fftconv",
    "hyena_filter",
    "init_hyena",
    "init_rtf",
    "init_s4d",
    "init_sgconv",
    "rtf_filter",
    "rtf_initial_state",
    "rtf_step",
    "s4d_filter",
    "s4d_initial_state",
    "s4d_step",
    "selective_scan",
    "selective_scan_step",
    "sgconv_filter",
    "smooth",
    "spectral_conv",
    "ssm_attention_matrix",
    "squash",
    "stu_filters",
]

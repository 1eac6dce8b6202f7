"""Kernel (linear) attention: feature maps, linear attention, the delta rule, RPE via FFT.

Layout everywhere: ``[B, T, H, D]`` (batch, time, heads, head dimension). Queries and keys given to
:func:`linear_attention` and :func:`delta_rule_attention` are already feature-mapped
(``[B, T, H, M]``); :func:`kernel_attention` and :func:`rpe_kernel_attention` apply the map.

* Random projections: :func:`random_projection` (iid, orthogonal, simplex).
* Feature maps ``[..., D] -> [..., M]``: :func:`favor_positive`, :func:`favor_trig`,
  :func:`elu_plus_one`, :func:`relu_features`, :func:`dpfp`, :func:`taylor2`, and the learnable
  :func:`hedgehog` and :func:`learned_spectral` with their ``init_*`` functions and parameter
  NamedTuples :class:`HedgehogParams` and :class:`LearnedSpectralParams`.
* Attention: :func:`linear_attention` (non-causal, causal chunked, decayed / gated with ``decay``:
  retention, SSD, GLA; packed ``segment_ids`` or ``cu_seqlens`` with a state per sequence),
  :func:`linear_attention_step` (decoding), :func:`kernel_attention`,
  :func:`delta_rule_attention` / :func:`delta_rule_step` (plain or gated: Gated DeltaNet),
  :func:`rpe_kernel_attention`, :func:`softmax_attention_reference`.

The decayed forms and packing live in ``_decay`` (the chunked XLA machinery), with token-step
references in ``_reference``.
"""

from kjax._src.random_features import random_projection
from kjax.attention._attention import (
    DeltaRuleState,
    LinearAttentionState,
    delta_rule_attention,
    delta_rule_step,
    kernel_attention,
    linear_attention,
    linear_attention_step,
    rpe_kernel_attention,
    softmax_attention_reference,
)
from kjax.attention._feature_maps import (
    HedgehogParams,
    LearnedSpectralParams,
    dpfp,
    elu_plus_one,
    favor_positive,
    favor_trig,
    hedgehog,
    init_hedgehog,
    init_learned_spectral,
    learned_spectral,
    relu_features,
    taylor2,
)

__all__ = [
    "DeltaRuleState",
    "HedgehogParams",
    "LearnedSpectralParams",
    "LinearAttentionState",
    "delta_rule_attention",
    "delta_rule_step",
    "dpfp",
    "elu_plus_one",
    "favor_positive",
    "favor_trig",
    "hedgehog",
    "init_hedgehog",
    "init_learned_spectral",
    "kernel_attention",
    "learned_spectral",
    "linear_attention",
    "linear_attention_step",
    "random_projection",
    "relu_features",
    "rpe_kernel_attention",
    "softmax_attention_reference",
    "taylor2",
]

"""Thin flax.nnx layers over kjax's pure functions (no maths lives here).

* SSM layers: :class:`S4D`, :class:`STU`, :class:`Hyena`.
* Attention: :class:`KernelAttention` (with decoding: ``init_state``, a prefill that returns its
  state, ``step``).
* Gated recurrent layers that decode: :class:`GatedLinearAttention`, :class:`GatedDeltaNet`,
  :class:`Mamba2`, their state :class:`RecurrentLayerState`, and the short causal convolution
  :class:`ShortConv` with its cache :class:`ShortConvState`.
"""

from kjax.nn._attention import KernelAttention
from kjax.nn._conv import ShortConv, ShortConvState
from kjax.nn._gated import GatedDeltaNet, GatedLinearAttention, Mamba2, RecurrentLayerState
from kjax.nn._ssm import S4D, STU, Hyena

__all__: list[str] = ["S4D", "STU", "Hyena", "KernelAttention", "ShortConv", "ShortConvState",
                      "GatedLinearAttention", "GatedDeltaNet", "Mamba2", "RecurrentLayerState"]

"""Neural tangent kernels: empirical NTKs of any model, infinite-width kernels, training dynamics.

Layout: inputs are batches ``x: [n, ...]`` (any trailing shape the model takes); kernels over two
batches are ``[n1, n2, ...]`` with neural-tangents' output-axis conventions: the batch axis is
output axis 0, traced axes are averaged, other axes come in zipped pairs.

The eNTK lives in four modules, arrows pointing one way: ``_empirical`` (the neural-tangents API:
checks, dispatch, memory guard) -> ``_implementations`` (three algorithms and their cost and
memory models) -> ``_model`` (``f`` closed over its fixed parameters) and ``_axes`` (trace /
diagonal axes); ``_dataset`` builds the blockwise ``empirical_ntk`` on them, and ``_memory`` is
the memory guard shared with ``stax``.
"""

from kjax.ntk import analysis, experimental, predict, stax
from kjax.ntk._batching import batch
from kjax.ntk._dataset import empirical_ntk, projected_ntk
from kjax.ntk._empirical import (
    choose_implementation,
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk_fn,
)
from kjax.ntk._flax import from_linen, from_nnx
from kjax.ntk._kernels import NTKKernel, ntk_kernel
from kjax.ntk._linearize import NtkImplementation, empirical_ntk_vp_fn, linearize, taylor_expand
from kjax.ntk._monte_carlo import monte_carlo_kernel_fn
from kjax.ntk.stax._kernel import Kernel

__all__ = [
    "Kernel",
    "NTKKernel",
    "NtkImplementation",
    "analysis",
    "batch",
    "choose_implementation",
    "empirical_kernel_fn",
    "empirical_nngp_fn",
    "empirical_ntk",
    "empirical_ntk_fn",
    "empirical_ntk_vp_fn",
    "experimental",
    "from_linen",
    "from_nnx",
    "linearize",
    "monte_carlo_kernel_fn",
    "predict",
    "projected_ntk",
    "stax",
    "taylor_expand",
    "ntk_kernel",
]

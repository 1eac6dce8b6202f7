"""Neural tangent kernels: empirical NTKs of any model, infinite-width kernels, training dynamics.

Layout: inputs are batches ``x: [n, ...]`` (any trailing shape the model takes); kernels over two
batches are ``[n1, n2, ...]`` with neural-tangents' output-axis conventions: the batch axis is
output axis 0, traced axes are averaged, other axes come in zipped pairs.
"""

from kjax.ntk import predict, stax
from kjax.ntk._empirical import (
    choose_implementation,
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk_fn,
)
from kjax.ntk._monte_carlo import monte_carlo_kernel_fn

__all__ = [
    "choose_implementation",
    "empirical_kernel_fn",
    "empirical_nngp_fn",
    "empirical_ntk_fn",
    "monte_carlo_kernel_fn",
    "predict",
    "stax",
]

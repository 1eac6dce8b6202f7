"""``neural_tangents._src.monte_carlo``: the public function is kjax's; the private helper a stub."""

from kjax.ntk import monte_carlo_kernel_fn  # noqa: F401
from tests.nt_compat.nt._src import internal

_sample_once_kernel_fn = internal("monte_carlo", "_sample_once_kernel_fn")

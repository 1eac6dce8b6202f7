"""kjax: pure JAX functions for kernel methods in deep-learning research.

Pillars (one subpackage each): :mod:`kjax.kernels` (positive-definite kernels, blockwise Gram and
matvec), :mod:`kjax.ntk`, :mod:`kjax.attention`, :mod:`kjax.ssm`, :mod:`kjax.regression`.
"""

from kjax import kernels

__version__ = "0.1.0.dev0"

__all__ = ["kernels"]

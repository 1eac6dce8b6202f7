"""kjax: pure JAX functions for kernel methods in deep-learning research.

One subpackage per pillar: :mod:`kjax.kernels` (positive-definite kernels, blockwise Gram and
matvec), :mod:`kjax.ntk` (neural tangent kernels), :mod:`kjax.attention` (kernel attention),
:mod:`kjax.ssm` (spectral SSM convolutions), :mod:`kjax.regression` (kernel regression), and
:mod:`kjax.nn` (flax.nnx layers over them).
"""

from kjax import attention, kernels, nn, ntk, regression, ssm

__version__ = "0.1.0.dev0"

__all__ = ["attention", "kernels", "nn", "ntk", "regression", "ssm"]

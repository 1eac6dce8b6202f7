"""Infinite-width networks: neural-tangents' ``stax`` layers with closed-form NNGP and NTK kernels.

Each layer returns ``(init_fn, apply_fn, kernel_fn)`` with neural-tangents' signatures:
``init_fn(key, input_shape) -> (output_shape, params)``, ``apply_fn(params, x) -> y`` (the finite
network) and ``kernel_fn(x1, x2=None, get=None)`` (the infinite-width kernels).

Layout: inputs ``[n, *spatial, C]`` (batch first, channels last); kernels ``[n1, n2, *spatial
pairs]`` in NT's zipped order ``[n1, n2, H, H', W, W']``. Compute in float64 for agreement with
neural-tangents to 1e-6.

Modules: ``_linear`` (Dense, Conv, Identity), ``_elementwise`` (activations), ``_pooling``
(AvgPool, GlobalAvgPool, Flatten), ``_normalization`` (LayerNorm), ``_combinators`` (serial,
parallel, FanOut, FanInSum, FanInConcat), on top of ``_core`` (the ``kernel_fn`` object and shared
checks) and ``_kernel`` (the kernel state and its operations); ``_batch`` blocks a ``kernel_fn``
over datasets.
"""

from kjax.ntk.stax._batch import batch
from kjax.ntk.stax._combinators import FanInConcat, FanInSum, FanOut, parallel, serial
from kjax.ntk.stax._core import KernelFn
from kjax.ntk.stax._elementwise import ABRelu, Erf, Gelu, LeakyRelu, Relu
from kjax.ntk.stax._kernel import Kernel
from kjax.ntk.stax._linear import Conv, Dense, Identity
from kjax.ntk.stax._normalization import LayerNorm
from kjax.ntk.stax._pooling import AvgPool, Flatten, GlobalAvgPool

__all__ = [
    "ABRelu", "AvgPool", "Conv", "Dense", "Erf", "FanInConcat", "FanInSum", "FanOut", "Flatten",
    "Gelu", "GlobalAvgPool", "Identity", "Kernel", "KernelFn", "LayerNorm", "LeakyRelu", "Relu",
    "batch", "parallel", "serial",
]

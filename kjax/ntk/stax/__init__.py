"""Infinite-width networks: neural-tangents' ``stax`` layers with closed-form NNGP and NTK kernels.

Each layer returns ``(init_fn, apply_fn, kernel_fn)`` with neural-tangents' signatures:
``init_fn(key, input_shape) -> (output_shape, params)``, ``apply_fn(params, x) -> y`` (the finite
network) and ``kernel_fn(x1, x2=None, get=None)`` (the infinite-width kernels).

Layout: inputs ``[n, *spatial, C]`` (batch first, channels last); kernels ``[n1, n2, *spatial
pairs]`` in NT's zipped order ``[n1, n2, H, H', W, W']``. Compute in float64 for agreement with
neural-tangents to 1e-6.

Modules: ``_linear`` (Dense, Conv, ConvLocal, ConvTranspose, Identity), ``_elementwise`` (activations),
``_pooling`` (AvgPool, SumPool, GlobalAvgPool, GlobalSumPool, Flatten), ``_dot`` (DotGeneral,
ImageResize, Aggregate), ``_attention`` (GlobalSelfAttention), ``_normalization``
(LayerNorm), ``_structure`` (Index, Slice, Dropout), ``_combinators`` (serial, repeat, parallel,
FanOut, FanInSum, FanInProd, FanInConcat), ``_requirements`` (layer, requires, supports_masking,
MaskedArray, unmask_fn, Bool, Diagonal, Padding and NT's enums), on top of ``_core`` (the
``kernel_fn`` object and shared checks) and ``_kernel`` (the public ``Kernel``, the internal
kernel state and its operations); ``_batch`` blocks a ``kernel_fn`` over datasets.
"""

from kjax.ntk.stax._as_kernel import as_kernel
from kjax.ntk.stax._attention import GlobalSelfAttention
from kjax.ntk.stax._batch import batch
from kjax.ntk.stax._combinators import (
    FanInConcat,
    FanInProd,
    FanInSum,
    FanOut,
    parallel,
    repeat,
    serial,
)
from kjax.ntk.stax._core import KernelFn
from kjax.ntk.stax._dot import Aggregate, DotGeneral, ImageResize
from kjax.ntk.stax._elementwise import (
    ABRelu,
    Abs,
    Cos,
    Elementwise,
    ElementwiseNumerical,
    Erf,
    Exp,
    ExpNormalized,
    Gabor,
    Gaussian,
    Gelu,
    Hermite,
    LeakyRelu,
    Monomial,
    Polynomial,
    Rbf,
    RectifiedMonomial,
    Relu,
    Sigmoid_like,
    Sign,
    Sin,
)
from kjax.ntk.stax._kernel import Kernel
from kjax.ntk.stax._linear import Conv, ConvLocal, ConvTranspose, Dense, Identity
from kjax.ntk.stax._normalization import LayerNorm
from kjax.ntk.stax._pooling import AvgPool, Flatten, GlobalAvgPool, GlobalSumPool, SumPool
from kjax.ntk.stax._requirements import (
    AggregateImplementation,
    AttentionMechanism,
    Bool,
    Diagonal,
    MaskedArray,
    Padding,
    PositionalEmbedding,
    layer,
    requires,
    supports_masking,
    unmask_fn,
)
from kjax.ntk.stax._structure import Dropout, Index, Slice

__all__ = [
    "as_kernel",
    "ABRelu", "AvgPool", "Conv", "Dense", "Erf", "FanInConcat", "FanInSum", "FanOut", "Flatten",
    "Gelu", "GlobalAvgPool", "Identity", "Kernel", "KernelFn", "LayerNorm", "LeakyRelu", "Relu",
    "batch", "parallel", "serial",
    # structure, combinators and the helpers of user-written layers
    "AggregateImplementation", "AttentionMechanism", "Bool", "ConvLocal", "ConvTranspose",
    "Diagonal", "Dropout",
    "FanInProd", "GlobalSumPool", "Index", "MaskedArray", "Padding", "PositionalEmbedding",
    "Slice", "SumPool", "layer", "repeat", "requires", "supports_masking", "unmask_fn",
    # fixed linear maps, graphs and attention (issue #14)
    "Aggregate", "DotGeneral", "GlobalSelfAttention", "ImageResize",
    # elementwise layers (kjax.ntk.stax._elementwise.__all__)
    "Abs", "Cos", "Elementwise", "ElementwiseNumerical", "Exp", "ExpNormalized", "Gabor", "Gaussian",
    "Hermite", "Monomial", "Polynomial", "Rbf", "RectifiedMonomial", "Sigmoid_like", "Sign", "Sin",
]

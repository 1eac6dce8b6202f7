"""Positive-definite kernels and their Gram matrices, matvecs and diagonals.

Layout: data matrices are ``[n, d]`` (points by features); every kernel maps
``x1: [n1, d], x2: [n2, d] | None -> [n1, n2]`` with hyperparameters keyword-only, so a configured
kernel is ``functools.partial(rbf, lengthscale=2.0)``. :func:`gram`, :func:`kernel_matvec`,
:func:`kernel_normal_matvec` and :func:`kernel_diag` take any such callable and evaluate it
blockwise, optionally over a device mesh. :class:`Kernel` holds a kernel function with its
hyperparameters as pytree leaves (traced by ``jit``, differentiable by ``grad``) and supports
``k1 + k2``, ``k1 * k2`` and ``c * k``; the solvers of :mod:`kjax.regression` turn a
``functools.partial`` of a kernel function into one (:func:`as_kernel`). :func:`precomputed` (a
stored Gram matrix) and :func:`operator` (matvecs only) are kernels whose data are integer indices
into a fixed set of points.
"""

from kjax.kernels._functions import (
    arccos,
    laplace,
    linear,
    matern,
    polynomial,
    rational_quadratic,
    rbf,
    squared_distance,
)
from kjax.kernels._gram import gram, kernel_diag, kernel_matvec, kernel_normal_matvec
from kjax.kernels._precomputed import KernelOperator, PrecomputedKernel, operator, precomputed
from kjax.kernels._pytree import Kernel, Product, Scale, Sum, as_kernel, white_noise

__all__ = [
    "Kernel",
    "KernelOperator",
    "PrecomputedKernel",
    "Product",
    "Scale",
    "Sum",
    "arccos",
    "as_kernel",
    "gram",
    "kernel_diag",
    "kernel_matvec",
    "kernel_normal_matvec",
    "laplace",
    "linear",
    "matern",
    "operator",
    "polynomial",
    "precomputed",
    "rational_quadratic",
    "rbf",
    "squared_distance",
    "white_noise",
]

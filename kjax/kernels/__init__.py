"""Positive-definite kernels and their Gram matrices, matvecs and diagonals.

Layout: data matrices are ``[n, d]`` (points by features); every kernel maps
``x1: [n1, d], x2: [n2, d] | None -> [n1, n2]`` with hyperparameters keyword-only, so a configured
kernel is ``functools.partial(rbf, lengthscale=2.0)``. :func:`gram`, :func:`kernel_matvec`,
:func:`kernel_normal_matvec` and :func:`kernel_diag` take any such callable and evaluate it
blockwise, optionally over a device mesh.
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

__all__ = [
    "arccos",
    "gram",
    "kernel_diag",
    "kernel_matvec",
    "kernel_normal_matvec",
    "laplace",
    "linear",
    "matern",
    "polynomial",
    "rational_quadratic",
    "rbf",
    "squared_distance",
]

"""Neural tangent kernels: empirical NTKs of any model, infinite-width kernels, training dynamics.

Layout: inputs are batches ``x: [n, ...]`` (any trailing shape the model takes); kernels over two
batches are ``[n1, n2, ...]`` with neural-tangents' output-axis conventions.
"""

__all__: list[str] = []

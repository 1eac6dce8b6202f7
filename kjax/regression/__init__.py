"""Kernel regression at scale: exact and spectral KRR, Nystrom, random features, Falkon, EigenPro, GPs.

Layout: data matrices ``[n, d]``, targets ``[n]`` or ``[n, O]``; ``kernel`` is any callable
``k(x1, x2) -> [n1, n2]`` such as ``functools.partial(kjax.kernels.rbf, lengthscale=2.0)``.
"""

__all__: list[str] = []

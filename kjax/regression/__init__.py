"""Kernel regression at scale: exact and spectral KRR, Nystrom, random features, Falkon, EigenPro, GPs.

Layout: data matrices ``[n, d]``, targets ``[n]`` or ``[n, O]``; ``kernel`` is any callable
``k(x1, x2) -> [n1, n2]`` such as ``functools.partial(kjax.kernels.rbf, lengthscale=2.0)``.

Ridge scaling: ``ridge_scaling="sklearn"`` solves :math:`(K + \\text{ridge}\\, I) c = y`
(scikit-learn's ``alpha``); ``ridge_scaling="n"`` solves :math:`(K + n\\,\\text{ridge}\\, I) c = y`
(Falkon's ``penalty``, the :math:`\\lambda` of learning theory). Fitted states carry a ``status``
code (see :func:`status_name`).
"""

from kjax.regression._common import status_name
from kjax.regression._krr import KRRState, krr_fit, krr_predict, spectral_fit

__all__ = [
    "KRRState",
    "krr_fit",
    "krr_predict",
    "spectral_fit",
    "status_name",
]

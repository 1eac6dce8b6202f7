"""Kernel regression at scale: exact and spectral KRR, Nystrom, random features, Falkon, EigenPro, GPs.

Layout: data matrices ``[n, d]``, targets ``[n]`` or ``[n, O]``; ``kernel`` is any callable
``k(x1, x2) -> [n1, n2]`` such as ``functools.partial(kjax.kernels.rbf, lengthscale=2.0)``.

One name for the regularisation strength: ``ridge``. ``ridge_scaling="none"`` (the default
everywhere; ``"sklearn"`` is an alias) solves :math:`(K + \\text{ridge}\\, I) c = y` (scikit-learn's
``alpha``); ``ridge_scaling="n"`` solves :math:`(K + n\\,\\text{ridge}\\, I) c = y` (Falkon's
``penalty``, the :math:`\\lambda` of learning theory). The GPs call their noise variance ``ridge``
too. Functions with ``mesh`` take ``mesh_axis``; block sizes are ``block_size``.

Fitted states carry a ``status`` code (:mod:`kjax._src.status`, see :func:`status_name`) and the
iterative solvers (Falkon, logistic Falkon, EigenPro, ``krr_fit(solver="pcg")``) the relative
residual they reached: a value-dependent failure is reported there, never as a silent NaN.
"""

from kjax._src.status import status_name
from kjax.regression._centers import nystrom_centers
from kjax.regression._eigenpro import EigenProState, eigenpro3_fit, eigenpro_fit, eigenpro_predict
from kjax.regression._falkon import FalkonState, falkon_fit, falkon_predict
from kjax.regression._gp import GPPosterior, gp_log_marginal_likelihood, gp_posterior
from kjax.regression._krr import KRRState, krr_fit, krr_predict, spectral_fit
from kjax.regression._leverage import (
    RLSDictionary,
    effective_dimension,
    leverage_dictionary,
    ridge_leverage_scores,
)
from kjax.regression._logistic import (
    FalkonLogisticState,
    falkon_logistic_fit,
    falkon_logistic_predict,
    falkon_logistic_predict_proba,
)
from kjax.regression._rff import random_fourier_features
from kjax.regression._rpcholesky import RPCholeskyState, rpcholesky
from kjax.regression._sgpr import SGPRState, sgpr_fit, sgpr_predict

__all__ = [
    "EigenProState",
    "FalkonLogisticState",
    "FalkonState",
    "GPPosterior",
    "KRRState",
    "RLSDictionary",
    "RPCholeskyState",
    "SGPRState",
    "effective_dimension",
    "eigenpro3_fit",
    "eigenpro_fit",
    "eigenpro_predict",
    "falkon_fit",
    "falkon_logistic_fit",
    "falkon_logistic_predict",
    "falkon_logistic_predict_proba",
    "falkon_predict",
    "gp_log_marginal_likelihood",
    "gp_posterior",
    "krr_fit",
    "krr_predict",
    "leverage_dictionary",
    "nystrom_centers",
    "random_fourier_features",
    "ridge_leverage_scores",
    "rpcholesky",
    "sgpr_fit",
    "sgpr_predict",
    "spectral_fit",
    "status_name",
]

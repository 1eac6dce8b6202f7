"""Bad-input specs of the elementwise layers of kjax.ntk.stax added for neural-tangents parity
(issue 14): each layer sits in ``serial(Dense, layer, Dense)`` on tiny inputs, with its
hyperparameters' bad values, and a network without an affine layer before it (non-Gaussian input).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tests.bad_input.specs import NAN, Custom, Hyper, _elementwise_spec, count, nonneg, replace


def _erf():
    import jax

    return jax.scipy.special.erf


def _erf_nngp(cov12, var1, var2):
    import jax.numpy as jnp

    return 2 / jnp.pi * jnp.arcsin(2 * cov12 / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2)))


def _erf_d_nngp(cov12, var1, var2):
    import jax.numpy as jnp

    return 4 / jnp.pi / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2) - 4 * cov12**2)


def _real():
    """A finite real scalar."""
    return Hyper((("nan", NAN), ("inf", np.inf), ("array", np.ones(2))))


_NOT_CALLABLE = Hyper((("not-callable", 3.0),))
_DEGREE = count(zero_ok=True)

SPECS = [
    _elementwise_spec("Sin", lambda fn, v: fn(v["a"], v["b"], v["c"]), {"a": 1.2, "b": 0.8, "c": 0.3},
                      {"a": _real(), "b": _real(), "c": _real()}),
    _elementwise_spec("Cos", lambda fn, v: fn(v["a"], v["b"], v["c"]), {"a": 1.2, "b": 0.8, "c": 0.3},
                      {"a": _real(), "b": _real(), "c": _real()}),
    _elementwise_spec("Exp", lambda fn, v: fn(v["a"], v["b"]), {"a": 0.7, "b": 0.5}, {"a": _real(), "b": _real()}),
    _elementwise_spec("Gaussian", lambda fn, v: fn(v["a"], v["b"]), {"a": 0.7, "b": -0.5},
                      {"a": _real(), "b": _real()}),
    _elementwise_spec("Rbf", lambda fn, v: fn(v["gamma"]), {"gamma": 0.5}, {"gamma": nonneg()}),
    _elementwise_spec("Abs", lambda fn, v: fn(), {}),
    _elementwise_spec("Sign", lambda fn, v: fn(), {}),
    _elementwise_spec("Gabor", lambda fn, v: fn(), {}),
    _elementwise_spec("Sigmoid_like", lambda fn, v: fn(), {}),
    _elementwise_spec("ExpNormalized", lambda fn, v: fn(v["gamma"], v["shift"], v["do_clip"]),
                      {"gamma": 1.5, "shift": -1.0, "do_clip": True},
                      {"gamma": nonneg(), "shift": _real(), "do_clip": Hyper((("not-bool", "yes"),))}),
    _elementwise_spec("Hermite", lambda fn, v: fn(v["degree"]), {"degree": 2}, {"degree": _DEGREE}),
    _elementwise_spec("Monomial", lambda fn, v: fn(v["degree"]), {"degree": 3},
                      {"degree": count(("six", 6), zero_ok=True)}),
    _elementwise_spec("RectifiedMonomial", lambda fn, v: fn(v["degree"]), {"degree": 2}, {"degree": _DEGREE}),
    _elementwise_spec("Polynomial", lambda fn, v: fn(v["coef"]), {"coef": [0.5, -1.0, 0.3]},
                      {"coef": Hyper((("nan", [1.0, NAN]), ("2d", [[1.0, 2.0]]), ("strings", ["a"])))}),
    _elementwise_spec("ElementwiseNumerical", lambda fn, v: fn(v["fn"], v["deg"], v["df"]),
                      {"fn": _erf(), "deg": 8, "df": None},
                      {"fn": _NOT_CALLABLE, "deg": count(), "df": _NOT_CALLABLE}),
    _elementwise_spec("Elementwise", lambda fn, v: fn(v["fn"], v["nngp_fn"], v["d_nngp_fn"]),
                      {"fn": _erf(), "nngp_fn": _erf_nngp, "d_nngp_fn": _erf_d_nngp},
                      {"fn": _NOT_CALLABLE, "nngp_fn": _NOT_CALLABLE, "d_nngp_fn": _NOT_CALLABLE}),
]

# Elementwise's documented errors that the hyperparameter table cannot express
SPECS[-1] = dataclasses.replace(SPECS[-1], custom=SPECS[-1].custom + (
    Custom("no-functions", lambda v: replace(v, fn=None, nngp_fn=None, d_nngp_fn=None), names=("fn", "nngp_fn")),
    Custom("no-nngp_fn", lambda v: replace(v, nngp_fn=None, d_nngp_fn=None), names=("nngp_fn",)),
))

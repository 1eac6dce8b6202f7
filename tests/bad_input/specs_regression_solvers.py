"""Bad-input specs of kjax.regression's logistic Falkon and sparse GP regression (issue 16).

``krr_fit``'s new ``solver`` / ``tol`` / ``maxiter`` / ``preconditioner_rank`` arguments keep the
``krr_fit`` spec of specs.py (its valid call takes the default solver); their errors are tested in
tests/regression/test_solvers.py::test_pcg_argument_errors.
"""

from __future__ import annotations

import functools

import numpy as np

from tests.bad_input.specs import (
    _KERNEL,
    _RX,
    _RXNEW,
    Arr,
    Custom,
    Spec,
    _key,
    _rbf,
    choice,
    count,
    nonneg,
    normal,
    pos,
    replace,
)

_STATE = "a NamedTuple of arrays (a state, parameters or a result): it has no behaviour to feed bad input to"


def _labels():
    return np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])


def _logistic_values():
    return {"key": _key(), "kernel": _rbf, "x": normal(6, 2, seed=1), "y": _labels(), "ridge": 1e-2,
            "num_centers": 3, "center_method": "uniform", "newton_steps": 20, "maxiter": 5, "tol": 1e-7,
            "ridge_scaling": "none", "block_size": 3}


def _sgpr_values():
    return {"kernel": _rbf, "x": normal(6, 2, seed=1), "y": normal(6, seed=2), "centers": normal(3, 2, seed=3),
            "ridge": 0.1, "jitter": 1e-10, "block_size": 3}


@functools.cache
def _fitted(which: str):
    import jax

    spec = {s.name: s for s in SPECS}[f"kjax.regression.{which}_fit"]
    return jax.block_until_ready(spec.invoke(spec.values()))


def _logistic_predict_spec(name):
    return Spec(
        name=f"kjax.regression.{name}",
        slow=True,
        lowp="none",  # one kernel_matvec, whose spec has the case
        make=lambda: {"state": _fitted("falkon_logistic"), "x_new": normal(3, 2, seed=3), "block_size": 2},
        args={"x_new": _RXNEW, "block_size": count()},
        empty=("m",),
        mesh=True,
    )


SPECS = [
    Spec(
        name="kjax.regression.falkon_logistic_fit",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        make=_logistic_values,
        args={"x": _RX, "y": Arr(("n",), nan="error"), "kernel": _KERNEL, "ridge": pos(),
              "num_centers": count(("above-n", 7)), "newton_steps": count(), "maxiter": count(), "tol": nonneg(),
              "center_method": choice(), "ridge_scaling": choice(), "block_size": count()},
        empty=("n",),
        mesh=True,
        outputs=lambda r: r.alpha,  # objectives hold documented NaNs after the last Newton step
        psd_status=True,
        custom=(Custom("centers-and-num_centers", lambda v: replace(v, centers=v["x"][:3]),
                       names=("centers", "num_centers")),
                Custom("y-two-columns", lambda v: replace(v, y=np.stack([v["y"], v["y"]], 1)), names=("y",))),
    ),
    _logistic_predict_spec("falkon_logistic_predict"),
    _logistic_predict_spec("falkon_logistic_predict_proba"),
    Spec(
        name="kjax.regression.sgpr_fit",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        make=_sgpr_values,
        args={"x": _RX, "y": Arr(("n",), ranks=(1, 2), nan="error"), "centers": Arr(("M", "d"), nan="error"),
              "kernel": _KERNEL, "ridge": pos(), "jitter": pos(), "block_size": count()},
        empty=("n",),
        mesh=True,
        outputs=lambda r: (r.c, r.elbo),
        psd_status=True,
    ),
    Spec(
        name="kjax.regression.sgpr_predict",
        slow=True,
        lowp="none",
        make=lambda: {"state": _fitted("sgpr"), "x_new": normal(3, 2, seed=3), "block_size": 2},
        args={"x_new": _RXNEW, "block_size": count()},
        empty=("m",),
    ),
]

EXEMPT = {f"kjax.regression.{n}": _STATE for n in ("FalkonLogisticState", "SGPRState")}

"""Bad-input specs of the SSM bridge of issue 13: selective_scan, selective_scan_step and
ssm_attention_matrix (decays, gates and packing of kjax.attention are covered by the attention
specs in specs.py and by tests/attention/test_varlen.py)."""

from __future__ import annotations

import numpy as np

from tests.bad_input.specs import Arr, Custom, Spec, count, normal, replace

_BT, _T, _H, _P, _G, _N = 1, 5, 2, 2, 1, 3


def _ssm():
    from kjax import ssm

    return ssm


def _dt(*shape):
    return np.log1p(np.exp(normal(*shape, seed=7)))


def _scan_values():
    return {"u": normal(_BT, _T, _H, _P, seed=1), "dt": _dt(_BT, _T, _H), "A": -np.exp(normal(_H, seed=2)),
            "B": normal(_BT, _T, _G, _N, seed=3), "C": normal(_BT, _T, _G, _N, seed=4), "D": normal(_H, seed=5),
            "chunk_size": 2}


def _step_values():
    return {"state": _ssm().SelectiveScanState(normal(_BT, _H, _N, _P, seed=6)), "u_t": normal(_BT, _H, _P, seed=1),
            "dt_t": _dt(_BT, _H), "A": -np.exp(normal(_H, seed=2)), "B_t": normal(_BT, _G, _N, seed=3),
            "C_t": normal(_BT, _G, _N, seed=4), "D": normal(_H, seed=5)}


def _positive_a(v):
    return replace(v, A=-v["A"])


def _negative_dt(key):
    return lambda v: replace(v, **{key: -v[key]})


SPECS = [
    Spec(
        name="kjax.ssm.selective_scan",
        make=_scan_values,
        args={"u": Arr(("Bt", "T", "H", "P"), primary=True), "dt": Arr(("Bt", "T", "H")), "A": Arr(("H",)),
              "B": Arr(("Bt", "T", "G", "N")), "C": Arr(("Bt", "T", "G", "N")), "D": Arr(("H",)),
              "chunk_size": count()},
        empty=("T",),
        custom=(Custom("A-positive", _positive_a, names=("A",)),
                Custom("dt-negative", _negative_dt("dt"), names=("dt",)),
                Custom("initial_state-shape", lambda v: replace(
                    v, initial_state=_ssm().SelectiveScanState(np.zeros((_BT, _H, _N + 1, _P)))),
                    names=("initial_state",))),
    ),
    Spec(
        name="kjax.ssm.selective_scan_step",
        make=_step_values,
        args={"state.h": Arr(("Bt", "H", "N", "P")), "u_t": Arr(("Bt", "H", "P"), primary=True),
              "dt_t": Arr(("Bt", "H")), "A": Arr(("H",)), "B_t": Arr(("Bt", "G", "N")), "C_t": Arr(("Bt", "G", "N")),
              "D": Arr(("H",))},
        empty=("Bt",),
        custom=(Custom("A-positive", _positive_a, names=("A",)),
                Custom("dt_t-negative", _negative_dt("dt_t"), names=("dt_t",))),
    ),
    Spec(
        name="kjax.ssm.ssm_attention_matrix",
        make=lambda: {k: v for k, v in _scan_values().items() if k in ("dt", "A", "B", "C")},
        args={"dt": Arr(("Bt", "T", "H"), primary=True), "A": Arr(("H",)), "B": Arr(("Bt", "T", "G", "N")),
              "C": Arr(("Bt", "T", "G", "N"))},
        empty=("T",),
        custom=(Custom("A-positive", _positive_a, names=("A",)),
                Custom("dt-negative", _negative_dt("dt"), names=("dt",))),
    ),
]

EXEMPT = {
    "kjax.ssm.SelectiveScanState": "a NamedTuple of arrays (a state, parameters or a result): it has no "
                                   "behaviour to feed bad input to",
}

"""Bad-input specs of kjax.ntk's neural-tangents names (#14 D2): batch, linearize, taylor_expand,
empirical_ntk_vp_fn, predict.gradient_descent and predict.max_learning_rate."""

from __future__ import annotations

import numpy as np

from tests.bad_input.specs import (
    Arr,
    Custom,
    Hyper,
    Spec,
    _dense_net,
    _mlp,
    axis,
    count,
    nonneg,
    normal,
    pos,
    psd_matrix,
    replace,
)

_STATE = "a NamedTuple of arrays (a state, parameters or a result): it has no behaviour to feed bad input to"
_NOT_CALLABLE = Custom("f-not-callable", lambda v: replace(v, f=3.0), names=("f",))


def _params(seed=5):
    return {"w1": normal(3, 4, seed=seed) / 2, "w2": normal(4, 2, seed=seed + 1) / 2}


def _batch_values():
    return {"kernel_fn": _dense_net()[2], "batch_size": 2, "device_count": 0, "x1": normal(4, 3, seed=1),
            "x2": normal(3, 3, seed=2), "get": "ntk"}


def _call_batch(fn, v):
    return fn(v["kernel_fn"], v["batch_size"], v["device_count"])(v["x1"], v["x2"], v["get"])


def _mse(fx, y):
    return 0.5 * ((fx - y) ** 2).mean()


def _gd_values():
    return {"loss": _mse, "k_train_train": psd_matrix(4, seed=1), "y_train": normal(4, 2, seed=2),
            "learning_rate": 0.5, "trace_axes": (-1,), "k_test_train": normal(3, 4, seed=3) / 3, "t": 1.0}


def _call_gd(fn, v):
    pf = fn(v["loss"], v["k_train_train"], v["y_train"], v["learning_rate"], None, v["trace_axes"])
    return pf(v["t"], 0.0, np.zeros((3, 2)), v["k_test_train"])


_SHAPE = frozenset({"shape", "rank"})

SPECS = [
    Spec(
        name="kjax.ntk.batch",
        slow=True,
        make=_batch_values,
        # the inputs go through the wrapped kernel_fn (its own spec has the dtype / NaN cases)
        args={"x2": Arr(("n2", "d"), only=frozenset({"shape"})),
              "batch_size": Hyper((("negative", -1), ("float", 2.5))),
              "device_count": Hyper((("below-minus-one", -2), ("float", 2.5)))},
        call=_call_batch,
        fns=("kjax.ntk.stax.serial",),
    ),
    Spec(
        name="kjax.ntk.linearize",
        make=lambda: {"f": _mlp, "params": _params(), "_p": _params(7), "_x": normal(4, 3, seed=1)},
        args={},
        call=lambda fn, v: fn(v["f"], v["params"])(v["_p"], v["_x"]),
        custom=(_NOT_CALLABLE,),
    ),
    Spec(
        name="kjax.ntk.taylor_expand",
        make=lambda: {"f": _mlp, "params": _params(), "degree": 2, "_p": _params(7), "_x": normal(4, 3, seed=1)},
        args={"degree": count(zero_ok=True)},
        call=lambda fn, v: fn(v["f"], v["params"], v["degree"])(v["_p"], v["_x"]),
        custom=(_NOT_CALLABLE,),
    ),
    Spec(
        name="kjax.ntk.empirical_ntk_vp_fn",
        make=lambda: {"f": _mlp, "params": _params(), "x1": normal(4, 3, seed=1), "x2": normal(3, 3, seed=2),
                      "_v": normal(3, 2, seed=3)},
        args={},
        call=lambda fn, v: fn(v["f"], v["x1"], v["x2"], v["params"])(v["_v"]),
        custom=(_NOT_CALLABLE,),
    ),
    Spec(
        name="kjax.ntk.predict.gradient_descent",
        slow=True,
        make=_gd_values,
        args={"k_train_train": Arr(("N", "N"), psd=True, only=_SHAPE), "y_train": Arr(("N", "O"), only=_SHAPE),
              "k_test_train": Arr(("M", "N"), only=frozenset({"shape"})), "learning_rate": pos(),
              "trace_axes": axis(("not-the-output-axis", (0,)))},
        call=_call_gd,
        custom=(Custom("loss-not-callable", lambda v: replace(v, loss=3.0), names=("loss",)),),
    ),
    Spec(
        name="kjax.ntk.predict.max_learning_rate",
        make=lambda: {"ntk_train_train": psd_matrix(4, seed=1), "y_train_size": 8, "momentum": 0.0},
        args={"ntk_train_train": Arr(("N", "N"), psd=True, only=_SHAPE), "y_train_size": count(),
              "momentum": nonneg()},
    ),
]

EXEMPT = {
    "kjax.ntk.Kernel": "kjax.ntk.stax.Kernel re-exported (NT's nt.Kernel): " + _STATE,
    "kjax.ntk.NtkImplementation": "an IntEnum of implementation names: every empirical spec's `implementation` "
                                  "cases exercise it",
    "kjax.ntk.predict.ODEState": _STATE,
}

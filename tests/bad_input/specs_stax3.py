"""Bad-input specs of issue #14's last kjax.ntk.stax layers: DotGeneral, ImageResize, Aggregate and
GlobalSelfAttention, each inside a tiny network, with its arguments' bad values.
"""

from __future__ import annotations

import numpy as np

from tests.bad_input.specs import (
    _S,
    Custom,
    Hyper,
    Spec,
    _img_values,
    _stax_call,
    _stax_values,
    axis,
    choice,
    count,
    nonneg,
    replace,
)

_AXES = {"batch_axis": axis(("out-of-range", 5), ("float", 0.5)),
         "channel_axis": axis(("out-of-range", 5), ("same-as-batch", 0), ("float", 1.5))}


def _dot_net(fn, v):
    S = _S()
    lhs = 2.0 if v.get("_both") else None
    layer = fn(lhs=lhs, rhs=v["rhs"], dimension_numbers=v["dimension_numbers"])
    return S.serial(S.Conv(3, (2, 2), padding="SAME"), layer, S.GlobalAvgPool(), S.Dense(1))


def _resize_net(fn, v):
    S = _S()
    return S.serial(S.Conv(3, (2, 2), padding="SAME"), fn(v["shape"], v["method"]), S.Flatten(),
                    S.Dense(1))


def _graph_values(**extra):
    rng = np.random.default_rng(3)
    return {"x1": rng.standard_normal((2, 3, 2)), "x2": rng.standard_normal((1, 3, 2)),
            "pattern": (rng.uniform(size=(2, 3, 3)), rng.uniform(size=(1, 3, 3))), **extra}


def _agg_call(fn, v):
    S = _S()
    _, _, kernel_fn = S.serial(S.Dense(3), fn(v["aggregate_axis"], v["batch_axis"], v["channel_axis"],
                                              implementation=v["implementation"]),
                               S.GlobalAvgPool(), S.Dense(1))
    return kernel_fn(v["x1"], v["x2"], "ntk", pattern=v["pattern"])


def _attn_net(fn, v):
    S = _S()
    layer = fn(v["n_chan_out"], 2, 2, v["n_heads"], linear_scaling=v["linear_scaling"],
               W_key_std=v["W_key_std"], b_std=v["b_std"],
               attention_mechanism=v["attention_mechanism"], pos_emb_type=v["pos_emb_type"])
    return S.serial(S.Dense(3), layer, S.Relu(), S.GlobalAvgPool(), S.Dense(1))


SPECS = [
    Spec(
        name="kjax.ntk.stax.DotGeneral",
        make=lambda: _img_values(rhs=np.array([1.0, -1.0, 0.5, 2.0]),
                                 dimension_numbers=(((1,), (0,)), ((), ())), x2=None),
        args={"dimension_numbers": Hyper((("malformed", ((1,), (0,))),
                                          ("channel-contracted", (((3,), (0,)), ((), ()))),
                                          ("batch-contracted", (((0,), (0,)), ((), ())))))},
        call=_stax_call(_dot_net),
        custom=(Custom("both-factors", lambda v: replace(v, _both=True), names=("rhs", "lhs")),),
    ),
    Spec(
        name="kjax.ntk.stax.ImageResize",
        make=lambda: _img_values(shape=(-1, 3, 5, -1), method="linear", x2=None),
        args={"shape": Hyper((("zero", (-1, 0, 5, -1)), ("channel-resized", (-1, 3, 5, 4)),
                              ("batch-resized", (3, 3, 5, -1)), ("wrong-length", (-1, 3, 5)))),
              "method": choice(("cubic-no-kernel", "cubic"))},
        call=_stax_call(_resize_net),
    ),
    Spec(
        name="kjax.ntk.stax.Aggregate",
        make=lambda: _graph_values(aggregate_axis=None, batch_axis=0, channel_axis=-1,
                                   implementation="DENSE"),
        args={"aggregate_axis": axis(("batch-axis", 0), ("out-of-range", 5)),
              "implementation": choice(), **_AXES},
        call=_agg_call,
        custom=(Custom("pattern-wrong-shape", lambda v: replace(v, pattern=(np.ones((2, 3, 4)),
                                                                            np.ones((1, 3, 4)))),
                       names=("pattern",)),
                Custom("one-pattern-missing", lambda v: replace(v, pattern=(None, np.ones((1, 3, 3)))),
                       names=("pattern",)),
                Custom("sparse-pattern-float", lambda v: replace(v, implementation="SPARSE"),
                       names=("pattern",))),
    ),
    Spec(
        name="kjax.ntk.stax.GlobalSelfAttention",
        make=lambda: _stax_values(x1=np.random.default_rng(4).standard_normal((2, 3, 2)),
                                  x2=np.random.default_rng(5).standard_normal((1, 3, 2)),
                                  n_chan_out=3, n_heads=2, linear_scaling=True, W_key_std=1.0,
                                  b_std=0.1, attention_mechanism="SOFTMAX", pos_emb_type="NONE"),
        args={"n_chan_out": count(), "n_heads": count(), "W_key_std": nonneg(), "b_std": nonneg(),
              "attention_mechanism": choice(), "pos_emb_type": choice()},
        call=_stax_call(_attn_net),
        custom=(Custom("softmax-without-linear-scaling",
                       lambda v: replace(v, linear_scaling=False),
                       names=("attention_mechanism", "linear_scaling")),),
    ),
]

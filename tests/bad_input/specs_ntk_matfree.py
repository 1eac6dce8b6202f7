"""Bad-input specs of the matrix-free eNTK analysis (kjax.ntk.analysis.ntk_*)."""

from __future__ import annotations

from tests.bad_input.specs import Arr, Spec, _key, _mlp, choice, count, normal

_STATE = "a NamedTuple of arrays (a state, parameters or a result): it has no behaviour to feed bad input to"


def _values(**extra):
    return {"f": _mlp, "params": {"w1": normal(3, 4, seed=5) / 2, "w2": normal(4, 2, seed=6) / 2},
            "x": normal(5, 3, seed=1), "key": _key(), "num_samples": 4, "method": "reverse", **extra}


_ARGS = {
    # inputs are any pytree with a batch axis that f understands: no rank cases
    "x": Arr(("n", "d"), leading=True, min_rank=2, only=frozenset({"dtype", "nan", "lowp"})),
    "params.w1": Arr(("d", "h"), ints="skip", only=frozenset({"nan"})),
    "num_samples": count(),
    "method": choice(),
    "block_size": count(),
}

SPECS = [
    Spec(name=f"kjax.ntk.analysis.{name}", slow=True, make=lambda: _values(block_size=2), args=_ARGS,
         outputs=lambda r: r[:2], lowp_compare=False)
    for name in ("ntk_trace", "ntk_frobenius_norm", "ntk_effective_rank")
] + [
    Spec(name="kjax.ntk.analysis.ntk_label_alignment", slow=True,
         make=lambda: _values(block_size=2, y=normal(5, 2, seed=3)),
         args={**_ARGS, "y": Arr(("n", "O"), ints="skip")}, outputs=lambda r: r[:2], lowp_compare=False),
    Spec(name="kjax.ntk.analysis.ntk_matvec", slow=True,
         make=lambda: {"f": _mlp, "params": {"w1": normal(3, 4, seed=5), "w2": normal(4, 2, seed=6)},
                       "x": normal(5, 3, seed=1), "block_size": 2, "_v": normal(5, 2, seed=4)},
         args={"x": _ARGS["x"], "params.w1": _ARGS["params.w1"], "block_size": count()},
         call=lambda fn, v: fn(v["f"], v["params"], v["x"], block_size=v["block_size"])(v["_v"])),
]

EXEMPT = {"kjax.ntk.analysis.Estimate": _STATE}


def _stax_kernel_fn():
    from kjax.ntk import stax

    return stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))[2]


SPECS += [
    Spec(name="kjax.ntk.stax.as_kernel",
         make=lambda: {"kernel_fn": _stax_kernel_fn(), "get": "ntk", "x1": normal(4, 3, seed=1),
                       "x2": normal(3, 3, seed=2)},
         args={"get": choice(), "x1": Arr(("n1", "d")), "x2": Arr(("n2", "d"))},
         call=lambda fn, v: fn(v["kernel_fn"], v["get"])(v["x1"], v["x2"]), empty=("n1", "n2"),
         fns=("kjax.ntk.stax.Dense", "kjax.ntk.stax.serial")),
]


def _mlp_params():
    return {"w1": normal(3, 4, seed=5) / 2, "w2": normal(4, 2, seed=6) / 2}


SPECS += [
    Spec(name="kjax.ntk.ntk_kernel", slow=True,
         make=lambda: {"f": _mlp, "params": _mlp_params(), "mode": "trace", "block_size": 2,
                       "x1": normal(4, 3, seed=1), "x2": normal(3, 3, seed=2)},
         args={"mode": choice(), "block_size": count(), "x1": Arr(("n1", "d")), "x2": Arr(("n2", "d")),
               "params.w1": Arr(("d", "h"), ints="skip", only=frozenset({"nan"}))},
         call=lambda fn, v: fn(v["f"], v["params"], mode=v["mode"], block_size=v["block_size"])(v["x1"], v["x2"]),
         empty=("n1", "n2")),
]
EXEMPT["kjax.ntk.NTKKernel"] = "a Kernel pytree made by kjax.ntk.ntk_kernel (whose spec exercises it)"

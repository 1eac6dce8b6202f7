"""Bad-input specs of the structural layers of kjax.ntk.stax added for neural-tangents parity
(issue 14, D1b): pooling by sums, locally connected and transposed convolutions, indexing, dropout, products of
branches and ``repeat``, each inside a tiny network, with its arguments' bad values. Also replaces
the ``Conv`` spec of specs.py, whose "bad" ``dimension_numbers`` (NCHW) is now valid (NT's
layouts are supported): its bad values are now malformed layouts.
"""

from __future__ import annotations

from tests.bad_input.specs import (
    _S,
    Arr,
    Custom,
    Hyper,
    Spec,
    _around,
    _img_values,
    _stax_call,
    _stax_values,
    axis,
    choice,
    count,
    nonneg,
    replace,
    unit,
)

_IMG1 = ("n1", "h", "w", "c")
_WINDOW = Hyper((("zero", (0, 2)), ("negative", (-1, 2)), ("wrong-length", (2,))))
_STRIDES = Hyper((("zero", (0, 1)), ("negative", (-1, 1)), ("wrong-length", (1, 1, 1))))
_LAYOUT = Hyper((("malformed", ("NCH", "OIH", "NCH")), ("no-batch-letter", ("XCHW", "OIHW", "XCHW")),
                 ("out-letters-differ", ("NCHW", "OIHW", "NCHX"))))
_AXES = {"batch_axis": axis(("out-of-range", 5), ("float", 0.5)),
         "channel_axis": axis(("out-of-range", 5), ("same-as-batch", 0), ("float", 1.5))}


_FILTER_TOO_LARGE = Custom("filter-larger-than-input", lambda v: replace(v, filter_shape=(5, 5), padding="VALID"),
                           names=("filter_shape", "x1", "inputs", "input"))


def _conv_spec(name, custom=(_FILTER_TOO_LARGE,)):
    return Spec(
        name=f"kjax.ntk.stax.{name}",
        make=lambda: _img_values(out_chan=3, filter_shape=(2, 2), strides=None, padding="SAME", W_std=1.0,
                                 b_std=0.1, dimension_numbers=None, x2=None),
        args={"x1": Arr(_IMG1, only=frozenset({"rank"})), "out_chan": count(), "filter_shape": _WINDOW,
              "strides": _STRIDES, "padding": choice(), "W_std": nonneg(), "b_std": nonneg(),
              "dimension_numbers": _LAYOUT},
        call=_stax_call(lambda fn, v: _S().serial(
            fn(v["out_chan"], v["filter_shape"], v["strides"], v["padding"], v["W_std"], v["b_std"],
               v["dimension_numbers"]), _S().Relu(), _S().Flatten(), _S().Dense(1))),
        custom=custom,
    )


SPECS = [
    _conv_spec("Conv"),
    _conv_spec("ConvLocal"),
    _conv_spec("ConvTranspose", custom=()),
    Spec(
        name="kjax.ntk.stax.SumPool",
        make=lambda: _img_values(window_shape=(2, 2), strides=None, padding="VALID", x2=None),
        args={"window_shape": _WINDOW, "strides": Hyper((("zero", (0, 1)), ("negative", (-1, 1)))),
              "padding": choice()},
        call=_stax_call(lambda fn, v: _around(
            lambda v: fn(v["window_shape"], v["strides"], v["padding"]), v, images=True)),
        custom=(Custom("window-larger-than-input", lambda v: replace(v, window_shape=(5, 5)),
                       names=("window_shape", "x1", "inputs", "input")),),
    ),
    Spec(
        name="kjax.ntk.stax.GlobalSumPool",
        make=lambda: _img_values(batch_axis=0, channel_axis=-1, x2=None),
        args=dict(_AXES),
        call=_stax_call(lambda fn, v: _S().serial(_S().Conv(3, (2, 2)), fn(v["batch_axis"], v["channel_axis"]),
                                                  _S().Dense(1))),
    ),
    Spec(
        name="kjax.ntk.stax.Index",
        make=lambda: _img_values(idx=(slice(None), slice(1, 3)), x2=None),
        args={"idx": Hyper((("channel-indexed", (slice(None), slice(None), slice(None), 0)),
                            ("batch-int", (0,)), ("empty", (slice(None), slice(5, None))),
                            ("none", (slice(None), None)), ("too-many-axes", (slice(None),) * 5)))},
        call=_stax_call(lambda fn, v: _S().serial(_S().Conv(3, (2, 2), padding="SAME"), fn(v["idx"]),
                                                  _S().Flatten(), _S().Dense(1))),
    ),
    Spec(
        name="kjax.ntk.stax.Dropout",
        make=lambda: _stax_values(rate=0.5, mode="train"),
        args={"rate": unit(), "mode": choice()},
        call=_stax_call(lambda fn, v: _around(lambda v: fn(v["rate"], v["mode"]), v)),
    ),
    Spec(
        name="kjax.ntk.stax.repeat",
        make=lambda: _stax_values(n=2, layer=None),
        args={"n": count(zero_ok=True)},
        call=_stax_call(lambda fn, v: _S().serial(
            _S().Dense(4), fn(v["layer"] or _S().serial(_S().Dense(4), _S().Relu()), v["n"]), _S().Dense(1))),
        custom=(Custom("layer-not-a-triple", lambda v: replace(v, layer=3), names=("layers[0]", "layer")),
                Custom("layer-changes-shape", lambda v: replace(v, layer=_S().Dense(3)), names=("layer",))),
    ),
    Spec(
        name="kjax.ntk.stax.FanInProd",
        make=lambda: _stax_values(widths=(3, 3)),
        args={},
        call=_stax_call(lambda fn, v: _S().serial(
            _S().Dense(4), _S().FanOut(2), _S().parallel(*(_S().Dense(w) for w in v["widths"])), fn(),
            _S().Dense(1))),
        custom=(Custom("branch-shapes", lambda v: replace(v, widths=(3, 2)), names=("branches", "input_shape")),),
    ),
]

_ENUM = "an enum of names (NT's): nothing to feed bad input to"
_DECORATOR = ("a decorator of user-written layers (takes functions, not data); its behaviour and errors "
              "are tested in tests/ntk/test_stax_structure.py")
EXEMPT = {
    **{f"kjax.ntk.stax.{n}": _ENUM for n in ("Padding", "PositionalEmbedding", "AttentionMechanism",
                                             "AggregateImplementation", "Bool")},
    "kjax.ntk.stax.Diagonal": "a requirement value of two Bool fields (NT's helper type): no data",
    "kjax.ntk.stax.MaskedArray": "a dataclass of arrays (a value and its mask): no behaviour",
    "kjax.ntk.stax.Slice": "an index builder (Slice[...] returns its index); bad indices are Index's spec",
    **{f"kjax.ntk.stax.{n}": _DECORATOR for n in ("layer", "requires", "supports_masking", "unmask_fn")},
}

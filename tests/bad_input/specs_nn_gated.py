"""Bad-input specs of the decoding layers of kjax.nn: ShortConv, GatedLinearAttention, GatedDeltaNet
and Mamba2 (each call runs the prefill that returns the decoding state)."""

from __future__ import annotations

from tests.bad_input.specs import Arr, Custom, Hyper, Spec, count, normal, replace

_STATE = "a NamedTuple of arrays (a layer's decoding state): it has no behaviour to feed bad input to"


def _pick(values: dict, *names: str) -> dict:
    return {k: values[k] for k in names if k in values}


def _decode_call(*ctor: str, pos_args: tuple[str, ...]):
    """Build the layer and run the prefill on ``x`` with ``return_state=True`` (output and state are
    checked). The step's bad inputs are tested in tests/nn/test_decoding.py: running it here too
    doubled the compilations of every case."""

    def call(cls, v):
        from flax import nnx

        layer = cls(*[v[k] for k in pos_args], **_pick(v, *ctor), rngs=nnx.Rngs(0))
        return layer(v["x"], return_state=True)

    return call


_X = Arr(("B", "T", "D"), shared=("D",))


def _positive(*extra) -> Hyper:
    return Hyper((("zero", 0.0), ("negative", -1.0)) + extra)


SPECS = [
    Spec(
        name="kjax.nn.ShortConv",
        make=lambda: {"channels": 3, "width": 3, "x": normal(2, 5, 3, seed=1)},
        args={"x": _X, "channels": count(), "width": count()},
        call=_decode_call("width", pos_args=("channels",)),
        empty=("T",),
    ),
    Spec(
        name="kjax.nn.GatedLinearAttention",
        make=lambda: {"hidden_size": 4, "num_heads": 2, "expand_k": 1.0, "gate_low_rank_dim": 2, "chunk_size": 2,
                      "gate_logit_normalizer": 16.0, "x": normal(1, 5, 4, seed=1)},
        args={"x": _X, "hidden_size": count(), "num_heads": count(("not-dividing-key-dim", 3)),
              "expand_k": _positive(), "gate_low_rank_dim": count(), "chunk_size": count(),
              "gate_logit_normalizer": _positive()},
        call=_decode_call("num_heads", "expand_k", "gate_low_rank_dim", "chunk_size", "gate_logit_normalizer",
                          "clamp_min", pos_args=("hidden_size",)),
        empty=("T",),
        custom=(Custom("positive-clamp_min", lambda v: replace(v, clamp_min=0.5), names=("clamp_min",)),),
    ),
    Spec(
        name="kjax.nn.GatedDeltaNet",
        make=lambda: {"hidden_size": 4, "num_heads": 2, "expand_v": 1.0, "chunk_size": 2, "norm_eps": 1e-5,
                      "x": normal(1, 5, 4, seed=1)},
        args={"x": _X, "hidden_size": count(), "num_heads": count(), "expand_v": _positive(("non-integer-dv", 0.3)),
              "chunk_size": count(), "norm_eps": Hyper((("negative", -1.0),))},
        call=_decode_call("num_heads", "expand_v", "chunk_size", "norm_eps", pos_args=("hidden_size",)),
        empty=("T",),
    ),
    Spec(
        name="kjax.nn.Mamba2",
        make=lambda: {"hidden_size": 4, "state_size": 2, "head_dim": 2, "n_groups": 2, "chunk_size": 2,
                      "x": normal(1, 5, 4, seed=1)},
        args={"x": _X, "hidden_size": count(), "state_size": count(), "head_dim": count(("not-dividing", 3)),
              "n_groups": count(("not-dividing-heads", 3)), "chunk_size": count()},
        call=_decode_call("state_size", "head_dim", "n_groups", "chunk_size", "dt_min", "dt_max",
                          pos_args=("hidden_size",)),
        empty=("T",),
        custom=(Custom("dt_min-above-dt_max", lambda v: replace(v, dt_min=0.5, dt_max=0.1), names=("dt_min",)),),
    ),
]

EXEMPT = {"kjax.nn.ShortConvState": _STATE, "kjax.nn.RecurrentLayerState": _STATE}

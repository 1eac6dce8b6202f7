import logging

import jax
import jax.numpy as jnp
import pytest

from kjax._src import dispatch
from kjax._src.dispatch import Implementation


def _no_f64(platform, config):
    return "`x` must not be float64 here" if config.get("dtype") == "float64" else None


IMPLS = [
    Implementation("pallas", lambda x, *, scale: x * scale + 1, platforms=("cuda", "tpu"), supports=_no_f64),
    Implementation("xla", lambda x, *, scale: x * scale),
    Implementation("slow", lambda x, *, scale: x * scale + 2, auto=False),
]


def test_none_picks_per_platform():
    sel = dispatch.dispatch("f", None, IMPLS, {})
    assert sel.names() == {"cpu": "xla", "cuda": "pallas", "rocm": "xla", "tpu": "pallas"}
    assert sel.current.name == "xla"
    assert float(sel(jnp.ones(()), scale=3.0)) == 3.0  # on CPU the XLA branch runs


def test_lowering_keeps_the_platforms_branch():
    # traced once, the same function lowers to each platform's own implementation
    sel = dispatch.dispatch("f", None, IMPLS, {})
    f = jax.jit(lambda x: sel(x, scale=3.0))
    x = jax.ShapeDtypeStruct((4,), jnp.float32)
    for platform, has_add in (("cpu", False), ("cuda", True), ("tpu", True)):
        text = jax.export.export(f, platforms=[platform])(x).mlir_module()
        assert ("stablehlo.add" in text) == has_add, platform


def test_unsupported_configuration_falls_through_with_reason(caplog):
    with caplog.at_level(logging.DEBUG, logger="kjax.dispatch"):
        sel = dispatch.dispatch("f", ["pallas", "xla"], IMPLS, {"dtype": "float64"})
    assert set(sel.names().values()) == {"xla"}
    assert ("pallas", "cuda", "`x` must not be float64 here") in sel.skipped
    assert "pallas passed over on cuda: `x` must not be float64 here" in caplog.text


def test_string_means_exactly_that():
    assert dispatch.dispatch("f", "slow", IMPLS, {}).names()["cpu"] == "slow"
    with pytest.raises(ValueError, match="f: implementation 'pallas' cannot serve this call on cpu: it lowers on "
                       "cuda, tpu, not on cpu"):
        dispatch.dispatch("f", "pallas", IMPLS, {})
    with pytest.raises(ValueError, match=r"f: `implementation` must be None, one of \('pallas', 'xla', 'slow'\)"):
        dispatch.dispatch("f", "triton", IMPLS, {})


def test_string_with_unsupported_configuration_names_the_argument():
    impls = [Implementation("k", lambda x: x, supports=_no_f64)]
    with pytest.raises(ValueError, match=r"f: implementation 'k' cannot serve this call on cpu: `x` must not be "
                       r"float64 here. Pass implementation=None, or a list such as \['k', 'xla'\]"):
        dispatch.dispatch("f", "k", impls, {"dtype": "float64"})


def test_list_errors():
    with pytest.raises(ValueError, match=r"none of the implementations \['pallas'\] can run here \(cpu\)"):
        dispatch.dispatch("f", ["pallas"], IMPLS, {})
    with pytest.raises(ValueError, match="non-empty list"):
        dispatch.dispatch("f", [], IMPLS, {})
    with pytest.raises(ValueError, match="entries must be in"):
        dispatch.dispatch("f", ["xla", "nope"], IMPLS, {})
    with pytest.raises(ValueError, match="must be None, a string or a list"):
        dispatch.dispatch("f", 3, IMPLS, {})


def test_select_for_algorithm_choices():
    # the eNTK's algorithm choice: one implementation for the current backend, with a cost model
    algos = [Implementation("a", None), Implementation("b", None)]
    assert dispatch.select("f", None, algos, chooser=lambda ok: ok[-1]).name == "b"
    assert dispatch.select("f", "a", algos).name == "a"
    with pytest.raises(ValueError, match="none of the implementations"):
        dispatch.select("f", ["a"], [Implementation("a", None, supports=lambda p, c: "no")])
    with pytest.raises(ValueError, match="no implementation runs on backend"):
        dispatch.select("f", None, [Implementation("a", None, supports=lambda p, c: "no")])

import pytest

from kjax._src import dispatch
from kjax._src.dispatch import Implementation

IMPLS = [
    Implementation("pallas", lambda: "pallas", supported=dispatch.gpu_only),
    Implementation("xla", lambda: "xla"),
    Implementation("slow", lambda: "slow", auto=False),
]


def test_none_picks_first_supported_auto():
    assert dispatch.select("f", None, IMPLS, backend="cpu").name == "xla"
    assert dispatch.select("f", None, IMPLS, backend="gpu").name == "pallas"


def test_string_means_exactly_that():
    assert dispatch.select("f", "slow", IMPLS, backend="cpu").name == "slow"
    with pytest.raises(ValueError, match="f: implementation 'pallas' cannot run here: it needs a GPU"):
        dispatch.select("f", "pallas", IMPLS, backend="cpu")
    with pytest.raises(ValueError, match=r"f: `implementation` must be None, one of \('pallas', 'xla', 'slow'\)"):
        dispatch.select("f", "triton", IMPLS, backend="cpu")


def test_list_means_first_that_works():
    assert dispatch.select("f", ["pallas", "xla"], IMPLS, backend="cpu").name == "xla"
    with pytest.raises(ValueError, match="none of the implementations"):
        dispatch.select("f", ["pallas"], IMPLS, backend="cpu")
    with pytest.raises(ValueError, match="non-empty list"):
        dispatch.select("f", [], IMPLS, backend="cpu")
    with pytest.raises(ValueError, match="entries must be in"):
        dispatch.select("f", ["xla", "nope"], IMPLS, backend="cpu")
    with pytest.raises(ValueError, match="must be None, a string or a list"):
        dispatch.select("f", 3, IMPLS, backend="cpu")


def test_chooser_and_no_impl():
    pick = dispatch.select("f", None, IMPLS, backend="cpu", chooser=lambda ok: ok[-1])
    assert pick.name == "xla"
    with pytest.raises(ValueError, match="no implementation runs on backend"):
        dispatch.select("f", None, IMPLS[:1], backend="cpu")

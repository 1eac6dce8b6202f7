"""``neural_tangents._src.utils.rules``: NT's structured-derivative rules (internal; no kjax twin)."""

from tests.nt_compat.nt._src import internal


def __getattr__(name: str):
    return internal("utils.rules", name)

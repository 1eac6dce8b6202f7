"""Shims of the NT internals (``neural_tangents._src``) that NT's tests import (README.md lists them).

Public names reached through an internal module (``_src.batching.batch``) are kjax's; NT's private
helpers are :func:`internal` stubs that raise when called, so that only the tests that exercise
NT's internals fail (they are listed as such in tests/nt_compat/conftest.py).
"""


def internal(module: str, name: str):
    """A stand-in for NT's private ``module.name``: raises NotImplementedError when called."""

    def stub(*args, **kwargs):
        raise NotImplementedError(f"neural_tangents._src.{module}.{name} is an NT internal; kjax has no "
                                  "equivalent (tests of NT internals are excluded, see README.md)")

    stub.__name__ = name
    return stub

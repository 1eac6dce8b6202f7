"""Shared fixtures: the 8-device mesh and a seeded key. Device setup lives in ../conftest.py."""

import jax
import pytest

# the bad-input suite's counts, printed at the end of any run that includes it (make test too)
from tests.bad_input.conftest import pytest_runtest_logreport, pytest_terminal_summary  # noqa: F401


@pytest.fixture(scope="session")
def mesh():
    assert len(jax.devices()) == 8, "tests expect 8 CPU devices (see conftest.py)"
    return jax.make_mesh((8,), ("data",))


@pytest.fixture
def key():
    return jax.random.key(0)

"""kjax.ntk.empirical_ntk_fn against neural-tangents 0.6.5's stored outputs.

The reference file is produced by benchmarks/peers/nt_entk_reference.py in the NT peer environment
(jax 0.4.23); every NT implementation there agreed with the others to 1e-10.
"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from kjax.ntk import empirical_ntk_fn
from tests.conformance import assert_close
from tests.ntk.models import MODELS

DATA = np.load(os.path.join(os.path.dirname(__file__), "data", "nt_entk_reference.npz"))
AXES = {"trace": ((-1,), ()), "full": ((), ()), "diag": ((), (-1,)), "diagbatch": ((), (0,))}


def _params(name):
    prefix = f"{name}/params/"
    return {k[len(prefix):]: jnp.asarray(DATA[k]) for k in DATA.files if k.startswith(prefix)}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("axes", sorted(AXES))
def test_equals_neural_tangents(name, axes):
    f, p = MODELS[name], _params(name)
    x1, x2 = jnp.asarray(DATA[f"{name}/x1"]), jnp.asarray(DATA[f"{name}/x2"])
    b = x1 if axes == "diagbatch" else x2
    want = DATA[f"{name}/{axes}/impl3/vmap0"]
    # the diagonal-output cases are the slowest (two models, ~45 s under make test's load): the
    # default path and structured derivatives there; the Jacobian contraction on the other axes
    impls = [(None, 0), ("structured", None)] + ([] if axes == "diag" else [(1, 0)])
    for impl, va in impls:
        got = empirical_ntk_fn(f, *AXES[axes], vmap_axes=va, implementation=impl)(x1, b, p)
        assert got.shape == want.shape
        assert_close(got, want, 1e-10, f"{name}/{axes} impl={impl} vmap={va}")


def test_reference_provenance():
    assert str(DATA["nt_version"]) == "0.6.5"

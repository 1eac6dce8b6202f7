"""Empty inputs and 2-D meshes: a kjax error that names the function called and the argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax.ntk import (
    analysis,
    choose_implementation,
    empirical_kernel_fn,
    empirical_nngp_fn,
    empirical_ntk,
    empirical_ntk_fn,
    monte_carlo_kernel_fn,
    projected_ntk,
    stax,
)
from tests.ntk.models import MODELS, inputs, params

F, PM = MODELS["mlp"], params()["mlp"]
X, X0 = inputs("mlp", 3), jnp.ones((0, 5))
NET = stax.serial(stax.Dense(4), stax.Relu(), stax.Dense(1))
KF = NET[2]
KEY = jax.random.key(0)

EMPTY = [
    ("kjax.ntk.empirical_ntk_fn", "x1", lambda: empirical_ntk_fn(F)(X0, None, PM)),
    ("kjax.ntk.empirical_ntk_fn", "x1", lambda: empirical_ntk_fn(F, vmap_axes=0)(X0, None, PM)),
    ("kjax.ntk.empirical_ntk_fn", "x2", lambda: empirical_ntk_fn(F, vmap_axes=0)(X, X0, PM)),
    ("kjax.ntk.empirical_nngp_fn", "x1", lambda: empirical_nngp_fn(F)(X0, None, PM)),
    ("kjax.ntk.empirical_kernel_fn", "x1", lambda: empirical_kernel_fn(F)(X0, None, "ntk", PM)),
    ("kjax.ntk.empirical_ntk", "x1", lambda: empirical_ntk(F, PM, X0)),
    ("kjax.ntk.empirical_ntk", "x2", lambda: empirical_ntk(F, PM, X, X0, mode="full")),
    ("kjax.ntk.projected_ntk", "x1", lambda: projected_ntk(KEY, F, PM, X0, num_projections=2)),
    ("kjax.ntk.choose_implementation", "x1", lambda: choose_implementation(F, PM, X0)),
    ("kjax.ntk.monte_carlo_kernel_fn", "x1",
     lambda: monte_carlo_kernel_fn(NET[0], NET[1], KEY, 1)(np.ones((0, 3)), None, "ntk")),
    ("kjax.ntk.stax.serial kernel_fn", "x1", lambda: KF(np.ones((0, 3)))),
    ("kjax.ntk.stax.serial kernel_fn", "x2", lambda: KF(np.ones((2, 3)), np.ones((0, 3)))),
    ("kjax.ntk.stax.serial kernel_fn", "x1", lambda: KF(np.ones((2, 0)))),  # no channels
    ("kjax.ntk.stax.batch", "x1", lambda: stax.batch(KF, 2)(np.ones((0, 3)), None, "ntk")),
    ("kjax.ntk.stax.batch", "x2", lambda: stax.batch(KF, 2)(np.ones((2, 3)), np.ones((0, 3)))),
    ("kjax.ntk.analysis.eigenspectrum", "k", lambda: analysis.eigenspectrum(np.ones((0, 0)))),
    ("kjax.ntk.analysis.effective_rank", "k_or_eigenvalues",
     lambda: analysis.effective_rank(np.ones(0))),
    ("kjax.ntk.analysis.label_alignment", "k",
     lambda: analysis.label_alignment(np.ones((0, 0)), np.ones(0, int))),
    ("kjax.ntk.analysis.centered_kernel_alignment", "k1",
     lambda: analysis.centered_kernel_alignment(np.ones((0, 0)), np.ones((0, 0)))),
    ("kjax.ntk.analysis.alignment", "k1", lambda: analysis.alignment(np.ones((0, 0)), np.eye(2))),
    ("kjax.ntk.analysis.kernel_distance", "k1",
     lambda: analysis.kernel_distance(np.ones((0, 0)), np.ones((0, 0)))),
    ("kjax.ntk.analysis.lanczos_top_k", "n", lambda: analysis.lanczos_top_k(KEY, lambda v: v, 0, 1)),
    ("kjax.ntk.analysis.record_ntk", "x_probe",
     lambda: analysis.record_ntk(F, PM, lambda p, b: 0.0, None, [X], X0, num_steps=1)),
    ("kjax.ntk.analysis.record_ntk", "batches",
     lambda: analysis.record_ntk(F, PM, lambda p, b: 0.0, None, [], X, num_steps=1)),
]


@pytest.mark.parametrize("fn,arg,call", EMPTY, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(EMPTY)])
def test_empty_inputs(fn, arg, call):
    """Regression: n = 0 gave ZeroDivisionError, IndexError, lax slicing errors or a message about
    `block_size` / `num_iters`, arguments the caller never passed."""
    with pytest.raises(ValueError) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(f"{fn}: `{arg}` must "), msg


def test_two_dimensional_mesh_asks_for_mesh_axis():
    mesh = jax.make_mesh((2, 4), ("a", "b"))
    with pytest.raises(ValueError, match=r"^kjax\.ntk\.empirical_ntk: `mesh_axis` must name one "
                                         r"of \('a', 'b'\)"):
        empirical_ntk(F, PM, X, mesh=mesh)
    with pytest.raises(ValueError, match=r"^kjax\.ntk\.stax\.batch: `mesh_axis` must name one "
                                         r"of \('a', 'b'\)"):
        stax.batch(KF, 2, mesh=mesh)(np.ones((4, 3)), None, "ntk")
    k = empirical_ntk(F, PM, X, block_size=2, mesh=mesh, mesh_axis="b")
    assert k.shape == (3, 3)


OTHER = [  # found by tests/bad_input: each error names the function called and its argument
    ("kjax.ntk.empirical_ntk_fn", "x1", lambda: empirical_ntk_fn(F)(X.astype(complex), None, PM)),
    ("kjax.ntk.empirical_kernel_fn", "trace_axes",
     lambda: empirical_kernel_fn(F, trace_axes=(5,))(X, None, "nngp", PM)),
    ("kjax.ntk.monte_carlo_kernel_fn", "x2",
     lambda: monte_carlo_kernel_fn(NET[0], NET[1], KEY, 1)(np.ones((2, 3)), np.ones((2, 2)), "ntk")),
    ("kjax.ntk.monte_carlo_kernel_fn", "n_samples",
     lambda: monte_carlo_kernel_fn(NET[0], NET[1], KEY, 2.0)),
    ("kjax.ntk.stax.LeakyRelu", None, lambda: stax.LeakyRelu(0.1)[2](np.ones((2, 3)))),
    ("kjax.ntk.stax.LayerNorm", "eps", lambda: stax.LayerNorm(eps=-1.0)),
    ("kjax.ntk.stax.Conv kernel_fn", "x1", lambda: stax.Conv(2, (2,))[2](np.ones((2, 3, 3, 1)))),
    ("kjax.ntk.stax.batch", "x2", lambda: stax.batch(KF, 2)(np.ones((2, 3)), np.ones((2, 2)))),
    ("kjax.ntk.analysis.eigenspectrum", "top_k", lambda: analysis.eigenspectrum(np.eye(2), top_k=3)),
    ("kjax.ntk.analysis.alignment", "k1", lambda: analysis.alignment(np.eye(2) * 1j, np.eye(2))),
    ("kjax.ntk.analysis.lanczos_top_k", "dtype",
     lambda: analysis.lanczos_top_k(KEY, lambda v: v, 4, 1, dtype=jnp.int32)),
    ("kjax.ntk.analysis.record_ntk", "mode",
     lambda: analysis.record_ntk(F, PM, lambda p, b: 0.0, None, [X], X, num_steps=1, mode="bogus")),
]


@pytest.mark.parametrize("fn,arg,call", OTHER, ids=[f"{c[0]}-{c[1]}" for c in OTHER])
def test_errors_name_the_function_and_argument(fn, arg, call):
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    msg = str(info.value)
    assert msg.startswith(f"{fn}: "), msg
    assert arg is None or f"`{arg}`" in msg, msg


def test_alignment_of_a_zero_kernel_is_an_error_and_nan_propagates():
    with pytest.raises(ValueError, match=r"kernel_distance: `k2` must not be zero"):
        analysis.kernel_distance(np.eye(2), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"label_alignment: `y` must not be constant"):
        analysis.label_alignment(np.eye(3), np.zeros(3, int))
    assert np.isnan(analysis.alignment(np.full((2, 2), np.nan), np.eye(2)))
    assert np.isnan(jax.jit(analysis.kernel_distance)(np.eye(2), np.zeros((2, 2))))

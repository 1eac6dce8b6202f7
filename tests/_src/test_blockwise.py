"""The blockwise map on pytrees, trailing axes, custom transposes; pad and pair helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src import blockwise as bw
from tests.conformance import assert_close

RNG = np.random.default_rng(5)


def outer_fn(xa, xb):
    """A pytree input and trailing non-symmetric axes: F[i, j, o, p] = a_i[o] * b_j[p] + s_i s_j."""
    return (xa["v"][:, None, :, None] * xb["v"][None, :, None, :]
            + (xa["s"][:, None] * xb["s"][None, :])[..., None, None])


def dense_outer(x1, x2):
    return outer_fn(x1, x2)


def test_pytree_inputs_and_trailing_axes_with_symmetry(mesh):
    x = {"v": jnp.asarray(RNG.normal(size=(19, 3))), "s": jnp.asarray(RNG.normal(size=19))}
    ref = dense_outer(x, x)
    t = lambda blk: jnp.swapaxes(jnp.swapaxes(blk, 0, 1), 2, 3)
    for kw in [{}, {"mesh": mesh}]:
        got = bw.blockwise_gram(outer_fn, x, block_size=4, block_transpose=t, **kw)
        assert_close(got, ref, 1e-13)
        host = bw.blockwise_gram(outer_fn, x, block_size=4, block_transpose=t, progress=True, **kw)
        assert_close(host, ref, 1e-13)


@pytest.mark.parametrize("rows", [4, 5, 19])
def test_row_slabs_in_place_with_overlapping_last_slab(rows):
    # x2 given, whole-row slabs, no mesh: the in-place slab loop (the last slab overlaps the one
    # before when rows does not divide n); pytree inputs, trailing axes, and a gradient through it
    x1 = {"v": jnp.asarray(RNG.normal(size=(19, 3))), "s": jnp.asarray(RNG.normal(size=19))}
    x2 = {"v": jnp.asarray(RNG.normal(size=(7, 3))), "s": jnp.asarray(RNG.normal(size=7))}
    got = bw.blockwise_gram(outer_fn, x1, x2, block_size=(rows, 7))
    assert_close(got, dense_outer(x1, x2), 1e-13)
    loss = lambda v: jnp.sum(bw.blockwise_gram(outer_fn, {"v": v, "s": x1["s"]}, x2,
                                               block_size=(rows, 7)) ** 2)
    dense = lambda v: jnp.sum(dense_outer({"v": v, "s": x1["s"]}, x2) ** 2)
    assert_close(jax.grad(loss)(x1["v"]), jax.grad(dense)(x1["v"]), 1e-12)


def test_symmetric_evaluates_only_upper_triangle():
    calls = []

    def fn(a, b):
        calls.append(1)
        return a @ b.T

    x = jnp.asarray(RNG.normal(size=(20, 2)))
    out = bw.blockwise_gram(fn, x, block_size=5, progress=True)  # host loop: one call per pair
    assert_close(out, np.asarray(x) @ np.asarray(x).T, 1e-13)
    # 4 row blocks -> 10 upper-triangle pairs, one trace of the step fn
    assert len(bw.block_pairs(4, 4, True)) == 10
    assert len(bw.block_pairs(4, 3, False)) == 12


def test_pad_rows_repeats_last_row():
    x = jnp.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(bw.pad_rows(x, 5)[3:], [[4.0, 5.0], [4.0, 5.0]])


def test_leading_dim_errors():
    with pytest.raises(ValueError, match="same leading"):
        bw.leading_dim("f", "x", {"a": np.ones((3, 2)), "b": np.ones(4)})
    with pytest.raises(ValueError, match="leading batch axis"):
        bw.leading_dim("f", "x", {"a": np.ones(())})
    with pytest.raises(ValueError, match="at least one array"):
        bw.leading_dim("f", "x", {})


def test_symmetric_requires_x2_none():
    x = jnp.ones((4, 2))
    with pytest.raises(ValueError, match="`symmetric` must be False when x2 is given"):
        bw.blockwise_gram(lambda a, b: a @ b.T, x, x, symmetric=True)


def test_blockwise_diag_and_vmap():
    x = jnp.asarray(RNG.normal(size=(11, 3)))
    d = bw.blockwise_diag(lambda a, b: a @ b.T, x, block_size=4)
    assert_close(d, np.sum(np.asarray(x) ** 2, 1), 1e-13)
    out = jax.vmap(lambda z: bw.blockwise_gram(lambda a, b: a @ b.T, z, block_size=4))(
        jnp.stack([x, 2 * x]))
    assert_close(out[1], 4 * np.asarray(x) @ np.asarray(x).T, 1e-13)

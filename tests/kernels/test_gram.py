"""gram / kernel_matvec / kernel_diag: blockwise equals dense, sharded equals unsharded."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.gaussian_process import kernels as skk

from kjax import kernels as K
from tests.conformance import assert_close, check_op

RNG = np.random.default_rng(3)
X = RNG.normal(size=(53, 4))
Y = RNG.normal(size=(29, 4))
KERN = functools.partial(K.rbf, lengthscale=1.5)
DENSE_XX = skk.RBF(1.5)(X)
DENSE_XY = skk.RBF(1.5)(X, Y)


@pytest.mark.parametrize("block_size", [1, 7, 16, (8, 5), 53, 1000])
def test_gram_equals_dense_any_block(block_size):
    assert_close(K.gram(KERN, X, Y, block_size=block_size), DENSE_XY, 1e-12)
    sym = K.gram(KERN, X, block_size=block_size)
    assert_close(sym, DENSE_XX, 1e-12)
    np.testing.assert_array_equal(np.asarray(sym), np.asarray(sym).T)


@pytest.mark.parametrize("block_size", [(7, 11), 64, (100, 3)])
def test_matvec_equals_dense(block_size):
    v1 = RNG.normal(size=29)
    v2 = RNG.normal(size=(29, 3))
    assert_close(K.kernel_matvec(KERN, X, Y, v1, block_size=block_size), DENSE_XY @ v1, 1e-12)
    assert_close(K.kernel_matvec(KERN, X, Y, v2, block_size=block_size), DENSE_XY @ v2, 1e-12)
    v3 = RNG.normal(size=53)
    assert_close(K.kernel_matvec(KERN, X, None, v3, block_size=block_size), DENSE_XX @ v3, 1e-12)


@pytest.mark.parametrize("block_size", [None, 1, 7, (16, 3), 53, 1000])
def test_normal_matvec_equals_dense(block_size, mesh):
    """K^T (K v + w) with K = k(X, Y) from sklearn's RBF; padded rows must not contribute."""
    v, w = RNG.normal(size=(29, 2)), RNG.normal(size=(53, 2))
    ref = DENSE_XY.T @ (DENSE_XY @ v + w)
    assert_close(K.kernel_normal_matvec(KERN, X, Y, v, w, block_size=block_size), ref, 1e-12)
    assert_close(K.kernel_normal_matvec(KERN, X, Y, v, w, block_size=block_size, mesh=mesh), ref,
                 1e-12)
    out = K.kernel_normal_matvec(KERN, X, Y, v[:, 0], block_size=block_size)
    assert out.shape == (29,)
    assert_close(out, DENSE_XY.T @ (DENSE_XY @ v[:, 0]), 1e-12)


def test_normal_matvec_conformance_and_float32(mesh):
    x, y = jnp.asarray(X[:12]), jnp.asarray(Y[:6])
    v, w = jnp.asarray(RNG.normal(size=6)), jnp.asarray(RNG.normal(size=12))
    check_op(lambda a, b, c, d: K.kernel_normal_matvec(KERN, a, b, c, d, block_size=5), x, y, v, w,
             grad_argnums=(0, 1, 2, 3), vmap_argnums=(2, 3), mesh=mesh)
    x32 = RNG.normal(size=(3000, 3)).astype(np.float32)
    out = K.kernel_normal_matvec(K.rbf, x32, x32[:40], np.ones(40, np.float32))
    assert out.dtype == np.float32
    k64 = skk.RBF(1.0)(x32.astype(np.float64), x32[:40].astype(np.float64))
    assert_close(out, k64.T @ k64.sum(1), 1e-5)


def test_normal_matvec_float32_sum_over_many_blocks():
    # 25000 blocks of 8 rows: one running float32 sum over them is off by 1.8e-6 (relative) here;
    # the two-level sum (blocks into partial sums, partial sums into the result) by 2.7e-7
    rng = np.random.default_rng(0)
    x, c = rng.normal(size=(200_000, 2)), rng.normal(size=(4, 2))
    k = skk.RBF(1.0)(x, c)
    ref = k.T @ k.sum(1)
    out = K.kernel_normal_matvec(K.rbf, x.astype(np.float32), c.astype(np.float32),
                                 np.ones(4, np.float32), block_size=8)
    assert_close(out, ref, 6e-7)


def test_sharded_equals_unsharded(mesh):
    """The foundation's promise: relative error < 1e-6 in float64 (in fact roundoff)."""
    v = RNG.normal(size=(29, 2))
    for bs in [4, (8, 5), 64]:
        assert_close(K.gram(KERN, X, Y, block_size=bs, mesh=mesh), K.gram(KERN, X, Y, block_size=bs), 1e-12)
        assert_close(K.gram(KERN, X, block_size=bs, mesh=mesh), DENSE_XX, 1e-12)
        # rows split over devices (many row blocks) and columns split with psum (few row blocks)
        assert_close(K.kernel_matvec(KERN, X, Y, v, block_size=bs, mesh=mesh), DENSE_XY @ v, 1e-12)
    assert_close(K.kernel_matvec(KERN, X[:5], Y, v, block_size=(8, 2), mesh=mesh),
                 DENSE_XY[:5] @ v, 1e-12)
    # x2=None: the symmetric product (each off-diagonal block once), its block pairs split over the
    # devices; 7 blocks of 8 give 28 pairs (padded to the device count), one block gives one pair
    w = RNG.normal(size=(53, 2))
    assert_close(K.kernel_matvec(KERN, X, None, w, block_size=8, mesh=mesh), DENSE_XX @ w, 1e-12)
    for bs in [(16, 5), 100]:
        assert_close(K.kernel_matvec(KERN, X, None, w[:, 0], block_size=bs), DENSE_XX @ w[:, 0], 1e-12)


def test_inputs_already_on_the_mesh_and_set_mesh(mesh):
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    xs = jax.device_put(jnp.asarray(X[:48]), NamedSharding(mesh, P("data")))
    v = jax.device_put(jnp.ones(48), NamedSharding(mesh, P("data")))
    out = K.kernel_matvec(KERN, xs, None, v, block_size=6, mesh=mesh)
    assert_close(out, DENSE_XX[:48, :48] @ np.ones(48), 1e-12)
    with jax.set_mesh(mesh):
        out2 = jax.jit(lambda a, b: K.kernel_matvec(KERN, a, None, b, block_size=6, mesh=mesh))(xs, v)
    assert_close(out2, out, 1e-12)


def test_grad_through_sharded_matvec_equals_dense(mesh):
    v = jnp.asarray(RNG.normal(size=29))

    def blocked(x, ls):
        return jnp.sum(K.kernel_matvec(functools.partial(K.rbf, lengthscale=ls), x, Y, v,
                                       block_size=(8, 8), mesh=mesh) ** 2)

    def dense(x, ls):
        return jnp.sum((K.rbf(x, Y, lengthscale=ls) @ v) ** 2)

    gb = jax.grad(blocked, argnums=(0, 1))(jnp.asarray(X), 1.5)
    gd = jax.grad(dense, argnums=(0, 1))(jnp.asarray(X), 1.5)
    assert_close(gb[0], gd[0], 1e-12)
    assert_close(gb[1], gd[1], 1e-12)
    # the symmetric product (x2=None; its sharded forward is in test_sharded_equals_unsharded): x
    # enters both sides of every block
    w = jnp.asarray(RNG.normal(size=53))
    gs = jax.grad(lambda x: jnp.sum(K.kernel_matvec(KERN, x, None, w, block_size=16) ** 2))(jnp.asarray(X))
    assert_close(gs, jax.grad(lambda x: jnp.sum((KERN(x, x) @ w) ** 2))(jnp.asarray(X)), 1e-12)


def test_gram_streams_to_memmap_with_progress(tmp_path, mesh):
    path = tmp_path / "k.dat"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(53, 53))
    res = K.gram(KERN, X, block_size=8, out=out, progress=True, mesh=mesh)
    assert res is out
    assert_close(np.load(path, mmap_mode="r"), DENSE_XX, 1e-12)
    out2 = np.zeros((53, 29))
    K.gram(KERN, X, Y, block_size=(16, 8), out=out2)
    assert_close(out2, DENSE_XY, 1e-12)


def test_diag():
    for kern in [KERN, functools.partial(K.arccos, order=2), K.linear]:
        assert_close(K.kernel_diag(kern, X, block_size=10), np.diag(np.asarray(kern(X))), 1e-12)


def test_conformance(mesh):
    x, y, v = jnp.asarray(X[:12]), jnp.asarray(Y[:10]), jnp.asarray(RNG.normal(size=10))
    check_op(lambda a, b: K.gram(KERN, a, b, block_size=5), x, y, grad_argnums=(0, 1),
             vmap_argnums=(0,), mesh=mesh, expected_dtype=np.float64)
    check_op(lambda a, b, c: K.kernel_matvec(KERN, a, b, c, block_size=(4, 3)), x, y, v,
             grad_argnums=(0, 1, 2), vmap_argnums=(0, 2), mesh=mesh)
    check_op(lambda a: K.kernel_diag(KERN, a, block_size=5), x, mesh=mesh)


def test_float32_matvec_accumulates_accurately():
    x = RNG.normal(size=(3000, 3)).astype(np.float32)
    v = np.ones(3000, np.float32)
    out = K.kernel_matvec(K.rbf, x, None, v, block_size=(256, 512))
    assert out.dtype == np.float32
    ref = skk.RBF(1.0)(x.astype(np.float64)) @ v.astype(np.float64)
    assert_close(out, ref, 1e-5)


BAD = [
    (lambda: K.gram(KERN, X, Y[:, :2]), ValueError, "kjax.kernels.gram: `x2` must match `x1` in the feature dimension d (4)"),
    (lambda: K.gram(KERN, X[0]), ValueError, "kjax.kernels.gram: `x1` must have rank 2"),
    (lambda: K.gram("rbf", X), TypeError, "kjax.kernels.gram: `kernel` must be a callable"),
    (lambda: K.gram(KERN, X, block_size=0), ValueError, "`block_size` must be positive"),
    (lambda: K.gram(KERN, X, block_size=2.5), TypeError, "`block_size` must be a positive int"),
    (lambda: K.gram(KERN, X, out=np.zeros((3, 3))), ValueError, "`out` must have shape (53, 53)"),
    (lambda: K.gram(KERN, X, out=np.zeros((53, 53), np.float16)), ValueError, "`out` must have dtype float64"),
    (lambda: K.gram(KERN, X, mesh="cpu"), TypeError, "`mesh` must be a jax.sharding.Mesh"),
    (lambda: K.kernel_matvec(KERN, X, Y, np.ones(30)), ValueError, "kjax.kernels.kernel_matvec: `v` must have 29 rows to match x2"),
    (lambda: K.kernel_matvec(KERN, X, Y, np.ones((29, 2, 2))), ValueError, "`v` must have shape [n2] or [n2, k]"),
    (lambda: K.kernel_normal_matvec(KERN, X, Y, np.ones(30)), ValueError, "kjax.kernels.kernel_normal_matvec: `v` must have shape [29] or [29, k]"),
    (lambda: K.kernel_normal_matvec(KERN, X, Y, np.ones(29), np.ones(52)), ValueError, "`w` must have shape (53,)"),
    (lambda: K.kernel_normal_matvec(KERN, X, Y[:, :2], np.ones(29)), ValueError, "`centers` must match `x` in the feature dimension d"),
    (lambda: K.kernel_normal_matvec(KERN, X, Y, np.ones(29), block_size=0), ValueError, "`block_size` must be positive"),
    (lambda: K.kernel_diag(KERN, X[None]), ValueError, "kjax.kernels.kernel_diag: `x` must have rank 2"),
    (lambda: jax.jit(lambda a: K.gram(KERN, a, progress=True))(X), ValueError, "cannot be used under jit/vmap/grad"),
]


@pytest.mark.parametrize("call,exc,msg", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_input(call, exc, msg):
    with pytest.raises(exc) as info:
        call()
    assert msg in str(info.value)


def test_mesh_axis_errors():
    m2 = jax.make_mesh((2, 4), ("a", "b"))
    with pytest.raises(ValueError, match="`mesh_axis` must name one of"):
        K.gram(KERN, X, mesh=m2)
    with pytest.raises(ValueError, match="`mesh_axis` must be one of the mesh's axis names"):
        K.gram(KERN, X, mesh=m2, mesh_axis="c")
    assert_close(K.gram(KERN, X, mesh=m2, mesh_axis="b", block_size=8), DENSE_XX, 1e-12)

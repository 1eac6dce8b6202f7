import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax import attention as A
from tests.conformance import assert_close, check_op


def _xy(n=3, d=4, scale=0.5, seed=0):
    x, y = np.random.default_rng(seed).normal(size=(2, n, d)) * scale
    return jnp.asarray(x), jnp.asarray(y)


@pytest.mark.parametrize("kind", ["iid", "orthogonal", "simplex"])
def test_favor_positive_estimates_exp_dot(kind):
    x, y = _xy()
    w = A.random_projection(jax.random.key(1), 8000, 4, kind=kind, dtype=np.float64)
    est = A.favor_positive(x, w, stabilize=None) @ A.favor_positive(y, w, stabilize=None).T
    assert_close(est, np.exp(np.asarray(x) @ np.asarray(y).T), 0.08, "FAVOR+ estimate")
    assert bool(jnp.all(A.favor_positive(x, w) > 0))


def test_favor_positive_stabilisers_only_rescale():
    x, y = _xy(d=3, scale=2.0)
    w = A.random_projection(jax.random.key(2), 7, 3, dtype=np.float64)
    plain = np.asarray(A.favor_positive(x, w, stabilize=None))
    np.testing.assert_allclose(A.favor_positive(x, w), plain, rtol=1e-12)  # small w: c = 0
    row = np.asarray(A.favor_positive(x, w, stabilize="row"))
    ratio = row / plain
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-10)  # per-row factor
    assert np.allclose(row.max(-1), 1 / np.sqrt(7))


def test_favor_positive_weight_stabiliser_prevents_overflow():
    # large projections in float32: unstabilised features overflow, the weight stabiliser rescales
    # every feature by the same constant exp(-c), c = max|w|^2/2 - log(float32 max)/2
    w = np.asarray(A.random_projection(jax.random.key(0), 6, 3, dtype=np.float64)) * 8
    top = w[np.argmax(np.sum(w * w, -1))]
    x = np.stack([top, 0.99 * top, top + 0.1])
    expo = x @ w.T - 0.5 * np.sum(x * x, -1, keepdims=True)
    c = 0.5 * np.max(np.sum(w * w, -1)) - 0.5 * np.log(np.finfo(np.float32).max)
    assert c > 0
    x32, w32 = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
    assert not np.all(np.isfinite(A.favor_positive(x32, w32, stabilize=None)))
    phi = A.favor_positive(x32, w32)
    assert bool(jnp.all(jnp.isfinite(phi)))
    assert_close(phi, np.exp(expo - c) / np.sqrt(6), 1e-4, "stabilised")


def test_favor_positive_non_finite_rows_documented():
    x = jnp.array([[0.1, 0.2], [jnp.inf, 0.0], [jnp.nan, 1.0], [0.3, -0.1]])
    w = A.random_projection(jax.random.key(0), 5, 2, dtype=np.float64)
    phi = np.asarray(A.favor_positive(x, w))
    assert np.all(np.isnan(phi[1:3])) and np.all(np.isfinite(phi[[0, 3]]))


def test_favor_trig_estimates_exp_dot():
    x, y = _xy(scale=0.4)
    w = A.random_projection(jax.random.key(3), 8000, 4, kind="orthogonal", dtype=np.float64)
    est = A.favor_trig(x, w) @ A.favor_trig(y, w).T
    assert_close(est, np.exp(np.asarray(x) @ np.asarray(y).T), 0.08, "trig estimate")


def test_simple_maps_closed_forms():
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(A.elu_plus_one(x), np.where(x > 0, x + 1, np.exp(x)), rtol=1e-12)
    np.testing.assert_allclose(A.relu_features(x), np.maximum(x, 0), rtol=0)


def test_dpfp_matches_loop():
    x = np.random.default_rng(1).normal(size=(4, 3))
    r = np.maximum(np.concatenate([x, -x], -1), 0)
    want = []
    for i in range(1, 3):
        for j in range(6):
            want.append(r[:, j] * r[:, (j - i) % 6])
    want = np.stack(want, -1)
    np.testing.assert_allclose(A.dpfp(x, nu=2), want, rtol=1e-12)


def test_taylor2_kernel():
    x, y = _xy(d=5)
    xy = np.asarray(x) @ np.asarray(y).T
    np.testing.assert_allclose(A.taylor2(x) @ A.taylor2(y).T, 1 + xy + xy**2 / 2, rtol=1e-12)


def test_hedgehog_matches_numpy():
    p = A.init_hedgehog(jax.random.key(0), 4, 6, dtype=np.float64)
    x, _ = _xy()
    assert isinstance(p, A.HedgehogParams)
    z = np.asarray(x) @ np.asarray(p.w) + np.asarray(p.b)
    sm = lambda a: np.exp(a - a.max(-1, keepdims=True)) / np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)
    np.testing.assert_allclose(A.hedgehog(p, x), np.concatenate([sm(z), sm(-z)], -1), rtol=1e-12)


def test_learned_spectral_kernel_and_gradients():
    p = A.init_learned_spectral(jax.random.key(0), 4, 8, lengthscale=2.0, dtype=np.float64)
    x, y = _xy()
    assert isinstance(p, A.LearnedSpectralParams)
    w = np.exp(np.asarray(p.log_sigma)) * np.asarray(p.noise)
    diff = np.asarray(x)[:, None, :] - np.asarray(y)[None, :, :]
    want = np.mean(np.cos(diff @ w.T), -1)
    np.testing.assert_allclose(A.learned_spectral(p, x) @ A.learned_spectral(p, y).T, want, rtol=1e-12)
    g = jax.grad(lambda p: jnp.sum(A.learned_spectral(p, x) @ A.learned_spectral(p, y).T))(p)
    assert isinstance(g, A.LearnedSpectralParams)
    assert float(jnp.abs(g.noise).max()) == 0.0 and float(jnp.abs(g.mu).max()) > 0


def test_init_keys_redraw():
    a = A.init_learned_spectral(jax.random.key(0), 3, 4).noise
    b = A.init_learned_spectral(jax.random.key(1), 3, 4).noise
    assert not np.allclose(a, b)


def test_dtype_preserved_float32():
    x = jnp.ones((2, 4), jnp.float32)
    w = A.random_projection(jax.random.key(0), 8, 4, dtype=np.float32)
    for phi in (A.favor_positive(x, w), A.favor_trig(x, w), A.elu_plus_one(x), A.dpfp(x), A.taylor2(x),
                A.hedgehog(A.init_hedgehog(jax.random.key(0), 4, dtype=np.float32), x)):
        assert phi.dtype == jnp.float32


MAPS = {
    "favor_positive": lambda x, w: A.favor_positive(x, w),
    "favor_trig": lambda x, w: A.favor_trig(x, w),
    "elu_plus_one": lambda x, w: A.elu_plus_one(x),
    "relu": lambda x, w: A.relu_features(x + 0.05),
    "dpfp": lambda x, w: A.dpfp(x + 0.05, nu=2),
    "taylor2": lambda x, w: A.taylor2(x),
    "hedgehog": lambda x, w: A.hedgehog(A.HedgehogParams(w.T, jnp.zeros(w.shape[0], w.dtype)), x),
}


def test_conformance(mesh):
    # every map in one op (one compilation): jit, no retrace, vmap, grad vs FD, shard_map
    x = jax.random.normal(jax.random.key(0), (2, 3, 4), jnp.float64) * 0.5
    w = A.random_projection(jax.random.key(1), 6, 4, dtype=np.float64)
    all_maps = lambda x, w: jnp.concatenate([MAPS[n](x, w) for n in sorted(MAPS)], -1)
    check_op(jax.jit(all_maps), x, w, grad_argnums=(0,), mesh=mesh)


def test_bad_input():
    w = jnp.ones((5, 3))
    with pytest.raises(ValueError, match=r"kjax.attention.favor_positive: `w` must have shape \(M, 4\)"):
        A.favor_positive(jnp.ones((2, 4)), w)
    with pytest.raises(ValueError, match="`stabilize` must be one of"):
        A.favor_positive(jnp.ones((2, 3)), w, stabilize="max")
    with pytest.raises(ValueError, match="kjax.attention.dpfp: `nu` must be >= 1; got 0"):
        A.dpfp(jnp.ones(3), nu=0)
    with pytest.raises(ValueError, match=r"hedgehog: `params.w` must have shape \(3, M\)"):
        A.hedgehog(A.init_hedgehog(jax.random.key(0), 4), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="must be a real array"):
        A.elu_plus_one(jnp.ones(3, jnp.complex64))


def test_partial_is_a_feature_map():
    fmap = functools.partial(A.dpfp, nu=3)
    assert fmap(jnp.ones((2, 4))).shape == (2, 24)


def test_learned_parameters_are_namedtuples_and_dicts_are_deprecated():
    x, _ = _xy()
    for init, fmap, cls in ((A.init_hedgehog, A.hedgehog, A.HedgehogParams),
                            (A.init_learned_spectral, A.learned_spectral, A.LearnedSpectralParams)):
        p = init(jax.random.key(0), 4, 6, dtype=np.float64)
        assert type(p) is cls and jax.tree.structure(p) == jax.tree.structure(cls(*p))
        want = fmap(p, x)
        with pytest.warns(DeprecationWarning, match=f"`params` as a dict is deprecated; pass kjax.attention.{cls.__name__}"):
            got = fmap(p._asdict(), x)
        np.testing.assert_array_equal(got, want)
        with pytest.warns(DeprecationWarning, match=r"\['mu'\]|\['w'\]"):
            first = p[p._fields[0]]  # the old dict access still works, with a warning
        np.testing.assert_array_equal(first, p[0])
        with pytest.warns(DeprecationWarning, match="kernel_attention: `feature_params` as a dict is deprecated"):
            q = x.reshape(1, 3, 1, 4)
            out = A.kernel_attention(q, q, q, feature_map=fmap.__name__, feature_params=p._asdict())
        np.testing.assert_array_equal(out, A.kernel_attention(q, q, q, feature_map=fmap.__name__, feature_params=p))
        with pytest.raises(TypeError, match=f"`params` must be a {cls.__name__}"):
            fmap(tuple(p), x)
        with pytest.raises(TypeError, match=r"`params` must be a .*got a dict with keys \['w'\]"):
            fmap({"w": p[0]}, x)


BAD = [
    (lambda: A.random_projection(jax.random.key(0), 4, 3, dtype=jnp.int32), TypeError,
     "kjax.attention.random_projection: `dtype` must be a real floating dtype (e.g. jnp.float32); got int32"),
    (lambda: A.random_projection(0, 4, 3), TypeError, "random_projection: `key` must be a PRNG key"),
    (lambda: A.random_projection(jax.random.key(0), 0, 3), ValueError, "`num_features` must be >= 1; got 0"),
    (lambda: A.init_hedgehog(jax.random.key(0), 3, dtype=jnp.int32), TypeError,
     "kjax.attention.init_hedgehog: `dtype` must be a real floating dtype"),
    (lambda: A.init_hedgehog(jax.random.key(0), 3, 0), ValueError, "init_hedgehog: `num_features` must be >= 1"),
    (lambda: A.init_hedgehog(3, 4), TypeError, "kjax.attention.init_hedgehog: `key` must be a PRNG key"),
    (lambda: A.init_learned_spectral(jax.random.key(0), 3, 4, dtype="int8"), TypeError,
     "init_learned_spectral: `dtype` must be a real floating dtype"),
    (lambda: A.init_learned_spectral(jax.random.key(0), 3, 4, lengthscale=-1.0), ValueError,
     "kjax.attention.init_learned_spectral: `lengthscale` must be > 0; got -1.0"),
    (lambda: A.init_learned_spectral(jax.random.key(0), 3, 0), ValueError, "`num_features` must be >= 1"),
    (lambda: A.favor_positive(jnp.ones((2, 3)), jnp.ones((0, 3))), ValueError,
     "kjax.attention.favor_positive: `w` must have M >= 1 rows"),
    (lambda: A.favor_trig(jnp.ones((2, 0)), jnp.ones((4, 0))), ValueError,
     "kjax.attention.favor_trig: `x` must have D >= 1 in its last axis [..., D]; got shape (2, 0)"),
    (lambda: A.elu_plus_one(jnp.ones((2, 0))), ValueError, "elu_plus_one: `x` must have D >= 1"),
    (lambda: A.taylor2(jnp.ones((2, 0))), ValueError, "taylor2: `x` must have D >= 1"),
    (lambda: A.learned_spectral(A.init_learned_spectral(jax.random.key(0), 3, 4), jnp.ones((2, 4))),
     ValueError, "learned_spectral: `params.mu` must have shape (M, 4)"),
]


@pytest.mark.parametrize("call,exc,msg", BAD, ids=[b[2][:40] for b in BAD])
def test_out_of_domain_inputs_named(call, exc, msg):
    with pytest.raises(exc) as info:
        call()
    assert msg in str(info.value), str(info.value)

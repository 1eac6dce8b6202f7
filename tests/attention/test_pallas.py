"""The Pallas kernel in interpret mode on CPU (on a GPU the same class would run compiled)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax import attention as A
from kjax.attention import _pallas
from tests.attention import oracle
from tests.conformance import assert_close

# (B, T, H, D, Dv, chunk): small, ragged (T not a multiple of the chunk), one chunk, chunk of 1
SHAPES = [(1, 8, 1, 4, 4, 4), (2, 7, 2, 3, 5, 4), (1, 5, 1, 2, 3, 16), (1, 3, 2, 2, 2, 1)]


def _inputs(shape, seed=0):
    b, t, h, d, dv, _ = shape
    kq, kk, kv, kw = jax.random.split(jax.random.key(seed), 4)
    q = jax.random.normal(kq, (b, t, h, d), jnp.float64) * 0.7
    k = jax.random.normal(kk, (b, t, h, d), jnp.float64) * 0.7
    v = jax.random.normal(kv, (b, t, h, dv), jnp.float64)
    w = A.random_projection(kw, 6, d, dtype=np.float64)
    return q, k, v, w


class TestPallasInterpret:
    interpret = True

    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize("feature_map", ["elu_plus_one", "favor_positive"])
    def test_forward_matches_reference(self, shape, feature_map):
        q, k, v, w = _inputs(shape)
        c = shape[-1]
        out = _pallas.causal_linear_attention(q, k, v, w, feature_map=feature_map, chunk_size=c,
                                              interpret=self.interpret)
        ref = A.kernel_attention(q, k, v, feature_map=feature_map, feature_params=w, chunk_size=c,
                                 implementation="xla")
        assert_close(out, ref, 1e-12, "pallas forward")
        if feature_map == "elu_plus_one":  # and against the NumPy oracle directly
            assert_close(out, oracle.linear_attention(A.elu_plus_one(q), A.elu_plus_one(k), v), 1e-12, "oracle")

    @pytest.mark.parametrize(("shape", "feature_map", "normalize"), [
        (SHAPES[0], "identity", False), (SHAPES[1], "elu_plus_one", True), (SHAPES[1], "favor_positive", True),
        (SHAPES[3], "favor_positive", False)])
    def test_vjp_matches_reference(self, shape, feature_map, normalize):
        q, k, v, w = _inputs(shape, 1)
        if feature_map == "identity":
            q, k = A.elu_plus_one(q), A.elu_plus_one(k)
        c = shape[-1]
        pallas = lambda q, k, v, w: _pallas.causal_linear_attention(
            q, k, v, w, feature_map=feature_map, normalize=normalize, chunk_size=c, interpret=self.interpret)
        fmap = {"identity": lambda x: x, "elu_plus_one": A.elu_plus_one}.get(feature_map, feature_map)
        ref = lambda q, k, v, w: A.kernel_attention(q, k, v, feature_map=fmap, feature_params=w,
                                                    normalize=normalize, chunk_size=c)
        ct = jax.random.normal(jax.random.key(5), v.shape, v.dtype)
        vjp_p = jax.jit(lambda *a: jax.vjp(pallas, *a)[1](ct))
        vjp_r = jax.jit(lambda *a: jax.vjp(ref, *a)[1](ct))
        argnames = ("q", "k", "v", "w") if feature_map == "favor_positive" else ("q", "k", "v")
        for name, gp, gr in zip(argnames, vjp_p(q, k, v, w), vjp_r(q, k, v, w), strict=False):
            assert_close(gp, gr, 1e-11, f"d{name}")

    def test_dispatch_and_float32(self):
        q, k, v, w = _inputs(SHAPES[1], 2)
        q, k, v, w = (x.astype(jnp.float32) for x in (q, k, v, w))
        f = functools.partial(A.kernel_attention, feature_map="favor_positive", feature_params=w, chunk_size=4)
        out = jax.jit(lambda q, k, v: f(q, k, v, implementation="pallas_interpret"))(q, k, v)
        assert out.dtype == jnp.float32
        assert_close(out, f(q, k, v), 1e-5, "dispatch, float32")
        # linear_attention on features and a callable map go through the identity kernel
        pq, pk = A.elu_plus_one(q), A.elu_plus_one(k)
        out = A.linear_attention(pq, pk, v, chunk_size=4, implementation="pallas_interpret")
        assert_close(out, A.linear_attention(pq, pk, v, chunk_size=4), 1e-5, "identity kernel")
        out = A.kernel_attention(q, k, v, feature_map=A.elu_plus_one, implementation="pallas_interpret")
        assert_close(out, A.linear_attention(pq, pk, v), 1e-5, "callable map")

"""The Pallas kernels of causal linear attention, run in interpret mode on CPU against the reference.

``pallas_interpret`` runs the Triton kernels (``_pallas_triton``) with ``interpret=True``;
``pallas_tpu_interpret`` runs the TPU kernels (``_pallas_tpu``) under ``pltpu.InterpretParams()``
(TPU semantics: memory spaces, DMAs, the sequential chunk axis with its VMEM scratch state). Both
go through the public functions and the dispatcher. Forward and gradients (``q, k, v``, the FAVOR+
projection ``w`` and the initial state) are compared in float64 with the XLA path, itself tested
against the NumPy oracle, and the forward also with the oracle directly.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax import attention as A
from kjax._src import dispatch
from tests.attention import oracle
from tests.conformance import assert_close

IMPLS = ["pallas_interpret", "pallas_tpu_interpret"]
# (B, T, H, D, Dv): ragged (T not a multiple of the chunk), several chunks of the TPU kernel (128)
SHAPES = [(2, 37, 2, 5, 6), (1, 300, 1, 3, 20)]
RNG = np.random.default_rng(0)


def _inputs(shape, m=7):
    b, t, h, d, dv = shape
    q, k = (jnp.asarray(RNG.normal(size=(b, t, h, d)) * 0.7) for _ in range(2))
    v = jnp.asarray(RNG.normal(size=(b, t, h, dv)))
    w = A.random_projection(jax.random.key(1), m, d, dtype=np.float64)
    return q, k, v, w


def _segments(b, t):
    ids = np.zeros((b, t), np.int32)
    for i in range(b):
        cuts = np.sort(RNG.choice(np.arange(1, t), size=3, replace=False))
        for c in cuts:
            ids[i, c:] += 1
    ids[:, -1] = ids[:, -2]  # the last segment spans at least two tokens
    return jnp.asarray(ids)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("feature_map", ["elu_plus_one", "relu", "favor_positive"])
def test_forward_matches_reference_and_oracle(impl, shape, feature_map):
    q, k, v, w = _inputs(shape)
    f = functools.partial(A.kernel_attention, feature_map=feature_map, feature_params=w, chunk_size=16)
    out = f(q, k, v, implementation=impl)
    assert_close(out, f(q, k, v, implementation="xla"), 1e-12, "pallas forward")
    phi = {"elu_plus_one": A.elu_plus_one, "relu": A.relu_features}.get(feature_map)
    if phi is not None:
        assert_close(out, oracle.linear_attention(phi(q), phi(k), v), 1e-12, "oracle")


def _loss(q, k, v, w, kv, ks, *, impl, feature_map, normalize, segments, with_state):
    state = A.LinearAttentionState(kv, ks) if with_state else None
    ct = jnp.cos(jnp.arange(v.size, dtype=v.dtype)).reshape(v.shape)
    o, s = A.kernel_attention(q, k, v, feature_map=feature_map, feature_params=w, normalize=normalize,
                              segment_ids=segments, initial_state=state, return_state=True, chunk_size=16,
                              implementation=impl)
    return jnp.sum(o * ct) + jnp.sum(jnp.sin(s.kv)) + jnp.sum(s.k_sum ** 2)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("shape", "feature_map", "normalize", "segments", "with_state"), [
    (SHAPES[0], "favor_positive", True, False, True),
    (SHAPES[0], "elu_plus_one", False, True, False),
    (SHAPES[1], "favor_positive", True, True, True),
])
def test_gradients_match_reference(impl, shape, feature_map, normalize, segments, with_state):
    q, k, v, w = _inputs(shape)
    b, t, h, _, dv = shape
    m = w.shape[0] if feature_map == "favor_positive" else shape[3]
    kv = jnp.asarray(RNG.normal(size=(b, h, m, dv)))
    ks = jnp.asarray(RNG.uniform(0.5, 1.0, size=(b, h, m)))
    seg = _segments(b, t) if segments else None
    kw = dict(feature_map=feature_map, normalize=normalize, segments=seg, with_state=with_state)
    grad = lambda impl: jax.jit(jax.value_and_grad(functools.partial(_loss, impl=impl, **kw),
                                                   argnums=(0, 1, 2, 3, 4, 5)))(q, k, v, w, kv, ks)
    (val_p, g_p), (val_r, g_r) = grad(impl), grad("xla")
    assert_close(val_p, val_r, 1e-12, "value")
    for name, a, r in zip(("q", "k", "v", "w", "kv", "k_sum"), g_p, g_r, strict=True):
        if name == "w" and feature_map != "favor_positive":
            continue
        assert_close(a, r, 1e-11, f"d{name}")


@pytest.mark.parametrize("impl", IMPLS)
def test_segments_and_states_match_oracle(impl):
    # packed sequences start from zero state; the initial state belongs to the first and the
    # returned state to the last; linear_attention (identity map) on features
    shape = SHAPES[1]
    q, k, v, _ = _inputs(shape)
    pq, pk = A.elu_plus_one(q), A.elu_plus_one(k)
    b, t, h, m, dv = shape
    seg = _segments(b, t)
    s0 = A.LinearAttentionState(jnp.asarray(RNG.normal(size=(b, h, m, dv))),
                                jnp.asarray(RNG.uniform(0.5, 1, size=(b, h, m))))
    out, s = A.linear_attention(pq, pk, v, segment_ids=seg, initial_state=s0, return_state=True,
                                implementation=impl)
    want = oracle.linear_attention(pq, pk, v, segment_ids=seg, s0=s0.kv, z0=s0.k_sum)
    assert_close(out, want, 1e-12, "packed outputs")
    _, s_ref = A.linear_attention(pq, pk, v, segment_ids=seg, initial_state=s0, return_state=True,
                                  implementation="xla")
    assert_close(s.kv, s_ref.kv, 1e-12, "final state")
    assert_close(s.k_sum, s_ref.k_sum, 1e-12, "final normaliser")


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_inputs_accumulate_in_float32(impl):
    q, k, v, w = _inputs(SHAPES[0])
    f = functools.partial(A.kernel_attention, feature_map="favor_positive", chunk_size=16)
    lo = [x.astype(jnp.bfloat16) for x in (q, k, v, w)]
    out = f(*lo[:3], feature_params=lo[3], implementation=impl)
    assert out.dtype == jnp.bfloat16
    want = f(*(x.astype(jnp.float32) for x in lo[:3]), feature_params=lo[3].astype(jnp.float32))
    assert_close(out, want, 2e-2, "bf16 vs float32 XLA path")


def test_dispatch_per_platform():
    # the default is chosen per platform: the kernels on cuda and tpu, XLA on CPU (this machine)
    q, k, v, w = _inputs(SHAPES[0])
    config = dict(causal=True, feature_map="elu_plus_one", dtype=jnp.dtype(jnp.float32), d=5, m=5, dv=6,
                  t=37, segments=False)
    sel = dispatch.dispatch("f", None, A._attention.IMPLEMENTATIONS, config)
    assert sel.names() == {"cpu": "xla", "cuda": "pallas", "rocm": "xla", "tpu": "pallas"}
    # an unsupported configuration falls through to XLA everywhere, with the reason recorded
    sel = dispatch.dispatch("f", None, A._attention.IMPLEMENTATIONS, {**config, "causal": False})
    assert set(sel.names().values()) == {"xla"}
    assert ("pallas", "cuda", "`causal=False` is served by the XLA path") in sel.skipped
    sel = dispatch.dispatch("f", None, A._attention.IMPLEMENTATIONS, {**config, "dtype": jnp.dtype("float64")})
    assert sel.names()["cuda"] == "xla" and "float64" in dict(
        ((n, p), r) for n, p, r in sel.skipped)[("pallas", "cuda")]

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax.ssm import fftconv
from kjax.ssm._reference import fftconv_reference
from kjax.ssm._xla import fftconv_xla
from tests.conformance import assert_close, check_op, tol
from tests.ssm._oracles import direct_conv

RNG = np.random.default_rng(0)
SHAPES = [(2, 1, 3, 1), (1, 13, 4, 5), (3, 32, 2, 32), (2, 35, 5, 17)]


def _data(B, L, D, lk, mode, dtype=np.float64):
    u = RNG.normal(size=(B, L, D)).astype(dtype)
    kshape = (2, lk, D) if mode == "bidirectional" else (lk, D)
    k = RNG.normal(size=kshape).astype(dtype)
    return u, k


def _check_against_direct(impl, mode, B, L, D, lk):
    impl = jax.jit(impl, static_argnames="mode")
    u, k = _data(B, L, D, lk, mode)
    gate = RNG.normal(size=(B, L, D))
    skip = RNG.normal(size=(D,))
    ref = direct_conv(u, k, mode)
    assert_close(impl(jnp.asarray(u), jnp.asarray(k), mode=mode), ref, 1e-12, f"{mode}")
    ref_gs = gate * (ref + skip * u)
    got = impl(jnp.asarray(u), jnp.asarray(k), mode=mode, gate=jnp.asarray(gate), skip=jnp.asarray(skip))
    assert_close(got, ref_gs, 1e-12, f"{mode} gate+skip")


@pytest.mark.parametrize("mode", ["causal", "circular", "bidirectional"])
@pytest.mark.parametrize("B,L,D,lk", SHAPES)
def test_reference_equals_numpy_direct_conv(mode, B, L, D, lk):
    _check_against_direct(fftconv_reference, mode, B, L, D, lk)


@pytest.mark.parametrize("mode", ["causal", "circular", "bidirectional"])
@pytest.mark.parametrize("B,L,D,lk", SHAPES)
def test_xla_path_equals_numpy_direct_conv(mode, B, L, D, lk):
    _check_against_direct(fftconv_xla, mode, B, L, D, lk)


@pytest.mark.parametrize("mode", ["causal", "bidirectional"])
def test_public_matches_reference_float32(mode):
    u, k = _data(2, 77, 6, 40, mode, np.float32)
    got = fftconv(u, k, mode=mode)
    assert got.dtype == jnp.float32
    assert_close(got, fftconv_reference(jnp.asarray(u), jnp.asarray(k), mode=mode), tol(np.float32, 10))


def test_impulse_response_is_the_filter():
    L, D = 19, 3
    u = np.zeros((1, L, D))
    u[0, 0] = 1.0
    k = RNG.normal(size=(L, D))
    np.testing.assert_allclose(fftconv(u, k)[0], k, atol=1e-12)


def test_causality():
    u, k = _data(1, 40, 2, 40, "causal")
    u2 = u.copy()
    u2[:, 25:] = RNG.normal(size=u2[:, 25:].shape)
    y1, y2 = fftconv(u, k), fftconv(u2, k)
    np.testing.assert_allclose(y1[:, :25], y2[:, :25], atol=1e-12)
    assert np.abs(np.asarray(y1[:, 25:] - y2[:, 25:])).max() > 1e-3


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_in_out(dtype):
    u, k = _data(2, 50, 4, 50, "causal", np.float32)
    got = fftconv(jnp.asarray(u, dtype), jnp.asarray(k, dtype))
    assert got.dtype == dtype
    ref = direct_conv(np.asarray(jnp.asarray(u, dtype), np.float64), np.asarray(jnp.asarray(k, dtype), np.float64),
                      "causal")
    assert_close(got, ref, tol(dtype))


def test_bf16_large_magnitude_does_not_overflow():
    u, k = _data(1, 64, 4, 64, "causal", np.float32)
    ub = jnp.asarray(u * 1e35, jnp.bfloat16)  # near bf16's (= float32's) range: 3.4e38
    kb = jnp.asarray(k, jnp.bfloat16)
    got = fftconv(ub, kb, gate=jnp.ones_like(ub), skip=jnp.ones((4,), jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(got)))
    ref = direct_conv(np.asarray(ub, np.float64), np.asarray(kb, np.float64), "causal") + np.asarray(ub, np.float64)
    assert_close(got, ref, tol(jnp.bfloat16))


def test_conformance_causal_gated(mesh):
    u, k = _data(2, 24, 3, 9, "causal")
    gate = jnp.asarray(RNG.normal(size=u.shape))
    skip = jnp.asarray(RNG.normal(size=(3,)))
    fn = lambda u, k, gate, skip: fftconv(u, k, gate=gate, skip=skip)
    check_op(fn, jnp.asarray(u), jnp.asarray(k), gate, skip, grad_argnums=(0, 1, 3),
             vmap_argnums=(0, 1), expected_dtype=jnp.float64, mesh=mesh)


@pytest.mark.parametrize("mode", ["circular", "bidirectional"])
def test_conformance_modes(mode, mesh):
    u, k = _data(2, 16, 3, 16 if mode == "circular" else 5, mode)
    fn = lambda u, k: fftconv(u, k, mode=mode)
    check_op(fn, jnp.asarray(u), jnp.asarray(k), grad_argnums=(1,), vmap_argnums=(0,),
             expected_dtype=jnp.float64, mesh=mesh)


def test_grad_matches_numpy_adjoint():
    """d/du <w, k * u> is the correlation of w with k: checked against the direct formula."""
    u, k = _data(1, 30, 2, 12, "causal")
    w = RNG.normal(size=u.shape)
    gu, gk = jax.grad(lambda u, k: jnp.sum(jnp.asarray(w) * fftconv(u, k)), argnums=(0, 1))(
        jnp.asarray(u), jnp.asarray(k))
    L = 30
    ref_gu = np.zeros_like(u)
    ref_gk = np.zeros_like(k)
    for s in range(12):
        ref_gu[:, : L - s] += k[s] * w[:, s:]
        ref_gk[s] = np.sum(w[:, s:] * u[:, : L - s], axis=(0, 1))
    assert_close(gu, ref_gu, 1e-12, "grad u")
    assert_close(gk, ref_gk, 1e-12, "grad k")


def test_implementation_dispatch():
    """"xla" and lists run here; unknown names and wrong types raise. (The Pallas implementations and
    their errors are tested in test_pallas.py.)"""
    u, k = _data(1, 8, 2, 8, "causal")
    ref = fftconv(u, k)
    assert_close(fftconv(u, k, implementation="xla"), ref, 1e-12)
    assert_close(jax.jit(lambda u, k: fftconv(u, k, implementation=["pallas", "xla"]))(u, k), ref, 1e-12)
    with pytest.raises(ValueError, match=r"kjax.ssm.fftconv: `implementation` must be None, one of \('pallas', "
                                         r"'xla', 'pallas_interpret', 'pallas_tpu_interpret'\) or a list"):
        fftconv(u, k, implementation="cuda")
    with pytest.raises(ValueError, match=r"kjax.ssm.fftconv: `implementation` entries must be in"):
        fftconv(u, k, implementation=["xla", "triton"])


# ------------------------------------------------------------------------------------ bad input

def _err(exc, pattern, *args, **kw):
    with pytest.raises(exc, match=pattern):
        fftconv(*args, **kw)


def test_error_filter_longer_than_sequence():
    _err(ValueError, r"kjax.ssm.fftconv: `k` must be no longer than the sequence \(L_k <= L=8\) in causal "
         r"mode.*got L_k=9", np.ones((1, 8, 2)), np.ones((9, 2)))
    _err(ValueError, r"`k` must be no longer.*bidirectional", np.ones((1, 8, 2)), np.ones((2, 9, 2)),
         mode="bidirectional")


def test_error_channel_mismatch():
    _err(ValueError, r"kjax.ssm.fftconv: `k` must have D=3 channels.*got shape \(8, 2\)",
         np.ones((1, 8, 3)), np.ones((8, 2)))


def test_error_complex_inputs():
    _err(TypeError, r"kjax.ssm.fftconv: `u` must be a real array; got dtype complex64", np.ones((1, 8, 2), np.complex64),
         np.ones((8, 2)))
    _err(TypeError, r"kjax.ssm.fftconv: `k` must be a real array; got dtype complex", np.ones((1, 8, 2)),
         np.ones((8, 2), np.complex128))
    _err(TypeError, r"`gate` must be a real.*complex", np.ones((1, 8, 2)), np.ones((8, 2)),
         gate=np.ones((1, 8, 2), np.complex128))


def test_integer_inputs_are_promoted():
    """Regression: fftconv rejected integers while the package dtype policy (and s4d_step) promote
    them; now int / bool ``u``, ``k``, ``gate``, ``skip`` are promoted to the default float dtype."""
    u = RNG.integers(-3, 4, size=(2, 9, 3))
    k = RNG.integers(-2, 3, size=(4, 3))
    got = fftconv(u.astype(np.int32), k.astype(np.int64), gate=np.ones((2, 9, 3), bool), skip=np.ones(3, np.int8))
    assert got.dtype == jnp.float64  # x64 is on in the tests: the default float
    assert_close(got, direct_conv(u, k, "causal") + u, 1e-12)


def test_empty_batch_or_channels_give_empty_output():
    """B = 0 (an empty batch) and D = 0 are well defined: an empty output, no transform run."""
    assert fftconv(np.ones((0, 8, 2)), np.ones((8, 2))).shape == (0, 8, 2)
    assert fftconv(np.ones((2, 8, 0)), np.ones((3, 0)), mode="circular").shape == (2, 8, 0)
    g = jax.grad(lambda k: jnp.sum(fftconv(jnp.ones((0, 8, 2)), k)))(jnp.ones((8, 2)))
    assert g.shape == (8, 2) and float(jnp.abs(g).sum()) == 0.0


def test_error_zero_length():
    _err(ValueError, r"kjax.ssm.fftconv: `u` must have a sequence length L >= 1.*got shape \(1, 0, 2\)",
         np.ones((1, 0, 2)), np.ones((1, 2)))


def test_error_unknown_mode():
    _err(ValueError, r"kjax.ssm.fftconv: `mode` must be one of \('causal', 'circular', 'bidirectional'\); "
         r"got 'acausal'", np.ones((1, 8, 2)), np.ones((8, 2)), mode="acausal")


def test_error_shapes():
    _err(ValueError, r"`u` must have rank 3 \[B, L, D\]", np.ones((8, 2)), np.ones((8, 2)))
    _err(ValueError, r"`k` must have shape \(2, L_k, D\) in bidirectional", np.ones((1, 8, 2)), np.ones((8, 2)),
         mode="bidirectional")
    _err(ValueError, r"`k` must have rank 2 \[L_k, D\] in causal", np.ones((1, 8, 2)), np.ones((2, 8, 2)))
    _err(ValueError, r"`gate` must have the shape of u", np.ones((1, 8, 2)), np.ones((8, 2)), gate=np.ones((8, 2)))
    _err(ValueError, r"`skip` must have shape \(2,\)", np.ones((1, 8, 2)), np.ones((8, 2)), skip=np.ones((3,)))

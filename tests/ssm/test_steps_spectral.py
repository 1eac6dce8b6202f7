import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from kjax.ssm import (
    RTFParams,
    RTFState,
    S4DState,
    fftconv,
    init_rtf,
    init_s4d,
    rtf_filter,
    rtf_initial_state,
    rtf_step,
    s4d_filter,
    s4d_initial_state,
    s4d_step,
    spectral_conv,
)
from tests.conformance import assert_close, check_op

RNG = np.random.default_rng(2)


def _scan(step, params, state, u, **kw):
    def body(s, u_t):
        y, s = step(params, s, u_t, **kw)  # steps return (output, new_state)
        return s, y

    _, ys = jax.lax.scan(body, state, jnp.swapaxes(u, 0, 1))
    return jnp.swapaxes(ys, 0, 1)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_step_equals_fftconv(disc):
    B, L, D = 2, 50, 3
    p = init_s4d(jax.random.key(0), D, 8, init="inv")
    u = jnp.asarray(RNG.normal(size=(B, L, D)))
    ys = jax.jit(lambda u: _scan(s4d_step, p, s4d_initial_state(p, B), u, discretization=disc))(u)
    ref = fftconv(u, s4d_filter(p, L, discretization=disc))
    assert ys.dtype == jnp.float64
    assert_close(ys, ref, 1e-11, f"s4d step {disc}")


def _rtf_params(poles, rng):
    a = np.stack([np.poly(p).real[1:] for p in poles])
    D, N = a.shape
    return RTFParams(a=jnp.asarray(a), b=jnp.asarray(rng.normal(size=(D, N))), h0=jnp.asarray(rng.normal(size=D)))


def test_rtf_step_untruncated_equals_lfilter():
    """L=None: the exact IIR output of H(z), checked against scipy.signal.lfilter."""
    B, L, D = 2, 64, 2
    p = _rtf_params([[0.5, -0.3, 0.2 + 0.4j, 0.2 - 0.4j], [0.6, 0.1, -0.5, 0.3]], RNG)
    u = jnp.asarray(RNG.normal(size=(B, L, D)))
    ys = jax.jit(lambda u: _scan(rtf_step, p, rtf_initial_state(p, B, L=None), u))(u)
    ref = np.zeros((B, L, D))
    for d in range(D):
        den = np.concatenate([[1.0], np.asarray(p.a[d])])
        num = float(p.h0[d]) * den + np.concatenate([[0.0], np.asarray(p.b[d])])
        ref[:, :, d] = scipy.signal.lfilter(num, den, np.asarray(u[:, :, d]), axis=1)
    assert_close(ys, ref, 1e-12, "rtf step vs lfilter")


def test_rtf_step_equals_length_L_convolution():
    """Regression: rtf_step ran the untruncated IIR while rtf_filter(params, L) is the length-L
    (periodised) response, so streaming and convolution disagreed by the tail (here ~1e-1, poles
    at 0.95). From rtf_initial_state(..., L=L) the step runs Parnichkun et al.'s corrected
    realisation, C = b (I - A^L)^-1 (and d = h0 + C A^(L-1) e1): equal to ~1e-12."""
    B, L, D = 2, 24, 2
    p = _rtf_params([[0.95, -0.9, 0.5], [0.93 * np.exp(0.4j), 0.93 * np.exp(-0.4j), -0.2]], RNG)
    u = jnp.asarray(RNG.normal(size=(B, L, D)))
    state = rtf_initial_state(p, B, L=L)
    ys = jax.jit(lambda u: _scan(rtf_step, p, state, u))(u)
    conv = fftconv(u, rtf_filter(p, L))
    assert_close(ys, conv, 1e-12, "rtf step vs length-L fftconv")
    untruncated = _scan(rtf_step, p, rtf_initial_state(p, B, L=None), u)
    assert float(jnp.max(jnp.abs(untruncated - conv))) > 1e-3  # the tail this fixes is not negligible here
    # the corrected output map, against the paper's formula with NumPy matrix powers
    for d in range(D):
        N = p.a.shape[1]
        A = np.eye(N, k=-1)
        A[0] = -np.asarray(p.a[d])
        AL1 = np.linalg.matrix_power(A, L - 1)
        c = np.linalg.solve((np.eye(N) - A @ AL1).T, np.asarray(p.b[d]))  # C' = C (I - A^L), C' = b
        np.testing.assert_allclose(state.c[d], c, rtol=1e-10)
        np.testing.assert_allclose(state.d[d], float(p.h0[d]) + c @ AL1[:, 0], rtol=1e-10)


def test_step_conformance(mesh):
    p = init_s4d(jax.random.key(0), 3, 8)
    st = s4d_initial_state(p, 2)
    st = st._replace(x=st.x + 0.1j)
    u_t = jnp.asarray(RNG.normal(size=(2, 3)))
    check_op(lambda u_t: s4d_step(p, st, u_t)[0], u_t, grad_argnums=(0,), expected_dtype=jnp.float64, mesh=mesh)
    pr = RTFParams(a=jnp.full((3, 2), 0.1), b=jnp.ones((3, 2)), h0=jnp.ones(3))
    sr = rtf_initial_state(pr, 2, L=8)._replace(w=jnp.ones((2, 3, 2)))
    check_op(lambda u_t: rtf_step(pr, sr, u_t)[0], u_t, grad_argnums=(0,), expected_dtype=jnp.float64, mesh=mesh)


def test_steps_return_output_then_state():
    """The convention of every pillar: ``*_step -> (output, new_state)``."""
    p = init_s4d(jax.random.key(0), 3, 8)
    y, st = s4d_step(p, s4d_initial_state(p, 2), jnp.ones((2, 3)))
    assert y.shape == (2, 3) and isinstance(st, S4DState)
    pr = init_rtf(jax.random.key(0), 3, 2)
    y, st = rtf_step(pr, rtf_initial_state(pr, 2, L=8), jnp.ones((2, 3)))
    assert y.shape == (2, 3) and isinstance(st, RTFState)


def test_steps_promote_integer_input():
    """Regression: s4d_step with integer input returned integer zeros (y cast to u_t's int dtype)."""
    p = init_s4d(jax.random.key(0), 3, 8)
    y, _ = s4d_step(p, s4d_initial_state(p, 2), jnp.ones((2, 3), jnp.int32))
    y_f, _ = s4d_step(p, s4d_initial_state(p, 2), jnp.ones((2, 3)))
    assert jnp.issubdtype(y.dtype, jnp.floating)
    assert_close(y, y_f, 1e-12, "int vs float input")
    pr = init_rtf(jax.random.key(1), 3, 2)
    y, _ = rtf_step(pr, rtf_initial_state(pr, 2, L=8), np.ones((2, 3), np.int64))
    assert jnp.issubdtype(y.dtype, jnp.floating) and float(jnp.max(jnp.abs(y))) < 1e-12  # h0 = 0 at init, w = 0
    pr = pr._replace(h0=jnp.ones(3))
    y, _ = rtf_step(pr, rtf_initial_state(pr, 2, L=8), np.full((2, 3), 2, np.int64))
    np.testing.assert_allclose(y, np.broadcast_to(2.0 * np.asarray(rtf_filter(pr, 8)[0]), (2, 3)), rtol=1e-12)


def test_step_errors():
    """Each error names the argument at fault: a state/batch mismatch blames ``state`` (regression:
    it blamed ``u_t``), a channel mismatch blames ``u_t``."""
    p = init_s4d(jax.random.key(0), 3, 8)
    st = s4d_initial_state(p, 2)
    with pytest.raises(ValueError, match=r"kjax.ssm.s4d_step: `state` must have `x` of shape \(4, 3, 4\) \(\[B, D, N/2\] "
                                         r"for u_t's batch B=4.*got `x` of shape \(2, 3, 4\)"):
        s4d_step(p, st, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"kjax.ssm.s4d_step: `u_t` must have D=3 channels.*got shape \(2, 4\)"):
        s4d_step(p, st, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"kjax.ssm.s4d_step: `u_t` must have rank 2 \[B, D\]"):
        s4d_step(p, st, jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"kjax.ssm.s4d_step: `state` must have `x` of shape \(2, 3, 4\)"):
        s4d_step(p, s4d_initial_state(init_s4d(jax.random.key(0), 3, 6), 2), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=r"kjax.ssm.s4d_step: `state` must be a kjax.ssm.S4DState"):
        s4d_step(p, st.x, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=r"kjax.ssm.s4d_step: `u_t` must be a real array; got dtype complex"):
        s4d_step(p, st, jnp.ones((2, 3), jnp.complex64))
    with pytest.raises(ValueError, match=r"kjax.ssm.s4d_initial_state: `batch_size` must be >= 1; got 0"):
        s4d_initial_state(p, 0)
    pr = RTFParams(a=jnp.zeros((3, 2)), b=jnp.ones((3, 2)), h0=jnp.ones(3))
    sr = rtf_initial_state(pr, 2, L=8)
    with pytest.raises(ValueError, match=r"kjax.ssm.rtf_step: `u_t` must have rank 2 \[B, D\]"):
        rtf_step(pr, sr, jnp.ones((3,)))
    with pytest.raises(ValueError, match=r"kjax.ssm.rtf_step: `state` must have `w` of shape \(5, 3, 2\)"):
        rtf_step(pr, sr, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"kjax.ssm.rtf_initial_state: `L` must be larger than the order N=2"):
        rtf_initial_state(pr, 2, L=2)
    with pytest.raises(TypeError, match=r"missing 1 required keyword-only argument: 'L'"):
        rtf_initial_state(pr, 2)


# ------------------------------------------------------------------------------- spectral conv

def _dft_1d(u, w, m):
    """Explicit DFT sums (no FFT): keep frequencies < m, mix channels, inverse real DFT."""
    B, L, ci = u.shape
    t = np.arange(L)
    F = np.exp(-2j * np.pi * np.outer(np.arange(m), t) / L)  # [m, L]
    uh = np.einsum("ft,bti->bfi", F, u)
    yh = np.einsum("bfi,fio->bfo", uh, w)
    # inverse of a real signal's half spectrum: DC once, Nyquist once, other modes twice (real part)
    coef = np.where((np.arange(m) == 0) | (2 * np.arange(m) == L), 1.0, 2.0)
    return np.einsum("f,ft,bfo->bto", coef, F.conj(), yh).real / L


@pytest.mark.parametrize("L,m", [(16, 5), (15, 8), (10, 6)])
def test_spectral_conv_1d_equals_dft(L, m):
    u = RNG.normal(size=(2, L, 3))
    w = RNG.normal(size=(m, 3, 4)) + 1j * RNG.normal(size=(m, 3, 4))
    if 2 * (m - 1) == L:
        w[-1] = w[-1].real  # the Nyquist bin of a real signal is real: irfft drops its imaginary part
    w[0] = w[0].real
    got = spectral_conv(jnp.asarray(u), jnp.asarray(w), modes=m)
    assert got.shape == (2, L, 4)
    assert_close(got, _dft_1d(u, w, m), 1e-12, "fno 1d")


def test_spectral_conv_2d_equals_numpy():
    H, W, m1, m2 = 8, 9, 3, 4
    u = RNG.normal(size=(2, H, W, 3))
    w = RNG.normal(size=(2, m1, m2, 3, 2)) + 1j * RNG.normal(size=(2, m1, m2, 3, 2))
    got = spectral_conv(jnp.asarray(u), jnp.asarray(w), modes=(m1, m2))
    # numpy: full complex 2D DFT, weights on the kept corners, Hermitian completion, inverse
    uh = np.fft.fft2(u, axes=(1, 2))
    yh = np.zeros((2, H, W, 2), complex)
    yh[:, :m1, :m2] = np.einsum("bxyi,xyio->bxyo", uh[:, :m1, :m2], w[0])
    yh[:, H - m1:, :m2] = np.einsum("bxyi,xyio->bxyo", uh[:, H - m1:, :m2], w[1])
    ref = np.fft.irfft2(yh[:, :, : W // 2 + 1], s=(H, W), axes=(1, 2))
    assert_close(got, ref, 1e-12, "fno 2d")


def test_spectral_conv_conformance(mesh):
    u = jnp.asarray(RNG.normal(size=(2, 12, 3)))
    w = jnp.asarray(RNG.normal(size=(4, 3, 2)) + 1j * RNG.normal(size=(4, 3, 2)))
    check_op(lambda u: spectral_conv(u, w, modes=4), u, grad_argnums=(0,), expected_dtype=jnp.float64, mesh=mesh)


@pytest.mark.parametrize("u,w,modes,pattern", [
    (np.ones((2, 8, 3)), np.ones((6, 3, 2)), 6, r"`modes` must be in \[1, L // 2 \+ 1 = 5\]; got 6"),
    (np.ones((2, 8, 3)), np.ones((4, 2, 2)), 4, r"`weights` must have shape \(4, 3, Co\)"),
    (np.ones((2, 8, 3)), np.ones((4, 3, 2)), (4, 4), r"`modes` must be an int for 1D"),
    (np.ones((2, 8, 8, 3)), np.ones((2, 5, 2, 3, 1)), (5, 2), r"`modes` must satisfy 1 <= m1 <= H/2"),
    (np.ones((8, 3)), np.ones((4, 3, 2)), 4, r"`u` must have rank 3 \[B, L, Ci\] \(1D\) or 4"),
])
def test_spectral_conv_errors(u, w, modes, pattern):
    with pytest.raises(ValueError, match="kjax.ssm.spectral_conv: " + pattern):
        spectral_conv(u, w, modes=modes)
    with pytest.raises(TypeError, match=r"kjax.ssm.spectral_conv: `u` must be a real array"):
        spectral_conv(np.ones((2, 8, 3), np.complex64), np.ones((4, 3, 2)), modes=4)


def test_spectral_conv_empty_grid_names_u():
    """Regression: an empty 2-D grid (H = 0) was blamed on `modes`; L = 0 in 1-D names `u` too."""
    with pytest.raises(ValueError, match=r"kjax.ssm.spectral_conv: `u` must have H >= 1 and W >= 1"):
        spectral_conv(np.ones((1, 0, 4, 2)), np.ones((2, 1, 1, 2, 2)), modes=(1, 1))
    with pytest.raises(ValueError, match=r"kjax.ssm.spectral_conv: `u` must have L >= 1"):
        spectral_conv(np.ones((1, 0, 2)), np.ones((1, 2, 2)), modes=1)


def test_spectral_conv_promotes_integers():
    got = spectral_conv(np.ones((1, 8, 2), np.int32), np.ones((2, 2, 3)), modes=2)
    assert jnp.issubdtype(got.dtype, jnp.floating)
    assert_close(got, spectral_conv(np.ones((1, 8, 2)), np.ones((2, 2, 3)), modes=2), 1e-12)

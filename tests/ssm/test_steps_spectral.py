import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from kjax.ssm import (
    RTFParams,
    fftconv,
    rtf_filter,
    rtf_initial_state,
    rtf_step,
    s4d_filter,
    s4d_init,
    s4d_initial_state,
    s4d_step,
    spectral_conv,
)
from tests.conformance import assert_close, check_op

RNG = np.random.default_rng(2)


def _scan(step, params, state, u, **kw):
    def body(s, u_t):
        s, y = step(params, s, u_t, **kw)
        return s, y

    _, ys = jax.lax.scan(body, state, jnp.swapaxes(u, 0, 1))
    return jnp.swapaxes(ys, 0, 1)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_step_equals_fftconv(disc):
    B, L, D = 2, 50, 3
    p = s4d_init(jax.random.key(0), D, 8, init="inv")
    u = jnp.asarray(RNG.normal(size=(B, L, D)))
    ys = jax.jit(lambda u: _scan(s4d_step, p, s4d_initial_state(p, B), u, discretization=disc))(u)
    ref = fftconv(u, s4d_filter(p, L, discretization=disc))
    assert ys.dtype == jnp.float64
    assert_close(ys, ref, 1e-11, f"s4d step {disc}")


def test_rtf_step_equals_lfilter_and_fftconv():
    B, L, D, N = 2, 64, 2, 4
    a = np.stack([np.poly([0.5, -0.3, 0.2 + 0.4j, 0.2 - 0.4j]).real[1:], np.poly([0.6, 0.1, -0.5, 0.3]).real[1:]])
    p = RTFParams(a=jnp.asarray(a), b=jnp.asarray(RNG.normal(size=(D, N))), h0=jnp.asarray(RNG.normal(size=D)))
    u = jnp.asarray(RNG.normal(size=(B, L, D)))
    ys = jax.jit(lambda u: _scan(rtf_step, p, rtf_initial_state(p, B), u))(u)
    ref = np.zeros((B, L, D))
    for d in range(D):
        den = np.concatenate([[1.0], a[d]])
        num = float(p.h0[d]) * den + np.concatenate([[0.0], np.asarray(p.b[d])])
        ref[:, :, d] = scipy.signal.lfilter(num, den, np.asarray(u[:, :, d]), axis=1)
    assert_close(ys, ref, 1e-12, "rtf step vs lfilter")
    # poles <= 0.6 in modulus: the periodised tail of rtf_filter is ~0.6^64 ~ 1e-14
    assert_close(ys, fftconv(u, rtf_filter(p, L)), 1e-11, "rtf step vs fftconv")


def test_step_conformance(mesh):
    p = s4d_init(jax.random.key(0), 3, 8)
    st = s4d_initial_state(p, 2)
    st = st._replace(x=st.x + 0.1j)
    u_t = jnp.asarray(RNG.normal(size=(2, 3)))
    check_op(lambda u_t: s4d_step(p, st, u_t)[1], u_t, grad_argnums=(0,), expected_dtype=jnp.float64, mesh=mesh)
    pr = RTFParams(a=jnp.full((3, 2), 0.1), b=jnp.ones((3, 2)), h0=jnp.ones(3))
    sr = rtf_initial_state(pr, 2)._replace(w=jnp.ones((2, 3, 2)))
    check_op(lambda u_t: rtf_step(pr, sr, u_t)[1], u_t, grad_argnums=(0,), expected_dtype=jnp.float64, mesh=mesh)


def test_step_errors():
    p = s4d_init(jax.random.key(0), 3, 8)
    with pytest.raises(ValueError, match=r"kjax.ssm.s4d_step: `u_t` must have shape \(2, 3\) \[B, D\].*got shape \(2, 4\)"):
        s4d_step(p, s4d_initial_state(p, 2), jnp.ones((2, 4)))
    pr = RTFParams(a=jnp.zeros((3, 2)), b=jnp.ones((3, 2)), h0=jnp.ones(3))
    with pytest.raises(ValueError, match=r"kjax.ssm.rtf_step: `u_t` must have shape \(2, 3\)"):
        rtf_step(pr, rtf_initial_state(pr, 2), jnp.ones((3,)))


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
    with pytest.raises(TypeError, match=r"kjax.ssm.spectral_conv: `u` must be a real floating"):
        spectral_conv(np.ones((2, 8, 3), np.int32), np.ones((4, 3, 2)), modes=4)

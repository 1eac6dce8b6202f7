import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.signal

from kjax.ssm import (
    RTFParams,
    hyena_filter,
    hyena_init,
    rtf_filter,
    rtf_init,
    s4d_filter,
    s4d_init,
    sgconv_filter,
    sgconv_init,
    smooth,
    squash,
    stu_filters,
)
from tests.conformance import assert_close, check_op

RNG = np.random.default_rng(1)


# ---------------------------------------------------------------------------------------- S4D

def _materialised_s4d_kernel(p, L, disc):
    """Real-valued full SSM (modes and their conjugates), discretised with expm / solves."""
    p = jax.tree.map(np.asarray, p)
    D = p.log_dt.shape[0]
    out = np.zeros((L, D))
    for d in range(D):
        a = -np.exp(p.log_a_real[d]) + 1j * p.a_imag[d]
        a = np.concatenate([a, a.conj()])
        b = np.concatenate([p.b_re[d] + 1j * p.b_im[d], p.b_re[d] - 1j * p.b_im[d]])
        c = np.concatenate([p.c_re[d] + 1j * p.c_im[d], p.c_re[d] - 1j * p.c_im[d]])
        A, dt, eye = np.diag(a), np.exp(p.log_dt[d]), np.eye(a.size)
        if disc == "zoh":
            dA = scipy.linalg.expm(dt * A)
            dB = np.linalg.solve(A, (dA - eye) @ b)
        else:
            dA = np.linalg.solve(eye - dt / 2 * A, eye + dt / 2 * A)
            dB = np.linalg.solve(eye - dt / 2 * A, dt * b)
        for ell in range(L):
            out[ell, d] = (c @ np.linalg.matrix_power(dA, ell) @ dB).real
    return out


@pytest.mark.parametrize("init", ["lin", "inv", "legs"])
@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_filter_equals_materialised_ssm(init, disc):
    p = s4d_init(jax.random.key(3), 3, 8, init=init, dt_min=0.01, dt_max=0.5)
    p = p._replace(b_im=p.b_im + 0.3)  # a non-real B exercises the complex arithmetic
    got = s4d_filter(p, 25, discretization=disc)
    assert got.shape == (25, 3) and got.dtype == jnp.float64
    assert_close(got, _materialised_s4d_kernel(p, 25, disc), 1e-11, f"s4d {init} {disc}")


def test_s4d_init_spectra():
    n = 16
    lin = s4d_init(jax.random.key(0), 2, n, init="lin")
    np.testing.assert_allclose(lin.a_imag[0], np.pi * np.arange(n // 2))
    np.testing.assert_allclose(np.exp(lin.log_a_real), 0.5)
    inv = s4d_init(jax.random.key(0), 2, n, init="inv")
    np.testing.assert_allclose(inv.a_imag[1], n / np.pi * (n / (2 * np.arange(n // 2) + 1) - 1))
    # LegS: eigenvalues of the normal part of HiPPO-LegS (built here from the HiPPO paper's formula)
    legs = s4d_init(jax.random.key(0), 2, n, init="legs")
    A = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i > j:
                A[i, j] = -np.sqrt((2 * i + 1) * (2 * j + 1))
            elif i == j:
                A[i, j] = -(i + 1)
    P = np.sqrt(np.arange(n) + 0.5)
    ev = np.linalg.eigvals(A + np.outer(P, P))
    ev = np.sort(ev[ev.imag > 0].imag)
    np.testing.assert_allclose(np.sort(np.asarray(legs.a_imag[0])), ev, rtol=1e-10)
    np.testing.assert_allclose(np.exp(legs.log_a_real), 0.5, rtol=1e-12)


def test_s4d_conformance(mesh):
    p = s4d_init(jax.random.key(0), 3, 8)
    fn = lambda log_dt, c_re: s4d_filter(p._replace(log_dt=log_dt, c_re=c_re), 16)
    check_op(fn, p.log_dt, p.c_re, grad_argnums=(0,), vmap_argnums=(1,), expected_dtype=jnp.float64, mesh=mesh)


# ---------------------------------------------------------------------------------------- RTF

def _stable_rtf(D=3, N=4):
    """Random stable denominators: poles inside radius 0.7."""
    a = np.zeros((D, N))
    for d in range(D):
        r = RNG.uniform(0.1, 0.7, size=N // 2)
        th = RNG.uniform(0, np.pi, size=N // 2)
        poles = np.concatenate([r * np.exp(1j * th), r * np.exp(-1j * th)])
        a[d] = np.poly(poles).real[1:]
    return RTFParams(a=jnp.asarray(a), b=jnp.asarray(RNG.normal(size=(D, N))), h0=jnp.asarray(RNG.normal(size=D)))


def test_rtf_filter_equals_scipy_impulse_response_periodised():
    p = _stable_rtf()
    L = 12  # short: the periodisation (aliasing of the tail) is visible and must match
    got = rtf_filter(p, L)
    ref = np.zeros((L, 3))
    for d in range(3):
        a = np.concatenate([[1.0], np.asarray(p.a[d])])
        num = float(p.h0[d]) * a + np.concatenate([[0.0], np.asarray(p.b[d])])
        imp = np.zeros(40 * L)
        imp[0] = 1.0
        h = scipy.signal.lfilter(num, a, imp)
        ref[:, d] = h.reshape(40, L).sum(0)
    assert_close(got, ref, 1e-12, "rtf")


def test_rtf_init_is_fir():
    p = rtf_init(jax.random.key(0), 2, 5)
    k = rtf_filter(p, 16)
    np.testing.assert_allclose(k[1:6], p.b.T, atol=1e-12)
    np.testing.assert_allclose(k[6:], 0.0, atol=1e-12)


def test_rtf_conformance(mesh):
    p = _stable_rtf()
    fn = lambda a, b: rtf_filter(p._replace(a=a, b=b), 16)
    check_op(fn, p.a, p.b, grad_argnums=(0,), vmap_argnums=(1,), expected_dtype=jnp.float64, mesh=mesh)


# ---------------------------------------------------------------------------------------- STU

def test_stu_filters_equal_scipy_eigh():
    L, K = 48, 6
    got = np.asarray(stu_filters(L, K))
    i = np.arange(1, L + 1)
    s = i[:, None] + i[None, :]
    w, v = scipy.linalg.eigh(2.0 / (s**3 - s), subset_by_index=[L - K, L - 1])
    w, v = w[::-1], v[:, ::-1]
    ref = v * w**0.25
    sign = np.sign(np.sum(got * ref, axis=0))  # eigenvectors are defined up to sign
    assert np.all(sign != 0)
    assert_close(got * sign, ref, 1e-9, "stu")
    assert np.all(got[np.argmax(np.abs(got), axis=0), np.arange(K)] > 0)  # documented sign convention
    assert got.shape == (L, K)


# -------------------------------------------------------------------------------------- Hyena

def test_hyena_filter_equals_numpy():
    p = hyena_init(jax.random.key(0), 5, emb_dim=7, width=8, depth=2)
    p = p._replace(freq=p.freq * 1.3)
    L = 37
    got = hyena_filter(p, L, shift=0.05)
    q = jax.tree.map(np.asarray, p)
    t = np.linspace(0, 1, L)[:, None]
    bands = 3
    f = np.linspace(1e-4, bands - 1, bands)[None]
    w = 2 * np.pi * np.arange(L)[:, None] / L
    z = np.concatenate([t, np.cos(f * w), -np.sin(f * w)], 1)
    h = np.sin(q.freq * (z @ q.w_in + q.b_in))
    for i in range(2):
        h = np.sin(q.freq * (h @ q.w_hidden[i] + q.b_hidden[i]))
    ref = (h @ q.w_out) * (np.exp(-np.abs(q.decay) * t) + 0.05)
    assert_close(got, ref, 1e-12, "hyena")
    # the initial decays: channel 0 reaches 1e-2 of its envelope at 1.5 of the length, the last at 0.3
    np.testing.assert_allclose(np.exp(-q.decay[[0, -1]] * np.array([1.5, 0.3])), 1e-2, rtol=1e-10)


def test_hyena_conformance(mesh):
    p = hyena_init(jax.random.key(0), 3, emb_dim=5, width=8, depth=1)
    fn = lambda w_out, decay: hyena_filter(p._replace(w_out=w_out, decay=decay), 20)
    check_op(fn, p.w_out, p.decay, grad_argnums=(1,), expected_dtype=jnp.float64, mesh=mesh)


# ------------------------------------------------------------------------------------- SGConv

@pytest.mark.parametrize("L", [20, 40, 70])
def test_sgconv_filter_equals_numpy(L):
    p = sgconv_init(jax.random.key(0), 2, 40, kernel_dim=5)  # S = 1 + ceil(log2 8) = 4: 5 + 5 + 10 + 20 taps
    assert p.kernels.shape == (4, 5, 2)
    got = sgconv_filter(p, L, decay=0.7)
    ks = np.asarray(p.kernels)
    pieces = []
    for i in range(4):
        r = 2 ** max(i - 1, 0)
        x = (np.arange(5 * r) + 0.5) / r - 0.5  # half-pixel centres, np.interp clamps at the ends
        pieces.append(np.stack([np.interp(x, np.arange(5), ks[i, :, c]) for c in range(2)], 1) * 0.7**i)
    ref = np.concatenate(pieces)
    ref = np.concatenate([ref, np.zeros((max(0, L - 40), 2))])[:L]
    assert_close(got, ref, 1e-12, "sgconv")


def test_sgconv_conformance(mesh):
    p = sgconv_init(jax.random.key(0), 2, 24, kernel_dim=4)
    check_op(lambda k: sgconv_filter(p._replace(kernels=k), 24), p.kernels, grad_argnums=(0,),
             expected_dtype=jnp.float64, mesh=mesh)


# -------------------------------------------------------------------------------- regularisers

def test_squash_and_smooth_equal_numpy():
    k = RNG.normal(size=(30, 3))
    np.testing.assert_allclose(squash(k, 0.4), np.where(np.abs(k) > 0.4, k - 0.4 * np.sign(k), 0.0), atol=1e-15)
    ref = scipy.ndimage.uniform_filter1d(k, 5, axis=0, mode="constant")
    np.testing.assert_allclose(smooth(k, 5), ref, atol=1e-14)
    np.testing.assert_allclose(smooth(k, 1), k, atol=1e-15)


def test_regulariser_conformance(mesh):
    k = jnp.asarray(RNG.normal(size=(16, 3)))
    check_op(lambda k: smooth(squash(k, 0.1), 3), k, grad_argnums=(0,), expected_dtype=jnp.float64, mesh=mesh)


# --------------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: s4d_init(jax.random.key(0), 2, 7), ValueError, r"kjax.ssm.s4d_init: `state_size` must be even.*got 7"),
    (lambda: s4d_init(jax.random.key(0), 2, 8, init="hippo"), ValueError,
     r"kjax.ssm.s4d_init: `init` must be one of \('lin', 'inv', 'legs'\); got 'hippo'"),
    (lambda: s4d_filter(s4d_init(jax.random.key(0), 2, 8), 0), ValueError, r"kjax.ssm.s4d_filter: `L` must be >= 1"),
    (lambda: s4d_filter(s4d_init(jax.random.key(0), 2, 8), 8, discretization="euler"), ValueError,
     r"kjax.ssm.s4d_filter: `discretization` must be one of \('zoh', 'bilinear'\); got 'euler'"),
    (lambda: rtf_filter(rtf_init(jax.random.key(0), 2, 8), 8), ValueError,
     r"kjax.ssm.rtf_filter: `L` must be larger than the order N=8.*got 8"),
    (lambda: stu_filters(8, 9), ValueError, r"kjax.ssm.stu_filters: `K` must be <= L=8; got 9"),
    (lambda: stu_filters(8.0, 2), TypeError, r"kjax.ssm.stu_filters: `L` must be a Python int; got 8.0"),
    (lambda: hyena_init(jax.random.key(0), 2, emb_dim=4), ValueError, r"kjax.ssm.hyena_init: `emb_dim` must be odd"),
    (lambda: smooth(jnp.ones((8, 2)), 4), ValueError, r"kjax.ssm.smooth: `width` must be odd.*got 4"),
    (lambda: smooth(jnp.ones((8, 2), jnp.int32), 3), TypeError, r"kjax.ssm.smooth: `k` must be a real floating"),
    (lambda: squash(jnp.ones((8, 2)), -1.0), ValueError, r"kjax.ssm.squash: `lam` must be >= 0; got -1.0"),
    (lambda: squash(jnp.ones((8, 2), jnp.complex64), 1.0), TypeError, r"kjax.ssm.squash: `k` must be a real"),
])
def test_filter_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()

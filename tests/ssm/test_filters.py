import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import scipy.signal

from kjax import ssm
from kjax.ssm import (
    HyenaFilterParams,
    RTFParams,
    S4DParams,
    SGConvParams,
    hyena_filter,
    init_hyena,
    init_rtf,
    init_s4d,
    init_sgconv,
    rtf_filter,
    s4d_filter,
    sgconv_filter,
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
    p = init_s4d(jax.random.key(3), 3, 8, init=init, dt_min=0.01, dt_max=0.5)
    p = p._replace(b_im=p.b_im + 0.3)  # a non-real B exercises the complex arithmetic
    got = s4d_filter(p, 25, discretization=disc)
    assert got.shape == (25, 3) and got.dtype == jnp.float64
    assert_close(got, _materialised_s4d_kernel(p, 25, disc), 1e-11, f"s4d {init} {disc}")


def test_s4d_init_spectra():
    n = 16
    lin = init_s4d(jax.random.key(0), 2, n, init="lin")
    np.testing.assert_allclose(lin.a_imag[0], np.pi * np.arange(n // 2))
    np.testing.assert_allclose(np.exp(lin.log_a_real), 0.5)
    inv = init_s4d(jax.random.key(0), 2, n, init="inv")
    np.testing.assert_allclose(inv.a_imag[1], n / np.pi * (n / (2 * np.arange(n // 2) + 1) - 1))
    # LegS: eigenvalues of the normal part of HiPPO-LegS (built here from the HiPPO paper's formula)
    legs = init_s4d(jax.random.key(0), 2, n, init="legs")
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
    p = init_s4d(jax.random.key(0), 3, 8)
    fn = lambda log_dt, c_re: s4d_filter(p._replace(log_dt=log_dt, c_re=c_re), 16)
    check_op(fn, p.log_dt, p.c_re, grad_argnums=(0,), vmap_argnums=(1,), expected_dtype=jnp.float64, mesh=mesh)


def test_s4d_zoh_heavily_damped_modes_are_finite():
    """Regression: log_a_real = 10 made exp(dt A) underflow to 0, then log(0) * 0 = NaN in every tap.
    The limit is K_0 = -2 Re(C B / A) (dt phi_1(dt A) -> -1/A), K_l = 0 after; the gradient is finite."""
    p = init_s4d(jax.random.key(0), 2, 8)
    p = p._replace(log_a_real=jnp.full_like(p.log_a_real, 10.0), log_dt=jnp.full_like(p.log_dt, np.log(0.1)))
    q = jax.tree.map(lambda x: np.asarray(x, np.float64), p)
    a = -np.exp(q.log_a_real) + 1j * q.a_imag
    k0 = (-2 * ((q.c_re + 1j * q.c_im) * (q.b_re + 1j * q.b_im) / a).real).sum(-1)
    for dtype, rtol in ((jnp.float64, 1e-12), (jnp.float32, 1e-5)):
        k = s4d_filter(jax.tree.map(lambda x: x.astype(dtype), p), 16)
        assert k.dtype == dtype and bool(jnp.all(jnp.isfinite(k))), dtype
        np.testing.assert_allclose(k[0], k0, rtol=rtol)
        np.testing.assert_allclose(k[1:], 0.0, atol=1e-30)
    g = jax.grad(lambda lar: jnp.sum(s4d_filter(p._replace(log_a_real=lar), 16)))(p.log_a_real)
    assert bool(jnp.all(jnp.isfinite(g)))


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_degenerate_modes_are_finite(disc):
    """Finite parameters never give NaN: A = 0 (log_a_real -> -inf with a_imag = 0: ZOH's
    dB = dt B, K_l = 2 Re(C B)); dt A = -2 (the bilinear pole exactly at 0); log_a_real = 200 (exp
    overflows float32). Values and gradients, in float32."""
    p = init_s4d(jax.random.key(1), 2, 4, init="lin")  # a_imag[:, 0] = 0
    lar = p.log_a_real.at[0, 0].set(-1e4).at[1, 0].set(np.log(2.0)).at[1, 1].set(200.0)
    p = jax.tree.map(lambda x: x.astype(jnp.float32), p._replace(log_a_real=lar, log_dt=jnp.zeros(2)))
    k = s4d_filter(p, 8, discretization=disc)
    g = jax.grad(lambda c: jnp.sum(s4d_filter(p._replace(c_re=c), 8, discretization=disc)))(p.c_re)
    assert bool(jnp.all(jnp.isfinite(k))) and bool(jnp.all(jnp.isfinite(g)))
    if disc == "zoh":  # mode (0, 0) alone (C = 0 elsewhere): A = 0, dt = 1, so K_l = 2 Re(C B) for all l
        only = p._replace(c_re=jnp.zeros_like(p.c_re).at[0, 0].set(p.c_re[0, 0]),
                          c_im=jnp.zeros_like(p.c_im).at[0, 0].set(p.c_im[0, 0]))
        np.testing.assert_allclose(s4d_filter(only, 8)[:, 0],
                                   2 * (p.c_re * p.b_re - p.c_im * p.b_im)[0, 0], rtol=1e-6)


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
    p = init_rtf(jax.random.key(0), 2, 5)
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
    p = init_hyena(jax.random.key(0), 5, emb_dim=7, width=8, depth=2)
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
    p = init_hyena(jax.random.key(0), 3, emb_dim=5, width=8, depth=1)
    fn = lambda w_out, decay: hyena_filter(p._replace(w_out=w_out, decay=decay), 20)
    check_op(fn, p.w_out, p.decay, grad_argnums=(1,), expected_dtype=jnp.float64, mesh=mesh)


# ------------------------------------------------------------------------------------- SGConv

@pytest.mark.parametrize("L", [20, 40, 70])
def test_sgconv_filter_equals_numpy(L):
    p = init_sgconv(jax.random.key(0), 2, 40, kernel_dim=5)  # S = 1 + ceil(log2 8) = 4: 5 + 5 + 10 + 20 taps
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
    p = init_sgconv(jax.random.key(0), 2, 24, kernel_dim=4)
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

_KEY = jax.random.key(0)
_S4D = init_s4d(_KEY, 2, 8)
_SG = init_sgconv(_KEY, 2, 16, kernel_dim=4)
_HY = init_hyena(_KEY, 2, emb_dim=5, width=4, depth=1)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda: init_s4d(_KEY, 2, 7), ValueError, r"kjax.ssm.init_s4d: `state_size` must be even.*got 7"),
    (lambda: init_s4d(_KEY, 0, 8), ValueError, r"kjax.ssm.init_s4d: `d_model` must be >= 1; got 0"),
    (lambda: init_s4d(_KEY, 2, 8, init="hippo"), ValueError,
     r"kjax.ssm.init_s4d: `init` must be one of \('lin', 'inv', 'legs'\); got 'hippo'"),
    # regression: dt_min > dt_max was accepted (log dt drawn from an empty / reversed interval)
    (lambda: init_s4d(_KEY, 2, 8, dt_min=0.1, dt_max=0.01), ValueError,
     r"kjax.ssm.init_s4d: `dt_min` must be <= dt_max=0.01.*got 0.1"),
    (lambda: init_s4d(_KEY, 2, 8, dt_min=-1.0), ValueError, r"kjax.ssm.init_s4d: `dt_min` must be > 0; got -1.0"),
    (lambda: init_s4d(_KEY, 2, 8, dt_max=float("inf")), ValueError, r"kjax.ssm.init_s4d: `dt_max` must be finite"),
    (lambda: s4d_filter(_S4D, 0), ValueError, r"kjax.ssm.s4d_filter: `L` must be >= 1; got 0"),
    (lambda: s4d_filter(_S4D, 8, discretization="euler"), ValueError,
     r"kjax.ssm.s4d_filter: `discretization` must be one of \('zoh', 'bilinear'\); got 'euler'"),
    (lambda: s4d_filter(tuple(_S4D), 8), TypeError, r"kjax.ssm.s4d_filter: `params` must be a kjax.ssm.S4DParams "
     r"\(from kjax.ssm.init_s4d\); got tuple"),
    (lambda: s4d_filter(_S4D._replace(c_re=_S4D.c_re[:, :3]), 8), ValueError,
     r"kjax.ssm.s4d_filter: `params` must have `c_re` with M=4, as its other fields; got `c_re` of shape \(2, 3\)"),
    (lambda: s4d_filter(_S4D._replace(b_re=_S4D.b_re + 0j), 8), TypeError, r"kjax.ssm.s4d_filter: `params.b_re` must be "
     r"a real array"),
    (lambda: rtf_filter(init_rtf(_KEY, 2, 8), 8), ValueError,
     r"kjax.ssm.rtf_filter: `L` must be larger than the order N=8.*got 8"),
    (lambda: rtf_filter(RTFParams(jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.zeros(2)), 8), ValueError,
     r"kjax.ssm.rtf_filter: `params` must have `b` with N=3"),
    (lambda: init_rtf(_KEY, 2, 0), ValueError, r"kjax.ssm.init_rtf: `state_size` must be >= 1; got 0"),
    (lambda: init_rtf(_KEY, 2, 4, scale=-1.0), ValueError, r"kjax.ssm.init_rtf: `scale` must be >= 0; got -1.0"),
    (lambda: stu_filters(8, 9), ValueError, r"kjax.ssm.stu_filters: `K` must be <= L=8; got 9"),
    (lambda: stu_filters(0, 1), ValueError, r"kjax.ssm.stu_filters: `L` must be >= 1; got 0"),
    (lambda: stu_filters(8.0, 2), TypeError, r"kjax.ssm.stu_filters: `L` must be a Python int; got 8.0"),
    (lambda: init_hyena(_KEY, 2, emb_dim=4), ValueError, r"kjax.ssm.init_hyena: `emb_dim` must be odd"),
    (lambda: init_hyena(_KEY, 2, width=0), ValueError, r"kjax.ssm.init_hyena: `width` must be >= 1; got 0"),
    (lambda: init_hyena(_KEY, 2, target=1.5), ValueError, r"kjax.ssm.init_hyena: `target` must be in \(0.0, 1.0\); "
     r"got 1.5"),
    (lambda: init_hyena(_KEY, 2, fast_decay_pct=0.0), ValueError, r"kjax.ssm.init_hyena: `fast_decay_pct` must be > 0"),
    (lambda: hyena_filter(_HY, 0), ValueError, r"kjax.ssm.hyena_filter: `L` must be >= 1; got 0"),
    (lambda: hyena_filter(_HY, 8, shift=float("nan")), ValueError, r"kjax.ssm.hyena_filter: `shift` must be a finite"),
    (lambda: hyena_filter(_HY._replace(w_in=_HY.w_in[:4]), 8), ValueError,
     r"kjax.ssm.hyena_filter: `params` must have `w_in` of shape \[E, W\] with E odd >= 3"),
    (lambda: hyena_filter(_HY._replace(decay=jnp.ones(3)), 8), ValueError,
     r"kjax.ssm.hyena_filter: `params` must have `decay` with D=2"),
    (lambda: init_sgconv(_KEY, 2, 0), ValueError, r"kjax.ssm.init_sgconv: `L` must be >= 1; got 0"),
    (lambda: init_sgconv(_KEY, 2, 16, kernel_dim=0), ValueError, r"kjax.ssm.init_sgconv: `kernel_dim` must be >= 1"),
    # regression: decay = 2 was accepted (weights growing with the scale); the domain is (0, 1]
    (lambda: sgconv_filter(_SG, 16, decay=2.0), ValueError, r"kjax.ssm.sgconv_filter: `decay` must be in \(0.0, 1.0\]; "
     r"got 2.0"),
    (lambda: sgconv_filter(_SG, 16, decay=0.0), ValueError, r"kjax.ssm.sgconv_filter: `decay` must be in \(0.0, 1.0\]"),
    (lambda: sgconv_filter(_SG, 0), ValueError, r"kjax.ssm.sgconv_filter: `L` must be >= 1; got 0"),
    (lambda: sgconv_filter(SGConvParams(jnp.ones((4, 2))), 16), ValueError,
     r"kjax.ssm.sgconv_filter: `params` must have `kernels` of rank 3 \[S, d, D\]"),
    (lambda: smooth(jnp.ones((8, 2)), 4), ValueError, r"kjax.ssm.smooth: `width` must be odd.*got 4"),
    (lambda: squash(jnp.ones((8, 2)), -1.0), ValueError, r"kjax.ssm.squash: `lam` must be >= 0; got -1.0"),
    (lambda: squash(jnp.ones((8, 2), jnp.complex64), 1.0), TypeError, r"kjax.ssm.squash: `k` must be a real"),
])
def test_filter_errors(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_sgconv_decay_boundary_and_traced():
    """decay = 1 (no decay) is in the domain; a traced decay is not checked (documented)."""
    np.testing.assert_allclose(sgconv_filter(_SG, 16, decay=1.0)[:4], _SG.kernels[0], atol=0)
    g = jax.grad(lambda a: jnp.sum(sgconv_filter(_SG, 16, decay=a)))(0.5)
    assert np.isfinite(g)


def test_regularisers_promote_integers():
    """The package dtype policy: integer filters are promoted to float (not rejected)."""
    k = jnp.asarray([[-2], [0], [3]], jnp.int32)
    assert squash(k, 1.0).ravel().tolist() == [-1.0, 0.0, 2.0]
    assert jnp.issubdtype(smooth(k, 3).dtype, jnp.floating)


@pytest.mark.parametrize("old,new,args", [
    ("s4d_init", init_s4d, (2, 8)),
    ("rtf_init", init_rtf, (2, 4)),
    ("hyena_init", init_hyena, (2,)),
    ("sgconv_init", init_sgconv, (2, 16)),
])
def test_deprecated_init_aliases_warn_and_match(old, new, args):
    """The ``*_init`` names are deprecated aliases of ``init_*``: same result, a DeprecationWarning."""
    alias = getattr(ssm, old)
    with pytest.warns(DeprecationWarning, match=rf"kjax.ssm.{old} is deprecated.*use kjax.ssm.{new.__name__}"):
        got = alias(_KEY, *args)
    want = new(_KEY, *args)
    assert type(got) is type(want)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), got, want)
    assert old not in ssm.__all__ and new.__name__ in ssm.__all__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new(_KEY, *args)  # the new name does not warn
    assert isinstance(want, S4DParams | RTFParams | HyenaFilterParams | SGConvParams)

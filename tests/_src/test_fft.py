import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import toeplitz

from kjax._src.fft import fft_linear_conv, next_fast_len, toeplitz_matmul

RNG = np.random.default_rng(7)


def test_next_fast_len():
    for n in [1, 2, 7, 11, 97, 1000, 1025, 4097, 65537]:
        m = next_fast_len(n)
        assert m >= n
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        assert r == 1
        # no smaller 7-smooth number in [n, m)
        for c in range(n, m):
            r = c
            for p in (2, 3, 5, 7):
                while r % p == 0:
                    r //= p
            assert r != 1


@pytest.mark.parametrize("lu,lk", [(1, 1), (17, 5), (64, 64), (33, 1)])
def test_linear_conv_matches_numpy(lu, lk):
    u, k = RNG.normal(size=(3, lu)), RNG.normal(size=(3, lk))
    got = fft_linear_conv(jnp.asarray(u), jnp.asarray(k), axis=-1)
    ref = np.stack([np.convolve(a, b) for a, b in zip(u, k, strict=True)])
    np.testing.assert_allclose(got, ref, atol=1e-12)


def test_low_precision_runs_in_float32():
    u = jnp.asarray(RNG.normal(size=(40,)), jnp.bfloat16)
    got = fft_linear_conv(u, u)
    assert got.dtype == jnp.bfloat16
    ref = np.convolve(np.asarray(u, np.float64), np.asarray(u, np.float64))
    assert np.linalg.norm(np.asarray(got, np.float64) - ref) / np.linalg.norm(ref) < 2e-2


def test_toeplitz_matches_scipy():
    T = 13
    t = RNG.normal(size=2 * T - 1)
    x = RNG.normal(size=(T, 4))
    mat = toeplitz(t[T - 1:], t[T - 1::-1])  # first column: offsets 0..T-1; first row: 0..-(T-1)
    got = toeplitz_matmul(jnp.asarray(t)[:, None], jnp.asarray(x), axis=0)
    np.testing.assert_allclose(got, mat @ x, atol=1e-12)


def test_linear_conv_skip_dtype_and_broadcast():
    """``skip`` is folded into the filter's spectrum (``+ skip * u``); ``dtype`` sets the output; the
    channels axis broadcasts ``k[None]`` against a batch, as kjax.ssm.fftconv calls it."""
    u, k, skip = RNG.normal(size=(2, 11, 3)), RNG.normal(size=(5, 3)), RNG.normal(size=3)
    got = fft_linear_conv(jnp.asarray(u), jnp.asarray(k)[None], axis=1, out_len=11, skip=jnp.asarray(skip),
                          dtype=jnp.float32)
    assert got.dtype == jnp.float32 and got.shape == (2, 11, 3)
    ref = np.stack([np.stack([np.convolve(u[b, :, d], k[:, d])[:11] for d in range(3)], -1) for b in range(2)])
    np.testing.assert_allclose(got, ref + skip * u, atol=1e-5)


@pytest.mark.parametrize("n", [7, 8, 12])
def test_short_fft_len_is_circular(n):
    """An ``fft_len`` below ``len(u) + len(k) - 1`` wraps around: the circular convolution of period n."""
    u, k = RNG.normal(size=n), RNG.normal(size=min(n, 5))
    got = fft_linear_conv(jnp.asarray(u), jnp.asarray(k), fft_len=n)
    ref = np.array([sum(k[s] * u[(t - s) % n] for s in range(k.size)) for t in range(n)])
    assert got.shape == (n,)
    np.testing.assert_allclose(got, ref, atol=1e-12)

"""The Pallas fftconv, run with interpret=True on CPU (and compiled when a GPU is present)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax.ssm import fftconv
from kjax.ssm._pallas import fftconv_pallas, plan
from kjax.ssm._reference import fftconv_reference
from tests.conformance import assert_close, tol

RNG = np.random.default_rng(3)
ON_GPU = jax.default_backend() == "gpu"


def _args(mode, B, L, D, lk, dtype=np.float64):
    u = jnp.asarray(RNG.normal(size=(B, L, D)), dtype)
    k = jnp.asarray(RNG.normal(size=(2, lk, D) if mode == "bidirectional" else (lk, D)), dtype)
    gate = jnp.asarray(RNG.normal(size=(B, L, D)), dtype)
    skip = jnp.asarray(RNG.normal(size=(D,)), dtype)
    return u, k, gate, skip


class TestPallasFFTConv:
    interpret = not ON_GPU

    @pytest.mark.parametrize("mode,B,L,D,lk", [
        ("causal", 2, 13, 3, 13),         # odd L: N = 25 = 5 x 5
        ("circular", 1, 12, 2, 12),       # N = L = 12 = 3 x 4
        ("bidirectional", 1, 7, 2, 4),    # N = next_fast_len(10) = 10 = 2 x 5
    ])
    def test_forward_matches_reference(self, mode, B, L, D, lk):
        u, k, gate, skip = _args(mode, B, L, D, lk)
        got = fftconv_pallas(u, k, mode=mode, gate=gate, skip=skip, interpret=self.interpret)
        ref = fftconv_reference(u, k, mode=mode, gate=gate, skip=skip)
        assert got.dtype == u.dtype
        assert_close(got, ref, 1e-12 if not ON_GPU else tol(np.float32, 10), mode)

    def test_vjp_matches_reference(self):
        u, k, gate, skip = _args("causal", 1, 9, 2, 5)
        f = lambda impl: (lambda u, k, g, s: jnp.sum(jnp.sin(impl(u, k, g, s))))
        pal = lambda u, k, g, s: fftconv_pallas(u, k, gate=g, skip=s, interpret=self.interpret)
        ref = lambda u, k, g, s: fftconv_reference(u, k, gate=g, skip=s)
        g_pal = jax.grad(f(pal), argnums=(0, 1, 2, 3))(u, k, gate, skip)
        g_ref = jax.grad(f(ref), argnums=(0, 1, 2, 3))(u, k, gate, skip)
        for a, b, name in zip(g_pal, g_ref, "ukgs", strict=True):
            assert_close(a, b, 1e-10, f"grad {name}")

    def test_bf16_in_out_with_float32_accumulation(self):
        u, k, _, skip = _args("causal", 1, 16, 2, 16, np.float32)
        ub, kb = u.astype(jnp.bfloat16) * 1e30, k.astype(jnp.bfloat16)
        got = fftconv_pallas(ub, kb, skip=skip.astype(jnp.bfloat16), interpret=self.interpret)
        assert got.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(got)))
        ref = fftconv_reference(ub.astype(jnp.float64), kb.astype(jnp.float64), skip=skip.astype(jnp.bfloat16)
                                .astype(jnp.float64))
        assert_close(got, ref, tol(jnp.bfloat16))

    def test_uncovered_shapes_fall_back_to_xla(self):
        assert plan("causal", 40, 40, interpret=True, max_tile=8) is None  # N = 80: no split with N2 <= 8
        assert plan("causal", 40, 40, interpret=True) == (80, 8, 10)
        assert plan("causal", 300, 300, interpret=False) == (1024, 32, 32)  # GPU: powers of two >= 256
        assert plan("circular", 300, 300, interpret=False) is None
        u, k, _, _ = _args("causal", 1, 40, 2, 40)
        got = fftconv_pallas(u, k, interpret=True, max_tile=8)
        assert_close(got, fftconv_reference(u, k), 1e-12)


def test_public_dispatch_to_pallas_needs_gpu():
    u, k, _, _ = _args("causal", 1, 8, 2, 8)
    if ON_GPU:
        assert_close(fftconv(u.astype(jnp.float32), k.astype(jnp.float32), implementation="pallas"),
                     fftconv_reference(u, k), tol(np.float32, 10))
    else:
        with pytest.raises(ValueError, match="needs a GPU backend"):
            fftconv(u, k, implementation="pallas")

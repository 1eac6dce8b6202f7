"""Pallas fftconv: the FFT as split-DFT matmuls (one Monarch / Cooley-Tukey level), fused epilogue.

For an FFT length ``N = N1 N2`` a length-``N`` signal is a tile ``x[n1, n2] = v[N2 n1 + n2]`` and

.. math:: X[k_1 + N_1 k_2] = \\sum_{n_2} W_{N_2}^{n_2 k_2}\\, W_N^{n_2 k_1}
    \\sum_{n_1} W_{N_1}^{n_1 k_1} x[n_1, n_2],

i.e. ``X = ((F_{N1} x) * T) F_{N2}`` with twiddles ``T[k1, n2] = W_N^{n2 k1}``: two dense matmuls
and a pointwise product, which run on tensor cores with float32 accumulation (FlashFFTConv's
idea). The spectrum stays in the ``[k1, k2]`` layout: the filter's spectrum is permuted to match,
multiplied pointwise, and the inverse runs the same steps backwards with conjugate matrices,
ending in ``Re(conj(F_{N1}) Q) / N``; skip and gate are applied before the single store. One
program handles one (batch, channel) tile ``[N1, N2]``.

``fftconv_pallas`` is jitted with static tile sizes and a static ``interpret`` flag and wrapped in
``jax.custom_vjp``; its backward is the VJP of the reference (``_reference.py``). Shapes it does
not cover (a tile side above ``max_tile``) fall back to the XLA path. Compiled on a GPU the tile
sides must be powers of two >= 16 (``tl.dot``), so the FFT length is rounded up to a power of two
>= 256 there; in interpret mode any factorisation runs. The GPU build is untested (no GPU was
available when this was written): tests run it with ``interpret=True`` on CPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from kjax._src import dtypes
from kjax._src.fft import next_fast_len
from kjax.ssm._fftconv import fftconv_xla
from kjax.ssm._reference import bidirectional_filter, fftconv_reference

MAX_TILE = 256


def plan(mode: str, L: int, lk: int, *, interpret: bool, max_tile: int = MAX_TILE):
    """``(N, N1, N2)`` with ``N1 <= N2 <= max_tile``, or None when the kernel does not cover it."""
    need = L if mode == "circular" else L + lk - 1
    if interpret:
        n = L if mode == "circular" else next_fast_len(need)
    else:
        if mode == "circular" and (L & (L - 1) or L < 256):
            return None
        n = max(256, 1 << (need - 1).bit_length())
    n1 = max(d for d in range(1, int(np.sqrt(n)) + 1) if n % d == 0)
    n2 = n // n1
    if n2 > max_tile:
        return None
    return n, n1, n2


@functools.cache
def _dft_mats(n1: int, n2: int):
    """``F_{N1}``, ``F_{N2}`` and the twiddles ``T`` as (real, imag) float64 NumPy pairs."""
    n = n1 * n2
    f1 = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n1)) / n1)
    f2 = np.exp(-2j * np.pi * np.outer(np.arange(n2), np.arange(n2)) / n2)
    tw = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n2)) / n)
    return tuple(np.ascontiguousarray(a) for m in (f1, f2, tw) for a in (m.real, m.imag))


def _kernel(x_ref, kr_ref, ki_ref, f1r_ref, f1i_ref, f2r_ref, f2i_ref, tr_ref, ti_ref, *rest,
            has_gate: bool, has_skip: bool, acc):
    rest = list(rest)
    o_ref = rest.pop()
    g_ref = rest.pop(0) if has_gate else None
    s_ref = rest.pop(0) if has_skip else None
    dot = functools.partial(jnp.dot, preferred_element_type=acc, precision=jax.lax.Precision.HIGHEST)
    x = x_ref[0, 0].astype(acc)
    f1r, f1i, f2r, f2i = f1r_ref[...], f1i_ref[...], f2r_ref[...], f2i_ref[...]
    tr, ti = tr_ref[...], ti_ref[...]
    # forward DFT: A = F1 x; B = A * T; C = B F2 (C[k1, k2] = X[k1 + N1 k2])
    ar, ai = dot(f1r, x), dot(f1i, x)
    br, bi = ar * tr - ai * ti, ar * ti + ai * tr
    cr, ci = dot(br, f2r) - dot(bi, f2i), dot(br, f2i) + dot(bi, f2r)
    # pointwise product with the filter's spectrum (same layout)
    kr, ki = kr_ref[0], ki_ref[0]
    yr, yi = cr * kr - ci * ki, cr * ki + ci * kr
    # inverse: P = Y conj(F2); Q = P * conj(T); y = Re(conj(F1) Q) / N
    pr, pi_ = dot(yr, f2r) + dot(yi, f2i), dot(yi, f2r) - dot(yr, f2i)
    qr, qi = pr * tr + pi_ * ti, pi_ * tr - pr * ti
    y = (dot(f1r, qr) + dot(f1i, qi)) * (1.0 / (x.shape[0] * x.shape[1]))
    if has_skip:
        y = y + s_ref[0].astype(acc) * x
    if has_gate:
        y = y * g_ref[0, 0].astype(acc)
    o_ref[0, 0] = y.astype(o_ref.dtype)


def _to_tiles(a, n, n1, n2):
    """``[B, L, D] -> [B, D, N1, N2]`` (zero-padded to N along L)."""
    B, L, D = a.shape
    a = jnp.pad(jnp.swapaxes(a, 1, 2), ((0, 0), (0, 0), (0, n - L)))
    return a.reshape(B, D, n1, n2)


def _forward(u, k, gate, skip, *, mode, n, n1, n2, interpret):
    B, L, D = u.shape
    acc = dtypes.accum_dtype(dtypes.result_dtype(u, k))
    kf = bidirectional_filter(k.astype(acc), n) if mode == "bidirectional" else k.astype(acc)
    kh = jnp.fft.fft(kf, n=n, axis=0)  # [N, D]; permute to the [k1, k2] tile layout: k = k1 + N1 k2
    kh = jnp.transpose(kh.reshape(n2, n1, D), (2, 1, 0))
    mats = [jnp.asarray(m, acc) for m in _dft_mats(n1, n2)]
    args = [_to_tiles(u, n, n1, n2), kh.real, kh.imag, *mats]
    tile = pl.BlockSpec((1, 1, n1, n2), lambda b, d: (b, d, 0, 0))
    ktile = pl.BlockSpec((1, n1, n2), lambda b, d: (d, 0, 0))
    specs = [tile, ktile, ktile] + [pl.BlockSpec(m.shape, lambda b, d: (0, 0)) for m in mats]
    if gate is not None:
        args.append(_to_tiles(gate, n, n1, n2))
        specs.append(tile)
    if skip is not None:
        args.append(skip.reshape(D, 1, 1))
        specs.append(pl.BlockSpec((1, 1, 1), lambda b, d: (d, 0, 0)))
    out = pl.pallas_call(
        functools.partial(_kernel, has_gate=gate is not None, has_skip=skip is not None, acc=acc),
        out_shape=jax.ShapeDtypeStruct((B, D, n1, n2), u.dtype),
        grid=(B, D), in_specs=specs, out_specs=tile, interpret=interpret,
    )(*args)
    return jnp.swapaxes(out.reshape(B, D, n)[:, :, :L], 1, 2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _fftconv_core(u, k, gate, skip, mode, n, n1, n2, interpret):
    return _forward(u, k, gate, skip, mode=mode, n=n, n1=n1, n2=n2, interpret=interpret)


def _core_fwd(u, k, gate, skip, mode, n, n1, n2, interpret):
    return _fftconv_core(u, k, gate, skip, mode, n, n1, n2, interpret), (u, k, gate, skip)


def _core_bwd(mode, n, n1, n2, interpret, res, ct):
    # backward: the VJP of the reference (a Pallas backward is future work)
    _, vjp = jax.vjp(lambda u, k, g, s: fftconv_reference(u, k, mode=mode, gate=g, skip=s), *res)
    return vjp(ct)


_fftconv_core.defvjp(_core_fwd, _core_bwd)


@functools.partial(jax.jit, static_argnames=("mode", "interpret", "max_tile"))
def fftconv_pallas(u, k, *, mode: str = "causal", gate=None, skip=None, interpret: bool = False,
                   max_tile: int = MAX_TILE):
    """Pallas fftconv on validated inputs (see :func:`kjax.ssm.fftconv`); XLA for uncovered shapes."""
    p = plan(mode, u.shape[1], k.shape[-2], interpret=interpret, max_tile=max_tile)
    if p is None:
        return fftconv_xla(u, k, mode=mode, gate=gate, skip=skip)
    return _fftconv_core(u, k, gate, skip, mode, *p, interpret)

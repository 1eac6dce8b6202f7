"""What the Pallas fftconv kernels share: the plan, the split-DFT maths of a tile, the XLA outer step
of the two-level decomposition, and the custom VJP. Backend files (``_pallas_triton.py``,
``_pallas_tpu.py``) only add block specs, grids and compiler parameters.

Every mode is a circular convolution at a power-of-two FFT length ``N`` (``N = L`` when circular,
``N >= L + L_k - 1`` otherwise, so nothing wraps around), ``y = IDFT_N(K . DFT_N(x))`` with ``K``
the spectrum of the filter (two-sided when bidirectional) plus ``skip`` (``skip * u`` is the
convolution with ``skip`` at tap 0, whose spectrum is ``skip`` at every frequency).

**One level (the kernel).** For a length ``M = N1 N2`` a sequence is a tile ``x[n1, n2] = v[N2 n1 + n2]``
and

.. math:: X[k_1 + N_1 k_2] = \\sum_{n_2} W_{N_2}^{n_2 k_2}\\, W_M^{n_2 k_1}
    \\sum_{n_1} W_{N_1}^{n_1 k_1} x[n_1, n_2],

i.e. ``C = ((F1 x) . T) F2`` with twiddles ``T[k1, n2] = W_M^{n2 k1}``: dense matmuls and a pointwise
product (the FFT as matmuls, FlashFFTConv's idea), in real/imag pairs (no complex dtype in a kernel),
accumulated in float32 (float64 in interpret mode under x64) at ``Precision.HIGHEST``. The spectrum
stays in the ``[k1, k2]`` layout (the filter's spectrum is permuted to match, in XLA), and the
inverse runs the steps backwards with conjugate matrices: ``y = conj(F1) ((Y conj(F2)) . conj(T)) / M``.
One program handles one tile; inputs may be bfloat16 / float16, outputs keep the input dtype.

**Two levels (XLA outer step).** When ``N`` is larger than one tile covers (``M = N / P``),
decimation in frequency splits the length-``N`` convolution into ``P`` independent complex
length-``M`` circular convolutions: with ``n = m + M p`` and ``k = P k' + q``,

.. math:: z_q[m] = W_N^{m q} \\sum_p W_P^{p q}\\, x[m + M p], \\qquad
    X[P k' + q] = \\mathrm{DFT}_M(z_q)[k'],

so the kernel convolves each ``z_q`` with the spectrum slice ``K[P k' + q]`` and
``y[m + M p] = \\mathrm{Re} \\frac1P \\sum_q W_P^{-p q} W_N^{-m q} w_q[m]``. The length-``P`` DFTs
(matmuls over a size-``P`` axis, ``Precision.HIGHEST``) and the twiddles run in XLA: a pass over
``[B, D, N]`` before and after the kernel.

**Backward (Pallas).** The kernel's op ``y = IDFT_M(K . DFT_M(x))`` (real part at one level) is
wrapped in ``jax.custom_vjp``; its VJP is one backward kernel per tile that computes
``G = DFT_M(ct)``, the input cotangent ``dx = IDFT_M(conj(K) . G)`` (the same convolution with the
conjugate spectrum: a correlation), and ``S = sum_b DFT_M(x) . conj(G)`` summed over the batch
inside the kernel (TPU: across an "arbitrary" grid axis; Triton: a loop over a batch chunk, chunks
added in XLA), from which ``dK = (Re S, -Im S) / M``. Everything around the kernel op is XLA and
differentiated by JAX: the filter's ``rfft`` (``[N, D]``, ``1/B`` of the work) turns ``dK`` into
``dk``; ``dskip`` is the sum of ``dK`` over frequencies; ``dgate = ct * (k * u + skip * u)``
multiplies the cotangent with the kernel's saved output; the transposes, padding and outer step
have their linear transposes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src import dtypes
from kjax._src.errors import KjaxError
from kjax.ssm import _xla

HIGHEST = jax.lax.Precision.HIGHEST
FN = "kjax.ssm.fftconv"


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class Budget:
    """What one backend's kernel covers: tile sides ``N1 <= N2`` are powers of two with
    ``min1 <= N1 <= max1`` and ``min2 <= N2 <= max2``; FFT lengths up to ``max_n``; the dtypes its
    compiled kernel takes (interpret mode takes any floating dtype). ``bwd_programs``: the Triton
    backward splits the batch into chunks until it has this many programs (TPU: unused)."""

    name: str
    min1: int
    min2: int
    max1: int
    max2: int
    max_n: int
    compiled_dtypes: tuple[str, ...]
    bwd_programs: int = 256

    @property
    def min_m(self) -> int:
        return self.min1 * self.min2

    @property
    def max_m(self) -> int:
        return self.max1 * self.max2


@dataclasses.dataclass(frozen=True)
class Plan:
    """FFT length ``n`` (a power of two) = outer factor ``p`` x kernel length ``n1 * n2``."""

    n: int
    p: int
    n1: int
    n2: int

    @property
    def m(self) -> int:
        return self.n1 * self.n2


def make_plan(mode: str, L: int, lk: int, budget: Budget) -> Plan | str:
    """The plan of a call, or the reason (naming the argument) the kernel does not cover it."""
    if mode == "circular":
        n = L
        if n & (n - 1) or n < budget.min_m:
            return (f"`u`: circular mode runs at FFT length L, which the {budget.name} kernel needs to be a "
                    f"power of two >= {budget.min_m}; got L={L}")
    else:
        n = max(budget.min_m, next_pow2(L + lk - 1))
    if n > budget.max_n:
        what = "L" if mode == "circular" else "L + L_k - 1"
        return (f"`u`: the {budget.name} kernel covers FFT lengths up to {budget.max_n}; {what} = "
                f"{L if mode == 'circular' else L + lk - 1} needs {n}")
    m = min(n, budget.max_m)
    a = m.bit_length() - 1
    e1 = a // 2
    e2 = min(max(a - e1, budget.min2.bit_length() - 1), budget.max2.bit_length() - 1)
    e1 = a - e2
    assert budget.min1 <= 1 << e1 <= budget.max1, (m, budget)
    return Plan(n=n, p=n // m, n1=1 << e1, n2=1 << e2)


def check_plan(fn: str, mode: str, L: int, lk: int, budget: Budget) -> Plan:
    plan = make_plan(mode, L, lk, budget)
    if isinstance(plan, str):  # the dispatcher asks `supports` first; a direct call raises
        raise KjaxError(f"{fn}: {plan}.")
    return plan


def supports(platform: str, config, budget: Budget, *, interpret: bool) -> str | None:
    """``None`` when the kernel (compiled, or interpreted) serves the call described by ``config``."""
    if not interpret:
        for arg, key in (("u", "u_dtype"), ("u, k", "dtype")):
            if config[key] not in budget.compiled_dtypes:
                return (f"`{arg}`: the compiled {budget.name} kernel takes "
                        f"{' / '.join(budget.compiled_dtypes)}, not {config[key]}")
    plan = make_plan(config["mode"], config["L"], config["lk"], budget)
    return plan if isinstance(plan, str) else None


# ------------------------------------------------------------------------------- tile maths


@functools.cache
def dft_mats(n1: int, n2: int) -> tuple[np.ndarray, ...]:
    """``F1 [N1, N1]``, ``F2 [N2, N2]`` and twiddles ``T [N1, N2]`` as float64 (re, im) pairs."""
    m = n1 * n2
    f1 = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n1)) / n1)
    f2 = np.exp(-2j * np.pi * np.outer(np.arange(n2), np.arange(n2)) / n2)
    tw = np.exp(-2j * np.pi * np.outer(np.arange(n1), np.arange(n2)) / m)
    return tuple(np.ascontiguousarray(a) for c in (f1, f2, tw) for a in (c.real, c.imag))


def whole_blocks(arrays) -> list:
    """Block specs of arrays read whole by every program (the DFT matrices), for any grid."""
    from jax.experimental import pallas as pl

    return [pl.BlockSpec(a.shape, lambda *_: (0, 0)) for a in arrays]


def dft_arrays(plan: Plan, acc) -> list[jax.Array]:
    """:func:`dft_mats` of the plan's tile as ``acc`` arrays (kernel inputs, one whole block each)."""
    return [jnp.asarray(a, acc) for a in dft_mats(plan.n1, plan.n2)]


def _dot(a, b):
    return jnp.dot(a, b, preferred_element_type=a.dtype, precision=HIGHEST)


def tile_dft(xr, xi, mats):
    """Forward DFT of a tile (``xi`` None: real input): ``C[k1, k2] = X[k1 + N1 k2]`` as (re, im).

    ``mats`` are the refs of ``F1, F2, T`` (re, im); each is read where it is used, so no DFT
    matrix stays live (in registers, on Triton) across the whole kernel.
    """
    f1r, f1i = mats[0][...], mats[1][...]
    if xi is None:
        ar, ai = _dot(f1r, xr), _dot(f1i, xr)
    else:
        ar = _dot(f1r, xr) - _dot(f1i, xi)
        ai = _dot(f1r, xi) + _dot(f1i, xr)
    tr, ti = mats[4][...], mats[5][...]
    br, bi = ar * tr - ai * ti, ar * ti + ai * tr
    f2r, f2i = mats[2][...], mats[3][...]
    return _dot(br, f2r) - _dot(bi, f2i), _dot(br, f2i) + _dot(bi, f2r)


def tile_idft(yr, yi, mats, *, real: bool):
    """Inverse of :func:`tile_dft` (with the ``1/M``): (re, im), or (re, None) when ``real``."""
    f2r, f2i = mats[2][...], mats[3][...]
    pr = _dot(yr, f2r) + _dot(yi, f2i)
    pi = _dot(yi, f2r) - _dot(yr, f2i)
    tr, ti = mats[4][...], mats[5][...]
    qr, qi = pr * tr + pi * ti, pi * tr - pr * ti
    f1r, f1i = mats[0][...], mats[1][...]
    scale = 1.0 / (yr.shape[0] * yr.shape[1])
    re = (_dot(f1r, qr) + _dot(f1i, qi)) * scale
    if real:
        return re, None
    return re, (_dot(f1r, qi) - _dot(f1i, qr)) * scale


def conv_tile(xr, xi, k_refs, mats):
    """``IDFT(K . DFT(x))`` of one tile (real part only when ``xi`` is None)."""
    cr, ci = tile_dft(xr, xi, mats)
    kr, ki = k_refs[0][...], k_refs[1][...]
    return tile_idft(cr * kr - ci * ki, cr * ki + ci * kr, mats, real=xi is None)


def conv_tile_vjp(xr, xi, gr, gi, k_refs, mats):
    """The backward of :func:`conv_tile` for the cotangent ``g``: ``(dxr, dxi, Sr, Si)`` with
    ``dx = IDFT(conj(K) . DFT(g))`` and ``S = DFT(x) . conj(DFT(g))`` (``dK = (Re S, -Im S) / M``)."""
    hr, hi = tile_dft(gr, gi, mats)
    kr, ki = k_refs[0][...], k_refs[1][...]
    dxr, dxi = tile_idft(hr * kr + hi * ki, hi * kr - hr * ki, mats, real=xi is None)
    cr, ci = tile_dft(xr, xi, mats)
    return dxr, dxi, cr * hr + ci * hi, ci * hr - cr * hi


def split_refs(refs, counts):
    """Split a kernel's refs into consecutive groups of the given sizes."""
    out, i = [], 0
    for c in counts:
        out.append(refs[i:i + c])
        i += c
    assert i == len(refs), (i, len(refs))
    return out


def forward_kernel(*refs, real: bool, acc):
    """Kernel body of the forward: refs ``x (1 or 2), kr, ki, 6 DFT matrices, y (1 or 2)``."""
    nx = 1 if real else 2
    x_refs, k_refs, mats, y_refs = split_refs(refs, (nx, 2, 6, nx))
    xr = x_refs[0][...].astype(acc)
    xi = None if real else x_refs[1][...].astype(acc)
    ys = conv_tile(xr, xi, k_refs, mats)
    for ref, y in zip(y_refs, ys, strict=False):
        ref[...] = y.astype(ref.dtype)


# --------------------------------------------------------------------------- the kernel op + VJP


@dataclasses.dataclass(frozen=True)
class Kernels:
    """One backend's pallas_call builders (hashable: they are static arguments of the custom VJP).

    ``forward(xs, kr, ki, plan) -> ys`` with ``xs``/``ys`` tuples ``(re,)`` or ``(re, im)`` of
    ``[B, P, D, N1, N2]``; ``backward(xs, gs, kr, ki, plan) -> (dxs, Sr, Si)`` with ``S`` summed
    over the batch into ``[C, P, D, N1, N2]`` partial sums (``C`` batch chunks).
    """

    forward: Callable[..., tuple]
    backward: Callable[..., tuple]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _conv(kern: Kernels, plan: Plan, xs, kr, ki):
    return kern.forward(xs, kr, ki, plan)


def _conv_fwd(kern, plan, xs, kr, ki):
    return kern.forward(xs, kr, ki, plan), (xs, kr, ki)


def _conv_bwd(kern, plan, res, gs):
    xs, kr, ki = res
    gs = tuple(g.astype(x.dtype) for g, x in zip(gs, xs, strict=True))
    dxs, sr, si = kern.backward(xs, gs, kr, ki, plan)
    return dxs, sr.sum(0) / plan.m, -si.sum(0) / plan.m


_conv.defvjp(_conv_fwd, _conv_bwd)


# ------------------------------------------------------------------------------ XLA around it


def _spectrum(k, skip, mode, plan: Plan, acc):
    """The filter's spectrum (+ skip) at length N, permuted to the kernel's layout
    ``Kt[q, d, k1, k2] = K[P (k1 + N1 k2) + q]``: (re, im) of ``[P, D, N1, N2]``."""
    n = plan.n
    half = _xla.filter_spectrum(k, n, mode, acc)  # [n // 2 + 1, D]
    if skip is not None:
        half = half + skip.astype(acc)
    full = jnp.concatenate([half, jnp.conj(half[1:n // 2][::-1])], axis=0)  # real filter: K[n-j] = conj K[j]
    full = jnp.transpose(full.reshape(plan.n2, plan.n1, plan.p, -1), (2, 3, 1, 0))
    return jnp.real(full), jnp.imag(full)


def _outer_dft(p: int, acc):
    f = np.exp(-2j * np.pi * np.outer(np.arange(p), np.arange(p)) / p)
    return jnp.asarray(f.real, acc), jnp.asarray(f.imag, acc)


def _outer_twiddles(plan: Plan, acc):
    """``W_N^{q m}`` for ``q < P``, ``m < M`` as (re, im) ``[P, 1, M]``; the phase ``q m < N`` is an
    exact integer before it is scaled."""
    q = jnp.arange(plan.p, dtype=jnp.int32)[:, None]
    j = jnp.arange(plan.m, dtype=jnp.int32)[None, :]
    ang = (q * j).astype(acc) * (-2.0 * math.pi / plan.n)
    return jnp.cos(ang)[:, None], jnp.sin(ang)[:, None]


def _einsum(spec, a, b):
    return jnp.einsum(spec, a, b, precision=HIGHEST)


def fftconv(u, k, gate, skip, *, mode: str, kern: Kernels, plan: Plan):
    """The Pallas fftconv on validated arrays (``kjax.ssm.fftconv``'s signature): XLA layout and
    outer step around the kernel op :func:`_conv`."""
    B, L, D = u.shape
    acc = dtypes.accum_dtype(dtypes.result_dtype(u, k))
    n, p, n1, n2, m = plan.n, plan.p, plan.n1, plan.n2, plan.m
    kr, ki = _spectrum(k, skip, mode, plan, acc)
    x = jnp.pad(jnp.swapaxes(u, 1, 2), ((0, 0), (0, 0), (0, n - L)))  # [B, D, N], u's dtype
    if p == 1:
        (y,) = _conv(kern, plan, (x.reshape(B, 1, D, n1, n2),), kr, ki)
        y = y.reshape(B, D, n)
    else:
        fr, fi = _outer_dft(p, acc)
        twr, twi = _outer_twiddles(plan, acc)
        xp = x.reshape(B, D, p, m).astype(acc)
        ar, ai = _einsum("qp,bdpm->bqdm", fr, xp), _einsum("qp,bdpm->bqdm", fi, xp)
        zr, zi = ar * twr - ai * twi, ar * twi + ai * twr
        shape = (B, p, D, n1, n2)
        wr, wi = _conv(kern, plan, (zr.reshape(shape), zi.reshape(shape)), kr, ki)
        wr, wi = wr.reshape(B, p, D, m), wi.reshape(B, p, D, m)
        vr, vi = wr * twr + wi * twi, wi * twr - wr * twi
        y = (_einsum("pq,bqdm->bdpm", fr, vr) + _einsum("pq,bqdm->bdpm", fi, vi)) * (1.0 / p)
        y = y.reshape(B, D, n)
    y = jnp.swapaxes(y[:, :, :L], 1, 2)
    if gate is not None:
        y = y.astype(acc) * gate.astype(acc)
    return y.astype(u.dtype)

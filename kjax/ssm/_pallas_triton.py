"""fftconv as Pallas kernels for NVIDIA GPUs (the Triton backend), forward and backward.

The maths (split-DFT matmuls, the XLA outer step for long sequences, the custom VJP) is in
``_pallas_common``; this file adds the grids, block specs and compiler parameters. Triton's rules:
every tensor a kernel touches has power-of-two sides, and ``tl.dot`` wants sides >= 16, so a
tile ``[N1, N2]`` has ``16 <= N1 <= N2 <= 64`` and the FFT length is a power of two >= 256 (causal and
bidirectional calls pad to it; circular calls need ``L`` itself to be one). The largest tile is 64 x 64
(a budget by design: lowering does not compile Triton, so shared memory is not measured): a float32
``[64, 64]`` operand is 16 KiB, and a complex product ``B F2`` stages at most its 4 operands, twice
if Triton keeps a copy per dot (128 KiB), under the 227 KiB an H100 / H200 block can use; 128 x 128
tiles would need four times that. A ``[64, 64]`` float32 value is 16 registers per thread at 8
warps, so the ~12 live tiles of the complex kernel stay within the register file. Longer transforms
(``N > 4096``, up to ``2^18``) take the two-level path: ``P = N / 4096`` complex tiles per sequence,
outer step in XLA. Dots are float32 at ``Precision.HIGHEST`` (Triton's IEEE input precision; TF32x3
would use tensor cores and is a tuning option not taken here).

* forward: grid ``(B, P, D)``, one tile per program, ``num_warps`` 4 for tiles up to 32 x 32, else 8;
* backward: grid ``(P, D, C)``, each program loops over a chunk of ``B / C`` sequences of one
  channel, writes ``dx`` per sequence and accumulates ``S = sum_b DFT(x) conj(DFT(g))`` in registers;
  the ``C`` partial sums are added in XLA. ``C`` is the smallest divisor of ``B`` giving >= 256
  programs (``Budget.bwd_programs``; else ``B``).

The Triton backend is chosen explicitly with ``compiler_params=pallas.triton.CompilerParams`` (the
default Pallas GPU backend is Mosaic GPU); ``num_stages=1`` (no loads worth pipelining, and stages
cost shared memory). ``interpret=True`` runs the same kernels on any backend (tests). Verified:
values in interpret mode against the reference, lowering by ``jax.export(..., platforms=["cuda"])``;
the compiled kernels have not run on a GPU in this repository.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from kjax.ssm import _pallas_common as pc

BUDGET = pc.Budget("Triton", min1=16, min2=16, max1=64, max2=64, max_n=1 << 18,
                   compiled_dtypes=("float32", "bfloat16", "float16"))


def _params(plan: pc.Plan):
    return pl_triton.CompilerParams(num_warps=4 if plan.m <= 1024 else 8, num_stages=1)


def _forward(xs, kr, ki, plan: pc.Plan, *, interpret: bool):
    B, P, D, n1, n2 = xs[0].shape
    acc = kr.dtype
    mats = pc.dft_arrays(plan, acc)
    tile = pl.BlockSpec((None, None, None, n1, n2), lambda b, q, d: (b, q, d, 0, 0))
    ktile = pl.BlockSpec((None, None, n1, n2), lambda b, q, d: (q, d, 0, 0))
    return tuple(pl.pallas_call(
        functools.partial(pc.forward_kernel, real=len(xs) == 1, acc=acc),
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype) for x in xs],
        grid=(B, P, D),
        in_specs=[tile] * len(xs) + [ktile, ktile] + pc.whole_blocks(mats),
        out_specs=[tile] * len(xs),
        compiler_params=_params(plan), interpret=interpret, name="kjax_fftconv_fwd",
    )(*xs, kr, ki, *mats))


def _backward_kernel(*refs, real: bool, acc, chunk: int):
    nx = 1 if real else 2
    x_refs, g_refs, k_refs, mats, dx_refs, (sr_ref, si_ref) = pc.split_refs(refs, (nx, nx, 2, 6, nx, 2))

    def load(refs, i):
        return refs[0][i].astype(acc), None if real else refs[1][i].astype(acc)

    def body(i, s):
        dxr, dxi, tr, ti = pc.conv_tile_vjp(*load(x_refs, i), *load(g_refs, i), k_refs, mats)
        for ref, v in zip(dx_refs, (dxr, dxi), strict=False):
            ref[i] = v.astype(ref.dtype)
        return s[0] + tr, s[1] + ti

    zero = jnp.zeros(sr_ref.shape, acc)
    sr, si = jax.lax.fori_loop(0, chunk, body, (zero, zero))
    sr_ref[...] = sr
    si_ref[...] = si


def _chunks(B: int, programs: int, target: int) -> int:
    """The smallest divisor ``C`` of ``B`` with ``programs * C >= target`` (else ``B``)."""
    return next((c for c in range(1, B + 1) if B % c == 0 and programs * c >= target), B)


def _backward(xs, gs, kr, ki, plan: pc.Plan, *, interpret: bool, target: int):
    B, P, D, n1, n2 = xs[0].shape
    acc = kr.dtype
    mats = pc.dft_arrays(plan, acc)
    C = _chunks(B, P * D, target)
    chunk = B // C
    seqs = pl.BlockSpec((chunk, None, None, n1, n2), lambda q, d, c: (c, q, d, 0, 0))
    ktile = pl.BlockSpec((None, None, n1, n2), lambda q, d, c: (q, d, 0, 0))
    part = pl.BlockSpec((None, None, None, n1, n2), lambda q, d, c: (c, q, d, 0, 0))
    out = pl.pallas_call(
        functools.partial(_backward_kernel, real=len(xs) == 1, acc=acc, chunk=chunk),
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype) for x in xs]
        + [jax.ShapeDtypeStruct((C, P, D, n1, n2), acc)] * 2,
        grid=(P, D, C),
        in_specs=[seqs] * (2 * len(xs)) + [ktile, ktile] + pc.whole_blocks(mats),
        out_specs=[seqs] * len(xs) + [part, part],
        compiler_params=_params(plan), interpret=interpret, name="kjax_fftconv_bwd",
    )(*xs, *gs, kr, ki, *mats)
    return tuple(out[:len(xs)]), out[-2], out[-1]


@functools.cache
def _kernels(interpret: bool, bwd_programs: int) -> pc.Kernels:
    return pc.Kernels(functools.partial(_forward, interpret=interpret),
                      functools.partial(_backward, interpret=interpret, target=bwd_programs))


def supports(platform: str, config, *, interpret: bool = False) -> str | None:
    """``None`` when these kernels serve the call described by ``config``, else the reason."""
    return pc.supports(platform, config, BUDGET, interpret=interpret)


@functools.partial(jax.jit, static_argnames=("mode", "interpret", "budget"))
def fftconv(u, k, gate=None, skip=None, *, mode: str = "causal", interpret: bool = False,
            budget: pc.Budget = BUDGET):
    """The Triton fftconv on validated arrays (see :func:`kjax.ssm.fftconv`); ``budget`` overrides
    the tile limits (tests use small tiles to reach the two-level path at small ``L``)."""
    plan = pc.check_plan(pc.FN, mode, u.shape[1], k.shape[-2], budget)
    kern = _kernels(interpret, budget.bwd_programs)
    return pc.fftconv(u, k, gate, skip, mode=mode, kern=kern, plan=plan)

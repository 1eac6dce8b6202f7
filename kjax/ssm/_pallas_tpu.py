"""fftconv as Pallas kernels for TPUs (the Mosaic backend), forward and backward.

The maths (split-DFT matmuls on the MXU, the XLA outer step for long sequences, the custom VJP) is
in ``_pallas_common``; this file adds the grids, block specs and compiler parameters. Mosaic's rule:
a block's last two dims are multiples of (8, 128) or equal to the array's. Every block here is one
whole tile ``[N1, N2]`` (equal to the array's last two dims) and the tiles are aligned to the native
tiling of every input dtype (float32 (8, 128), bfloat16 (16, 128)): ``16 <= N1 <= N2``, ``N2 = 128``,
powers of two. So the FFT length is a power of two >= 2048 (causal and bidirectional calls pad to it;
circular calls need ``L`` itself to be one), and transforms longer than one 128 x 128 tile
(``N > 16384``, up to ``2^18``) take the two-level path. The MXU sees ``[N1, N1] x [N1, 128]`` and
``[N1, 128] x [128, 128]`` products.

VMEM (an estimate by design; lowering does not measure it): a float32 128 x 128 tile is 64 KiB; the
backward, the larger kernel, holds 4 input tiles, 2 filter tiles, 6 DFT matrices and 4 output tiles,
double-buffered (2 MiB), plus about 16 live intermediates (1 MiB): well under the 16 MiB default
scoped VMEM of v5e (32 MiB on v6e), so no ``vmem_limit_bytes`` is set.

* forward: grid ``(B, P, D)``, all "parallel";
* backward: grid ``(P, D, B)`` with the batch axis "arbitrary": ``dx`` per step, and
  ``S = sum_b DFT(x) conj(DFT(g))`` accumulated in the output block, which stays in VMEM across b.

``interpret=True`` runs the kernels under ``pltpu.InterpretParams()`` (TPU interpret mode, which
simulates VMEM and DMAs) on any backend. Verified: values in TPU interpret mode against the
reference, lowering by ``jax.export(..., platforms=["tpu"])``; the compiled kernels have not run on
a TPU in this repository.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kjax.ssm import _pallas_common as pc

BUDGET = pc.Budget("Mosaic TPU", min1=16, min2=128, max1=128, max2=128, max_n=1 << 18,
                   compiled_dtypes=("float32", "bfloat16"))


def _call(kernel, *, grid, in_specs, out_specs, out_shape, semantics, interpret, name):
    return pl.pallas_call(
        kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
        compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
        interpret=pltpu.InterpretParams() if interpret else False, name=name)


def _forward(xs, kr, ki, plan: pc.Plan, *, interpret: bool):
    B, P, D, n1, n2 = xs[0].shape
    acc = kr.dtype
    mats = pc.dft_arrays(plan, acc)
    tile = pl.BlockSpec((None, None, None, n1, n2), lambda b, q, d: (b, q, d, 0, 0))
    ktile = pl.BlockSpec((None, None, n1, n2), lambda b, q, d: (q, d, 0, 0))
    return tuple(_call(
        functools.partial(pc.forward_kernel, real=len(xs) == 1, acc=acc),
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype) for x in xs], grid=(B, P, D),
        in_specs=[tile] * len(xs) + [ktile, ktile] + pc.whole_blocks(mats),
        out_specs=[tile] * len(xs), semantics=("parallel",) * 3, interpret=interpret,
        name="kjax_fftconv_fwd")(*xs, kr, ki, *mats))


def _backward_kernel(*refs, real: bool, acc):
    nx = 1 if real else 2
    x_refs, g_refs, k_refs, mats, dx_refs, (sr_ref, si_ref) = pc.split_refs(refs, (nx, nx, 2, 6, nx, 2))

    def load(refs):
        return refs[0][...].astype(acc), None if real else refs[1][...].astype(acc)

    dxr, dxi, tr, ti = pc.conv_tile_vjp(*load(x_refs), *load(g_refs), k_refs, mats)
    for ref, v in zip(dx_refs, (dxr, dxi), strict=False):
        ref[...] = v.astype(ref.dtype)

    @pl.when(pl.program_id(2) == 0)
    def _():
        sr_ref[...] = jnp.zeros_like(sr_ref)
        si_ref[...] = jnp.zeros_like(si_ref)

    sr_ref[...] += tr
    si_ref[...] += ti


def _backward(xs, gs, kr, ki, plan: pc.Plan, *, interpret: bool):
    B, P, D, n1, n2 = xs[0].shape
    acc = kr.dtype
    mats = pc.dft_arrays(plan, acc)
    tile = pl.BlockSpec((None, None, None, n1, n2), lambda q, d, b: (b, q, d, 0, 0))
    ktile = pl.BlockSpec((None, None, n1, n2), lambda q, d, b: (q, d, 0, 0))
    part = pl.BlockSpec((None, None, None, n1, n2), lambda q, d, b: (0, q, d, 0, 0))
    out = _call(
        functools.partial(_backward_kernel, real=len(xs) == 1, acc=acc),
        out_shape=[jax.ShapeDtypeStruct(x.shape, x.dtype) for x in xs]
        + [jax.ShapeDtypeStruct((1, P, D, n1, n2), acc)] * 2,
        grid=(P, D, B), in_specs=[tile] * (2 * len(xs)) + [ktile, ktile] + pc.whole_blocks(mats),
        out_specs=[tile] * len(xs) + [part, part], semantics=("parallel", "parallel", "arbitrary"),
        interpret=interpret, name="kjax_fftconv_bwd")(*xs, *gs, kr, ki, *mats)
    return tuple(out[:len(xs)]), out[-2], out[-1]


@functools.cache
def _kernels(interpret: bool) -> pc.Kernels:
    return pc.Kernels(functools.partial(_forward, interpret=interpret),
                      functools.partial(_backward, interpret=interpret))


def supports(platform: str, config, *, interpret: bool = False) -> str | None:
    """``None`` when these kernels serve the call described by ``config``, else the reason."""
    return pc.supports(platform, config, BUDGET, interpret=interpret)


@functools.partial(jax.jit, static_argnames=("mode", "interpret", "budget"))
def fftconv(u, k, gate=None, skip=None, *, mode: str = "causal", interpret: bool = False,
            budget: pc.Budget = BUDGET):
    """The Mosaic TPU fftconv on validated arrays (see :func:`kjax.ssm.fftconv`); ``budget``
    overrides the tile limits (tests use small tiles to reach the two-level path at small ``L``)."""
    plan = pc.check_plan(pc.FN, mode, u.shape[1], k.shape[-2], budget)
    kern = _kernels(interpret)
    return pc.fftconv(u, k, gate, skip, mode=mode, kern=kern, plan=plan)

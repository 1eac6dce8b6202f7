"""Issue #14's last two gaps: ``stax.ConvTranspose(..., padding="CIRCULAR")`` and ``stax.batch``
with ``pattern=`` / ``mask_constant=``.

Oracles for ConvTranspose: neural-tangents 0.6.5's stored outputs (kernel nngp / ntk for x1 vs x2,
nngp for x1 vs None, apply_fn with NT's params, shapes) from
benchmarks/peers/nt_stax_reference_convt.py (which also stores the networks, as JSON) to 1e-9
relative (Frobenius) in float64; and, without NT, the layer's definition: apply_fn against a NumPy
sum over filter taps and input positions (output position
``(s i + w - 1 - k - (M - L s) // 2) mod L s``),
and kernel_fn against the exact average of that linear layer's outputs over N(0, 1) weights and
biases (its NNGP, and NTK, computed from the same sum). ``stax.batch``: blockwise equals one-shot to 1e-12
for an Aggregate network with per-example graphs and for a masked network (GlobalAvgPool over
the unmasked positions), with batch sizes that split x1 and x2 unevenly.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src.errors import KjaxError
from kjax.ntk import stax
from tests.conformance import assert_close, rel_err

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "nt_stax_reference_convt.npz"))
ARCHS = json.loads(str(REF["archs"]))
RTOL = 1e-9


def _build(layers):
    """The reference script's ``build`` for kjax (the JSON's lists are the layers' tuples)."""
    def conv(v):
        return tuple(v) if isinstance(v, list) else v

    return stax.serial(*[getattr(stax, name)(*[conv(a) for a in args],
                                             **{k: conv(v) for k, v in kw.items()})
                         for name, args, kw in layers])


def _init_shapes(init_fn, input_shape):
    """``init_fn``'s output shape and its parameters' shapes, traced only (no random draws)."""
    out = []

    def params(key):
        shape, p = init_fn(key, input_shape)
        out.append(tuple(shape))
        return p

    p = jax.eval_shape(params, jax.random.key(0))
    return out[0], p


# ----------------------------------------------------------------------------------------------
# ConvTranspose(padding="CIRCULAR") against neural-tangents


@pytest.mark.parametrize("name", list(ARCHS))
def test_convtranspose_circular_matches_neural_tangents(name):
    layers, _, _ = ARCHS[name]
    init_fn, apply_fn, kernel_fn = _build(layers)
    x1, x2 = REF[f"{name}/x1"], REF[f"{name}/x2"]
    k = kernel_fn(x1, x2, ("nngp", "ntk", "shape1"))
    assert_close(k.nngp, REF[f"{name}/nngp"], RTOL, f"{name} nngp")
    assert_close(k.ntk, REF[f"{name}/ntk"], RTOL, f"{name} ntk")
    assert k.shape1 == tuple(REF[f"{name}/shape1"]), name
    if name == "t1_chain":  # x1 vs None once (a compile per network)
        assert_close(kernel_fn(x1, None, "nngp"), REF[f"{name}/nngp11"], RTOL, f"{name} nngp11")
    # (shapes only and one compiled apply: eager layers compile op by op)
    shape, params = _init_shapes(init_fn, x1.shape)
    assert tuple(shape) == tuple(REF[f"{name}/apply"].shape), name
    leaves, tree = jax.tree.flatten(params)
    nt = [REF[f"{name}/params/{j}"] for j in range(len(leaves))]
    assert [np.shape(a) for a in leaves] == [a.shape for a in nt], name
    y = jax.jit(apply_fn)(jax.tree.unflatten(tree, [jnp.asarray(a) for a in nt]), x1)
    assert np.linalg.norm(REF[f"{name}/apply"]) > 0.1
    assert_close(y, REF[f"{name}/apply"], RTOL, f"{name} apply")


# ----------------------------------------------------------------------------------------------
# ConvTranspose against its definition (no NT)

W_STD, B_STD = 1.3, 0.4
# (filter, strides, x shape, padding); CIRCULAR with the fold offset (w - s) // 2 = 1 and 0, and
# VALID with a filter narrower than the stride (whose output is L s, not (L - 1) s + w)
DEFS = {
    "circ_1d": ((5,), (2,), (3, 4, 2), "CIRCULAR"),
    "circ_2d": ((2, 3), (2, 1), (2, 2, 3, 2), "CIRCULAR"),
    "valid_narrow": ((1,), (3,), (3, 2, 2), "VALID"),
}


def _fold_maps(L, w, s, padding):
    """``T[k, p, i] = 1`` where tap ``k`` of input ``i`` lands on output ``p``: lax.conv_transpose
    correlates the stride-dilated input with the unflipped filter, so ``p = s i + w - 1 - k``,
    then CIRCULAR folds ``p`` modulo ``L s`` after an offset ``(M - L s) // 2``."""
    m = L * s + max(w - s, 0)  # lax.conv_transpose's VALID length
    n = L * s if padding == "CIRCULAR" else m
    off = (m - n) // 2
    T = np.zeros((w, n, L))
    for k in range(w):
        for i in range(L):
            T[k, (s * i + w - 1 - k - off) % n, i] += 1.0
    return T


def _by_definition(x, x2, W, b, filt, strides, padding):
    """apply_fn, ``y[p] = W_std / sqrt(C |w|) sum_{k, i} T_k[p, i] x[i] W[k] + b_std b``, and
    kernel_fn's NNGP (= NTK for one layer) ``E_{W, b ~ N(0, 1)}[y(x) y(x2)]``, i.e.
    ``W_std^2 / (C |w|) sum_{k, c} (T_k x_c)(T_k x2_c)^T + b_std^2`` (1-D or 2-D)."""
    c = x.shape[-1]
    Ts = [_fold_maps(L, w, s, padding) for L, w, s in zip(x.shape[1:-1], filt, strides, strict=True)]
    norm = W_STD / np.sqrt(c * np.prod(filt))
    if len(filt) == 1:
        y = np.einsum("kpi,nic,kco->npo", Ts[0], x, W)
        u, u2 = (np.einsum("kpi,nic->nkcp", Ts[0], z) for z in (x, x2))
        nngp = np.einsum("akcp,bkcq->abpq", u, u2)
    else:
        y = np.einsum("kpi,lqj,nijc,klco->npqo", Ts[0], Ts[1], x, W)
        u, u2 = (np.einsum("kpi,lqj,nijc->nklcpq", Ts[0], Ts[1], z) for z in (x, x2))
        nngp = np.einsum("aklcpq,bklcPQ->abpPqQ", u, u2)
    return norm * y + B_STD * b, norm**2 * nngp + B_STD**2


@pytest.mark.parametrize("name", list(DEFS))
def test_convtranspose_by_definition(name):
    filt, strides, shape, padding = DEFS[name]
    init_fn, apply_fn, kernel_fn = stax.ConvTranspose(2, filt, strides, padding, W_std=W_STD,
                                                      b_std=B_STD)
    rng = np.random.default_rng(7)
    x, x2 = rng.standard_normal(shape), rng.standard_normal((2,) + shape[1:])
    out_shape, (W, b) = _init_shapes(init_fn, shape)
    W, b = rng.standard_normal(W.shape), rng.standard_normal(b.shape)
    y_ref, nngp_ref = _by_definition(x, x2, W, b, filt, strides, padding)
    y = jax.jit(apply_fn)((W, b), x)
    assert y.shape == tuple(out_shape) == y_ref.shape, name
    assert_close(y, y_ref, 1e-12, f"{name} apply")
    k = kernel_fn(x, x2, ("nngp", "ntk"))
    assert_close(k.nngp, nngp_ref, 1e-12, f"{name} nngp")
    assert_close(k.ntk, nngp_ref, 1e-12, f"{name} ntk")  # one layer: NTK = NNGP


def test_convtranspose_circular_mask_shape():
    # NT's mask of a CIRCULAR transposed convolution is its SAME one: same length as the output
    _, _, kernel_fn = stax.ConvTranspose(2, (3,), (2,), "CIRCULAR")
    x = np.random.default_rng(3).standard_normal((2, 4, 2))
    x[0, 1] = 9.0
    k = kernel_fn(x, None, ("nngp", "mask1"), mask_constant=9.0)
    assert k.mask1.shape[:2] == (2, 8) and k.nngp.shape == (2, 2, 8, 8)
    assert bool(k.mask1[0].any()) and not bool(k.mask1[1].any())


# ----------------------------------------------------------------------------------------------
# stax.batch with pattern= and mask_constant=

N1, N2, BS = 5, 3, 2  # blocks of 2 split 5 and 3 unevenly


def _graph_net():
    return stax.serial(stax.Dense(3, W_std=1.5, b_std=0.2), stax.Relu(), stax.Aggregate(),
                       stax.GlobalAvgPool())


def test_batch_pattern_blocks_match_unbatched():
    _, _, kernel_fn = _graph_net()
    rng = np.random.default_rng(11)
    x1, x2 = rng.standard_normal((N1, 4, 2)), rng.standard_normal((N2, 4, 2))
    p1, p2 = rng.uniform(size=(N1, 4, 4)), rng.uniform(size=(N2, 4, 4))
    batched = stax.batch(kernel_fn, batch_size=BS)
    get = ("nngp", "ntk")
    ref = kernel_fn(x1, x2, get, pattern=(p1, p2))
    got = batched(x1, x2, get, pattern=(p1, p2))
    assert_close(got.nngp, ref.nngp, 1e-12, "pattern nngp")
    assert_close(got.ntk, ref.ntk, 1e-12, "pattern ntk")
    # the graphs matter (other graphs, same compiled program, give another kernel), so graphs
    # dropped or split out of step with their rows would fail the comparison above
    other = kernel_fn(x1, x2, get, pattern=(p1[::-1], p2))
    assert rel_err(other.nngp, ref.nngp) > 1e-3
    # x2=None: pattern1 serves both sides (blocks a <= b, mirrored)
    ref11 = kernel_fn(x1, None, get, pattern=(p1, None))
    assert_close(batched(x1, None, get, pattern=(p1, None)).ntk, ref11.ntk, 1e-12, "x1 x1")


def test_batch_mask_constant_matches_unbatched():
    _, _, kernel_fn = stax.serial(stax.Conv(3, (2,), padding="SAME", W_std=1.5, b_std=0.2),
                                  stax.Relu(), stax.GlobalAvgPool(), stax.Dense(1))
    rng = np.random.default_rng(12)
    x1, x2 = rng.standard_normal((N1, 4, 2)), rng.standard_normal((N2, 4, 2))
    x1[[0, 3], 2:] = np.nan  # masked positions (all channels): padding of shorter sequences
    x2[1, 3] = np.nan
    batched = stax.batch(kernel_fn, batch_size=BS)
    ref = kernel_fn(x1, x2, "ntk", mask_constant=np.nan)
    assert np.isfinite(ref).all()
    # (without the mask the NaNs would reach the kernel: a dropped mask_constant fails here)
    assert_close(batched(x1, x2, "ntk", mask_constant=np.nan), ref, 1e-12, "mask x1 x2")


def test_batch_pattern_and_mask_errors():
    _, _, kernel_fn = _graph_net()
    x1, x2 = np.ones((N1, 4, 2)), np.ones((N2, 4, 2))
    p1, p2 = np.ones((N1, 4, 4)), np.ones((N2, 4, 4))
    batched = stax.batch(kernel_fn, batch_size=BS)
    cases = [
        (dict(pattern=p1), r"`pattern` must be None or a pair"),
        (dict(pattern=(p1, None)), r"`pattern` must give both pattern1 and pattern2"),
        (dict(pattern=(p1, p1)), r"`pattern` must have pattern2 with one row per example of `x2`"),
        (dict(pattern=(p2, p2)), r"`pattern` must have pattern1 with one row per example of `x1`"),
        (dict(mask_constant=np.ones(2)), r"`mask_constant` must be None or a real scalar"),
        (dict(mask_constant=True), r"`mask_constant` must be None or a real scalar"),
    ]
    for kw, match in cases:
        with pytest.raises(KjaxError, match=r"kjax\.ntk\.stax\.batch: " + match):
            batched(x1, x2, "nngp", **kw)

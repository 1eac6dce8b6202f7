"""Masked inputs in kjax.ntk.stax (neural-tangents' ``mask_constant``, issue #14).

Oracle: NT 0.6.5's stored outputs (benchmarks/peers/nt_stax_reference_mask.py ->
tests/ntk/data/nt_stax_reference_mask.npz) for the networks of tests/ntk/stax_archs_mask.py (MLPs
with a masked mean, Conv + pooling, attention with masked tokens, Aggregate, DotGeneral, FanIn +
LayerNorm): nngp / ntk / cov1 / cov2 and the output masks for x1 vs x2 to 1e-9 relative
(Frobenius) in float64, x1 vs None for some, and apply_fn with NT's params and masked inputs
(value and mask) to 1e-12. Independent of NT: a network ending in GlobalAvgPool gives on
padded inputs exactly the kernel of the inputs with the padding removed (equal lengths), and the
documented errors.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src.errors import KjaxError
from kjax.ntk import stax
from tests.conformance import assert_close
from tests.ntk.stax_archs_mask import MASK, architectures

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "nt_stax_reference_mask.npz"))
ARCHS = architectures(stax)
RTOL = 1e-9
RTOL_SELF = 1e-7  # arccos at cos = 1 on the diagonal (see tests/ntk/test_stax_structure.py)
SELF = ("mlp_gap", "attn_softmax")


@pytest.mark.parametrize("name", list(ARCHS))
def test_masked_kernel_matches_neural_tangents(name):
    (_, _, kernel_fn), _, _, kw, _ = ARCHS[name]
    x1, x2 = REF[f"{name}/x1"], REF[f"{name}/x2"]
    assert (x1 == MASK).any() and (x2 == MASK).any()  # the inputs do carry masked entries
    k = kernel_fn(x1, x2, mask_constant=MASK, **kw)
    for field in ("nngp", "ntk", "cov1", "cov2"):
        assert_close(getattr(k, field), REF[f"{name}/{field}"], RTOL, f"{name} {field}")
    for field in ("mask1", "mask2"):
        np.testing.assert_array_equal(np.asarray(getattr(k, field)), REF[f"{name}/{field}"])
    if name not in SELF:
        return
    k11 = kernel_fn(x1, None, ("nngp", "ntk", "cov1", "mask2"), mask_constant=MASK, **kw)
    assert k11.mask2 is None
    assert_close(k11.nngp, REF[f"{name}/nngp11"], RTOL_SELF, f"{name} nngp(x1, None)")
    assert_close(k11.ntk, REF[f"{name}/ntk11"], RTOL_SELF, f"{name} ntk(x1, None)")
    assert_close(k11.cov1, REF[f"{name}/cov1_11"], RTOL_SELF, f"{name} cov1(x1, None)")


@pytest.mark.parametrize("name", list(ARCHS))
def test_masked_apply_matches_neural_tangents(name):
    (init_fn, apply_fn, _), _, _, kw, _ = ARCHS[name]
    x1 = REF[f"{name}/x1"]
    params = jax.eval_shape(lambda key: init_fn(key, x1.shape)[1], jax.random.key(0))
    leaves, treedef = jax.tree.flatten(params)
    params = jax.tree.unflatten(treedef, [jnp.asarray(REF[f"{name}/params/{j}"], jnp.float64)
                                          for j in range(len(leaves))])
    akw = {"pattern": kw["pattern"][0]} if "pattern" in kw else {}
    out = apply_fn(params, x1, mask_constant=MASK, **akw)
    assert isinstance(out, stax.MaskedArray)
    assert_close(out.masked_value, REF[f"{name}/apply"], 1e-12, f"{name} apply")
    np.testing.assert_array_equal(np.asarray(out.mask), REF[f"{name}/apply_mask"])
    plain = stax.unmask_fn(apply_fn)(params, x1, mask_constant=MASK, **akw)
    assert_close(plain, np.where(REF[f"{name}/apply_mask"], 0.0, REF[f"{name}/apply"]), 1e-12,
                 f"{name} unmask_fn")


def test_masked_mean_equals_the_unpadded_kernel():
    """Padding removed: x1[0] and x2[1] both have 3 real positions of 5; the masked kernel of the
    padded batch equals the plain kernel of the trimmed inputs (no NT involved)."""
    (_, _, kernel_fn), _, _, _, _ = ARCHS["mlp_gap"]
    rng = np.random.default_rng(5)
    x1, x2 = rng.standard_normal((2, 5, 2)), rng.standard_normal((2, 5, 2))
    x1[0, 3:] = MASK
    x2[1, 3:] = MASK
    x1[1, 1, 0] = MASK  # one masked channel only: the position stays (its other channel counts)
    k = kernel_fn(x1, x2, mask_constant=MASK)
    trimmed = kernel_fn(x1[:1, :3], x2[1:, :3])
    for field in ("nngp", "ntk"):
        assert_close(getattr(k, field)[0, 1], getattr(trimmed, field)[0, 0], 1e-12, field)
    assert_close(k.cov1[0], trimmed.cov1[0], 1e-12, "cov1")
    # without a mask the padding is data, and the kernel differs
    assert abs(kernel_fn(x1, x2, "nngp")[0, 1] - k.nngp[0, 1]) > 1e-3
    # a NaN mask constant masks NaNs
    kn = kernel_fn(np.where(x1 == MASK, np.nan, x1), np.where(x2 == MASK, np.nan, x2),
                   mask_constant=np.nan)
    assert_close(kn.nngp, k.nngp, 1e-12, "nan mask")


def test_masks_travel_through_kernels_and_errors():
    (_, _, kernel_fn), _, _, _, _ = ARCHS["mlp_gap"]
    x1, x2 = REF["mlp_gap/x1"], REF["mlp_gap/x2"]
    # a Kernel with masks fed back into a kernel_fn keeps them
    _, _, first = stax.serial(stax.Dense(3, W_std=1.5, b_std=0.2), stax.Relu())
    _, _, rest = stax.serial(stax.Dense(3, W_std=1.5, b_std=0.2), stax.Erf(),
                             stax.Dense(2, W_std=1.5, b_std=0.2), stax.GlobalAvgPool())
    k = rest(first(x1, x2, mask_constant=MASK))
    assert_close(k.nngp, REF["mlp_gap/nngp"], RTOL, "layer by layer")
    # repeat: the same masked kernel as the unrolled network, and apply_fn runs on masked inputs
    block = stax.serial(stax.Dense(3, W_std=1.5, b_std=0.2), stax.Relu())
    init_r, apply_r, rep = stax.serial(stax.Dense(3), stax.repeat(block, 2), stax.GlobalAvgPool())
    _, _, unrolled = stax.serial(stax.Dense(3), block, block, stax.GlobalAvgPool())
    assert_close(rep(x1, x2, "ntk", mask_constant=MASK),
                 unrolled(x1, x2, "ntk", mask_constant=MASK), 1e-12, "repeat")
    _, params = init_r(jax.random.key(0), x1.shape)
    out = apply_r(params, x1, mask_constant=MASK)
    assert out.masked_value.shape == (3, 3) and out.mask.shape == (3, 1)
    with pytest.raises(KjaxError, match=r"`mask_constant` must be None or a real scalar"):
        kernel_fn(x1, x2, mask_constant="pad")
    # pooling needs one mask per position (NT's NotImplementedError)
    _, _, pool = stax.serial(stax.GlobalAvgPool())
    x = np.ones((2, 3, 2))
    x[0, 0, 0] = MASK
    with pytest.raises(NotImplementedError, match=r"masks that differ between channels"):
        pool(x, None, mask_constant=MASK)

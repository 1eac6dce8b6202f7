"""stax.batch: blockwise (and sharded, and streamed-to-host) kernels equal the one-shot kernel_fn."""

from __future__ import annotations

import numpy as np
import pytest

from kjax._src.errors import KjaxError
from kjax.ntk import stax
from tests.conformance import assert_close
from tests.ntk.stax_archs import architectures

ARCHS = architectures(stax)


def test_batch_spatial_kernel_symmetric_and_cross():
    _, _, kernel_fn = stax.serial(stax.Conv(4, (2, 2), padding="SAME", b_std=0.1), stax.Relu(),
                                  stax.Conv(4, (2, 1)))
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((5, 3, 2, 2)), rng.standard_normal((3, 3, 2, 2))
    batched = stax.batch(kernel_fn, batch_size=2)
    # x2=None mirrors the upper block triangle: the spatial pair axes must be swapped too
    assert_close(batched(x1, None, "ntk"), kernel_fn(x1, None, "ntk"), 1e-12, "symmetric")
    both = batched(x1, x2, ("nngp", "ntk"))
    assert both._fields == ("nngp", "ntk")
    assert_close(both.nngp, kernel_fn(x1, x2, "nngp"), 1e-12, "cross nngp")


def test_batch_sharded_and_streamed(mesh):
    _, _, kernel_fn = ARCHS["mlp_relu"][0]
    x = np.random.default_rng(1).standard_normal((21, 4))
    ref = kernel_fn(x, None, "nngp")
    assert_close(stax.batch(kernel_fn, 4, mesh=mesh)(x, None, "nngp"), ref, 1e-12, "mesh")
    out = np.zeros((21, 21))
    res = stax.batch(kernel_fn, 4)(x, None, "nngp", out=out)
    assert res is out
    assert_close(out, ref, 1e-12, "out")


def test_batch_errors():
    _, _, kernel_fn = ARCHS["mlp_relu"][0]
    with pytest.raises(KjaxError, match=r"kjax\.ntk\.stax\.batch: `get` must be 'nngp', 'ntk'"):
        stax.batch(kernel_fn, 2)(np.ones((3, 4)), None, "cov1")
    with pytest.raises(KjaxError, match=r"kjax\.ntk\.stax\.batch: `batch_size` must be >= 1; got 0"):
        stax.batch(kernel_fn, 0)


@pytest.mark.parametrize("head", ["flatten", "global_avg_pool"])
def test_batch_conv_net_with_x2_none(head):
    """Regression: stax.batch(kernel_fn, 2)(x, None, "ntk") on a conv net whose kernel has no
    spatial axes left raised "axis 3 is out of bounds" (x2=x1 worked)."""
    last = stax.Flatten() if head == "flatten" else stax.GlobalAvgPool()
    _, _, kernel_fn = stax.serial(stax.Conv(3, (2, 2), padding="SAME"), stax.Relu(), last,
                                  stax.Dense(1))
    x = np.random.default_rng(2).standard_normal((5, 3, 3, 2))
    want = kernel_fn(x, None, ("nngp", "ntk"))
    got = stax.batch(kernel_fn, batch_size=2)(x, None, ("nngp", "ntk"))
    assert_close(got.ntk, want.ntk, 1e-12, "ntk")
    assert_close(got.nngp, want.nngp, 1e-12, "nngp")

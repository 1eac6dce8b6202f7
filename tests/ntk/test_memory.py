"""The memory guard: stax kernels and the eNTK estimate their peak memory from shapes before they
run, and a call that would not fit raises at once, naming a block / batch size that fits.

The free memory is monkeypatched small, so nothing large is ever allocated here: every check runs
on shapes (``jax.eval_shape``) or raises before any computation.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax.ntk import _memory, empirical_ntk, empirical_ntk_fn, stax

MB = 2**20


@pytest.fixture
def free(monkeypatch):
    def set_free(nbytes):
        monkeypatch.setattr(_memory, "available_bytes", lambda: nbytes)

    return set_free


def _gap_net():
    return stax.serial(stax.Conv(8, (3, 3), padding="SAME"), stax.Relu(),
                       stax.Conv(8, (3, 3), padding="SAME"), stax.Relu(), stax.GlobalAvgPool(),
                       stax.Dense(1))


def _suggested(pattern, message):
    m = re.search(pattern, message)
    assert m, message
    return int(m.group(1))


def test_stax_kernel_too_large_raises_before_running_and_names_a_batch_size(free):
    """Regression: the 500 + 200 image conv net with global pooling asked XLA for 87.6 GB and
    failed later at an unrelated np.asarray; now it raises first, naming stax.batch."""
    _, _, kernel_fn = _gap_net()
    x1, x2 = np.zeros((500, 8, 8, 3)), np.zeros((200, 8, 8, 3))
    free(16 * 2**30)
    with pytest.raises(MemoryError) as info:
        kernel_fn(x1, x2, "ntk")
    msg = str(info.value)
    assert msg.startswith("kjax.ntk.stax.serial kernel_fn: ")
    assert re.search(r"needs about \d+(\.\d)? GB .* 16\.0 GB are free", msg), msg
    b = _suggested(r"stax\.batch\(kernel_fn, batch_size=(\d+)\)", msg)
    assert 1 <= b < 500
    # the suggestion fits: stax.batch's own check passes (shapes only, nothing is computed)
    out = jax.eval_shape(lambda a, c: stax.batch(kernel_fn, batch_size=b)(a, c, "ntk"), x1, x2)
    assert out.shape == (500, 200)


def test_stax_batch_names_a_batch_size_that_fits(free):
    _, _, kernel_fn = _gap_net()
    x = np.zeros((40, 8, 8, 1))
    free(24 * MB)
    with pytest.raises(MemoryError, match=r"kjax\.ntk\.stax\.batch: one block of `batch_size=40`"):
        stax.batch(kernel_fn, batch_size=40)(x, None, "ntk")
    try:
        stax.batch(kernel_fn, batch_size=40)(x, None, "ntk")
    except MemoryError as e:
        b = _suggested(r"use batch_size=(\d+)", str(e))
    assert 1 <= b < 40
    jax.eval_shape(lambda a: stax.batch(kernel_fn, batch_size=b)(a, None, "ntk"), x)
    # an MLP's blocks are small but its [400, 400] result (x3 while assembled) is not: stream it
    _, _, mlp = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    free(2 * MB)
    with pytest.raises(MemoryError, match=r"the result \[400, 400\] .* pass `out=`"):
        stax.batch(mlp, batch_size=10)(np.zeros((400, 3)), None, "ntk")


def _wide_mlp():
    k1, k2 = jax.random.split(jax.random.key(0))
    p = {"w1": jax.random.normal(k1, (5, 2000)), "w2": jax.random.normal(k2, (2000, 10))}
    return (lambda q, x: jnp.tanh(x @ q["w1"]) @ q["w2"]), p


def test_full_entk_too_large_names_a_block_size(free):
    f, p = _wide_mlp()
    x = jnp.zeros((40, 5))
    free(24 * MB)  # the Jacobians of 40 examples take ~140 MB, the [40, 40, 10, 10] result 1.3 MB
    jc = dict(mode="full", implementation="jacobian_contraction")
    with pytest.raises(MemoryError) as info:
        empirical_ntk(f, p, x, block_size=40, **jc)
    msg = str(info.value)
    assert msg.startswith("kjax.ntk.empirical_ntk: one block of block_size=40"), msg
    b = _suggested(r"use block_size=(\d+)", msg)
    assert 1 <= b < 40
    out = jax.eval_shape(lambda q, a: empirical_ntk(f, q, a, block_size=b, **jc), p, x)
    assert out.shape == (40, 40, 10, 10)
    # block_size=None picks blocks that fit by itself
    jax.eval_shape(lambda q, a: empirical_ntk(f, q, a, **jc), p, x)
    # the NT-style function has no blocks: its error points to empirical_ntk's
    with pytest.raises(MemoryError) as info:
        empirical_ntk_fn(f, trace_axes=(), vmap_axes=0, implementation=1)(x, None, p)
    msg = str(info.value)
    assert msg.startswith("kjax.ntk.empirical_ntk_fn: ") and "[40, 40, 10, 10]" in msg, msg
    assert re.search(r"kjax\.ntk\.empirical_ntk\(f, params, x1, x2, mode='full', "
                     r"block_size=\d+\)", msg), msg
    # implementation=None picks an implementation that fits when there is one
    free(8 * MB)
    assert jax.eval_shape(lambda a: empirical_ntk_fn(f, (), (), 0)(a, None, p), x).shape == (
        40, 40, 10, 10)


def test_full_entk_result_too_large_suggests_streaming(free):
    f, p = _wide_mlp()
    x = jnp.zeros((40, 5))
    free(MB // 2)  # the [40, 40, 10, 10] result alone is 1.3 MB
    with pytest.raises(MemoryError, match=r"the result \[40, 40, 10, 10\] .* pass `out=`"):
        empirical_ntk(f, p, x, mode="full")

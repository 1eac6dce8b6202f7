"""The public ``kjax.ssm.fftconv`` with its default implementation lowers to its Pallas kernels for
cuda (Triton) and tpu (Mosaic), checked from CPU with ``jax.export``, which runs the backends'
lowering checks (Triton: power-of-two tensors, dot shapes; Mosaic: block shapes, supported ops and
dtypes). Arguments are ``ShapeDtypeStruct``s: nothing is allocated. Each export holds the forward
and the gradient of a sum (forward kernel twice, backward kernel once).
"""

import re

import jax
import jax.numpy as jnp
import pytest
from jax import export

from kjax.ssm import fftconv

TARGET = {"cuda": "__gpu$xla.gpu.triton", "tpu": "tpu_custom_call"}
DISABLED = [export.DisabledSafetyCheck.custom_call(TARGET["cuda"])]


def _lower(platform, mode, dtype, B, L, D, lk):
    S = jax.ShapeDtypeStruct
    args = (S((B, L, D), dtype), S((2, lk, D) if mode == "bidirectional" else (lk, D), dtype),
            S((B, L, D), dtype), S((D,), dtype))

    def conv(u, k, gate, skip):
        return fftconv(u, k, mode=mode, gate=gate, skip=skip)

    def f(*args):
        loss = lambda *a: jnp.sum(conv(*a).astype(jnp.float32))
        return conv(*args), jax.grad(loss, argnums=(0, 1, 2, 3))(*args)

    return export.export(jax.jit(f), platforms=[platform], disabled_checks=DISABLED)(*args).mlir_module()


def _assert_kernels(text, platform):
    assert text.count(TARGET[platform]) >= 3, f"{platform}: kernel custom calls missing"
    names = set(re.findall(r"kjax_fftconv_(fwd|bwd)", text))
    assert names == {"fwd", "bwd"}, names


@pytest.mark.parametrize("L", [16384, 65536])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("mode", ["causal", "circular", "bidirectional"])
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_default_lowers_to_the_kernels(platform, mode, dtype, L):
    _assert_kernels(_lower(platform, mode, dtype, 4, L, 256, L), platform)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_ragged_shapes_lower(platform):
    """Odd batch, channels and lengths: causal L + L_k - 1 = 1999 -> N = 2048, one level (D = 257:
    Triton's backward loops over the whole batch of 3, a non-power-of-two block); bidirectional
    L = 20000 -> N = 32768, two levels (D = 5: one sequence per Triton backward program)."""
    _assert_kernels(_lower(platform, "causal", jnp.float32, 3, 1000, 257, 1000), platform)
    _assert_kernels(_lower(platform, "bidirectional", jnp.bfloat16, 3, 20000, 5, 33), platform)

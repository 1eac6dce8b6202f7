"""Store neural-tangents' outputs for masked inputs (``kernel_fn(..., mask_constant=c)`` and
``apply_fn(..., mask_constant=c)``).

Runs IN the neural-tangents peer environment (jax 0.4.23; see setup_nt.sh) and writes
tests/ntk/data/nt_stax_reference_mask.npz, which tests/ntk/test_stax_masking.py reads without NT:

    NT_PY=${NT_PY:-benchmarks/.peers/nt/bin/python}
    bash benchmarks/peers/setup_nt.sh   # once (honours NT_VENV)
    $NT_PY benchmarks/peers/nt_stax_reference_mask.py

Inputs are drawn with NumPy (jax.random streams differ between jax versions), with entries set to
the mask constant ``tests/ntk/stax_archs_mask.MASK``. Stored per network ``a`` of
tests/ntk/stax_archs_mask.py: ``a/x1``, ``a/x2``, ``a/{nngp,ntk,cov1,cov2,mask1,mask2}`` (x1 vs
x2, masked), ``a/nngp11``, ``a/ntk11``, ``a/cov1_11`` (x1 vs None), ``a/params/<i>`` (NT's init,
as float32), ``a/apply`` and ``a/apply_mask`` (NT's apply_fn on x1 with those params and
``mask_constant``: the MaskedArray's value and mask).
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from neural_tangents import stax  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.ntk.stax_archs_mask import MASK, architectures, masked_inputs  # noqa: E402

OUT = os.path.join(ROOT, "tests", "ntk", "data", "nt_stax_reference_mask.npz")


def main() -> None:
    rng = np.random.default_rng(1618)
    data: dict[str, np.ndarray] = {}
    for i, (name, (layer, shape, n2, kw, how)) in enumerate(architectures(stax).items()):
        init_fn, apply_fn, kernel_fn = layer
        x1, x2 = masked_inputs(rng, shape, n2, how)
        k12 = kernel_fn(x1, x2, mask_constant=MASK, **kw)
        kw11 = dict(kw)
        if "pattern" in kw:
            kw11["pattern"] = (kw["pattern"][0], kw["pattern"][0])
        k11 = kernel_fn(x1, None, mask_constant=MASK, **kw11)
        data.update({f"{name}/x1": x1, f"{name}/x2": x2, f"{name}/nngp": k12.nngp,
                     f"{name}/ntk": k12.ntk, f"{name}/cov1": k12.cov1, f"{name}/cov2": k12.cov2,
                     f"{name}/mask1": k12.mask1, f"{name}/mask2": k12.mask2,
                     f"{name}/nngp11": k11.nngp, f"{name}/ntk11": k11.ntk,
                     f"{name}/cov1_11": k11.cov1})
        _, params = init_fn(jax.random.PRNGKey(i), x1.shape)
        leaves = jax.tree_util.tree_leaves(params)
        for j, leaf in enumerate(leaves):
            data[f"{name}/params/{j}"] = np.asarray(leaf, np.float32)
        params32 = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params),
                                                [jnp.asarray(data[f"{name}/params/{j}"], jnp.float64)
                                                 for j in range(len(leaves))])
        akw = {"pattern": kw["pattern"][0]} if "pattern" in kw else {}
        out = apply_fn(params32, x1, mask_constant=MASK, **akw)
        data[f"{name}/apply"] = np.asarray(out.masked_value)
        data[f"{name}/apply_mask"] = np.asarray(out.mask)
        print(f"{name:18s} nngp {k12.nngp.shape} mask1 {np.shape(k12.mask1)} "
              f"params {len(leaves)}")
    np.savez_compressed(OUT, **data)
    print(f"wrote {OUT} ({len(data)} arrays, {os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()

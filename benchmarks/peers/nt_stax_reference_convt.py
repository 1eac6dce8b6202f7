"""Store neural-tangents' outputs for ``stax.ConvTranspose(..., padding="CIRCULAR")`` (issue #14).

Runs IN the neural-tangents peer environment (jax 0.4.23; see setup_nt.sh) and writes
tests/ntk/data/nt_stax_reference_convt.npz, which tests/ntk/test_stax_convt_batch.py reads
without NT:

    NT_PY=${NT_PY:-benchmarks/.peers/nt/bin/python}
    bash benchmarks/peers/setup_nt.sh   # once (honours NT_VENV)
    $NT_PY benchmarks/peers/nt_stax_reference_convt.py

The networks are described once, as data (``ARCHS`` below: layer names, positional and keyword
arguments), and stored in the file as JSON (``archs``), so the test builds the same networks
with ``kjax.ntk.stax`` without importing this script. Inputs are drawn with NumPy (jax.random
streams differ between jax versions). Stored per network ``a``: ``a/x1``, ``a/x2``,
``a/{nngp,ntk}`` (x1 vs x2, ``get=None``), ``a/nngp11`` (x1 vs None), ``a/shape1``,
``a/params/<i>`` (NT's init, float64) and ``a/apply`` (NT's apply_fn on x1 with those params).
"""

from __future__ import annotations

import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "ntk", "data", "nt_stax_reference_convt.npz")

C = "CIRCULAR"
# name -> (layers [[name, args, kwargs], ...], x1 shape, x2 batch size); 1-D and 2-D, strides 1
# and 2, filters wider and narrower than the stride (fold offsets (w - s) // 2 of 0 and 1), both
# parameterisations, a channels-first layout, and endings that keep the full spatial covariance
# (none, GlobalAvgPool) or only its diagonal (Flatten)
ARCHS = {
    "t1_chain": ([["ConvTranspose", [3, [3], [1], C], {"W_std": 1.3, "b_std": 0.4}],
                  ["Relu", [], {}],
                  ["ConvTranspose", [3, [3], [2], C], {"W_std": 1.2, "b_std": 0.3}],
                  ["Relu", [], {}],
                  ["ConvTranspose", [2, [4], [1], C], {"W_std": 0.9, "b_std": 0.2}]],
                 [3, 3, 2], 2),
    "t1_std_nch": ([["ConvTranspose", [4, [1], [2], C],
                     {"W_std": 1.1, "b_std": 0.5, "parameterization": "standard",
                      "dimension_numbers": ["NCH", "OIH", "NCH"]}],
                    ["Erf", [], {}],
                    ["ConvTranspose", [3, [5], [2], C],
                     {"W_std": 0.8, "b_std": None, "parameterization": "standard",
                      "dimension_numbers": ["NCH", "OIH", "NCH"]}]],
                   [3, 2, 3], 2),
    "t2_s12_flat": ([["ConvTranspose", [3, [2, 3], [1, 2], C], {"W_std": 1.1, "b_std": 0.5}],
                     ["Relu", [], {}], ["Flatten", [], {}], ["Dense", [1], {}]],
                    [3, 3, 2, 2], 2),
    "t2_s22_gap": ([["ConvTranspose", [2, [3, 3], [2, 2], C], {"W_std": 1.0, "b_std": 0.1}],
                    ["Relu", [], {}], ["GlobalAvgPool", [], {}], ["Dense", [1], {}]],
                   [3, 2, 3, 2], 2),
}


def build(stax, layers):
    """``stax.serial`` of ``layers`` (lists become tuples, as the layers take them)."""
    def conv(v):
        return tuple(v) if isinstance(v, list) else v

    made = [getattr(stax, name)(*[conv(a) for a in args], **{k: conv(v) for k, v in kw.items()})
            for name, args, kw in layers]
    return stax.serial(*made)


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax

    rng = np.random.default_rng(1414)
    data: dict[str, np.ndarray] = {"archs": np.asarray(json.dumps(ARCHS))}
    for i, (name, (layers, shape, n2)) in enumerate(ARCHS.items()):
        init_fn, apply_fn, kernel_fn = build(stax, layers)
        x1 = rng.standard_normal(shape)
        x2 = rng.standard_normal([n2] + shape[1:])
        k12 = kernel_fn(x1, x2)
        k11 = kernel_fn(x1, None, "nngp")
        data.update({f"{name}/x1": x1, f"{name}/x2": x2, f"{name}/nngp": np.asarray(k12.nngp),
                     f"{name}/ntk": np.asarray(k12.ntk), f"{name}/nngp11": np.asarray(k11),
                     f"{name}/shape1": np.asarray(k12.shape1)})
        _, params = init_fn(jax.random.PRNGKey(i), x1.shape)
        for j, leaf in enumerate(jax.tree_util.tree_leaves(params)):
            data[f"{name}/params/{j}"] = np.asarray(leaf, np.float64)
        data[f"{name}/apply"] = np.asarray(apply_fn(params, x1))
    np.savez_compressed(OUT, **data)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()

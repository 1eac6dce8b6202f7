"""Stored neural-tangents outputs for the eNTK tests (run in the NT peer environment).

    bash benchmarks/peers/setup_nt.sh
    benchmarks/.peers/nt/bin/python benchmarks/peers/nt_entk_reference.py

Writes tests/ntk/data/nt_entk_reference.npz: parameters and inputs (drawn with NumPy, so no PRNG
differences between jax versions), and neural_tangents.empirical_ntk_fn's output for every model,
axis setting and implementation (1, 2, 3), with vmap_axes None and 0. The models are the ones in
tests/ntk/models.py, imported from there (that file needs only jax).
"""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
import numpy as np  # noqa: E402

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(root, "tests", "ntk"))
from models import MODELS  # noqa: E402

rng = np.random.default_rng(2024)
SHAPES = {
    "mlp": {"w1": (5, 7), "b1": (7,), "w2": (7, 3), "b2": (3,)},
    "cnn": {"c1": (3, 3, 2, 4), "cb": (4,), "c2": (2, 2, 4, 3), "d": (27, 2)},
    "shared": {"w": (5, 5)},
}
XSHAPE = {"mlp": (5,), "cnn": (6, 6, 2), "shared": (5,)}
AXES = {"trace": ((-1,), ()), "full": ((), ()), "diag": ((), (-1,)), "diagbatch": ((), (0,))}

out = {"nt_version": nt.__version__, "jax_version": jax.__version__}
for name, f in MODELS.items():
    params = {k: rng.normal(size=s) for k, s in SHAPES[name].items()}
    x1 = rng.normal(size=(4, *XSHAPE[name]))
    x2 = rng.normal(size=(3, *XSHAPE[name]))
    for k, v in params.items():
        out[f"{name}/params/{k}"] = v
    out[f"{name}/x1"], out[f"{name}/x2"] = x1, x2
    pj = {k: jnp.asarray(v) for k, v in params.items()}
    for ax_name, (ta, da) in AXES.items():
        b = x1 if ax_name == "diagbatch" else x2
        for impl in (1, 2, 3):
            for va in (None, 0):
                fn = nt.empirical_ntk_fn(f, trace_axes=ta, diagonal_axes=da, vmap_axes=va,
                                         implementation=impl)
                out[f"{name}/{ax_name}/impl{impl}/vmap{va}"] = np.asarray(fn(x1, b, pj))
        ref = out[f"{name}/{ax_name}/impl1/vmapNone"]
        for impl in (2, 3):
            for va in (None, 0):
                got = out[f"{name}/{ax_name}/impl{impl}/vmap{va}"]
                assert np.allclose(got, ref, rtol=1e-10, atol=1e-12), (name, ax_name, impl, va)

path = os.path.join(root, "tests", "ntk", "data", "nt_entk_reference.npz")
np.savez_compressed(path, **out)
print(f"wrote {path}: {len(out)} arrays, neural-tangents {nt.__version__} on jax {jax.__version__}")

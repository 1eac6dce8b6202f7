"""Store neural-tangents' outputs for issue #14's last layers (DotGeneral, ImageResize, Aggregate,
GlobalSelfAttention).

Runs IN the neural-tangents peer environment (jax 0.4.23; see setup_nt.sh) and writes
tests/ntk/data/nt_stax_reference3.npz, which tests/ntk/test_stax_layers3.py reads without NT:

    NT_PY=${NT_PY:-benchmarks/.peers/nt/bin/python}
    bash benchmarks/peers/setup_nt.sh   # once (honours NT_VENV)
    $NT_PY benchmarks/peers/nt_stax_reference3.py

Inputs are drawn with NumPy (jax.random streams differ between jax versions). Stored per network
``a`` of tests/ntk/stax_archs3.py: ``a/x1``, ``a/x2``, ``a/{nngp,ntk,cov1,cov2}`` (x1 vs x2, with
the network's kernel_fn keyword arguments), ``a/nngp11``, ``a/ntk11``, ``a/cov1_11`` (x1 vs
None; ``pattern`` keywords become ``(p1, p1)``), ``a/shape1``, ``a/is_gaussian``, ``a/params/<i>``
(NT's init, as float32) and ``a/apply`` (NT's apply_fn on x1 with those params, and
``pattern=p1``); ``signature/<layer>``: NT's signature of the four layers (JSON).
"""

from __future__ import annotations

import inspect
import json
import os
import sys

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from neural_tangents import stax  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.ntk.stax_archs3 import architectures  # noqa: E402

OUT = os.path.join(ROOT, "tests", "ntk", "data", "nt_stax_reference3.npz")


SIGNATURES = ("DotGeneral", "ImageResize", "Aggregate", "GlobalSelfAttention")


def signature(fn) -> list:
    """``[name, kind, default]`` per parameter; defaults that are not plain values (functions,
    enums) are stored by their repr's type only."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        d = p.default
        if d is inspect.Parameter.empty:
            d = "<empty>"
        elif not isinstance(d, int | float | str | tuple | type(None)):
            d = f"<{type(d).__name__}>"
        out.append([p.name, p.kind.name, d])
    return out


def main() -> None:
    rng = np.random.default_rng(143)
    data: dict[str, np.ndarray] = {}
    for i, (name, (layer, shape, n2, kw)) in enumerate(architectures(stax).items()):
        init_fn, apply_fn, kernel_fn = layer
        x1 = rng.standard_normal(shape)
        x2 = rng.standard_normal((n2,) + shape[1:])
        k12 = kernel_fn(x1, x2, **kw)
        kw11 = dict(kw)
        if "pattern" in kw:
            kw11["pattern"] = (kw["pattern"][0], kw["pattern"][0])
        k11 = kernel_fn(x1, None, **kw11)
        data.update({f"{name}/x1": x1, f"{name}/x2": x2, f"{name}/nngp": k12.nngp,
                     f"{name}/ntk": k12.ntk, f"{name}/cov1": k12.cov1, f"{name}/cov2": k12.cov2,
                     f"{name}/nngp11": k11.nngp, f"{name}/ntk11": k11.ntk,
                     f"{name}/cov1_11": k11.cov1, f"{name}/shape1": np.asarray(k12.shape1),
                     f"{name}/is_gaussian": np.asarray(k12.is_gaussian)})
        _, params = init_fn(jax.random.PRNGKey(i), x1.shape)
        leaves = jax.tree_util.tree_leaves(params)
        for j, leaf in enumerate(leaves):
            data[f"{name}/params/{j}"] = np.asarray(leaf, np.float32)
        params32 = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params),
                                                [jnp.asarray(data[f"{name}/params/{j}"], jnp.float64)
                                                 for j in range(len(leaves))])
        akw = {"pattern": kw["pattern"][0]} if "pattern" in kw else {}
        data[f"{name}/apply"] = apply_fn(params32, x1, **akw)
        print(f"{name:24s} nngp {k12.nngp.shape} cov1 {k12.cov1.shape} params {len(leaves)}")

    for layer in SIGNATURES:
        data[f"signature/{layer}"] = np.asarray(json.dumps(signature(getattr(stax, layer))))
    np.savez_compressed(OUT, **data)
    print(f"wrote {OUT} ({len(data)} arrays)")


if __name__ == "__main__":
    main()

"""Store neural-tangents' outputs for the structural layers and kernel semantics of issue #14.

Runs IN the neural-tangents peer environment (jax 0.4.23; see setup_nt.sh) and writes
tests/ntk/data/nt_stax_reference2.npz, which tests/ntk/test_stax_structure.py reads without NT:

    NT_PY=${NT_PY:-benchmarks/.peers/nt/bin/python}
    bash benchmarks/peers/setup_nt.sh   # once (honours NT_VENV)
    $NT_PY benchmarks/peers/nt_stax_reference2.py

Inputs are drawn with NumPy (jax.random streams differ between jax versions). Stored per network
``a`` of tests/ntk/stax_archs2.py: ``a/x1``, ``a/x2``, ``a/{nngp,ntk,cov1,cov2}`` (x1 vs x2, with
the network's kernel_fn keyword arguments), ``a/nngp11``, ``a/ntk11``, ``a/cov1_11`` (x1 vs
None), ``a/shape1``, ``a/is_gaussian``, ``a/params/<i>`` (NT's init, as float32) and ``a/apply``
(NT's apply_fn on x1 with those params, with ``rng`` for dropout). ``feed/...``: a Kernel fed back
into a second kernel_fn; ``branches/...``: a parallel network on lists of inputs.
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
from tests.ntk.stax_archs2 import architectures, branches, feed_back  # noqa: E402

OUT = os.path.join(ROOT, "tests", "ntk", "data", "nt_stax_reference2.npz")


def main() -> None:
    rng = np.random.default_rng(14)
    data: dict[str, np.ndarray] = {}
    for i, (name, (layer, shape, n2, kw)) in enumerate(architectures(stax).items()):
        init_fn, apply_fn, kernel_fn = layer
        x1 = rng.standard_normal(shape)
        x2 = rng.standard_normal((n2,) + shape[1:])
        k12 = kernel_fn(x1, x2, **kw)
        k11 = kernel_fn(x1, None, **kw)
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
        if name != "dropout":  # dropout masks come from jax.random: not comparable
            data[f"{name}/apply"] = apply_fn(params32, x1)
        print(f"{name:24s} nngp {k12.nngp.shape} cov1 {k12.cov1.shape} params {len(leaves)}")

    head, tail, shape, n2 = feed_back(stax)
    x1 = rng.standard_normal(shape)
    x2 = rng.standard_normal((n2,) + shape[1:])
    k = tail[2](head[2](x1, x2))
    k11 = tail[2](head[2](x1, None))
    data.update({"feed/x1": x1, "feed/x2": x2, "feed/nngp": k.nngp, "feed/ntk": k.ntk,
                 "feed/cov1": k.cov1, "feed/cov2": k.cov2, "feed/nngp11": k11.nngp,
                 "feed/ntk11": k11.ntk})

    layer, shapes, n2 = branches(stax)
    xs1 = [rng.standard_normal(s) for s in shapes]
    xs2 = [rng.standard_normal((n2,) + s[1:]) for s in shapes]
    ks = layer[2](xs1, xs2)
    for j, (a, b_) in enumerate(zip(xs1, xs2, strict=True)):
        data[f"branches/x1/{j}"], data[f"branches/x2/{j}"] = a, b_
        data[f"branches/nngp/{j}"], data[f"branches/ntk/{j}"] = ks[j].nngp, ks[j].ntk
    np.savez(OUT, **data)
    print(f"wrote {OUT} ({len(data)} arrays)")


if __name__ == "__main__":
    main()

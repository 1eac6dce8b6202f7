"""Store neural-tangents' outputs for the reference architectures and for predict (the oracle).

Runs IN the neural-tangents peer environment (jax 0.4.23; see setup_nt.sh) and writes
tests/ntk/data/nt_stax_reference.npz, which kjax's tests read without NT:

    NT_PY=${NT_PY:-benchmarks/.peers/nt/bin/python}
    bash benchmarks/peers/setup_nt.sh   # once (honours NT_VENV)
    $NT_PY benchmarks/peers/nt_stax_reference.py

Stored per architecture ``a``: ``a/x1``, ``a/x2``, ``a/nngp``, ``a/ntk`` (x1 vs x2), ``a/nngp11``,
``a/ntk11`` (x1 vs None), ``a/cov1``, ``a/cov2``, ``a/params/<i>`` (flattened leaves of NT's
init), ``a/apply`` (NT's apply_fn on x1 with those params). For predict: ``predict/...``.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tests.ntk.stax_archs import architectures  # noqa: E402

OUT = os.path.join(ROOT, "tests", "ntk", "data", "nt_stax_reference.npz")


def main() -> None:
    rng = np.random.default_rng(0)
    data: dict[str, np.ndarray] = {}
    for i, (name, (layer, shape, n2)) in enumerate(architectures(stax).items()):
        init_fn, apply_fn, kernel_fn = layer
        x1 = rng.standard_normal(shape)
        x2 = rng.standard_normal((n2,) + shape[1:])
        k12 = kernel_fn(x1, x2)
        k11 = kernel_fn(x1, None, ("nngp", "ntk"))
        _, params = init_fn(jax.random.PRNGKey(i), x1.shape)
        leaves = jax.tree_util.tree_leaves(params)
        data.update({f"{name}/x1": x1, f"{name}/x2": x2, f"{name}/nngp": k12.nngp,
                     f"{name}/ntk": k12.ntk, f"{name}/cov1": k12.cov1, f"{name}/cov2": k12.cov2,
                     f"{name}/nngp11": k11.nngp, f"{name}/ntk11": k11.ntk,
                     f"{name}/apply": apply_fn(params, x1)})
        for j, leaf in enumerate(leaves):
            data[f"{name}/params/{j}"] = np.asarray(leaf, np.float32)
        # apply_fn output recomputed from the float32-stored params, so the test is exact
        params32 = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params),
                                                [jnp.asarray(data[f"{name}/params/{j}"], jnp.float64)
                                                 for j in range(len(leaves))])
        data[f"{name}/apply"] = apply_fn(params32, x1)
        print(f"{name:16s} nngp {k12.nngp.shape} params {len(leaves)} leaves")

    # predict: a 2-output regression on an MLP kernel
    _, _, kernel_fn = architectures(stax)["mlp_relu"][0]
    x_train = rng.standard_normal((8, 3))
    x_test = rng.standard_normal((4, 3))
    y_train = rng.standard_normal((8, 2))
    ts = np.array([0.0, 0.5, 3.0, 50.0])
    k_tt = kernel_fn(x_train, None, "ntk")
    k_st = kernel_fn(x_test, x_train, "ntk")
    fx_train_0 = 0.1 * rng.standard_normal((8, 2))
    fx_test_0 = 0.1 * rng.standard_normal((4, 2))
    p = "predict"
    data.update({f"{p}/x_train": x_train, f"{p}/x_test": x_test, f"{p}/y_train": y_train,
                 f"{p}/ts": ts, f"{p}/fx_train_0": fx_train_0, f"{p}/fx_test_0": fx_test_0})
    for lr, reg in ((1.0, 0.0), (0.5, 0.1)):
        tag = f"{p}/gd_lr{lr}_reg{reg}"
        predict_fn = nt.predict.gradient_descent_mse(k_tt, y_train, learning_rate=lr, diag_reg=reg)
        tr, te = predict_fn(ts, fx_train_0, fx_test_0, k_st)
        data[f"{tag}/train"], data[f"{tag}/test"] = tr, te
        tr, te = predict_fn(None, fx_train_0, fx_test_0, k_st)
        data[f"{tag}/train_inf"], data[f"{tag}/test_inf"] = tr, te
        data[f"{tag}/train_only"] = predict_fn(ts, fx_train_0)
    k_nngp_tt = kernel_fn(x_train, None, "nngp")
    k_nngp_st = kernel_fn(x_test, x_train, "nngp")
    k_nngp_ss = kernel_fn(x_test, None, "nngp")
    pf = nt.predict.gp_inference(k_nngp_tt, y_train, diag_reg=0.01)
    g = pf("nngp", k_nngp_st, k_nngp_ss)
    data[f"{p}/gp_mean"], data[f"{p}/gp_cov"] = g.mean, g.covariance
    data[f"{p}/gp_mean_only"] = pf("nngp", k_nngp_st)
    ens = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, learning_rate=1.0,
                                                   diag_reg=0.01)
    for t_name, t in (("t", ts), ("inf", None)):
        out = ens(t, x_test, ("nngp", "ntk"), compute_cov=True)
        for g_name in ("nngp", "ntk"):
            data[f"{p}/ens_{t_name}_{g_name}_mean"] = getattr(out, g_name).mean
            data[f"{p}/ens_{t_name}_{g_name}_cov"] = getattr(out, g_name).covariance
    data[f"{p}/ens_train_ntk_mean"] = ens(ts, None, "ntk")
    np.savez_compressed(OUT, **{k: np.asarray(v) for k, v in data.items()})
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB) with neural-tangents {nt.__version__} "
          f"on jax {jax.__version__}")


if __name__ == "__main__":
    main()

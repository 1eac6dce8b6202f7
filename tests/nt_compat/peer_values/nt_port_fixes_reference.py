"""Store neural-tangents' outputs for the NT-port fixes tested in tests/ntk/test_nt_port_fixes.py.

Runs IN the neural-tangents peer environment (jax 0.4.23; benchmarks/peers/setup_nt.sh) and
writes tests/nt_compat/peer_values/nt_port_fixes.npz, which the test reads without NT:

    JAX_PLATFORMS=cpu benchmarks/.peers/nt/bin/python tests/nt_compat/peer_values/nt_port_fixes_reference.py

Stored (float64, NumPy inputs: jax.random streams differ between jax versions):

* ``concat/<case>/{nngp,ntk}``: ``FanInConcat(0)`` (along the batch axis) after three parallel
  branches, then ``Dense, Relu, Dense`` (``concat_net``), for ``x1`` vs ``x2`` / None, with and
  without ``mask_constant`` (``concat_inputs``).
* ``nested/<case>/{nngp,ntk}/<i>``: nested parallel inputs ``(x_a, (x_b, x_c))`` through
  ``nested_net``'s readin then readout (NT's batching_test.test_parallel_in_out), x2 given / None.
* ``reorder/<case>/{nngp,ntk}``: convolutions whose ``dimension_numbers`` put the output in
  another layout than the input, spatial axes reordered (``reorder_net``; NT's
  empirical_test.test_vmap_axes uses such layers), x2 given / None; ``reorder/mask/...`` with
  ``mask_constant`` through the first (layout-changing) convolution.
"""

from __future__ import annotations

import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "nt_port_fixes.npz")
MASK = 10.0


def concat_net(stax):
    return stax.serial(
        stax.FanOut(3),
        stax.parallel(stax.serial(stax.Dense(8, 1., 0.1), stax.Abs(), stax.Dense(8, 1.5, 0.01)),
                      stax.serial(stax.Dense(8, 1.1, 0.1), stax.Erf(), stax.Dense(8, 1.5, 0.1)),
                      stax.Dense(8, 1.2, 0.3)),
        stax.FanInConcat(0), stax.Dense(8, 2., 0.01), stax.Relu(), stax.Dense(1, 1., 0.1))


def concat_inputs():
    """``{case: (x1, x2 or None, mask_constant)}``."""
    x1 = np.cos(np.arange(24.0).reshape(4, 6) * 0.37)
    x2 = np.sin(np.arange(18.0).reshape(3, 6) * 0.21)
    x1m, x2m = x1.copy(), x2.copy()
    x1m[1, :3] = MASK
    x1m[2, :] = MASK
    x2m[0, 2:] = MASK
    return {"x2": (x1, x2, None), "none": (x1, None, None), "mask": (x1m, x2m, MASK),
            "mask_none": (x1m, None, MASK)}


def nested_net(stax, n_out):
    return stax.parallel(stax.Dense(n_out, 1.3, 0.2),
                         stax.parallel(stax.Dense(n_out + 1), stax.Dense(n_out + 2, 0.9, 0.5)))


def nested_inputs():
    rng = np.random.default_rng(14)
    x1 = rng.normal(size=(3, 4, 1))
    x2 = rng.normal(size=(3, 6, 1))
    return {"x2": ((x1[0], (x1[1], x1[2])), (x2[0], (x2[1], x2[2]))),
            "none": ((x1[0], (x1[1], x1[2])), None)}


def reorder_net(stax, second_dn=("NHWC", "HWIO", "NWCH")):
    """Inputs ``[N, C, W, H]``; the first Conv swaps the spatial order (``NCWH`` -> ``NHWC``), the
    second moves the channels and swaps again (``NHWC`` -> ``NWCH``), so the kernels' spatial
    axes end as ``W, W', H, H'``."""
    return stax.serial(
        stax.Conv(3, (2, 3), padding="SAME", W_std=1.3, b_std=0.1,
                  dimension_numbers=("NCWH", "OIHW", "NHWC")),
        stax.Relu(),
        stax.Conv(2, (2, 2), padding="VALID", W_std=0.9, b_std=0.2, dimension_numbers=second_dn),
        stax.Erf())


def reorder_inputs():
    """``{case: (x1, x2 or None, mask_constant)}``, inputs ``[N, C, W, H]``."""
    rng = np.random.default_rng(21)
    x1 = rng.normal(size=(3, 2, 5, 4))
    x2 = rng.normal(size=(2, 2, 5, 4))
    x1m = x1.copy()
    x1m[0, :, 3:, :] = MASK
    x1m[2, :, :, 1] = MASK
    return {"x2": (x1, x2, None), "none": (x1, None, None), "mask": (x1m, x2, MASK)}


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from neural_tangents import stax

    data: dict[str, np.ndarray] = {}
    kernel_fn = concat_net(stax)[2]
    for case, (x1, x2, mc) in concat_inputs().items():
        k = kernel_fn(jnp.asarray(x1), None if x2 is None else jnp.asarray(x2), ("nngp", "ntk"),
                      mask_constant=mc)
        data[f"concat/{case}/nngp"], data[f"concat/{case}/ntk"] = np.asarray(k.nngp), np.asarray(k.ntk)
    readin, readout = nested_net(stax, 16)[2], nested_net(stax, 1)[2]
    for case, (x1, x2) in nested_inputs().items():
        out = jax.tree_util.tree_leaves(readout(readin(x1, x2), get=("nngp", "ntk")))
        for i, a in enumerate(out):
            data[f"nested/{case}/{i}"] = np.asarray(a)
    for case, (x1, x2, mc) in reorder_inputs().items():
        # masks: only through the first Conv (NT's mask_fn permutes by out_spec.index over
        # lhs_spec, right for this involutive swap); the second keeps NHWC there
        net = reorder_net(stax, ("NHWC", "HWIO", "NHWC") if mc is not None else
                          ("NHWC", "HWIO", "NWCH"))
        k = net[2](jnp.asarray(x1), None if x2 is None else jnp.asarray(x2), ("nngp", "ntk"),
                   mask_constant=mc)
        data[f"reorder/{case}/nngp"], data[f"reorder/{case}/ntk"] = (np.asarray(k.nngp),
                                                                     np.asarray(k.ntk))
    np.savez(OUT, **data)
    print(OUT, {k: v.shape for k, v in data.items()})


if __name__ == "__main__":
    main()

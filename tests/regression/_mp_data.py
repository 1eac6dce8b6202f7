"""The deterministic small problem shared by the multi-process test and its worker."""

import numpy as np


def problem():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3))
    y = np.stack([np.sin(x).sum(1), np.cos(x[:, 0])], axis=1)
    z = x[::5]
    return x, y, z


def entk_problem():
    """A small MLP and 19 inputs for the multi-process eNTK (19: the last block is padded)."""
    import jax.numpy as jnp

    rng = np.random.default_rng(7)
    p = {"w1": rng.normal(size=(3, 8)), "w2": rng.normal(size=(8, 2))}
    return (lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]), p, rng.normal(size=(19, 3))

"""Small pure-JAX models shared by the ntk tests and by the neural-tangents reference script
(benchmarks/peers/nt_entk_reference.py runs this file under jax 0.4.23, so it imports jax only):
an MLP with NTK-style scaling, a CNN, and a shared-weight model (which falls back to the plain
Jacobian in the structured implementation)."""

import jax
import jax.numpy as jnp


def mlp(p, x):
    h = jnp.tanh(x @ (1.5 / jnp.sqrt(5.0) * p["w1"]) + p["b1"])
    return h @ p["w2"] + 0.1 * p["b2"]


def cnn(p, x):
    dn = ("NHWC", "HWIO", "NHWC")
    y = jax.lax.conv_general_dilated(x, p["c1"], (1, 1), "SAME", dimension_numbers=dn)
    y = jax.nn.relu(y + p["cb"])
    y = jax.lax.conv_general_dilated(y, p["c2"], (2, 2), "VALID", dimension_numbers=dn)
    return y.reshape(y.shape[0], -1) @ p["d"]


def shared(p, x):
    return jnp.tanh(x @ p["w"]) @ p["w"].T[:, :3]


def params(key=0):
    k = jax.random.split(jax.random.key(key), 8)
    return {
        "mlp": {"w1": jax.random.normal(k[0], (5, 7)), "b1": jax.random.normal(k[1], (7,)),
                "w2": jax.random.normal(k[2], (7, 3)), "b2": jax.random.normal(k[3], (3,))},
        "cnn": {"c1": jax.random.normal(k[4], (3, 3, 2, 4)), "cb": jnp.ones(4),
                "c2": jax.random.normal(k[5], (2, 2, 4, 3)),
                "d": jax.random.normal(k[6], (3 * 3 * 3, 2))},
        "shared": {"w": jax.random.normal(k[7], (5, 5))},
    }


def inputs(kind, n, key=1):
    shape = (n, 6, 6, 2) if kind == "cnn" else (n, 5)
    return jax.random.normal(jax.random.key(key), shape)


MODELS = {"mlp": mlp, "cnn": cnn, "shared": shared}

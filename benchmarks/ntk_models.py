"""The eNTK benchmark models, in plain jax (imported by kjax's side and by the NT worker).

(a) MLP 64 -> 512 -> 512 -> 10, ReLU; (b) CNN: two 3x3 convs (32 channels, SAME, ReLU) on
16x16x3 inputs, flatten, dense 10. Weights are drawn with NumPy (same values in both jax versions)
with 1/fan_in variance (standard parameterisation).
"""

import jax
import jax.numpy as jnp
import numpy as np

DN = ("NHWC", "HWIO", "NHWC")


def mlp(p, x):
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    h = jax.nn.relu(h @ p["w2"] + p["b2"])
    return h @ p["w3"] + p["b3"]


def cnn(p, x):
    y = jax.nn.relu(jax.lax.conv_general_dilated(x, p["c1"], (1, 1), "SAME",
                                                 dimension_numbers=DN) + p["cb1"])
    y = jax.nn.relu(jax.lax.conv_general_dilated(y, p["c2"], (1, 1), "SAME",
                                                 dimension_numbers=DN) + p["cb2"])
    return y.reshape(y.shape[0], -1) @ p["w"] + p["b"]


def make(seed=0, n_mlp=128, n_cnn=32, n_large=10_000):
    rng = np.random.default_rng(seed)

    def w(*shape, fan_in):
        return (rng.normal(size=shape) / np.sqrt(fan_in)).astype(np.float32)

    mlp_p = {"w1": w(64, 512, fan_in=64), "b1": np.zeros(512, np.float32),
             "w2": w(512, 512, fan_in=512), "b2": np.zeros(512, np.float32),
             "w3": w(512, 10, fan_in=512), "b3": np.zeros(10, np.float32)}
    cnn_p = {"c1": w(3, 3, 3, 32, fan_in=27), "cb1": np.zeros(32, np.float32),
             "c2": w(3, 3, 32, 32, fan_in=288), "cb2": np.zeros(32, np.float32),
             "w": w(16 * 16 * 32, 10, fan_in=8192), "b": np.zeros(10, np.float32)}
    data = {"mlp_x": rng.normal(size=(n_mlp, 64)).astype(np.float32),
            "cnn_x": rng.normal(size=(n_cnn, 16, 16, 3)).astype(np.float32),
            "large_x": rng.normal(size=(n_large, 64)).astype(np.float32)}
    for k, v in mlp_p.items():
        data[f"mlp/{k}"] = v
    for k, v in cnn_p.items():
        data[f"cnn/{k}"] = v
    return data


def params(data, prefix):
    return {k.split("/", 1)[1]: jnp.asarray(v) for k, v in data.items()
            if k.startswith(prefix + "/")}


MODELS = {"mlp": mlp, "cnn": cnn}

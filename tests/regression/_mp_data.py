"""The deterministic small problem shared by the multi-process test and its worker."""

import numpy as np


def problem():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 3))
    y = np.stack([np.sin(x).sum(1), np.cos(x[:, 0])], axis=1)
    z = x[::5]
    return x, y, z

import functools

import numpy as np
import pytest

from kjax import kernels


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3))
    y = np.stack([np.sin(x).sum(1), np.cos(x[:, 0]) * x[:, 1]], axis=1)
    xt = rng.normal(size=(30, 3))
    return x, y, xt


LS = 1.3
KERN = functools.partial(kernels.rbf, lengthscale=LS)


def np_rbf(a, b, ls=LS):
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2 / ls**2)

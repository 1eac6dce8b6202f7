"""Independent float64 NumPy oracles for the kjax.ssm tests."""

import numpy as np


def direct_conv(u, k, mode):
    """Direct (double-loop over taps) depthwise convolution of u: [B, L, D] with k per the modes."""
    u = np.asarray(u, np.float64)
    k = np.asarray(k, np.float64)
    B, L, D = u.shape
    y = np.zeros((B, L, D))
    if mode == "causal":
        for s in range(k.shape[0]):
            y[:, s:] += k[s] * u[:, : L - s]
    elif mode == "circular":
        for s in range(k.shape[0]):
            y += k[s] * np.roll(u, s, axis=1)
    else:
        lk = k.shape[1]
        for s in range(lk):
            y[:, s:] += k[0, s] * u[:, : L - s]
        for s in range(1, lk):
            y[:, : L - s] += k[1, s] * u[:, s:]
    return y

"""Generated datasets for the benchmarks (nothing is downloaded).

``mnist1d_like`` follows the recipe of MNIST-1D (Greydanus, "Scaling down deep learning", 2020):
ten fixed 1-D digit templates, each example one template with a random shift, scale, shear and
correlated plus white noise, resampled to 40 points. The templates are kjax's own (fixed, seeded),
not MNIST-1D's; the task has the same structure: 10 classes, 40 features, a few percent label
noise-free ambiguity from the transformations, and linear models well below the nonlinear ones.
"""

from __future__ import annotations

import numpy as np

LENGTH, TEMPLATE_POINTS, CLASSES = 40, 12, 10


def _templates() -> np.ndarray:
    rng = np.random.default_rng(1234)
    t = np.cumsum(rng.normal(size=(CLASSES, TEMPLATE_POINTS)), axis=1)
    t -= t.mean(1, keepdims=True)
    return t / np.abs(t).max(1, keepdims=True)


def mnist1d_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples ``x: [n, 40]`` float32 (zero mean, unit norm rows) and labels ``[n]`` int.

    Each row: its class template padded to a random position in a 40-point window (shift), scaled
    by U(0.75, 1.25), sheared by a random linear ramp, blurred with correlated noise (a random
    walk) and white noise (std 0.25), then linearly resampled to 40 points.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=n)
    tmpl = _templates()[labels]                                   # [n, 12]
    grid = np.linspace(0.0, 1.0, LENGTH)
    width = rng.uniform(0.45, 0.7, size=(n, 1))                  # the template's extent
    start = rng.uniform(0.0, 1.0, size=(n, 1)) * (1.0 - width)   # its position (shift)
    pos = (grid[None, :] - start) / width * (TEMPLATE_POINTS - 1)  # template coordinate per point
    inside = (pos >= 0) & (pos <= TEMPLATE_POINTS - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, TEMPLATE_POINTS - 2)
    frac = np.clip(pos - lo, 0.0, 1.0)
    rows = np.arange(n)[:, None]
    sig = (1 - frac) * tmpl[rows, lo] + frac * tmpl[rows, lo + 1]
    sig = np.where(inside, sig, 0.0) * rng.uniform(0.75, 1.25, size=(n, 1))
    sig += rng.normal(scale=0.3, size=(n, 1)) * (grid[None, :] - 0.5)           # shear
    walk = np.cumsum(rng.normal(scale=0.06, size=(n, LENGTH)), axis=1)          # correlated noise
    sig += walk - walk.mean(1, keepdims=True)
    sig += rng.normal(scale=0.25, size=(n, LENGTH))                             # white noise
    sig -= sig.mean(1, keepdims=True)
    sig /= np.linalg.norm(sig, axis=1, keepdims=True)
    return sig.astype(np.float32), labels.astype(np.int64)

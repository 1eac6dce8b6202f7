"""``examples/datasets.py`` of NT, with synthetic data in place of tensorflow_datasets (a shim).

Same shapes and preprocessing as NT's loader (flattened and normalised inputs, one-hot labels);
the values are seeded Gaussian noise, so the examples run offline. ``minibatch`` is NT's.
"""

import numpy as np

_SHAPES = {"mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10)}


def _partial_flatten_and_normalize(x):
    x = np.reshape(x, (x.shape[0], -1))
    return (x - np.mean(x)) / np.std(x)


def _one_hot(x, k, dtype=np.float32):
    return np.array(x[:, None] == np.arange(k), dtype)


def get_dataset(name, n_train=None, n_test=None, permute_train=False, do_flatten_and_normalize=True,
                data_dir=None, input_key="image"):
    shape, classes = _SHAPES[name]
    rng = np.random.default_rng(0)
    n_train, n_test = n_train or 64, n_test or 64
    x_train = rng.standard_normal((n_train, *shape)).astype(np.float32)
    x_test = rng.standard_normal((n_test, *shape)).astype(np.float32)
    y_train, y_test = rng.integers(0, classes, n_train), rng.integers(0, classes, n_test)
    if do_flatten_and_normalize:
        x_train, x_test = _partial_flatten_and_normalize(x_train), _partial_flatten_and_normalize(x_test)
    y_train, y_test = _one_hot(y_train, classes), _one_hot(y_test, classes)
    if permute_train:
        perm = np.random.RandomState(0).permutation(x_train.shape[0])
        x_train, y_train = x_train[perm], y_train[perm]
    return x_train, y_train, x_test, y_test


def minibatch(x_train, y_train, batch_size, train_epochs):
    """Yield ``train_epochs`` epochs of shuffled minibatches (NT's generator)."""
    epoch = 0
    start = 0
    key = np.random.RandomState(0)
    while epoch < train_epochs:
        end = start + batch_size
        if end > x_train.shape[0]:
            epoch += 1
            start, end = 0, batch_size
            perm = key.permutation(x_train.shape[0])
            x_train, y_train = x_train[perm], y_train[perm]
        yield x_train[start:end], y_train[start:end]
        start += batch_size

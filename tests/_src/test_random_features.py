import jax
import numpy as np
import pytest

from kjax._src.random_features import random_projection, simplex_directions


@pytest.mark.parametrize("kind", ["iid", "orthogonal", "simplex"])
@pytest.mark.parametrize("m", [3, 8, 13])
def test_shapes_and_gaussian_marginals(kind, m):
    w = random_projection(jax.random.key(0), m, 8, kind=kind, dtype=np.float64)
    assert w.shape == (m, 8) and w.dtype == np.float64
    # rows are marginally N(0, I): E|w|^2 = d; check over many draws
    ws = jax.vmap(lambda k: random_projection(k, m, 8, kind=kind, dtype=np.float64))(
        jax.random.split(jax.random.key(1), 1000))
    sq = np.mean(np.sum(np.asarray(ws) ** 2, -1))
    assert abs(sq - 8.0) < 0.3  # chi^2_8 rows: std of the mean <= 4/sqrt(3000) = 0.073


def test_block_geometry():
    d = 6
    w = np.asarray(random_projection(jax.random.key(2), d, d, kind="orthogonal", dtype=np.float64))
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    np.testing.assert_allclose(u @ u.T, np.eye(d), atol=1e-12)
    w = np.asarray(random_projection(jax.random.key(3), d, d, kind="simplex", dtype=np.float64))
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    expect = np.full((d, d), -1.0 / (d - 1))
    np.fill_diagonal(expect, 1.0)
    np.testing.assert_allclose(u @ u.T, expect, atol=1e-12)
    s = simplex_directions(d)
    np.testing.assert_allclose(s @ s.T, expect, atol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="`kind` must be one of"):
        random_projection(jax.random.key(0), 4, 4, kind="sobol")
    with pytest.raises(ValueError, match="`num_features` must be >= 1"):
        random_projection(jax.random.key(0), 0, 4)
    with pytest.raises(TypeError, match="`dim` must be a Python int"):
        random_projection(jax.random.key(0), 4, 4.0)

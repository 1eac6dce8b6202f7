"""Matrix-free eNTK analysis (kjax.ntk.analysis.ntk_*) against the dense eNTK at small n."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src.errors import KjaxError, KjaxTypeError
from kjax.ntk import analysis as A
from kjax.ntk import empirical_ntk

N, D, H, O = 8, 3, 6, 2  # noqa: E741 (O outputs, as in the docs)
RNG = np.random.default_rng(0)
X = RNG.normal(size=(N, D))
P = {"w1": RNG.normal(size=(D, H)) / np.sqrt(D), "w2": RNG.normal(size=(H, O)) / np.sqrt(H),
     "steps": np.arange(3)}  # an integer leaf: held fixed
Y = np.eye(O)[RNG.integers(0, O, size=N)]


def f(p, x):
    return jnp.tanh(x @ p["w1"]) @ p["w2"]


@pytest.fixture(scope="module")
def theta():
    """The dense full eNTK flattened to [n*O, n*O] (example-major)."""
    k = np.asarray(empirical_ntk(f, P, X, mode="full"))  # [n, n, O, O]
    return k.transpose(0, 2, 1, 3).reshape(N * O, N * O)


def test_matvec_equals_the_dense_kernel(theta):
    v = RNG.normal(size=(N, O))
    mv = A.ntk_matvec(f, P, X, block_size=3)  # 3 does not divide 8: padded last block
    np.testing.assert_allclose(np.asarray(mv(v)).ravel(), theta @ v.ravel(), rtol=1e-11, atol=1e-12)


def _exact(theta):
    yc = Y - Y.mean(0)
    c = np.kron(np.eye(N) - 1.0 / N, np.eye(O))
    tc = c @ theta @ c
    return {
        "trace": np.trace(theta),
        "fro": np.linalg.norm(theta),
        "rank": np.trace(theta) ** 2 / np.sum(theta**2),
        "align": yc.ravel() @ theta @ yc.ravel() / (np.linalg.norm(tc) * np.sum(yc**2)),
    }


ESTIMATORS = {
    "trace": lambda k, m, s: A.ntk_trace(f, P, X, key=k, num_samples=s, method=m, block_size=3),
    "fro": lambda k, m, s: A.ntk_frobenius_norm(f, P, X, key=k, num_samples=s, method=m, block_size=3),
    "rank": lambda k, m, s: A.ntk_effective_rank(f, P, X, key=k, num_samples=s, method=m, block_size=3),
    "align": lambda k, m, s: A.ntk_label_alignment(f, P, X, Y, key=k, num_samples=s, method=m, block_size=3),
}


@pytest.mark.parametrize("method", ["reverse", "forward", "hutch++"])
def test_estimates_are_within_their_stated_confidence(theta, method):
    """Over 32 independent draws (vmapped keys), the exact value lies within 2 stated standard
    errors in at least 80% of them (nominal 95%)."""
    exact = _exact(theta)
    keys = jax.random.split(jax.random.key(0), 32)
    s = 15 if method == "hutch++" else 16  # Hutch++: 5 sketch directions, below the rank 16
    for name, est in ESTIMATORS.items():
        values, se = jax.vmap(lambda k, est=est: tuple(est(k, method, s))[:2])(keys)
        values, se = np.asarray(values), np.asarray(se)
        assert np.all(np.isfinite(values)) and np.all(se > 0), name
        covered = np.mean(np.abs(values - exact[name]) <= 2 * se)
        assert covered >= 0.8, (name, covered)


def test_hutchpp_is_exact_when_the_sketch_spans_the_kernel(theta):
    # rank(Θ) <= n*O = 16, and Hutch++ with m products sketches m // 3 directions
    exact = _exact(theta)
    for name in ("trace", "align"):  # Θ and (centered) Θ^2: the fro / rank paths are align's
        est = ESTIMATORS[name]
        np.testing.assert_allclose(float(est(jax.random.key(1), "hutch++", 3 * N * O).value), exact[name],
                                   rtol=1e-8)


def test_lanczos_through_the_matvec_gives_the_top_eigenvalues(theta):
    mv = A.ntk_matvec(f, P, X)
    vals, _ = A.lanczos_top_k(jax.random.key(0), lambda v: mv(v.reshape(N, O)).reshape(-1), N * O, 3,
                              num_iters=N * O)
    np.testing.assert_allclose(vals, np.sort(np.linalg.eigvalsh(theta))[::-1][:3], rtol=1e-9)


BAD = [
    (lambda: A.ntk_trace(f, P, X, key=jax.random.key(0), method="both"), KjaxError, "`method` must be one of"),
    (lambda: A.ntk_trace(f, P, X, key=jax.random.key(0), num_samples=1), KjaxError, "`num_samples`"),
    (lambda: A.ntk_frobenius_norm(f, P, X, key=jax.random.key(0), num_samples=3), KjaxError, "`num_samples`"),
    (lambda: A.ntk_trace(f, P, X, key=0), KjaxTypeError, "`key` must be a typed PRNG key"),
    (lambda: A.ntk_trace(f, P, X, key=jax.random.key(0), block_size=0), KjaxError, "`block_size`"),
    (lambda: A.ntk_trace(f, P, X[:0], key=jax.random.key(0)), KjaxError, "`x` must hold at least one"),
    (lambda: A.ntk_trace(lambda p, x: (x @ p["w1"]).sum(), P, X, key=jax.random.key(0)), KjaxTypeError,
     "`f` must return one array"),
    (lambda: A.ntk_trace(lambda p, x: (x @ p["w1"])[:1], P, X, key=jax.random.key(0)), KjaxError,
     "`f` must map a block"),
    (lambda: A.ntk_matvec(3, P, X), KjaxTypeError, "`f` must be a callable"),
    (lambda: A.ntk_matvec(f, {"n": np.arange(3)}, X), KjaxTypeError, "`params` must have at least one"),
    (lambda: A.ntk_label_alignment(f, P, X, Y[:, :1], key=jax.random.key(0)), KjaxError, "`y` must have"),
    (lambda: A.ntk_label_alignment(f, P, X, np.ones((N, O)), key=jax.random.key(0)), KjaxError,
     "`y` must not be zero after centering"),
    (lambda: A.ntk_label_alignment(f, P, X, Y, key=jax.random.key(0), centered=1), KjaxTypeError,
     "`centered` must be a bool"),
]


@pytest.mark.parametrize("call,cls,msg", BAD)
def test_bad_input(call, cls, msg):
    with pytest.raises(cls, match=msg.replace("(", r"\(")) as e:
        call()
    assert "kjax.ntk.analysis.ntk_" in str(e.value)

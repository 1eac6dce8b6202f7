import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kjax._src.status import Status
from kjax.ntk import analysis as A
from tests.conformance import assert_close

RNG = np.random.default_rng(0)
Z = RNG.normal(size=(30, 8))
K = Z @ Z.T
K2 = np.tanh(Z) @ np.tanh(Z).T


def test_eigenspectrum_and_lanczos_match_numpy():
    vals, vecs = A.eigenspectrum(K, top_k=5)
    ref = np.sort(np.linalg.eigvalsh(K))[::-1][:5]
    assert_close(vals, ref, 1e-10)
    lv, lvec = A.lanczos_top_k(jax.random.key(0), lambda v: jnp.asarray(K) @ v, 30, 5)
    assert_close(lv, ref, 1e-8)
    for i in range(5):  # eigenvectors up to sign
        assert abs(abs(float(jnp.vdot(lvec[:, i], vecs[:, i]))) - 1.0) < 1e-6


def test_full_layout_is_flattened():
    k4 = np.einsum("ij,ab->iajb", K[:4, :4], np.eye(2)).transpose(0, 2, 1, 3)  # [n, n, O, O]
    vals, _ = A.eigenspectrum(k4)
    assert vals.shape == (8,)


def test_cka_and_alignment_formulas():
    n = K.shape[0]
    H = np.eye(n) - 1.0 / n
    a, b = H @ K @ H, H @ K2 @ H
    want = np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b)
    assert_close(A.centered_kernel_alignment(K, K2), want, 1e-12)
    assert_close(A.alignment(K, K2), np.sum(K * K2) / np.linalg.norm(K) / np.linalg.norm(K2), 1e-12)
    assert_close(A.kernel_distance(K, K2), 1 - np.sum(K * K2) / np.linalg.norm(K) / np.linalg.norm(K2), 1e-12)
    y = RNG.integers(0, 3, 30)
    Y = np.eye(3)[y]
    assert_close(A.label_alignment(K, y), A.centered_kernel_alignment(K, Y @ Y.T), 1e-12)


def test_effective_rank():
    lam = np.array([4.0, 2.0, 1.0, 1.0])
    p = lam / lam.sum()
    assert_close(A.effective_rank(lam), np.exp(-np.sum(p * np.log(p))), 1e-12)
    assert_close(A.effective_rank(lam, kind="participation"), lam.sum() ** 2 / np.sum(lam**2), 1e-12)
    assert_close(A.effective_rank(np.diag(lam)), np.exp(-np.sum(p * np.log(p))), 1e-10)


def test_record_ntk_kernel_moves_during_training():
    def f(p, x):
        return jnp.tanh(x @ p["w1"]) @ p["w2"]

    k1, k2 = jax.random.split(jax.random.key(0))
    p = {"w1": jax.random.normal(k1, (2, 8)), "w2": 0.1 * jax.random.normal(k2, (8, 1))}
    x = jax.random.normal(k1, (16, 2))
    y = jnp.sin(3 * x[:, :1])
    loss = lambda q, b: jnp.mean((f(q, b[0]) - b[1]) ** 2)
    rec = A.record_ntk(f, p, loss, optax.adam(0.05), [(x, y)], x[:6], num_steps=40, every=20)
    assert rec.steps.tolist() == [0, 20, 40]
    assert rec.losses[-1] < rec.losses[0]
    assert rec.distance_to_init[0] == 0.0 and rec.distance_to_init[-1] > 1e-4
    assert np.all(rec.velocity[1:] > 0)
    # a second call with the same model, loss and optimizer reuses the compiled steps
    opt = optax.adam(0.05)
    A.record_ntk(f, p, loss, opt, [(x, y)], x[:6], num_steps=2, every=1)
    sizes = A._train_step._cache_size(), A._probe_ntk._cache_size()
    A.record_ntk(f, p, loss, opt, [(x, y)], x[:6], num_steps=2, every=1)
    assert (A._train_step._cache_size(), A._probe_ntk._cache_size()) == sizes


def test_lanczos_top_k_reports_status():
    a = jnp.diag(jnp.arange(1.0, 41.0))
    vals, _, status = A.lanczos_top_k(jax.random.key(0), lambda v: a @ v, 40, 3, num_iters=40,
                                      return_status=True)
    assert int(status) == 0 and np.allclose(vals, [40.0, 39.0, 38.0])
    _, _, status = A.lanczos_top_k(jax.random.key(0), lambda v: a @ v, 40, 3, num_iters=4,
                                   return_status=True)
    assert int(status) == Status.MAX_ITER


BAD = [
    (lambda: A.eigenspectrum(np.ones((3, 4))), "kjax.ntk.analysis.eigenspectrum: `k` must be a square kernel"),
    (lambda: A.centered_kernel_alignment(K, K[:5, :5]), "`k2` must have the shape of `k1`"),
    (lambda: A.label_alignment(K, np.zeros(4, int)), "`y` must have 30 rows"),
    (lambda: A.effective_rank(K, kind="shannon"), "`kind` must be one of"),
    (lambda: A.lanczos_top_k(jax.random.key(0), lambda v: v, 10, 5, num_iters=3), "`num_iters` must be in [k, n]"),
]


@pytest.mark.parametrize("call,msg", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input(call, msg):
    with pytest.raises(ValueError) as info:
        call()
    assert msg in str(info.value)


def test_label_alignment_rejects_negative_labels():
    """Regression: a negative integer label became an all-zero one-hot row."""
    with pytest.raises(ValueError, match=r"kjax\.ntk\.analysis\.label_alignment: `y` must hold "
                                         r"non-negative class labels.*-1"):
        A.label_alignment(K[:3, :3], np.array([0, -1, 1]))


def test_effective_rank_nan_is_an_error_or_nan_never_a_number():
    """Regression: NaN eigenvalues were clipped away and effective_rank returned 1.0."""
    bad = np.array([1.0, np.nan, 2.0])
    for arg in (bad, np.diag(bad)):
        with pytest.raises(ValueError, match=r"kjax\.ntk\.analysis\.effective_rank: "
                                             r"`k_or_eigenvalues` must be finite"):
            A.effective_rank(arg)
    for kind in ("entropy", "participation"):  # traced: NaN propagates, as documented
        assert np.isnan(jax.jit(lambda v, kind=kind: A.effective_rank(v, kind=kind))(bad))
    assert np.isnan(jax.jit(A.effective_rank)(np.array([1.0, np.inf])))


@pytest.mark.parametrize("call,msg", [
    (lambda: A.kernel_distance(np.ones((3, 4)), np.eye(3)),
     r"kjax\.ntk\.analysis\.kernel_distance: `k1` must be a square kernel"),
    (lambda: A.kernel_distance(np.eye(3), np.ones((3, 4))),
     r"kjax\.ntk\.analysis\.kernel_distance: `k2` must be a square kernel"),
    (lambda: A.kernel_distance(np.eye(3), np.eye(4)),
     r"kjax\.ntk\.analysis\.kernel_distance: `k2` must have the shape of `k1` \(3, 3\)"),
    (lambda: A.alignment(np.eye(3), np.ones(3)), r"kjax\.ntk\.analysis\.alignment: `k2` must be"),
])
def test_errors_name_the_function_called_and_its_arguments(call, msg):
    """Regression: kernel_distance's errors said `alignment` and named `k`."""
    with pytest.raises(ValueError, match=msg):
        call()

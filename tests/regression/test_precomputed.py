"""Precomputed Gram matrices and linear operators as kernels (issue #17, item 2(c)).

Every solver run on ``kjax.kernels.precomputed(K)`` (indices into one point set) must equal the same
solver run on the kernel function that made ``K``; closed forms (NumPy solves on the stored matrix)
check the operator paths. One point set (N = 24, float64) and the same train / test split throughout,
so compiled shapes are shared.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax import kernels
from kjax import regression as R
from kjax._src.errors import KjaxError
from kjax.ntk import predict
from tests.conformance import assert_close

LS = 1.1
KERN = functools.partial(kernels.rbf, lengthscale=LS)
N = 24
TRAIN = np.arange(0, N, 3)  # 8 points ...
TRAIN = np.sort(np.concatenate([TRAIN, np.arange(1, N, 3)]))  # ... 16 training points
TEST = np.setdiff1d(np.arange(N), TRAIN)  # 8 test points
CENTERS = np.array([1, 4, 6, 10, 15, 21])  # sorted, among TRAIN


def _np_rbf(a, b):
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.exp(-0.5 * d2 / LS**2)


@pytest.fixture(scope="module")
def pts():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 2))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1]
    return x, y, _np_rbf(x, x)  # the Gram matrix from an independent NumPy formula


# --------------------------------------------------------------------------------------------
# the kernel's blockwise products against NumPy sub-matrices (every cost branch)


@pytest.mark.parametrize("rows,cols", [
    (np.array([2, 5, 7]), np.array([0, 3, 3, 9])),  # gathered sub-matrix
    (np.arange(N), np.arange(N)),  # one product with the whole matrix
    (np.array([1, 2]), np.tile(np.arange(N), 2)),  # gathered rows (duplicate columns)
])
def test_products_equal_numpy(pts, rows, cols):
    _, _, k = pts
    sub = k[np.ix_(rows, cols)]
    v = np.random.default_rng(0).normal(size=(len(cols), 2))
    w = np.random.default_rng(1).normal(size=(len(rows), 2))

    @jax.jit  # one compilation for all the products
    def products(g, rows, cols, v, w):
        pk = kernels.precomputed(g)
        op = kernels.operator(lambda u: g @ u, N, diag=jnp.diagonal(g))
        return (kernels.gram(pk, rows, cols), kernels.kernel_matvec(pk, rows, cols, v),
                kernels.kernel_normal_matvec(pk, rows, cols, v, w), pk.rmatvec(rows, cols, w),
                kernels.kernel_diag(pk, rows), kernels.kernel_matvec(op, rows, cols, v),
                kernels.kernel_normal_matvec(op, rows, cols, v, w))

    g, mv, nmv, rmv, diag, op_mv, op_nmv = products(k, rows, cols, v, w)
    assert_close(g, sub, 1e-14, "gram")
    assert_close(mv, sub @ v, 1e-13, "matvec")
    assert_close(nmv, sub.T @ (sub @ v + w), 1e-13, "normal")
    assert_close(rmv, sub.T @ w, 1e-13, "rmatvec")
    assert_close(diag, np.diag(k)[rows], 0.0, "diag")
    assert_close(op_mv, sub @ v, 1e-13, "operator matvec")
    assert_close(op_nmv, sub.T @ (sub @ v + w), 1e-13, "operator normal")


def test_columns_store_equals_square(pts):
    _, _, k = pts
    rows, knm = np.arange(N), k[:, CENTERS]
    v = np.arange(len(CENTERS), dtype=float)

    @jax.jit
    def products(g, knm):
        pc = kernels.precomputed(knm, columns=CENTERS)
        op = kernels.operator(lambda u: jnp.einsum("ij,j->i", g, u), N)  # [n] only: vectorised
        return (pc(rows, CENTERS), kernels.kernel_normal_matvec(pc, rows, CENTERS, v),
                pc.rmatvec(rows, CENTERS, jnp.ones(N)), kernels.kernel_matvec(op, rows, rows, jnp.eye(N)[:, :3]))

    cols, nmv, rmv, op_mv = products(k, knm)
    assert_close(cols, knm, 0.0, "columns")
    assert_close(nmv, knm.T @ (knm @ v), 1e-13, "normal")
    assert_close(rmv, knm.sum(0), 1e-13, "rmatvec")
    assert_close(op_mv, k[:, :3], 1e-14, "[n]-only op")


# --------------------------------------------------------------------------------------------
# solvers: precomputed == the kernel function


@pytest.mark.parametrize("solver", ["cholesky", "pcg"])
def test_krr_precomputed_equals_closed_form(pts, solver):
    _, y, k = pts
    pk = kernels.precomputed(k)
    kw = dict(ridge=1e-2, solver=solver, preconditioner_rank=6 if solver == "pcg" else None)
    st = R.krr_fit(pk, TRAIN, y[TRAIN], **kw)
    assert int(st.status) == 0
    # the closed form on the stored matrix (NumPy); krr_fit on the kernel function equals it
    # (tests/regression/test_krr.py), so this is "precomputed == the function kernel"
    coef = np.linalg.solve(k[np.ix_(TRAIN, TRAIN)] + 1e-2 * np.eye(len(TRAIN)), y[TRAIN])
    assert_close(st.coef[:, 0], coef, 1e-8, "coef")
    assert_close(R.krr_predict(st, TEST[:, None]), k[np.ix_(TEST, TRAIN)] @ coef, 1e-8, "predict")


def test_krr_all_points_and_ridge_path(pts):
    x, y, k = pts
    ridges = np.array([1e-2, 1e-1])
    a = R.krr_fit(kernels.precomputed(k), None, y, ridge=ridges)
    for r, c in zip(ridges, a.coef, strict=True):
        assert_close(c[:, 0], np.linalg.solve(k + r * np.eye(N), y), 1e-8, "path coef")
    assert R.krr_predict(a, TEST).shape == (2, len(TEST))


def test_gp_precomputed_equals_closed_form(pts):
    _, y, k = pts
    pk = kernels.precomputed(k)
    a = R.gp_posterior(pk, TRAIN, y[TRAIN], TEST, ridge=0.05)
    assert int(a.status) == 0
    # Rasmussen & Williams eq. 2.19 / 2.30 in NumPy on the stored matrix
    kxx = k[np.ix_(TRAIN, TRAIN)] + 0.05 * np.eye(len(TRAIN))
    ksx = k[np.ix_(TEST, TRAIN)]
    assert_close(a.mean, ksx @ np.linalg.solve(kxx, y[TRAIN]), 1e-10, "mean")
    var = 1.0 - np.einsum("ij,ji->i", ksx, np.linalg.solve(kxx, ksx.T))
    assert_close(a.variance, var, 1e-8, "variance")
    lml = -0.5 * y[TRAIN] @ np.linalg.solve(kxx, y[TRAIN]) - 0.5 * np.linalg.slogdet(kxx)[1] \
        - 0.5 * len(TRAIN) * np.log(2 * np.pi)
    la = R.gp_log_marginal_likelihood(pk, TRAIN, y[TRAIN], ridge=0.05)
    assert abs(float(la) - lml) <= 1e-10 * abs(lml)


@pytest.mark.parametrize("store", ["square", "columns"])
def test_falkon_precomputed_equals_closed_form(pts, store):
    x, y, k = pts
    pk = kernels.precomputed(k) if store == "square" else kernels.precomputed(k[:, CENTERS], columns=CENTERS)
    val = store == "columns"  # the validation monitor once (the same code for both stores)
    a = R.falkon_fit(jax.random.key(0), pk, TRAIN, y[TRAIN], centers=CENTERS, x_val=TEST if val else None,
                     y_val=y[TEST] if val else None, ridge=1e-3, maxiter=30, tol=1e-12)
    assert int(a.status) in (0, 4)
    # Nystrom KRR in NumPy on the stored matrix (Falkon's K_MM shift eps * M is below the tolerance)
    knm, kmm = k[np.ix_(TRAIN, CENTERS)], k[np.ix_(CENTERS, CENTERS)]
    alpha = np.linalg.solve(knm.T @ knm + 1e-3 * kmm, knm.T @ y[TRAIN])
    pred = k[np.ix_(TEST, CENTERS)] @ alpha
    assert_close(R.falkon_predict(a, TEST), pred, 1e-7, "predict")
    if val:
        assert abs(float(a.val_errors[a.iterations - 1]) - np.mean((pred - y[TEST]) ** 2)) <= 1e-7


def test_eigenpro_and_centers_precomputed_equal_function(pts):
    x, y, k = pts
    pk = kernels.precomputed(k)
    kw = dict(epochs=2, num_eigen=4, subsample_size=12, batch_size=8)
    a = R.eigenpro_fit(jax.random.key(2), pk, None, y, **kw)
    b = R.eigenpro_fit(jax.random.key(2), KERN, x, y, **kw)
    assert_close(a.alpha, b.alpha, 1e-8, "eigenpro alpha")  # same subsample, batches, steps
    ia = R.nystrom_centers(jax.random.key(5), pk, None, 5, method="rpcholesky")
    ib = R.nystrom_centers(jax.random.key(5), KERN, x, 5, method="rpcholesky")
    np.testing.assert_array_equal(np.asarray(ia), np.asarray(ib))


# --------------------------------------------------------------------------------------------
# the linear operator


@pytest.mark.parametrize("with_diag", [True, False])
def test_operator_krr_pcg(pts, with_diag):
    _, y, k = pts
    op = kernels.operator(lambda v: jnp.asarray(k) @ v, N, diag=np.diag(k) if with_diag else None)
    st = R.krr_fit(op, None, y, ridge=1e-2)  # auto -> pcg for an operator
    coef = np.linalg.solve(k + 1e-2 * np.eye(N), y)
    assert int(st.status) == 0 and int(st.iterations) > 0
    assert_close(st.coef[:, 0], coef, 1e-7, "coef")
    # in-sample predictions: K c at training indices
    assert_close(R.krr_predict(st, TEST), k[TEST] @ coef, 1e-7, "fitted values")


def test_operator_and_precomputed_in_ntk_predict(pts):
    _, y, k = pts
    ktt, kst = k[np.ix_(TRAIN, TRAIN)], k[np.ix_(TEST, TRAIN)]
    yt = y[TRAIN][:, None]
    op = kernels.operator(lambda v: jnp.asarray(ktt) @ v, len(TRAIN), diag=np.diag(ktt))
    # relative diag_reg (the operator's `diag` gives the trace): K + 1e-2 * tr(K) / N * I
    ref = kst @ np.linalg.solve(ktt + 1e-2 * np.trace(ktt) / len(TRAIN) * np.eye(len(TRAIN)), yt)
    cg = predict.gp_inference(op, yt, 1e-2, solver="cg")("nngp", kst)
    assert_close(cg, ref, 1e-8, "gp_inference cg")
    # gradient flow at t = infinity from f_0 = 0 has the same test outputs
    cg = predict.gradient_descent_mse(op, yt, diag_reg=1e-2, solver="cg")(None, 0.0, 0.0, kst)[1]
    pre = predict.gradient_descent_mse(kernels.precomputed(ktt), yt, diag_reg=1e-2)(None, 0.0, 0.0, kst)[1]
    assert_close(cg, ref, 1e-8, "gradient_descent_mse cg")
    assert_close(pre, ref, 1e-10, "gradient_descent_mse precomputed")


# --------------------------------------------------------------------------------------------
# NaN: raise when concrete, status 1 under jit (never a silent NaN with status 0)


def test_nan_gram_raises_when_concrete(pts):
    _, y, k = pts
    nan = np.where(np.eye(N) > 0, np.nan, k)
    with pytest.raises(KjaxError, match="`gram` must contain only finite values"):
        kernels.precomputed(nan)
    # a kernel whose matrix was swapped afterwards (tree_map) is caught by the solvers
    bad = jax.tree.map(lambda g: jnp.asarray(nan) if g.ndim == 2 else g, kernels.precomputed(k))
    for call in (lambda: R.krr_fit(bad, None, y, ridge=1e-2),
                 lambda: R.gp_posterior(bad, TRAIN, y[TRAIN], TEST, ridge=1e-2),
                 lambda: R.falkon_fit(jax.random.key(0), bad, None, y, ridge=1e-2, centers=CENTERS)):
        with pytest.raises(KjaxError, match="`kernel` must hold only finite values"):
            call()


def test_nan_gram_status_under_jit(pts):
    _, y, k = pts
    bad = jnp.asarray(k).at[3, 3].set(jnp.nan)
    fits = {
        "cholesky": lambda g: R.krr_fit(kernels.precomputed(g), None, y, ridge=1e-2).status,
        "falkon": lambda g: R.falkon_fit(jax.random.key(0), kernels.precomputed(g), None, y, ridge=1e-2,
                                         centers=CENTERS, maxiter=3).status,
    }
    for name, f in fits.items():
        assert int(jax.jit(f)(bad)) == 1, name
        assert int(jax.jit(f)(jnp.asarray(k))) in (0, 4), name
    # a traced index out of range is reported the same way
    f = jax.jit(lambda i: R.krr_fit(kernels.precomputed(k), i, y[:3], ridge=1e-2).status)
    assert int(f(jnp.array([0, 1, N]))) == 1 and int(f(jnp.array([0, 1, 2]))) == 0


# --------------------------------------------------------------------------------------------
# every documented error


def _errors(pts):
    x, y, k = pts
    pk = kernels.precomputed(k)
    pc = kernels.precomputed(k[:, CENTERS], columns=CENTERS)
    op = kernels.operator(lambda v: jnp.asarray(k) @ v, N)
    key = jax.random.key(0)
    return [
        ("gram not square", lambda: kernels.precomputed(k[:, :5]), KjaxError, "`gram` must be square"),
        ("gram not 2-D", lambda: kernels.precomputed(k[0]), KjaxError, "`gram` must be a 2-D"),
        ("gram empty", lambda: kernels.precomputed(np.zeros((0, 0))), KjaxError, "at least one row"),
        ("gram complex", lambda: kernels.precomputed(k.astype(complex)), TypeError, "`gram` must be a real"),
        ("columns float", lambda: kernels.precomputed(k[:, :3], columns=np.array([0.0, 1, 2])), TypeError,
         "`columns` must be integer"),
        ("columns length", lambda: kernels.precomputed(k[:, :3], columns=np.array([0, 1])), KjaxError,
         "`columns` must have shape"),
        ("columns unsorted", lambda: kernels.precomputed(k[:, :3], columns=np.array([2, 0, 1])), KjaxError,
         "sorted and distinct"),
        ("columns range", lambda: kernels.precomputed(k[:, :3], columns=np.array([0, 1, N])), KjaxError,
         "`columns` must be indices in"),
        ("y vs N", lambda: R.krr_fit(pk, None, y[:5], ridge=1.0), KjaxError, "does not match y"),
        ("y vs indices", lambda: R.krr_fit(pk, TRAIN, y, ridge=1.0), KjaxError, "`y` must have 16 rows"),
        ("index range", lambda: R.krr_fit(pk, np.array([0, N]), y[:2], ridge=1.0), KjaxError,
         "`x` must be indices in"),
        ("index negative", lambda: R.gp_posterior(pk, TRAIN, y[TRAIN], np.array([-1]), ridge=1.0), KjaxError,
         "`x_new` must be indices in"),
        ("index non-integer", lambda: R.krr_fit(pk, np.array([0.5, 1.0]), y[:2], ridge=1.0), KjaxError,
         "integer-valued"),
        ("index dtype", lambda: R.krr_fit(pk, np.array([True, False]), y[:2], ridge=1.0), TypeError,
         "`x` must be integer indices"),
        ("index shape", lambda: R.krr_fit(pk, np.zeros((2, 2), int), y[:2], ridge=1.0), KjaxError,
         r"`x` must be indices \[n\] or \[n, 1\]"),
        ("centers not stored", lambda: R.falkon_fit(key, pc, None, y, ridge=1.0, centers=np.array([0, 1])),
         KjaxError, "`centers` must be among the stored `columns`"),
        ("num_centers with columns", lambda: R.falkon_fit(key, pc, None, y, ridge=1.0, num_centers=3),
         KjaxError, "pass centers=idx"),
        ("krr on columns", lambda: R.krr_fit(pc, None, y, ridge=1.0), KjaxError,
         "`x` must be among the stored `columns`"),
        ("matvec not callable", lambda: kernels.operator(k, N), TypeError, "`matvec` must be a callable"),
        ("matvec shape", lambda: kernels.operator(lambda v: v[:3], N), TypeError, "`matvec` must map"),
        ("operator n", lambda: kernels.operator(lambda v: v, 0), KjaxError, "`n` must"),
        ("operator diag", lambda: kernels.operator(lambda v: v, N, diag=np.ones(3)), KjaxError,
         "`diag` must have shape"),
        ("operator dtype", lambda: kernels.operator(lambda v: v, N, dtype=np.int32), TypeError,
         "`dtype` must be a real floating"),
        ("operator cholesky", lambda: R.krr_fit(op, None, y, ridge=1.0, solver="cholesky"), TypeError,
         "needs|have kernel entries"),
        ("operator ridge path", lambda: R.krr_fit(op, None, y, ridge=np.array([1.0, 2.0])), TypeError,
         "have kernel entries"),
        ("operator rank", lambda: R.krr_fit(op, None, y, ridge=1.0, preconditioner_rank=3), KjaxError,
         "`preconditioner_rank` must be None"),
        ("operator falkon", lambda: R.falkon_fit(key, op, None, y, ridge=1.0, centers=CENTERS), TypeError,
         "`kernel` must have kernel entries"),
        ("operator eigenpro", lambda: R.eigenpro_fit(key, op, None, y), TypeError, "`kernel` must have kernel"),
        ("operator gp", lambda: R.gp_log_marginal_likelihood(op, None, y, ridge=1.0), TypeError,
         "`kernel` must have kernel"),
        ("operator rls", lambda: R.nystrom_centers(key, op, None, 3, method="rls", ridge=1.0), TypeError,
         "`kernel` must have kernel"),
        ("operator called", lambda: op(np.arange(3)), TypeError, "KernelOperator only multiplies"),
        ("operator cholesky ntk", lambda: predict.gp_inference(op, y), KjaxError, "unless solver='cg'"),
        ("no matvec ntk", lambda: predict.gradient_descent_mse(object(), y, solver="cg"), TypeError,
         "`k_train_train` must be an"),
        ("columns ntk", lambda: predict.gp_inference(pc, y), KjaxError, "square precomputed"),
        ("operator y ntk", lambda: predict.gp_inference(op, y[:3], solver="cg"), KjaxError,
         "`y_train` must have N = 24"),
        ("mode ntk", lambda: predict.gp_inference(pk, y, solver="lu"), KjaxError, "`solver` must"),
        ("mode krr", lambda: R.krr_fit(pk, None, y, ridge=1.0, solver="lu"), KjaxError, "`solver` must"),
    ]


_NAMES = [e[0] for e in _errors((np.zeros((N, 2)), np.zeros(N), np.eye(N)))]


@pytest.mark.parametrize("name", _NAMES)
def test_documented_errors(pts, name):
    _, call, cls, match = {e[0]: e for e in _errors(pts)}[name]
    with pytest.raises(cls, match=match):
        call()

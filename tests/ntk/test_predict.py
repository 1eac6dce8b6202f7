"""kjax.ntk.predict against neural-tangents' stored outputs and closed forms (scipy expm, solves)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from kjax._src.errors import KjaxError
from kjax._src.status import status_name
from kjax.ntk import predict, stax
from tests.conformance import assert_close
from tests.ntk.stax_archs import architectures

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "nt_stax_reference.npz"))
P = "predict"
# the NTK of the reference MLP on 8 points is ill-conditioned (eigenvalues down to ~1e-8 of the
# largest), so NT's and our eigen-solvers agree to ~1e-9, not to machine precision
RTOL = 1e-7


@pytest.fixture(scope="module")
def problem():
    _, _, kernel_fn = architectures(stax)["mlp_relu"][0]
    d = {k: REF[f"{P}/{k}"] for k in ("x_train", "x_test", "y_train", "ts", "fx_train_0", "fx_test_0")}
    d["kernel_fn"] = kernel_fn
    d["ktt"] = kernel_fn(d["x_train"], None, ("nngp", "ntk"))
    d["kst"] = kernel_fn(d["x_test"], d["x_train"], ("nngp", "ntk"))
    d["kss"] = kernel_fn(d["x_test"], None, "nngp")
    return d


@pytest.mark.parametrize("lr,reg", [(1.0, 0.0), (0.5, 0.1)])
def test_gradient_descent_mse_matches_nt(problem, lr, reg):
    p, tag = problem, f"{P}/gd_lr{lr}_reg{reg}"
    pf = predict.gradient_descent_mse(p["ktt"].ntk, p["y_train"], learning_rate=lr, diag_reg=reg)
    tr, te = pf(p["ts"], p["fx_train_0"], p["fx_test_0"], p["kst"].ntk)
    assert tr.shape == (4, 8, 2) and te.shape == (4, 4, 2)
    assert_close(tr, REF[f"{tag}/train"], RTOL, "train")
    assert_close(te, REF[f"{tag}/test"], RTOL, "test")
    tr, te = pf(None, p["fx_train_0"], p["fx_test_0"], p["kst"].ntk)
    assert_close(tr, REF[f"{tag}/train_inf"], RTOL, "train t=inf")
    assert_close(te, REF[f"{tag}/test_inf"], RTOL, "test t=inf")
    assert_close(pf(p["ts"], p["fx_train_0"]), REF[f"{tag}/train_only"], RTOL, "train only")
    # the iterative path gives the same infinite-time predictions
    pf_cg = predict.gradient_descent_mse(p["ktt"].ntk, p["y_train"], learning_rate=lr, diag_reg=reg,
                                         solver="cg")
    _, te_cg = pf_cg(None, p["fx_train_0"], p["fx_test_0"], p["kst"].ntk)
    assert_close(te_cg, REF[f"{tag}/test_inf"], RTOL, "cg")


def test_gradient_descent_mse_closed_form():
    """f_t(X) = Y + expm(-eta K t / (N O)) (f_0 - Y), checked with scipy's expm; large t -> None."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 6))
    k = a @ a.T + 0.5 * np.eye(6)
    y, f0 = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    kst = rng.standard_normal((3, 6))
    g0 = rng.standard_normal((3, 2))
    pf = predict.gradient_descent_mse(k, y, learning_rate=2.0)
    for t in (0.0, 0.7, 5.0):
        e = scipy.linalg.expm(-2.0 * k * t / y.size)
        tr, te = pf(t, f0, g0, kst)
        assert_close(tr, y + e @ (f0 - y), 1e-10, f"train t={t}")
        assert_close(te, g0 + kst @ np.linalg.solve(k, (np.eye(6) - e) @ (y - f0)), 1e-10, f"test t={t}")
    tr_inf, te_inf = pf(None, f0, g0, kst)
    tr_big, te_big = pf(1e6, f0, g0, kst)
    assert_close(te_big, te_inf, 1e-8, "t -> inf")
    assert_close(tr_inf, y, 1e-14, "train at t = inf")
    # a matvec function and CG: the iterative path for problems too large to factor
    pf_cg = predict.gradient_descent_mse(lambda v: jnp.asarray(k) @ v, y, solver="cg")
    assert_close(pf_cg(None, f0, g0, kst)[1], te_inf, 1e-8, "cg matvec")


def test_gp_inference_matches_nt(problem):
    p = problem
    g = predict.gp_inference(p["ktt"].nngp, p["y_train"], diag_reg=0.01)("nngp", p["kst"].nngp, p["kss"])
    assert isinstance(g, predict.Gaussian)
    assert_close(g.mean, REF[f"{P}/gp_mean"], 1e-10, "mean")
    assert_close(g.covariance, REF[f"{P}/gp_cov"], 1e-10, "cov")
    mean = predict.gp_inference(p["ktt"], p["y_train"], diag_reg=0.01)("nngp", p["kst"])
    assert_close(mean, REF[f"{P}/gp_mean_only"], 1e-10, "mean only")
    # closed form with numpy
    k, ks = np.asarray(p["ktt"].nngp), np.asarray(p["kst"].nngp)
    kr = k + 0.01 * np.trace(k) / 8 * np.eye(8)
    assert_close(g.mean, ks @ np.linalg.solve(kr, p["y_train"]), 1e-10, "numpy mean")


@pytest.mark.parametrize("t_name", ["t", "inf"])
def test_ensemble_matches_nt(problem, t_name):
    p = problem
    ens = predict.gradient_descent_mse_ensemble(p["kernel_fn"], p["x_train"], p["y_train"],
                                                learning_rate=1.0, diag_reg=0.01)
    out = ens(p["ts"] if t_name == "t" else None, p["x_test"], ("nngp", "ntk"), compute_cov=True)
    assert out._fields == ("nngp", "ntk")
    for g in ("nngp", "ntk"):
        assert_close(getattr(out, g).mean, REF[f"{P}/ens_{t_name}_{g}_mean"], RTOL, f"{g} mean")
        assert_close(getattr(out, g).covariance, REF[f"{P}/ens_{t_name}_{g}_cov"], RTOL, f"{g} cov")
    if t_name == "t":
        assert_close(ens(p["ts"], None, "ntk"), REF[f"{P}/ens_train_ntk_mean"], RTOL, "train mean")


def test_predict_errors(problem):
    k, y = problem["ktt"].ntk, problem["y_train"]
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `k_train_train` must be a square matrix"):
        predict.gradient_descent_mse(k[:3], y)
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `y_train` must have shape \[N\] or \[N, O\]"):
        predict.gradient_descent_mse(k, y[:3])
    pf = predict.gradient_descent_mse(k, y)
    with pytest.raises(KjaxError, match=r"`k_test_train` must be given"):
        pf(1.0, 0.0, problem["fx_test_0"])
    with pytest.raises(KjaxError, match=r"gp_inference predict_fn: `get` must be None, one of"):
        predict.gp_inference(k, y)("ntks", k)
    with pytest.raises(KjaxError, match=r"`solver` must be one of \('cholesky', 'cg'\)"):
        predict.gradient_descent_mse(k, y, solver="lu")


def _linear_problem():
    """A rank-deficient (linear) kernel: K = X X^T with X [6, 3], test kernel Xt X^T."""
    rng = np.random.default_rng(5)
    x, xt = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    y, w0 = rng.standard_normal((6, 2)), rng.standard_normal((3, 2))
    return x, xt, y, w0


def test_gp_inference_singular_kernel_is_finite_and_reported():
    # regression: a singular kernel at the default diag_reg=0 gave all NaN
    x, xt, y, _ = _linear_problem()
    k, kst, ktt = x @ x.T, xt @ x.T, xt @ xt.T
    pf = predict.gp_inference(k, y)
    g = pf("nngp", kst, ktt)
    kinv = np.linalg.pinv(k, rcond=1e-10)
    assert_close(g.mean, kst @ kinv @ y, 1e-9, "pseudo-inverse mean")
    # X has full column rank, so the test points lie in the span: the posterior covariance vanishes
    assert np.max(np.abs(np.asarray(g.covariance))) < 1e-9 * np.max(np.abs(ktt))
    _, code = pf("nngp", kst, ktt, return_status=True)
    assert int(code) == 6 and status_name(code).startswith("singular")
    # a positive-definite kernel: the Cholesky path, status 0
    _, code = predict.gp_inference(k + np.eye(6), y)("nngp", kst, return_status=True)
    assert int(code) == 0


def test_gradient_descent_mse_rank_deficient_kernel_matches_parameter_space_flow():
    # regression: t=None on a zero eigenvalue gave NaN (Cholesky of a singular kernel), and the training
    # outputs jumped to y_train instead of keeping their initial values on the null space
    x, xt, y, w0 = _linear_problem()
    lr, size = 0.7, y.size
    h, w_star = x.T @ x, np.linalg.lstsq(x, y, rcond=None)[0]
    pf = predict.gradient_descent_mse(x @ x.T, y, learning_rate=lr)
    f0, g0, kst = x @ w0, xt @ w0, xt @ x.T
    for t in (0.5, 3.0, 40.0):
        # the linear model's gradient flow in parameter space: w_t = w* + expm(-lr H t / size)(w0 - w*)
        w_t = w_star + scipy.linalg.expm(-lr * h * t / size) @ (w0 - w_star)
        tr, te = pf(t, f0, g0, kst)
        assert_close(tr, x @ w_t, 1e-9, f"train t={t}")
        assert_close(te, xt @ w_t, 1e-9, f"test t={t}")
    tr, te = pf(None, f0, g0, kst)
    assert_close(tr, x @ w_star, 1e-9, "train t=inf: the least-squares fit, not y_train")
    assert_close(te, xt @ w_star, 1e-9, "test t=inf")
    assert int(pf(None, f0, g0, kst, return_status=True)[1]) == 6


def test_gradient_descent_mse_zero_and_negative_eigenvalues_stay_finite():
    # regression: NaN at a finite t on an exactly zero eigenvalue (0/0), and on an indefinite kernel
    y = np.arange(4.0)[:, None]
    psd = np.diag([1.0, 2.0, 0.5, 0.0])
    pf = predict.gradient_descent_mse(psd, y)
    t = 2.0
    s = t / y.size
    tr, te = pf(t, 0.0, 0.0, psd)
    lam = np.diag(psd)
    want = np.where(lam > 0, -np.expm1(-lam * s), 0.0)[:, None] * y  # train: y (1 - e^{-lam s})
    assert_close(tr, want, 1e-12, "train, zero eigenvalue keeps f0 = 0")
    assert_close(te, lam[:, None] * want / np.where(lam > 0, lam, 1.0)[:, None], 1e-12, "test")
    assert int(pf(t, 0.0, 0.0, psd, return_status=True)[1]) == 0
    indefinite = np.diag([1.0, -1.0, 0.5, 0.0])
    pf = predict.gradient_descent_mse(indefinite, y)
    for tt in (t, None):
        tr, te = pf(tt, 0.0, 0.0, indefinite)
        assert np.all(np.isfinite(np.asarray(tr))) and np.all(np.isfinite(np.asarray(te)))
        assert int(pf(tt, 0.0, 0.0, indefinite, return_status=True)[1]) == 2  # clipped, reported
    # the negative direction is frozen (clipped to zero): it keeps its initial value at t = inf
    assert float(tr[1, 0]) == 0.0 and float(tr[0, 0]) == pytest.approx(0.0) and float(tr[2, 0]) == pytest.approx(2.0)
    ens = predict.gradient_descent_mse_ensemble(lambda a, b, get: _Kernels(np.diag([1.0, 0.0]), np.diag([1.0, 0.0])),
                                                np.zeros((2, 1)), np.ones((2, 1)))
    out, code = ens(t=np.array([1.0]), get="ntk", compute_cov=True, return_status=True)
    assert np.all(np.isfinite(np.asarray(out.mean))) and np.all(np.isfinite(np.asarray(out.covariance)))


class _Kernels(tuple):
    """A minimal kernel_fn result with nngp / ntk fields."""

    def __new__(cls, nngp, ntk):
        return super().__new__(cls, (nngp, ntk))

    nngp = property(lambda self: self[0])
    ntk = property(lambda self: self[1])


def test_cg_solver_reports_its_status(problem):
    k, y = np.asarray(problem["ktt"].ntk), problem["y_train"]
    kst = problem["kst"].ntk
    pf = predict.gradient_descent_mse(k, y, solver="cg", cg_maxiter=2)
    (_, te), code = pf(None, 0.0, 0.0, kst, return_status=True)
    assert int(code) == 4 and np.all(np.isfinite(np.asarray(te)))
    _, code = predict.gp_inference(k, y, diag_reg=0.1, solver="cg")("ntk", kst, return_status=True)
    assert int(code) == 0
    # a predict_fn used under jit first, then outside: nothing traced is cached between the calls
    for solver in ("cg", "cholesky"):
        pf = predict.gp_inference(k, y, diag_reg=0.1, solver=solver)
        inside = jax.jit(lambda a, pf=pf: pf("ntk", a))(kst)
        assert_close(pf("ntk", kst), inside, 1e-9, f"{solver}: jit, then eager")


def test_predict_out_of_domain_values_and_shapes(problem):
    # regression: gradient_descent_mse(learning_rate=-1) was silently accepted
    k, y = problem["ktt"].ntk, problem["y_train"]
    for bad in (-1.0, 0.0):
        with pytest.raises(KjaxError, match=r"gradient_descent_mse: `learning_rate` must be > 0"):
            predict.gradient_descent_mse(k, y, learning_rate=bad)
        with pytest.raises(KjaxError, match=r"gradient_descent_mse_ensemble: `learning_rate` must be > 0"):
            predict.gradient_descent_mse_ensemble(problem["kernel_fn"], problem["x_train"], y, learning_rate=bad)
    with pytest.raises(KjaxError, match=r"gp_inference: `diag_reg` must be >= 0; got -0.1"):
        predict.gp_inference(k, y, diag_reg=-0.1)
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `cg_maxiter` must be >= 1"):
        predict.gradient_descent_mse(k, y, solver="cg", cg_maxiter=0)
    pf = predict.gradient_descent_mse(k, y)
    with pytest.raises(KjaxError, match=r"predict_fn: `t` must be >= 0 \(training time"):
        pf(-1.0)
    with pytest.raises(KjaxError, match=r"predict_fn: `k_test_train` must have shape \[M, N\] with N = 8"):
        pf(1.0, 0.0, problem["fx_test_0"], np.ones((4, 3)))
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `k_train_train` must have at least one"):
        predict.gradient_descent_mse(np.zeros((0, 0)), np.zeros((0, 1)))
    kn = np.array(k)
    kn[0, 0] = np.nan
    with pytest.raises(KjaxError, match=r"gp_inference: `k_train_train` must contain only finite values"):
        predict.gp_inference(kn, y)("nngp", problem["kst"].nngp)


def test_gp_inference_takes_whole_stax_kernels():
    """NT's README feeds kernel_fn(x1, x2) results (Kernel objects) straight to gp_inference."""
    from kjax.ntk import predict, stax

    _, _, kf = stax.serial(stax.Dense(8), stax.Relu(), stax.Dense(1))
    rng = np.random.default_rng(0)
    x, y, xt = rng.normal(size=(6, 3)), rng.normal(size=(6, 1)), rng.normal(size=(2, 3))
    whole = predict.gp_inference(kf(x, None), y, diag_reg=1e-3)("ntk", kf(xt, x), kf(xt, None))
    parts = predict.gp_inference(kf(x, None, ("nngp", "ntk")), y, diag_reg=1e-3)(
        "ntk", kf(xt, x, ("nngp", "ntk")), kf(xt, None, ("nngp", "ntk")))
    np.testing.assert_allclose(whole.mean, parts.mean, rtol=1e-12)
    np.testing.assert_allclose(whole.covariance, parts.covariance, rtol=1e-12, atol=1e-15)


# ------------------------------------------------ issue #14: NT's trace_axes / [N, ...] targets and dtypes


def _psd(n, seed):
    a = np.random.default_rng(seed).normal(size=(n, n))
    return a @ a.T / n + 0.1 * np.eye(n)


def _zip(m, rows, cols):
    """``[prod(rows), prod(cols)]`` -> NT's zipped ``[r1, c1, r2, c2, ...]``."""
    k = m.reshape(*rows, *cols)
    n = len(rows)
    return k.transpose([a for i in range(n) for a in (i, n + i)])


def _flow(m, kst, y, f0, g0, s):
    """Closed form by scipy.linalg.expm (the oracle): f_t(X), f_t(x) for y: [P, R], s = lr t / size."""
    e = scipy.linalg.expm(-m * s)
    d = f0 - y
    return y + e @ d, g0 + kst @ np.linalg.solve(m, (e - np.eye(len(m))) @ d)


# y: [N=3, A=2, B=2]; trace_axes=(1,) traces A, so the kernel zips (N, B): [3, 3, 2, 2]
_ND = {"y": np.random.default_rng(7).normal(size=(3, 2, 2)), "full": _psd(2 * 12, 8)}


@pytest.mark.parametrize("trace_axes", [(0, -1)])  # () : test_nt_api's untraced test; (1,) : the ODE test
def test_gradient_descent_mse_nd_targets_match_expm(trace_axes):
    # NT's layout for any trace_axes: the traced axes are independent outputs, the kernel zips the
    # others; oracle: scipy expm on the flattened [P, P] kernel with y moved to [P, R]
    y = _ND["y"]
    tr = [a % 3 for a in trace_axes]
    nt = [a for a in range(3) if a not in tr]
    p = int(np.prod([y.shape[a] for a in nt]))
    m = _ND["full"][:2 * p, :2 * p]
    ktt, kst = m[:p, :p], m[p:, :p]  # the "test set" has the same non-traced shape
    nt_shape = tuple(y.shape[a] for a in nt)
    y2 = np.moveaxis(y, tr, range(-len(tr), 0)).reshape(p, -1)
    f0 = 0.3 * np.ones_like(y)
    g0 = np.zeros_like(y)
    pf = predict.gradient_descent_mse(_zip(ktt, nt_shape, nt_shape), y, 0.5, trace_axes=trace_axes)
    s = 0.5 * 2.0 / y.size
    ref_tr, ref_te = _flow(ktt, kst, y2, np.full_like(y2, 0.3), np.zeros_like(y2), s)
    unflat = lambda a: np.moveaxis(a.reshape(*nt_shape, *[y.shape[i] for i in tr]), range(-len(tr), 0), tr)
    got_tr, got_te = pf(2.0, f0, g0, _zip(kst, nt_shape, nt_shape))
    np.testing.assert_allclose(got_tr, unflat(ref_tr), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_te, unflat(ref_te), rtol=1e-10, atol=1e-12)
    # t=None is the limit: train outputs y, test outputs g0 + K_xX K^-1 (y - f0)
    inf_tr, inf_te = pf(None, f0, g0, _zip(kst, nt_shape, nt_shape))
    np.testing.assert_allclose(inf_tr, y, rtol=1e-12)
    np.testing.assert_allclose(inf_te, unflat(kst @ np.linalg.solve(ktt, y2 - 0.3)), rtol=1e-9, atol=1e-12)


def test_gradient_descent_ode_nd_targets_match_closed_form():
    # the ODE solver (any loss) with MSE on [N, A, B] targets, trace_axes=(1,), equals the closed form
    y, m = _ND["y"], _ND["full"][:6, :6]
    k = _zip(m, (3, 2), (3, 2))
    mse = lambda fx, yy: 0.5 * jnp.mean((fx - yy) ** 2)
    ode = predict.gradient_descent(mse, k, y, 0.5, trace_axes=(1,))(jnp.array([0.5, 2.0]), 0.3 * np.ones_like(y))
    closed = predict.gradient_descent_mse(k, y, 0.5, trace_axes=(1,))(jnp.array([0.5, 2.0]), 0.3 * np.ones_like(y))
    assert ode.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(ode, closed, rtol=1e-6, atol=1e-7)


def _index_kernel_fn(blocks: int):
    """kernel_fn over index inputs x: [n] into fixed PSD matrices over 5 points x ``blocks`` (a
    non-traced output axis of that size): zipped [n1, n2, blocks, blocks]."""
    grams = {"nngp": _psd(5 * blocks, 11), "ntk": _psd(5 * blocks, 12)}

    def kernel_fn(x1, x2, get):
        x2 = x1 if x2 is None else x2
        i1, i2 = np.asarray(x1, int), np.asarray(x2, int)
        out = {}
        for g in ("nngp", "ntk"):
            a = grams[g].reshape(5, blocks, 5, blocks)[i1][:, :, i2]  # [n1, B, n2, B]
            out[g] = jnp.asarray(a.transpose(0, 2, 1, 3))
        if isinstance(get, str):
            return out[get]
        return predict._FlatKernel(**{g: out[g] for g in get})  # any namedtuple with the fields

    def flat_fn(x1, x2, get):
        """The same kernels over (point, block) indices ``p blocks + b``: ``[n1, n2]``."""
        x2 = x1 if x2 is None else x2
        i1, i2 = np.asarray(x1, int), np.asarray(x2, int)
        out = {g: jnp.asarray(grams[g][i1][:, i2]) for g in ("nngp", "ntk")}
        return out[get] if isinstance(get, str) else predict._FlatKernel(**{g: out[g] for g in get})

    return kernel_fn, flat_fn


def test_ensemble_nd_targets_match_expm_and_the_flattened_problem():
    # y: [N=3, B=2, O=2], trace_axes=(-1,): kernels [n, n, B, B]; the mean is NT's
    # K_xX K^-1 (I - e^{-K t / size}) Y (oracle: scipy expm), the whole output (means and zipped
    # covariances, at t and t=None) the reshaped output of the same problem flattened to [N B, O]
    kernel_fn, flat_fn = _index_kernel_fn(2)
    x, xt = np.arange(3.0), np.array([3.0, 4.0])
    y = np.random.default_rng(13).normal(size=(3, 2, 2))
    ts = np.array([0.5, 3.0])
    ens = predict.gradient_descent_mse_ensemble(kernel_fn, x, y)
    # the flattened problem: 6 "points" (point, block) with index p B + b, kernels [n, n]
    ref = predict.gradient_descent_mse_ensemble(flat_fn, np.arange(6.0), y.reshape(6, 2))
    k = np.asarray(flat_fn(np.arange(6.0), None, "ntk"))
    kst = np.asarray(flat_fn(np.arange(6.0, 10.0), np.arange(6.0), "ntk"))
    mean = ens(ts, xt, "ntk")
    assert mean.shape == (2, 2, 2, 2)
    for i, t in enumerate(ts):
        e = scipy.linalg.expm(-k * t / y.size)
        want = kst @ np.linalg.solve(k, (np.eye(6) - e) @ y.reshape(6, 2))
        np.testing.assert_allclose(mean[i], want.reshape(2, 2, 2), rtol=1e-9, atol=1e-12)
    for t, xx in ((None, None), (ts, xt)):  # (the means and NT's zipped covariances)
        lead = () if t is None else (2,)
        got = ens(t, xx, compute_cov=True)
        want = ref(t, None if xx is None else np.arange(6.0, 10.0), compute_cov=True)
        m = 3 if xx is None else 2
        for g in ("nngp", "ntk"):
            gg, ww = getattr(got, g), getattr(want, g)
            np.testing.assert_allclose(gg.mean, ww.mean.reshape(*lead, m, 2, 2), rtol=1e-12, atol=1e-14)
            cov = np.moveaxis(np.asarray(ww.covariance).reshape(*lead, m, 2, m, 2), -3, -2)  # [M, M, B, B]
            np.testing.assert_allclose(gg.covariance, cov, rtol=1e-12, atol=1e-14)


def test_predict_outputs_carry_the_kernels_dtype_at_every_t():
    # NT's rule (issue #14): a float32 kernel gives float32 and a float64 kernel float64, whatever
    # the targets' dtype, at t=None, t=inf and finite t alike
    k, kst = _psd(3, 1), _psd(5, 2)[:2, :3]
    y = np.random.default_rng(3).normal(size=(3, 2))
    # (float64 kernel, float32 targets -> float64: test_nt_api's ensemble dtype test)
    for kd, yd in ((np.float32, np.float64),):
        pf = predict.gradient_descent_mse(k.astype(kd), y.astype(yd))
        gp = predict.gp_inference(k.astype(kd), y.astype(yd))
        for t in (None, np.inf, 1.0):
            tr, te = pf(t, 0.0, np.zeros((2, 2), yd), kst.astype(kd))
            assert tr.dtype == kd and te.dtype == kd, (kd, t)
        assert gp("nngp", kst.astype(kd)).dtype == kd and gp("nngp").dtype == kd


def test_nd_trace_axes_errors():
    y = _ND["y"]
    k = _zip(_ND["full"][:6, :6], (3, 2), (3, 2))
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `trace_axes` must be an int or a tuple of "
                                        r"ints in \[-3, 3\)"):
        predict.gradient_descent_mse(k, y, trace_axes=(3,))
    # a kernel that fits the default trace_axes=(-1,) but not the given ones: the error names trace_axes
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `trace_axes` must match `k_train_train` of "
                                        r"shape \(3, 3, 2, 2\) \(the kernel zips the non-traced axes of `y_train`, "
                                        r"\(2, 2, 2, 2\) here\)"):
        predict.gradient_descent_mse(k, y, trace_axes=(0,))
    with pytest.raises(KjaxError, match=r"gradient_descent_mse: `k_train_train` must have shape \(3, 3, 2, 2\)"):
        predict.gradient_descent_mse(k[:2], y, trace_axes=(1,))
    pf = predict.gradient_descent_mse(k, y, trace_axes=(1,))
    with pytest.raises(KjaxError, match=r"predict_fn: `k_test_train` must have shape"):
        pf(1.0, 0.0, 0.0, np.ones((2, 3)))
    kernel_fn, _ = _index_kernel_fn(2)
    with pytest.raises(KjaxError, match=r"gradient_descent_mse_ensemble: `y_train` must give kernels zipping"):
        predict.gradient_descent_mse_ensemble(kernel_fn, np.arange(3.0), np.ones((3, 2)))(1.0, None, "ntk")
    with pytest.raises(KjaxError, match=r"gradient_descent_mse_ensemble: `y_train` must have shape \[N, O\]"):
        predict.gradient_descent_mse_ensemble(kernel_fn, np.arange(3.0), np.ones(3))

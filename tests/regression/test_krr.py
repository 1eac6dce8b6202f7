"""Exact KRR against scikit-learn's KernelRidge; spectral filters against their closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.kernel_ridge import KernelRidge

from kjax import regression as R
from tests.conformance import assert_close, check_op
from tests.regression.conftest import KERN, LS, np_rbf


@pytest.mark.parametrize("ridge", [1e-3, 0.5])
def test_krr_equals_sklearn(data, ridge):
    x, y, xt = data
    sk = KernelRidge(alpha=ridge, kernel="rbf", gamma=1 / (2 * LS**2)).fit(x, y)
    st = R.krr_fit(KERN, x, y, ridge=ridge)
    assert int(st.status) == 0
    assert_close(R.krr_predict(st, xt), sk.predict(xt), 1e-10, "multi-output vs sklearn")
    st1 = R.krr_fit(KERN, x, y[:, 0], ridge=ridge)
    p1 = R.krr_predict(st1, xt)
    assert p1.shape == (30,)
    assert_close(p1, sk.predict(xt)[:, 0], 1e-10, "single output vs sklearn")


def test_ridge_path_and_scaling(data):
    x, y, xt = data
    n = x.shape[0]
    ridges = np.array([1e-4, 1e-2, 1.0])
    path = R.krr_fit(KERN, x, y, ridge=jnp.asarray(ridges))
    pp = R.krr_predict(path, xt)
    assert pp.shape == (3, 30, 2)
    for i, r in enumerate(ridges):
        sk = KernelRidge(alpha=r, kernel="rbf", gamma=1 / (2 * LS**2)).fit(x, y)
        assert_close(pp[i], sk.predict(xt), 1e-8, f"path ridge={r}")
        # Falkon scaling: ridge lambda means alpha = n * lambda
        stn = R.krr_fit(KERN, x, y, ridge=r / n, ridge_scaling="n")
        assert_close(R.krr_predict(stn, xt), sk.predict(xt), 1e-9, "ridge_scaling='n'")


def test_krr_conformance(data, mesh):
    x, y, xt = data
    x, y, xt = jnp.asarray(x[:40]), jnp.asarray(y[:40, 0]), jnp.asarray(xt[:8])

    @jax.jit  # whole-program compiles keep the conformance check fast
    def f(x, y):
        return R.krr_predict(R.krr_fit(KERN, x, y, ridge=0.1), xt)

    check_op(f, x, y, grad_argnums=(1,), vmap_argnums=(1,), mesh=mesh, rtol=1e-8)
    # the mesh argument splits the Gram assembly and the matvec: same result
    st = R.krr_fit(KERN, x, y, ridge=0.1, mesh=mesh, block_size=8)
    assert_close(R.krr_predict(st, xt, mesh=mesh), f(x, y), 1e-10, "mesh")


def _iterate(filt, k, y, alpha, order=2):
    """Independent oracles: run the iterations each filter stands for."""
    n = len(y)
    if filt == "landweber":
        s_max = np.linalg.eigvalsh(k)[-1]
        eta, steps = 1.0 / s_max, int(np.ceil(s_max / alpha))
        c = np.zeros_like(y)
        for _ in range(steps):
            c = c + eta * (y - k @ c)
        return c
    if filt == "iterated_tikhonov":
        c = np.zeros_like(y)
        for _ in range(order):
            c = np.linalg.solve(k + alpha * np.eye(n), y + alpha * c)
        return c
    s, u = np.linalg.eigh(k)
    s = np.maximum(s, 0)
    if filt == "tikhonov":
        return np.linalg.solve(k + alpha * np.eye(n), y)
    if filt == "gradient_flow":  # c(t) = K^+ (I - exp(-K t)) y, via scipy's expm
        import scipy.linalg

        e = scipy.linalg.expm(-k / alpha)
        return np.linalg.lstsq(k, (np.eye(n) - e) @ y, rcond=1e-13)[0]
    if filt == "cutoff":
        keep = s >= alpha
        return u[:, keep] @ ((u[:, keep].T @ y) / s[keep])
    raise AssertionError(filt)


@pytest.mark.parametrize("filt", R._krr.FILTERS)
def test_spectral_filters_closed_form(data, filt):
    x, y, _ = data
    x, y = x[:60], y[:60, 0]
    k = np_rbf(x, x)
    for alpha in (0.5, 0.05):
        st = R.spectral_fit(KERN, x, y, filter=filt, ridge=alpha, order=3)
        want = _iterate(filt, k, y, alpha, order=3)
        # compare fitted values (coefficients along tiny eigenvalues are ill-determined)
        assert_close(k @ np.asarray(st.coef[:, 0]), k @ want, 1e-7, f"{filt} alpha={alpha}")


def test_spectral_path_and_tikhonov_is_krr(data):
    x, y, xt = data
    regs = jnp.asarray([1e-3, 1e-1])
    st = R.spectral_fit(KERN, x, y, filter="tikhonov", ridge=regs)
    kr = R.krr_fit(KERN, x, y, ridge=regs)
    assert_close(R.krr_predict(st, xt), R.krr_predict(kr, xt), 1e-9, "tikhonov = KRR path")
    gf = R.krr_predict(R.spectral_fit(KERN, x, y, filter="gradient_flow", ridge=regs), xt)
    assert gf.shape == (2, 30, 2)
    # `reg`, the name of earlier releases, is a deprecated alias
    with pytest.warns(DeprecationWarning, match=r"spectral_fit: `reg` is deprecated"):
        old = R.spectral_fit(KERN, x, y, filter="gradient_flow", reg=regs)
    np.testing.assert_array_equal(R.krr_predict(old, xt), gf)
    with pytest.raises(ValueError, match=r"spectral_fit: `reg` must not be given together with `ridge`"):
        R.spectral_fit(KERN, x, y, ridge=regs, reg=regs)


def test_krr_errors(data):
    x, y, _ = data
    with pytest.raises(ValueError, match=r"krr_fit: `y` must have 120 rows"):
        R.krr_fit(KERN, x, y[:10], ridge=1.0)
    with pytest.raises(ValueError, match=r"krr_fit: `ridge` must be > 0; got 0.0"):
        R.krr_fit(KERN, x, y, ridge=0.0)
    with pytest.raises(ValueError, match=r"krr_fit: `ridge` must be > 0"):
        R.krr_fit(KERN, x, y, ridge=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"krr_fit: `ridge_scaling` must be one of"):
        R.krr_fit(KERN, x, y, ridge=1.0, ridge_scaling="falkon")
    xn = x.copy()
    xn[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"krr_fit: `x` must contain only finite values.*got 1 non-finite"):
        R.krr_fit(KERN, xn, y, ridge=1.0)
    yn = y.copy()
    yn[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"krr_fit: `y` must contain only finite values"):
        R.krr_fit(KERN, x, yn, ridge=1.0)
    with pytest.raises(TypeError, match=r"krr_fit: `kernel` must be a callable"):
        R.krr_fit("rbf", x, y, ridge=1.0)
    with pytest.raises(ValueError, match=r"spectral_fit: `filter` must be one of"):
        R.spectral_fit(KERN, x, y, filter="ridge", ridge=1.0)
    with pytest.raises(ValueError, match=r"krr_fit: `jitter` must be > 0; got -1.0"):
        R.krr_fit(KERN, x, y, ridge=1.0, jitter=-1.0)
    with pytest.raises(TypeError, match=r"krr_fit: `block_size` must be a positive int, a pair"):
        R.krr_fit(KERN, x, y, ridge=1.0, block_size=2.5)
    with pytest.raises(ValueError, match=r"krr_predict: `x_new` must match `x` in the feature dimension"):
        R.krr_predict(R.krr_fit(KERN, x, y, ridge=1.0), x[:, :2])


def test_krr_nan_under_jit_is_reported(data):
    x, y, _ = data
    xn = jnp.asarray(x).at[0, 0].set(jnp.nan)
    st = jax.jit(lambda a, b: R.krr_fit(KERN, a, b, ridge=1.0))(xn, y)
    assert int(st.status) == 1
    assert R.status_name(st.status) == "non-finite input"


def test_non_psd_gram_gets_jitter_and_status():
    # a non-PSD "kernel": a negatively scaled RBF; with a small ridge the Cholesky fails
    x = np.linspace(0, 1, 30)[:, None]

    def bad(a, b=None):
        return 0.5 * KERN(a, b) - 0.6 * KERN(a, b) ** 3

    st = R.krr_fit(bad, x, np.sin(x[:, 0]), ridge=1e-10)
    assert int(st.status) in (2, 3)
    assert R.status_name(st.status).startswith(("jitter", "factorisation"))
    if int(st.status) == 2:
        assert np.all(np.isfinite(np.asarray(st.coef)))
    stp = R.krr_fit(bad, x, np.sin(x[:, 0]), ridge=jnp.array([1e-10, 1.0]))
    assert int(stp.status) == 2 and np.all(np.isfinite(np.asarray(stp.coef)))


def test_ridge_scaling_default_is_none_and_sklearn_is_its_alias(data):
    x, y, xt = data
    n = x.shape[0]
    base = R.krr_predict(R.krr_fit(KERN, x, y, ridge=0.3), xt)
    for kw in ({"ridge_scaling": "none"}, {"ridge_scaling": "sklearn"}):
        np.testing.assert_array_equal(R.krr_predict(R.krr_fit(KERN, x, y, ridge=0.3, **kw), xt), base)
    assert_close(R.krr_predict(R.krr_fit(KERN, x, y, ridge=0.3 / n, ridge_scaling="n"), xt), base, 1e-9)
    sp = R.spectral_fit(KERN, x, y, ridge=0.3)
    assert_close(R.krr_predict(sp, xt), base, 1e-9, "spectral tikhonov, default scaling")


def test_predict_with_nan_x_new_raises_or_propagates_per_row(data):
    # regression: krr_predict, falkon_predict and eigenpro_predict returned NaN silently for NaN in a
    # concrete x_new
    x, y, xt = data
    krr = R.krr_fit(KERN, x, y, ridge=0.1)
    # the predictors only read the points, the coefficients, the kernel and the layout: build the
    # Falkon and EigenPro states from the KRR fit (no fitting, no compiles)
    nan = jnp.full((1,), jnp.nan)
    zero = jnp.asarray(0)
    states = {
        "krr": krr,
        "falkon": R.FalkonState(krr.x, krr.coef, nan, nan, zero, nan[0], zero, krr.kernel, krr.layout),
        "eigenpro": R.EigenProState(krr.x, krr.coef, nan, 1, nan[0], zero, nan[0], zero, krr.kernel,
                                    krr.layout),
    }
    bad = xt.copy()
    bad[2, 0] = np.nan
    for name, st in states.items():
        predict_fn = getattr(R, f"{name}_predict")
        with pytest.raises(ValueError, match=rf"{name}_predict: `x_new` must contain only finite values.*got 1"):
            predict_fn(st, bad)
        # under jit values are unknown at trace time: NaN stays in its own row (documented)
        out = np.asarray(jax.jit(predict_fn)(st, bad))
        assert np.all(np.isnan(out[2])) and np.all(np.isfinite(np.delete(out, 2, axis=0))), name


def test_empty_inputs_name_the_function_and_argument(data):
    # regression: n = 0 gave ZeroDivisionError or a `block_size` message from kjax.kernels.gram
    import functools

    x, y, xt = data
    key = jax.random.key(0)
    calls = {
        "krr_fit": lambda: R.krr_fit(KERN, x[:0], y[:0], ridge=1.0),
        "spectral_fit": lambda: R.spectral_fit(KERN, x[:0], y[:0], ridge=1.0),
        "falkon_fit": lambda: R.falkon_fit(key, KERN, x[:0], y[:0], ridge=1.0, num_centers=1),
        "eigenpro_fit": lambda: R.eigenpro_fit(key, KERN, x[:0], y[:0]),
        "eigenpro3_fit": lambda: R.eigenpro3_fit(key, KERN, x, y, centers=x[:0]),
        "gp_posterior": lambda: R.gp_posterior(KERN, x[:0], y[:0], xt, ridge=0.1),
        "gp_log_marginal_likelihood": lambda: R.gp_log_marginal_likelihood(KERN, x[:0], y[:0], ridge=0.1),
        "ridge_leverage_scores": lambda: R.ridge_leverage_scores(KERN, x[:0], ridge=0.1),
        "effective_dimension": lambda: R.effective_dimension(KERN, x[:0], ridge=0.1),
        "leverage_dictionary": lambda: R.leverage_dictionary(key, KERN, x[:0], ridge=0.1),
        "nystrom_centers": lambda: R.nystrom_centers(key, KERN, x[:0], 1),
        "rpcholesky": lambda: R.rpcholesky(key, KERN, x[:0], 1),
    }
    for name, call in calls.items():
        arg = "centers" if name == "eigenpro3_fit" else "x"
        with pytest.raises(ValueError, match=rf"kjax.regression.{name}: `{arg}` must have at least one row"):
            call()
    with pytest.raises(ValueError, match=r"krr_fit: `y` must have at least one output column"):
        R.krr_fit(KERN, x, y[:, :0], ridge=1.0)
    # no query points: an empty prediction of the right shape, no kernel evaluation
    st = R.krr_fit(KERN, x, y, ridge=1.0)
    assert R.krr_predict(st, xt[:0]).shape == (0, 2)
    path = R.krr_fit(KERN, x, y[:, 0], ridge=jnp.array([0.1, 1.0]))
    assert R.krr_predict(path, xt[:0]).shape == (2, 0)
    post = R.gp_posterior(functools.partial(KERN), x, y, xt[:0], ridge=0.1)
    assert post.mean.shape == (0, 2) and post.variance.shape == (0,)


def test_mesh_axis_is_taken_and_errors_name_the_function(data):
    # regression: a 2-D mesh asked for `mesh_axis` that krr_fit did not take, naming kjax.kernels.gram
    x, y, xt = data
    x, y, xt = x[:40], y[:40], xt[:8]
    mesh2 = jax.make_mesh((2, 4), ("a", "b"))
    key = jax.random.key(0)
    st = R.krr_fit(KERN, x, y, ridge=0.1)
    calls = {
        "krr_fit": lambda **m: R.krr_fit(KERN, x, y, ridge=0.1, **m),
        "spectral_fit": lambda **m: R.spectral_fit(KERN, x, y, ridge=0.1, **m),
        "krr_predict": lambda **m: R.krr_predict(st, xt, **m),
        "falkon_fit": lambda **m: R.falkon_fit(key, KERN, x, y, ridge=0.1, num_centers=8, **m),
        "eigenpro_fit": lambda **m: R.eigenpro_fit(key, KERN, x, y, num_eigen=4, subsample_size=20, **m),
        "gp_posterior": lambda **m: R.gp_posterior(KERN, x, y, xt, ridge=0.1, **m),
        "gp_log_marginal_likelihood": lambda **m: R.gp_log_marginal_likelihood(KERN, x, y, ridge=0.1, **m),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"kjax.regression.{name}: `mesh_axis` must name one of "
                                             r"\('a', 'b'\) for a multi-axis mesh"):
            call(mesh=mesh2)
        with pytest.raises(ValueError, match=rf"kjax.regression.{name}: `mesh_axis` must be one of the "
                                             r"mesh's axis names"):
            call(mesh=mesh2, mesh_axis="c")
        with pytest.raises(ValueError, match=rf"kjax.regression.{name}: `mesh_axis` must be None when no "
                                             r"`mesh` is given"):
            call(mesh_axis="a")
    # with the axis named, the 2-D mesh splits the work and gives the same result
    got = R.krr_predict(R.krr_fit(KERN, x, y, ridge=0.1, mesh=mesh2, mesh_axis="b", block_size=4), xt,
                        mesh=mesh2, mesh_axis="a")
    assert_close(got, R.krr_predict(st, xt), 1e-10, "2-D mesh with mesh_axis")


def test_new_hyperparameters_reuse_the_compiled_solver_and_differentiate():
    # a partial of a kjax kernel becomes a pytree kernel: a lengthscale grid compiles once
    import functools

    from kjax import kernels
    from kjax.regression import _krr

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=30)
    R.krr_fit(functools.partial(kernels.rbf, lengthscale=1.0), x, y, ridge=1e-2)
    size = _krr._krr_core.jitted._cache_size()
    for ls in (0.5, 2.0, 3.0):
        st = R.krr_fit(functools.partial(kernels.rbf, lengthscale=ls), x, y, ridge=1e-2)
    assert _krr._krr_core.jitted._cache_size() == size
    want = KernelRidge(alpha=1e-2, kernel="rbf", gamma=1 / (2 * 3.0**2)).fit(x, y).predict(x[:5])
    assert_close(R.krr_predict(st, x[:5]), want, 1e-9)

    def loss(ls):
        st = R.krr_fit(kernels.Kernel(kernels.rbf, lengthscale=ls), x, y, ridge=1e-2)
        return jnp.sum(R.krr_predict(st, x[:5]) ** 2)

    g, eps = jax.grad(loss)(1.5), 1e-6
    assert_close(g, (loss(1.5 + eps) - loss(1.5 - eps)) / (2 * eps), 1e-5)

"""kjax.ntk.stax's elementwise layers against neural-tangents' stored kernels and closed forms.

Oracles: (1) neural-tangents 0.6.5's kernels of every layer in small float64 networks
(benchmarks/peers/nt_elementwise_reference.py -> tests/ntk/data/nt_elementwise_reference.npz),
compared to 1e-9 relative; (2) where NT returns NaN (the rectified monomials at identical inputs)
or a wrong ``cov1`` (``Sign`` with spatial axes), the closed form / NT's own ``nngp`` of the same
pair; (3) ``ElementwiseNumerical`` against the closed form of the same nonlinearity; (4) Cho and Saul's
closed forms and a central finite difference for the arc-cosine kernels and their derivative.

Cost: one compile per network (fc and pool for every layer, flat for a few); kept tiny.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src.errors import KjaxError
from kjax.ntk import stax
from tests.conformance import rel_err

HERE = os.path.dirname(__file__)
REF = np.load(os.path.join(HERE, "data", "nt_elementwise_reference.npz"))
_spec = importlib.util.spec_from_file_location(
    "nt_elementwise_reference",
    os.path.join(HERE, "..", "..", "benchmarks", "peers", "nt_elementwise_reference.py"))
NTREF = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(NTREF)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Elementwise's autodiff warning, tested below
    CONFIGS = NTREF.configs(stax)
# the Flatten (spatial-diagonal) network for one layer of each kind of closed form
FLAT = ("Sign", "Polynomial_3", "Elementwise_autodiff", "Numerical_erf")
# default-argument twins of a layer whose spatial (pool) network is checked with other arguments
POOL_SKIP = ("Exp", "Gaussian", "Hermite0", "Monomial0", "Abs_stab", "Elementwise_d", "Numerical_erf")
RTOL = 1e-9


def _check_against_nt(name: str, net: str, k) -> None:
    for field in ("nngp", "ntk", "cov1", "cov2"):
        got, want = np.asarray(getattr(k, field)), REF[f"{name}/{net}/{field}"]
        assert got.shape == want.shape, (field, got.shape, want.shape)
        if name == "Sign" and net == "pool" and field in ("cov1", "cov2"):
            # NT sets every non-zero entry of Sign's cov1 to 1, also the covariances of two
            # different positions; kjax's cov1 is the diagonal of its nngp. Oracle: NT's own nngp
            # of the identical pair x1[0] = x2[0].
            np.testing.assert_allclose(got[0], REF[f"{name}/{net}/nngp"][0, 0], rtol=RTOL, atol=1e-12)
            continue
        finite = np.isfinite(want)
        if name.startswith("RectifiedMonomial"):
            # NT's repeated autodiff divides by sin(theta) = 0 at identical inputs (NaN); kjax's is
            # finite there, and checked against the closed form in test_kernels_match_neural_tangents
            assert np.all(np.isfinite(got)), field
        else:
            np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=field)
            np.testing.assert_array_equal(got[~finite], want[~finite], err_msg=field)  # same infs
        err = rel_err(got[finite], want[finite]) if finite.any() else 0.0
        assert err <= RTOL, f"{name}/{net}/{field}: relative error {err:.2e}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_kernels_match_neural_tangents(name):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer = CONFIGS[name]()
        nets = NTREF.networks(stax, layer)
        for net in ("fc", "pool", "flat"):
            if (net == "flat" and name not in FLAT) or (net == "pool" and name in POOL_SKIP):
                continue
            k = nets[net][2](REF[f"x/{net}/x1"], REF[f"x/{net}/x2"])
            _check_against_nt(name, net, k)
            if net == "fc" and name.startswith("RectifiedMonomial"):
                nngp, ntk = _rectified_monomial_identical_pair(int(name[-1]))
                np.testing.assert_allclose([k.nngp[0, 0], k.ntk[0, 0], k.cov1[0], k.cov2[0]],
                                           [nngp, ntk, nngp, nngp], rtol=1e-12)
    if name.startswith("Hermite"):  # NT's warning: the layer assumes unit-variance inputs
        assert any("unit variance" in str(w.message) for w in caught)
    if f"{name}/apply" in REF:
        np.testing.assert_allclose(layer[1]((), jnp.asarray(REF["apply_x"])), REF[f"{name}/apply"],
                                   rtol=1e-13, atol=1e-13)
        assert layer[0](None, (2, 3)) == ((2, 3), ())  # no parameters, shape kept


def _double_factorial(n: int) -> int:
    return int(np.prod(np.arange(n, 0, -2))) if n > 0 else 1


def _rectified_monomial_identical_pair(degree: int) -> tuple[float, float]:
    """fc network at x2[0] = x1[0]: E[(z_+)^n (z_+)^n] = (2n-1)!! q^n / 2 (NT gives NaN here)."""
    q = 1.3**2 * np.sum(REF["x/fc/x1"][0] ** 2) / 4 + 0.2**2  # the first Dense's variance
    k_layer = _double_factorial(2 * degree - 1) * q**degree / 2
    t_layer = 0.0 if degree == 0 else q * degree**2 * _double_factorial(2 * degree - 3) * q ** (degree - 1) / 2
    nngp = 0.9**2 * k_layer + 0.1**2
    return nngp, nngp + 0.9**2 * t_layer


def test_arccos_kernel_derivative_is_exact_at_identical_inputs():
    """The custom JVP of J_n is n^2 J_{n-1}: finite at rho = 1 (theta = 0), where it is
    n^2 pi (2n-3)!!, and equal to a central finite difference inside (-1, 1)."""
    from kjax.ntk.stax._elementwise import _arccos_kernel

    rho, eps = np.array([1.0, 0.3, -0.6]), 1e-6
    for n in (1, 3):
        j_n = jax.jit(_arccos_kernel(n)[0])
        d = jax.jit(jax.vmap(jax.grad(_arccos_kernel(n)[0])))(rho)
        fd = (j_n(rho[1:] + eps) - j_n(rho[1:] - eps)) / (2 * eps)
        np.testing.assert_allclose(d[0], n**2 * np.pi * _double_factorial(2 * n - 3), rtol=1e-14)
        np.testing.assert_allclose(d[1:], fd, rtol=1e-8)
        np.testing.assert_allclose(j_n(rho[:1]), np.pi * _double_factorial(2 * n - 1), rtol=1e-14)
    # Cho & Saul's closed forms: J_1 = sin t + (pi - t) cos t, J_2 = 3 sin t cos t + (pi - t)(1 + 2 cos^2 t)
    t = np.linspace(0.1, 3.0, 7)
    j1, j2 = jax.jit(lambda r: (_arccos_kernel(1)[0](r), _arccos_kernel(2)[0](r)))(np.cos(t))
    np.testing.assert_allclose(j1, np.sin(t) + (np.pi - t) * np.cos(t), rtol=1e-12)
    np.testing.assert_allclose(j2, 3 * np.sin(t) * np.cos(t) + (np.pi - t) * (1 + 2 * np.cos(t) ** 2),
                               rtol=1e-12, atol=1e-14)  # J_n ~ (pi - t)^(2n+1) near t = pi: absolute there


@pytest.mark.parametrize(("fn", "closed", "tol"), [(jnp.sin, stax.Sin, 1e-10)])
def test_numerical_quadrature_converges_to_the_closed_form(fn, closed, tol):
    """Gauss-Hermite with 40 nodes against the closed form (docs/guide/stax.md has GELU and erf)."""
    x1, x2 = REF["x/fc/x1"], REF["x/fc/x2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, _, k_num = stax.serial(stax.Dense(3, W_std=1.1), stax.ElementwiseNumerical(fn, 40), stax.Dense(1))
    _, _, k_ref = stax.serial(stax.Dense(3, W_std=1.1), closed(), stax.Dense(1))
    a, b = k_num(x1, x2), k_ref(x1, x2)
    for field in ("nngp", "ntk", "cov1", "cov2"):
        assert rel_err(getattr(a, field), getattr(b, field)) < tol, field


def test_numerical_quadrature_error_shrinks_with_degree():
    """Non-smooth ReLU converges slowly but does converge (a few points are far off)."""
    x1 = REF["x/fc/x1"]
    _, _, k_ref = stax.serial(stax.Dense(3), stax.Relu())
    ref = k_ref(x1, None, "nngp")
    errs = []
    for deg in (3, 30):
        _, _, k = stax.serial(stax.Dense(3), stax.ElementwiseNumerical(jax.nn.relu, deg, df=jnp.sign))
        errs.append(rel_err(k(x1, None, "nngp"), ref))
    assert errs[1] < errs[0] / 5 and errs[1] < 1e-2, errs


def test_warns_when_the_ntk_derivative_comes_from_autodiff():
    with pytest.warns(UserWarning, match="autodiff"):
        stax.Elementwise(nngp_fn=NTREF._erf_nngp)
    with pytest.warns(UserWarning, match="autodiff"):
        stax.ElementwiseNumerical(jnp.sin, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stax.Elementwise(nngp_fn=NTREF._erf_nngp, d_nngp_fn=NTREF._erf_d_nngp)  # no warning
        stax.ElementwiseNumerical(jnp.sin, 3, df=jnp.cos)


# ------------------------------------------------------------------------------------------
# bad input: each documented error names the layer and the argument


def _raises(match, f, *a, cls=(KjaxError, TypeError), **kw):
    with pytest.raises(cls, match=match):
        f(*a, **kw)


@pytest.mark.parametrize(("layer", "arg", "value"), [
    ("Monomial", "degree", 6), ("Monomial", "degree", -1), ("Hermite", "degree", -1),
    ("RectifiedMonomial", "degree", -2),
])
def test_degree_out_of_range(layer, arg, value):
    # a kjax error that is also NT's NotImplementedError
    _raises(rf"kjax.ntk.stax.{layer}: `{arg}` must", getattr(stax, layer), value, cls=NotImplementedError)
    _raises(rf"kjax.ntk.stax.{layer}: `{arg}` must", getattr(stax, layer), value, cls=KjaxError)


@pytest.mark.parametrize("layer", ["Monomial", "Hermite", "RectifiedMonomial"])
def test_degree_not_an_int(layer):
    _raises(rf"kjax.ntk.stax.{layer}: `degree` must be a non-negative Python int", getattr(stax, layer), 2.0)


def test_elementwise_numerical_arguments():
    f = "kjax.ntk.stax.ElementwiseNumerical"
    _raises(rf"{f}: `deg` must be >= 1", stax.ElementwiseNumerical, jnp.sin, 0)
    _raises(rf"{f}: `deg` must be a Python int", stax.ElementwiseNumerical, jnp.sin, 2.5)
    _raises(rf"{f}: `fn` must be a callable", stax.ElementwiseNumerical, None, 5)
    _raises(rf"{f}: `df` must be a callable or None", stax.ElementwiseNumerical, jnp.sin, 5, df=1.0)


def test_elementwise_arguments_and_missing_functions():
    f = "kjax.ntk.stax.Elementwise"
    _raises(rf"{f}: `fn` must be given, or `nngp_fn`", stax.Elementwise)
    _raises(rf"{f}: `nngp_fn` must be a callable", stax.Elementwise, jnp.sin, 3.0)
    _, apply_fn, kernel_fn = stax.serial(stax.Dense(2), stax.Elementwise(fn=jnp.sin))
    _raises(rf"{f} kernel_fn: `nngp_fn` must be given", kernel_fn, REF["x/fc/x1"], cls=NotImplementedError)
    with pytest.warns(UserWarning):
        _, apply_fn, _ = stax.Elementwise(nngp_fn=NTREF._erf_nngp)
    _raises(rf"{f}: apply_fn needs .*`fn`", apply_fn, (), jnp.ones(2), cls=NotImplementedError)


def test_exp_normalized_arguments_and_no_apply_fn():
    f = "kjax.ntk.stax.ExpNormalized"
    _raises(rf"{f}: `gamma` must be >= 0", stax.ExpNormalized, -1.0)
    _raises(rf"{f}: `gamma` must be finite", stax.ExpNormalized, float("nan"))
    _raises(rf"{f}: `shift` must be finite", stax.ExpNormalized, 1.0, float("inf"))
    _raises(rf"{f}: `do_clip` must be a bool", stax.ExpNormalized, 1.0, -1.0, "yes")
    _, apply_fn, _ = stax.ExpNormalized()
    _raises(rf"{f}: apply_fn needs", apply_fn, (), jnp.ones(2), cls=NotImplementedError)
    stax.ExpNormalized(2.0, True)  # NT's own test passes do_clip as `shift`: a bool is a number


@pytest.mark.parametrize(("layer", "kwargs", "arg", "what"), [
    ("Sin", {"a": float("nan")}, "a", "be finite"), ("Cos", {"c": float("inf")}, "c", "be finite"),
    ("Exp", {"b": float("nan")}, "b", "be finite"), ("Gaussian", {"a": float("nan")}, "a", "be finite"),
    ("Rbf", {"gamma": -1.0}, "gamma", "be >= 0"), ("Erf", {"b": float("nan")}, "b", "be finite"),
    ("Sin", {"b": np.ones(2)}, "b", "be a real scalar"), ("Exp", {"a": "x"}, "a", "be a real scalar"),
    ("Polynomial", {"coef": [[1.0, 2.0]]}, "coef", "be a 1-D sequence"),
    ("Polynomial", {"coef": ["a"]}, "coef", "be a 1-D sequence"),
    ("Polynomial", {"coef": [1.0, float("nan")]}, "coef", "be finite"),
])
def test_bad_hyperparameters(layer, kwargs, arg, what):
    _raises(rf"kjax.ntk.stax.{layer}: `{arg}` must {what}", getattr(stax, layer), **kwargs)


@pytest.mark.parametrize("layer", [stax.Sin, stax.Gabor, stax.Sign, stax.Sigmoid_like])
def test_input_must_be_gaussian(layer):
    name = layer.__name__
    _, _, kernel_fn = stax.serial(layer())
    _raises(rf"kjax.ntk.stax.{name}( kernel_fn)?: the input of a nonlinearity must be Gaussian",
            kernel_fn, REF["x/fc/x1"])

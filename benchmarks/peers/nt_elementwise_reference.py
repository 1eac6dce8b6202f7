"""Store neural-tangents' kernels for every elementwise layer of ``stax`` (the oracle of
tests/ntk/test_stax_elementwise.py).

Runs IN the neural-tangents peer environment (jax 0.4.23; see setup_nt.sh) and writes
tests/ntk/data/nt_elementwise_reference.npz, which kjax's tests read without NT:

    NT_PY=${NT_PY:-benchmarks/.peers/nt/bin/python}
    bash benchmarks/peers/setup_nt.sh   # once (honours NT_VENV)
    $NT_PY benchmarks/peers/nt_elementwise_reference.py

Each layer ``c`` of :func:`configs` sits in three small float64 networks, built by
:func:`networks` with the same code in both libraries:

* ``fc``: ``Dense -> layer -> Dense`` on ``[n, 4]`` inputs;
* ``pool``: ``Conv1D(SAME) -> layer -> GlobalAvgPool -> Dense`` on ``[n, 5, 2]`` (the full spatial
  covariance reaches the layer);
* ``flat``: ``Conv1D(SAME) -> layer -> Flatten -> Dense`` on ``[n, 5, 2]`` (only its diagonal).

``x2[0]`` is ``x1[0]``, so ``nngp[0, 0]`` is a pair of identical inputs (the ``theta = 0`` edge of
the arc-cosine kernels) and equals ``cov1[0]``. Stored: ``<c>/<net>/{nngp,ntk,cov1,cov2}`` for
``kernel_fn(x1, x2)``, ``<c>/apply`` (the layer's ``apply_fn`` on ``apply_x``), and the inputs
``x/<net>/{x1,x2}``, ``apply_x`` (NumPy draws: jax.random streams differ across versions).
"""

from __future__ import annotations

import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "ntk", "data", "nt_elementwise_reference.npz")


def _erf_nngp(cov12, var1, var2):
    import jax.numpy as jnp

    return 2 / jnp.pi * jnp.arcsin(2 * cov12 / jnp.sqrt((1 + 2 * var1) * (1 + 2 * var2)))


def _erf_d_nngp(cov12, var1, var2):
    import jax.numpy as jnp

    prod = (1 + 2 * var1) * (1 + 2 * var2)
    return 4 / jnp.pi / jnp.sqrt(prod - 4 * cov12**2)


def _exp_normalized_nngp(cov12, var1, var2):  # NT's test_exp_normalized_ntk
    import jax.numpy as jnp

    prod = jnp.sqrt(var1 * var2)
    return prod * jnp.exp(cov12 / prod - 1)


def configs(stax) -> dict:
    """name -> a zero-argument builder of the layer, the same code for NT's and kjax's ``stax``."""
    import jax
    import jax.numpy as jnp

    erf = jax.scipy.special.erf
    return {
        "Sin": lambda: stax.Sin(),
        "Cos_abc": lambda: stax.Cos(2.0, 0.3, 0.5),
        "Rbf": lambda: stax.Rbf(0.7),
        "Abs": lambda: stax.Abs(),
        "Abs_stab": lambda: stax.Abs(do_stabilize=True),
        "Sign": lambda: stax.Sign(),
        "Exp": lambda: stax.Exp(),
        "Exp_ab": lambda: stax.Exp(0.5, -0.3),
        "Gaussian": lambda: stax.Gaussian(),
        "Gaussian_ab": lambda: stax.Gaussian(0.5, 0.1),
        "ExpNormalized": lambda: stax.ExpNormalized(),
        "ExpNormalized_clip": lambda: stax.ExpNormalized(2.0, -0.5, True),
        "Hermite0": lambda: stax.Hermite(0),
        "Hermite3": lambda: stax.Hermite(3),
        "Monomial0": lambda: stax.Monomial(0),
        "Monomial2": lambda: stax.Monomial(2),
        "Monomial5": lambda: stax.Monomial(5),
        "RectifiedMonomial0": lambda: stax.RectifiedMonomial(0),
        "RectifiedMonomial2": lambda: stax.RectifiedMonomial(2),
        "RectifiedMonomial4": lambda: stax.RectifiedMonomial(4),
        "Polynomial_empty": lambda: stax.Polynomial([]),
        "Polynomial_3": lambda: stax.Polynomial([1.3, 0.0, -1.2, -0.5]),
        "Polynomial_5": lambda: stax.Polynomial([-0.1, 2.1, 0.0, 0.0, -1.2]),
        "Gabor": lambda: stax.Gabor(),
        "Sigmoid_like": lambda: stax.Sigmoid_like(),
        "Elementwise_autodiff": lambda: stax.Elementwise(erf, _erf_nngp),
        "Elementwise_d": lambda: stax.Elementwise(erf, _erf_nngp, _erf_d_nngp),
        "Elementwise_expnorm": lambda: stax.Elementwise(nngp_fn=_exp_normalized_nngp),
        "Numerical_erf": lambda: stax.ElementwiseNumerical(erf, 20),
        "Numerical_sin_df": lambda: stax.ElementwiseNumerical(jnp.sin, 12, df=jnp.cos),
    }


def networks(stax, layer) -> dict:
    """net name -> the ``(init_fn, apply_fn, kernel_fn)`` of that network around ``layer``."""
    conv = stax.Conv(3, (2,), padding="SAME", W_std=1.2, b_std=0.1)
    return {
        "fc": stax.serial(stax.Dense(8, W_std=1.3, b_std=0.2), layer, stax.Dense(1, W_std=0.9, b_std=0.1)),
        "pool": stax.serial(conv, layer, stax.GlobalAvgPool(), stax.Dense(1)),
        "flat": stax.serial(conv, layer, stax.Flatten(), stax.Dense(1)),
    }


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(14)
    x1 = rng.standard_normal((3, 4))
    x = {"x/fc/x1": x1, "x/fc/x2": np.concatenate([x1[:1], rng.standard_normal((1, 4))])}
    c1 = 0.8 * rng.standard_normal((2, 5, 2))
    x["x/pool/x1"] = x["x/flat/x1"] = c1
    x["x/pool/x2"] = x["x/flat/x2"] = np.concatenate([c1[:1], 0.8 * rng.standard_normal((2, 5, 2))])
    x["apply_x"] = np.linspace(-2.5, 2.5, 11)
    return x


def main() -> None:
    import warnings

    import jax

    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    from neural_tangents import stax

    warnings.simplefilter("ignore")
    data = inputs()
    for name, build in configs(stax).items():
        layer = build()
        if not name.startswith(("ExpNormalized", "Elementwise_expnorm")):
            data[f"{name}/apply"] = layer[1]((), data["apply_x"])
        for net, (_, _, kernel_fn) in networks(stax, layer).items():
            x1, x2 = data[f"x/{net}/x1"], data[f"x/{net}/x2"]
            k = kernel_fn(x1, x2)
            for field in ("nngp", "ntk", "cov1", "cov2"):
                data[f"{name}/{net}/{field}"] = getattr(k, field)
        print(f"{name:22s} fc nngp {np.asarray(data[f'{name}/fc/nngp']).ravel()[:2]}")
    data = {k: np.asarray(v) for k, v in data.items()}
    bad = [k for k, v in data.items() if not np.all(np.isfinite(v))]
    np.savez_compressed(OUT, **data)
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e3:.0f} kB) with neural-tangents {nt.__version__} "
          f"on jax {jax.__version__}; non-finite entries: {bad}")


if __name__ == "__main__":
    main()

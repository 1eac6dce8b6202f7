"""What each public callable takes: a small valid call, and which arguments are what.

A :class:`Spec` gives, for one public callable, a factory of a valid call (tiny float64 arrays
from a seeded NumPy RNG, so every call takes milliseconds) and a description of its arguments:

* :class:`Arr` -- an array argument, with a symbol per axis (``("n", "d")``) so that shapes can
  be mismatched against the other arguments, the ranks it accepts, whether NaN is documented to
  propagate or to be reported, whether integer input has another documented meaning, and whether a
  PSD matrix is expected;
* :class:`Hyper` -- a hyperparameter, dtype, axis or function argument, with the bad values to
  try (zero, negative, out of the documented domain, an unknown name, a non-PSD kernel);
* :class:`Custom` -- a hand-written bad input for a documented constraint that the generic table
  cannot express (``dt_min > dt_max``, a window larger than the input, ...).

``test_bad_inputs.py`` turns these into the table of bad inputs. Argument names with a dot
(``"params.log_dt"``, ``"state.kv"``) address a field of a NamedTuple / dict argument.

``KNOWN_FAILURES`` (at the end) lists the case ids that were not OK at the last regeneration; they
are reported as xfail so that ``make test`` passes while the fixes land. Regenerate it with
``KJAX_BAD_INPUT_PRINT_KNOWN=1 .venv/bin/python -m pytest -q -n 1 tests/bad_input`` (prints the new
set at the end of the run), or check the library strictly with ``KJAX_BAD_INPUT_STRICT=1``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

NAN = float("nan")


# --------------------------------------------------------------------------------------------
# the description language


@dataclasses.dataclass(frozen=True)
class Arr:
    """An array argument.

    Attributes:
      axes: one symbol per axis of the valid value, e.g. ``("B", "L", "D")``. Symbols shared by
        several array arguments are the axes whose sizes must agree.
      ranks: the ranks the argument accepts (default: ``len(axes)`` only).
      leading: any number of leading axes is valid (``[..., D]``), down to ``min_rank``.
      min_rank: with ``leading``, the smallest valid rank.
      kind: ``"float"`` (real floating), ``"int"`` (integer ids / labels), ``"complex"`` (complex
        values are valid too).
      nan: ``"propagate"`` (NaN in gives NaN out), ``"error"`` (documented: NaN/inf in concrete
        input raise, or are reported in a status), ``"skip"`` (no NaN/inf cases).
      ints: ``"promote"`` (the dtype policy: integer and bool inputs are promoted to float) or
        ``"skip"`` (integers mean something else here, e.g. class labels or fixed parameters).
      psd: a symmetric PSD matrix (or a vector of non-negative eigenvalues) is expected.
      nan_at: the flat index that gets the NaN / inf (an entry the output depends on).
      shared: symbols that must agree with something that is not an array argument (a fitted
        state, a layer's width): a mismatch case is generated for them too.
      primary: the data argument that gets the int32, bool and bfloat16 cases (default: the first
        float array argument); complex values are tried on every float argument.
      only: the case kinds to generate for this argument (default: all that apply).
    """

    axes: tuple[str, ...]
    ranks: tuple[int, ...] | None = None
    leading: bool = False
    min_rank: int = 1
    kind: str = "float"
    nan: str = "propagate"
    ints: str = "promote"
    psd: bool = False
    nan_at: int = 0
    shared: tuple[str, ...] = ()
    primary: bool = False
    only: frozenset[str] | None = None


@dataclasses.dataclass(frozen=True)
class Hyper:
    """A hyperparameter (or a dtype / axis / function argument) and the bad values to try.

    ``kind`` is ``"hyper"``, ``"dtype"``, ``"axis"`` or ``"psd"`` (a kernel or operator argument
    replaced by a non-PSD one).
    """

    bad: tuple[tuple[str, Any], ...]
    kind: str = "hyper"


@dataclasses.dataclass(frozen=True)
class Custom:
    """A hand-written bad input.

    Attributes:
      label: the case id suffix.
      mutate: ``values -> values`` (must not modify its argument).
      expect: ``"error"`` (a kjax error or a non-ok status is the only right answer) or
        ``"finite"`` (a finite result is right too: the input is valid but hard).
      names: the arguments an error may name.
      fns: other public functions an error may name (e.g. the stax layer that raised).
    """

    label: str
    mutate: Callable[[dict], dict]
    expect: str = "error"
    names: tuple[str, ...] = ()
    fns: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Spec:
    """One public callable: a valid call and what its arguments are.

    Attributes:
      name: the public qualified name, e.g. ``"kjax.ssm.fftconv"``.
      make: ``() -> dict`` of argument values for a valid call (cached; never mutated).
      args: argument name (or ``"arg.field"`` path) -> :class:`Arr` / :class:`Hyper`.
      call: ``(fn, values) -> result``; default ``fn(**values)`` (keys starting with ``_`` are
        dropped).
      empty: axis symbols set to 0 in every array argument that has them (n = 0, T = 0, L = 0).
      empty_error: the symbols whose emptiness the docs promise to reject (then an empty result is
        SILENT; for the others a finite empty result is fine).
      mesh: the callable takes ``mesh`` (and should take ``mesh_axis``).
      lowp: ``"first"``: the primary float array argument gets a bfloat16 case; ``"none"``: the
        docstring documents low-precision support. (float16 cases gave the same outcome as bfloat16
        everywhere and were dropped for time.)
      lowp_compare: compare the bfloat16 result with the float64 call on the same values (off for
        functions whose random draws depend on the dtype).
      outputs: ``result -> pytree`` of the arrays to check for finiteness (default: the result).
      status: ``result -> status code | None`` (default: ``result.status`` if present).
      psd_status: for a non-PSD case, only a non-ok status (or an error) is right; otherwise a
        finite result (a documented jitter) is right too.
      psd_ok: ``result -> bool``, a documented answer to a non-PSD input (e.g. ``-inf``).
      slow: the call recompiles every time, even at the same shapes (a library issue, measured:
        0.15-1.3 s per call), so only the cheap cases run: no bool / bfloat16 / inf cases, and
        integer input is checked for a finite float result without a float64 reference call.
      custom: hand-written cases.
      fns: other public names an error may carry (e.g. the stax layer inside a network).
    """

    name: str
    make: Callable[[], dict]
    args: dict[str, Arr | Hyper]
    call: Callable[[Callable, dict], Any] | None = None
    empty: tuple[str, ...] = ()
    empty_error: tuple[str, ...] = ()
    mesh: bool = False
    lowp: str = "first"
    lowp_compare: bool = True
    outputs: Callable[[Any], Any] | None = None
    status: Callable[[Any], Any] | None = None
    slow: bool = False
    psd_status: bool = False
    psd_ok: Callable[[Any], bool] | None = None
    custom: tuple[Custom, ...] = ()
    fns: tuple[str, ...] = ()

    @property
    def pillar(self) -> str:
        return self.name.rsplit(".", 1)[0].removeprefix("kjax.")

    @property
    def fn(self) -> Callable:
        import importlib

        mod, attr = self.name.rsplit(".", 1)
        return getattr(importlib.import_module(mod), attr)

    def values(self) -> dict:
        return _values(self.name)

    def invoke(self, values: dict) -> Any:
        if self.call is not None:
            return self.call(self.fn, values)
        return self.fn(**{k: v for k, v in values.items() if not k.startswith("_")})


@functools.cache
def _values(name: str) -> dict:
    return SPECS[name].make()


# ---- bad-value tables for hyperparameters -----------------------------------------------------


def pos(*extra) -> Hyper:
    """A real > 0."""
    return Hyper((("zero", 0.0), ("negative", -1.0), ("nan", NAN)) + extra)


def nonneg(*extra) -> Hyper:
    """A real >= 0."""
    return Hyper((("negative", -1.0), ("nan", NAN)) + extra)


def unit(*extra) -> Hyper:
    """A real in (0, 1]."""
    return Hyper((("zero", 0.0), ("negative", -1.0), ("above-one", 2.0)) + extra)


def count(*extra, zero_ok: bool = False) -> Hyper:
    """A Python int >= 1 (>= 0 with ``zero_ok``)."""
    return Hyper(((() if zero_ok else (("zero", 0),)) + (("negative", -1), ("float", 2.5))) + extra)


def choice(*extra) -> Hyper:
    """One of a documented set of names."""
    return Hyper((("unknown", "bogus"),) + extra)


def axis(*bad) -> Hyper:
    return Hyper(bad, kind="axis")


def dtype_arg(*extra) -> Hyper:
    return Hyper((("int32", np.int32), ("complex64", np.complex64)) + extra, kind="dtype")


def nonpsd(fn) -> Hyper:
    return Hyper((("non-psd", fn),), kind="psd")


# ---- value helpers ----------------------------------------------------------------------------


def normal(*shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


def positive(*shape, seed: int = 0) -> np.ndarray:
    return np.abs(normal(*shape, seed=seed)) + 0.1


def psd_matrix(n: int, seed: int = 0, rank: int | None = None) -> np.ndarray:
    a = normal(n, rank or n, seed=seed)
    k = a @ a.T / (rank or n)
    return k + (0.1 * np.eye(n) if rank is None else 0.0)


def tonp(tree):
    """A pytree with its jax arrays as NumPy arrays (the factories' values are NumPy)."""
    import jax

    return jax.tree.map(lambda a: np.asarray(a) if hasattr(a, "dtype") else a, tree)


def replace(values: dict, **kw) -> dict:
    out = dict(values)
    out.update(kw)
    return out


_MEMO: dict = {}


def memo(fn: Callable, values: dict, keys, build: Callable[[], Any]) -> Any:
    """``build()``, cached on ``fn`` (the callable under test) and the identity of ``values[k]``.

    Callables that return a function (``empirical_ntk_fn(f)``, a stax network) are built once for
    all the cases that only change the arguments of the returned function, so its jit cache is
    shared. The cache holds the key objects, so their ids cannot be reused.
    """
    objs = (fn, *(values.get(k) for k in keys))
    key = (tuple(keys), tuple(map(id, objs)))
    if key not in _MEMO:
        _MEMO[key] = (objs, build())
    return _MEMO[key][1]


def _pick(values: dict, *names: str) -> dict:
    return {k: values[k] for k in names if k in values}


def _rbf(x1, x2=None):
    from kjax.kernels import rbf

    return rbf(x1, x2, lengthscale=1.5)


def _neg_rbf(x1, x2=None):
    """A symmetric, negative-definite 'kernel': the non-PSD input of the regression specs."""
    from kjax.kernels import rbf

    return -rbf(x1, x2, lengthscale=1.5)


def _key(seed: int = 0):
    import jax

    return jax.random.key(seed)


def _mesh_1d():
    import jax

    return jax.make_mesh((8,), ("data",))


def _mesh_2d():
    import jax

    return jax.make_mesh((2, 4), ("a", "b"))


# --------------------------------------------------------------------------------------------
# kjax.kernels

_X1 = ("n1", "d")
_X2 = ("n2", "d")


def _K():
    from kjax import kernels

    return kernels


def _kernel_values(**hyper):
    return {"x1": normal(5, 3, seed=1), "x2": normal(4, 3, seed=2), **hyper}


def _kernel_spec(name, hyper_values, hyper_args, custom=()):
    return Spec(
        name=f"kjax.kernels.{name}",
        make=lambda: _kernel_values(**hyper_values),
        args={"x1": Arr(_X1), "x2": Arr(_X2), **hyper_args},
        empty=("n1", "n2"),
        custom=custom,
    )


_LS_SHAPE = Custom("lengthscale-shape", lambda v: replace(v, lengthscale=np.ones(4)), names=("lengthscale",))

KERNEL_SPECS = [
    _kernel_spec("rbf", {"lengthscale": 1.5, "variance": 1.2},
                 {"lengthscale": pos(), "variance": pos()}, custom=(_LS_SHAPE,)),
    _kernel_spec("laplace", {"lengthscale": 1.5, "variance": 1.2},
                 {"lengthscale": pos(), "variance": pos()}, custom=(_LS_SHAPE,)),
    _kernel_spec("matern", {"lengthscale": 1.5, "nu": 1.5, "variance": 1.2},
                 {"lengthscale": pos(), "nu": choice(("not-half-integer", 1.0)), "variance": pos()},
                 custom=(_LS_SHAPE,)),
    _kernel_spec("rational_quadratic", {"lengthscale": 1.5, "alpha": 2.0, "variance": 1.2},
                 {"lengthscale": pos(), "alpha": pos(), "variance": pos()}, custom=(_LS_SHAPE,)),
    _kernel_spec("linear", {"variance": 1.2, "bias": 0.5}, {"variance": pos(), "bias": nonneg()}),
    _kernel_spec("polynomial", {"degree": 2, "gamma": 0.5, "coef0": 1.0},
                 {"degree": count(), "gamma": pos(), "coef0": nonneg()}),
    _kernel_spec("arccos", {"order": 1}, {"order": Hyper((("unknown", 3), ("negative", -1), ("float", 1.5)))}),
    _kernel_spec("squared_distance", {}, {}),
    _kernel_spec("white_noise", {"variance": 0.1}, {"variance": pos()}),
    Spec(
        name="kjax.kernels.Kernel",
        make=lambda: _kernel_values(fn=_K().rbf, lengthscale=1.5),
        args={"x1": Arr(_X1, only=frozenset({"rank", "nan", "dtype"})), "x2": Arr(_X2, only=frozenset({"shape"})),
              "lengthscale": pos()},
        call=lambda fn, v: fn(v["fn"], lengthscale=v["lengthscale"])(v["x1"], v["x2"]),
        fns=("kjax.kernels.rbf",),  # the kernel evaluated may name itself
        custom=(Custom("fn-not-callable", lambda v: replace(v, fn=3.0), names=("fn",)),),
    ),
    *[Spec(
        name=f"kjax.kernels.{n}",
        make=lambda: _kernel_values(k1=_K().Kernel(_K().rbf, lengthscale=1.5), k2=_K().Kernel(_K().white_noise,
                                                                                                variance=0.1)),
        args={"x1": Arr(_X1, only=frozenset({"rank", "nan"})), "x2": Arr(_X2, only=frozenset({"shape"}))},
        call=lambda fn, v: fn(v["k1"], v["k2"])(v["x1"], v["x2"]),
        fns=("kjax.kernels.rbf", "kjax.kernels.white_noise"),
        custom=(Custom("k2-not-a-kernel", lambda v: replace(v, k2=3.0), names=("k2",)),),
    ) for n in ("Sum", "Product")],
    Spec(
        name="kjax.kernels.Scale",
        make=lambda: _kernel_values(k=_K().Kernel(_K().rbf, lengthscale=1.5), c=2.0),
        args={"x1": Arr(_X1, only=frozenset({"rank", "nan"})), "c": nonneg()},
        call=lambda fn, v: fn(v["k"], v["c"])(v["x1"], v["x2"]),
        fns=("kjax.kernels.rbf",),
        custom=(Custom("k-not-a-kernel", lambda v: replace(v, k=3.0), names=("k",)),),
    ),
    Spec(
        name="kjax.kernels.as_kernel",
        make=lambda: _kernel_values(k=functools.partial(_K().rbf, lengthscale=1.5)),
        args={"x1": Arr(_X1, only=frozenset({"rank"}))},
        call=lambda fn, v: fn(v["k"])(v["x1"], v["x2"]),
        fns=("kjax.kernels.rbf",),
        custom=(Custom("k-not-callable", lambda v: replace(v, k=3.0), names=("k",)),
                Custom("k-negative-lengthscale", lambda v: replace(v, k=functools.partial(_K().rbf, lengthscale=-1.0)),
                       names=("k", "lengthscale"))),
    ),
    Spec(
        name="kjax.kernels.gram",
        make=lambda: {"kernel": _rbf, **_kernel_values(), "block_size": 2},
        args={"x1": Arr(_X1), "x2": Arr(_X2), "block_size": count()},
        empty=("n1", "n2"),
        mesh=True,
        custom=(Custom("out-shape", lambda v: replace(v, out=np.zeros((6, 4))), names=("out",)),),
    ),
    Spec(
        name="kjax.kernels.kernel_diag",
        make=lambda: {"kernel": _rbf, "x": normal(5, 3, seed=1), "block_size": 2},
        args={"x": Arr(("n", "d")), "block_size": count()},
        empty=("n",),
    ),
    Spec(
        name="kjax.kernels.kernel_matvec",
        make=lambda: {"kernel": _rbf, **_kernel_values(), "v": normal(4, seed=3), "block_size": 2},
        args={"x1": Arr(_X1), "x2": Arr(_X2), "v": Arr(("n2",), ranks=(1, 2)), "block_size": count()},
        empty=("n1", "n2"),
        mesh=True,
    ),
    Spec(
        name="kjax.kernels.kernel_normal_matvec",
        slow=True,
        make=lambda: {"kernel": _rbf, "x": normal(5, 3, seed=1), "centers": normal(4, 3, seed=2),
                      "v": normal(4, seed=3), "w": normal(5, seed=4), "block_size": 2},
        args={"x": Arr(("n", "d")), "centers": Arr(("m", "d")), "v": Arr(("m",), ranks=(1, 2)),
              "w": Arr(("n",), ranks=(1, 2)), "block_size": count()},
        empty=("n", "m"),
        mesh=True,
    ),
]


# --------------------------------------------------------------------------------------------
# kjax.ntk (empirical kernels)


def _mlp(p, x):
    import jax.numpy as jnp

    return jnp.tanh(x @ p["w1"]) @ p["w2"]


def _ntk_values(**extra):
    return {"f": _mlp, "params": {"w1": normal(3, 8, seed=5) / 2, "w2": normal(8, 2, seed=6) / 3},
            "x1": normal(4, 3, seed=1), "x2": normal(3, 3, seed=2), **extra}


_NTK_ARRAYS = {
    # inputs are any pytree with a batch axis that f understands: no rank cases
    "x1": Arr(("n1", "d"), leading=True, min_rank=2, only=frozenset({"dtype", "nan", "lowp"})),
    "x2": Arr(("n2", "d"), leading=True, min_rank=2),
    # integer parameter leaves are documented to be held fixed
    "params.w1": Arr(("d", "h"), ints="skip", only=frozenset({"nan"})),
}
#: the other eNTK entry points share empirical_ntk_fn's input handling: x2 gets only the shape cases
_NTK_ARRAYS_LEAN = {**_NTK_ARRAYS, "x2": Arr(("n2", "d"), leading=True, min_rank=2, only=frozenset({"shape", "rank"}))}
_TRACE = axis(("out-of-range", (5,)), ("batch-axis", (0,)))
_DIAG = axis(("out-of-range", (5,)))


def _call_fn_then(*outer: str, inner: tuple[str, ...] = ("x1", "x2", "params"), inner_kw: tuple[str, ...] = ()):
    """``fn(**outer)(*inner, **inner_kw)``: for the callables that return a function."""

    def call(fn, v):
        g = memo(fn, v, outer, lambda: fn(**_pick(v, *outer)))
        return g(*[v.get(k) for k in inner], **_pick(v, *inner_kw))

    return call


NTK_SPECS = [
    Spec(
        name="kjax.ntk.choose_implementation",
        make=lambda: _ntk_values(trace_axes=(-1,), diagonal_axes=()),
        # a cost model over shapes: values (NaN, dtypes) do not matter, shapes do
        args={"x2": Arr(("n2", "d"), leading=True, min_rank=2, only=frozenset({"shape", "rank"})),
              "trace_axes": _TRACE, "diagonal_axes": _DIAG},
        outputs=lambda r: r[1],
    ),
    Spec(
        name="kjax.ntk.empirical_ntk_fn",
        make=lambda: _ntk_values(trace_axes=(-1,), diagonal_axes=(), vmap_axes=0, implementation=None),
        args={**_NTK_ARRAYS, "trace_axes": _TRACE, "diagonal_axes": _DIAG,
              "implementation": choice(("out-of-range", 7))},
        call=_call_fn_then("f", "trace_axes", "diagonal_axes", "vmap_axes", "implementation"),
        empty=("n1",),
    ),
    Spec(
        name="kjax.ntk.empirical_kernel_fn",
        make=lambda: _ntk_values(trace_axes=(-1,), diagonal_axes=(), vmap_axes=0, get=("nngp", "ntk")),
        args={**_NTK_ARRAYS_LEAN, "trace_axes": _TRACE, "diagonal_axes": _DIAG, "get": choice()},
        call=_call_fn_then("f", "trace_axes", "diagonal_axes", "vmap_axes", inner=("x1", "x2", "get", "params")),
    ),
    Spec(
        name="kjax.ntk.empirical_nngp_fn",
        make=lambda: _ntk_values(trace_axes=(-1,), diagonal_axes=()),
        args={**_NTK_ARRAYS_LEAN, "trace_axes": _TRACE, "diagonal_axes": _DIAG},
        call=_call_fn_then("f", "trace_axes", "diagonal_axes"),
    ),
    Spec(
        name="kjax.ntk.empirical_ntk",
        make=lambda: _ntk_values(mode="trace", block_size=2),
        args={**_NTK_ARRAYS_LEAN, "mode": choice(), "block_size": count(), "implementation": choice()},
        empty=("n1",),
        mesh=True,
    ),
    Spec(
        name="kjax.ntk.projected_ntk",
        make=lambda: {"key": _key(), **_ntk_values(num_projections=4, mode="trace")},
        args={**_NTK_ARRAYS_LEAN, "num_projections": count(), "mode": choice()},
    ),
]


def _linen_values():
    import flax.linen as nn

    module = nn.Dense(2)
    return {"module": module, "variables": tonp(module.init(_key(), np.ones((1, 3)))),
            "params_collection": "params", "x": normal(4, 3, seed=1)}


def _call_linen(fn, v):
    f, params = fn(v["module"], v["variables"], params_collection=v["params_collection"])
    return f(params, v["x"])


def _nnx_values():
    from flax import nnx

    return {"model": nnx.Linear(3, 2, rngs=nnx.Rngs(0)), "x": normal(4, 3, seed=1)}


def _call_nnx(fn, v):
    f, params = fn(v["model"])
    return f(params, v["x"])


@functools.cache
def _dense_net():
    from kjax.ntk import stax

    return stax.serial(stax.Dense(8, b_std=0.1), stax.Relu(), stax.Dense(1))


def _mc_values():
    init_fn, apply_fn, _ = _dense_net()
    return {"init_fn": init_fn, "apply_fn": apply_fn, "key": _key(), "n_samples": 2,
            "trace_axes": (-1,), "x1": normal(4, 3, seed=1), "x2": normal(3, 3, seed=2), "get": "ntk"}


NTK_SPECS += [
    Spec(
        name="kjax.ntk.from_linen",
        make=_linen_values,
        args={},
        call=_call_linen,
        # documented: "variables without params_collection" -- either name is right
        custom=(Custom("params_collection-unknown", lambda v: replace(v, params_collection="bogus"),
                       names=("params_collection", "variables")),),
    ),
    Spec(
        name="kjax.ntk.from_nnx",
        make=_nnx_values,
        args={},
        call=_call_nnx,
        custom=(Custom("model-not-a-module", lambda v: replace(v, model={"w": np.ones(3)}), names=("model",)),),
    ),
    Spec(
        name="kjax.ntk.monte_carlo_kernel_fn",
        slow=True,
        make=_mc_values,
        # every call draws and differentiates n_samples networks (1.2 s, recompiled each time); the
        # inputs go through empirical_ntk_fn, whose spec has the dtype and NaN cases
        args={"x1": Arr(("n1", "d"), leading=True, min_rank=2, only=frozenset({"rank"})),
              "x2": Arr(("n2", "d"), leading=True, min_rank=2, only=frozenset({"shape"})),
              "n_samples": count(), "trace_axes": _TRACE, "get": choice()},
        call=_call_fn_then("init_fn", "apply_fn", "key", "n_samples", "trace_axes", inner=("x1", "x2", "get")),
    ),
]


# --------------------------------------------------------------------------------------------
# kjax.ntk.stax

_XS = ("n1", "d")
_IMG1 = ("n1", "h", "w", "c")
_IMG2 = ("n2", "h", "w", "c")


def _stax_values(**extra):
    return {"x1": normal(3, 4, seed=1), "x2": normal(2, 4, seed=2), **extra}


def _img_values(**extra):
    return {"x1": normal(2, 4, 4, 2, seed=1), "x2": normal(1, 4, 4, 2, seed=2), **extra}


def _stax_call(build):
    """Build a network from the layer under test and call its ``kernel_fn(x1, x2, "ntk")``."""

    def call(fn, v):
        keys = sorted(k for k in v if k not in ("x1", "x2", "get"))
        _, _, kernel_fn = memo(fn, v, keys, lambda: build(fn, v))
        return kernel_fn(v["x1"], v["x2"], v.get("get", "ntk"))

    return call


def _S():
    from kjax.ntk import stax

    return stax


def _around(layer_fn, v, *, gaussian=True, images=False):
    """``serial(Dense, layer, Dense)`` (or a conv version); without a Dense before when not Gaussian."""
    S = _S()
    layer = layer_fn(v)
    if not gaussian:
        return S.serial(layer)
    if images:
        return S.serial(S.Conv(3, (2, 2), padding="SAME"), layer, S.Flatten(), S.Dense(1))
    return S.serial(S.Dense(4), layer, S.Dense(1))


_NOT_GAUSSIAN = Custom("input-not-gaussian", lambda v: replace(v, _gaussian=False), names=("input", "x1", "inputs"))


def _elementwise_spec(name, make_layer, values, args=None):
    return Spec(
        name=f"kjax.ntk.stax.{name}",
        make=lambda: _stax_values(**values),
        args=args or {},
        call=_stax_call(lambda fn, v: _around(lambda v: make_layer(fn, v), v, gaussian=v.get("_gaussian", True))),
        custom=(_NOT_GAUSSIAN,),
    )


STAX_SPECS = [
    Spec(
        name="kjax.ntk.stax.serial",
        make=lambda: _stax_values(layers=None, get="ntk"),
        args={"x1": Arr(_XS, leading=True, min_rank=2), "x2": Arr(("n2", "d"), leading=True, min_rank=2),
              "get": choice()},
        call=_stax_call(lambda fn, v: fn(*(v["layers"] or (_S().Dense(4), _S().Relu(), _S().Dense(1))))),
        empty=("n1",),
        custom=(Custom("layers-not-a-triple", lambda v: replace(v, layers=(_S().Dense(4), 3)), names=("layers",)),),
    ),
    Spec(
        name="kjax.ntk.stax.parallel",
        make=lambda: _stax_values(layers=None),
        args={},
        call=_stax_call(lambda fn, v: _S().serial(
            _S().Dense(4), _S().FanOut(2), fn(*(v["layers"] or (_S().Dense(4), _S().Identity()))), _S().FanInSum())),
        custom=(
            Custom("layers-not-a-triple", lambda v: replace(v, layers=(_S().Dense(4), 3)), names=("layers",)),
            Custom("branch-count", lambda v: replace(v, layers=(_S().Dense(4),)), names=("input", "inputs", "layers")),
            Custom("branch-shapes", lambda v: replace(v, layers=(_S().Dense(4), _S().Dense(3, parameterization="standard"))),
                   names=("input", "inputs", "branches"), fns=("kjax.ntk.stax.FanInSum",)),
        ),
    ),
    Spec(
        name="kjax.ntk.stax.Dense",
        make=lambda: _stax_values(out_dim=4, W_std=1.5, b_std=0.1, parameterization="ntk"),
        args={"out_dim": count(), "W_std": nonneg(), "b_std": nonneg(), "parameterization": choice()},
        call=_stax_call(lambda fn, v: _around(lambda v: fn(v["out_dim"], v["W_std"], v["b_std"],
                                                            parameterization=v["parameterization"]), v)),
    ),
    Spec(
        name="kjax.ntk.stax.Conv",
        make=lambda: _img_values(out_chan=3, filter_shape=(2, 2), strides=None, padding="SAME", W_std=1.0,
                                 b_std=0.1, dimension_numbers=None, x2=None),
        args={"x1": Arr(_IMG1, only=frozenset({"rank"})), "out_chan": count(),
              "filter_shape": Hyper((("zero", (0, 2)), ("negative", (-1, 2)), ("wrong-length", (2,)))),
              "strides": Hyper((("zero", (0, 1)), ("negative", (-1, 1)), ("wrong-length", (1, 1, 1)))),
              "padding": choice(), "W_std": nonneg(), "b_std": nonneg(),
              "dimension_numbers": Hyper((("nchw", ("NCHW", "OIHW", "NCHW")),))},
        call=_stax_call(lambda fn, v: _S().serial(
            fn(v["out_chan"], v["filter_shape"], v["strides"], v["padding"], v["W_std"], v["b_std"],
               v["dimension_numbers"]), _S().Relu(), _S().Flatten(), _S().Dense(1))),
        custom=(Custom("filter-larger-than-input", lambda v: replace(v, filter_shape=(5, 5), padding="VALID"),
                       names=("filter_shape", "x1", "inputs", "input")),),
    ),
    Spec(
        name="kjax.ntk.stax.AvgPool",
        make=lambda: _img_values(window_shape=(2, 2), strides=None, padding="VALID", x2=None),
        args={"window_shape": Hyper((("zero", (0, 2)), ("negative", (-1, 2)), ("wrong-length", (2,)))),
              "strides": Hyper((("zero", (0, 1)), ("negative", (-1, 1)))),
              "padding": choice()},
        call=_stax_call(lambda fn, v: _around(
            lambda v: fn(v["window_shape"], v["strides"], v["padding"]), v, images=True)),
        custom=(Custom("window-larger-than-input", lambda v: replace(v, window_shape=(5, 5)),
                       names=("window_shape", "x1", "inputs", "input")),),
    ),
    _elementwise_spec("ABRelu", lambda fn, v: fn(v["a"], v["b"]), {"a": -0.5, "b": 1.5}),
    _elementwise_spec("Relu", lambda fn, v: fn(), {}),
    _elementwise_spec("LeakyRelu", lambda fn, v: fn(v["alpha"]), {"alpha": 0.1}),
    _elementwise_spec("Erf", lambda fn, v: fn(v["a"], v["b"], v["c"]), {"a": 1.0, "b": 1.5, "c": 0.1}),
    _elementwise_spec("Gelu", lambda fn, v: fn(), {}),
    _elementwise_spec("LayerNorm", lambda fn, v: fn(v["axis"], v["eps"]), {"axis": -1, "eps": 1e-6},
                      {"axis": axis(("out-of-range", 5), ("batch-axis", 0)), "eps": nonneg()}),
    Spec(
        name="kjax.ntk.stax.FanOut",
        make=lambda: _stax_values(num=2),
        args={"num": count()},
        call=_stax_call(lambda fn, v: _S().serial(_S().Dense(4), fn(v["num"]), _S().FanInConcat())),
    ),
    Spec(
        name="kjax.ntk.stax.FanInConcat",
        make=lambda: _stax_values(axis=-1),
        args={"axis": axis(("out-of-range", 5), ("not-the-channel-axis", 0))},
        call=_stax_call(lambda fn, v: _S().serial(
            _S().Dense(4), _S().FanOut(2), _S().parallel(_S().Dense(3), _S().Dense(2)), fn(v["axis"]))),
    ),
    Spec(
        name="kjax.ntk.stax.batch",
        slow=True,
        make=lambda: {"kernel_fn": _dense_net()[2], "batch_size": 2, "x1": normal(5, 3, seed=1),
                      "x2": normal(3, 3, seed=2), "get": "ntk"},
        args={"x1": Arr(("n1", "d"), leading=True, min_rank=2), "x2": Arr(("n2", "d"), leading=True, min_rank=2),
              "batch_size": count(), "get": choice(("per-example", "cov1"))},
        call=_call_fn_then("kernel_fn", "batch_size", "mesh", "mesh_axis", inner=("x1", "x2", "get")),
        empty=("n1",),
        mesh=True,
    ),
]


# --------------------------------------------------------------------------------------------
# kjax.ntk.predict


def _predict_values(**extra):
    return {"k_train_train": psd_matrix(4, seed=1), "y_train": normal(4, 2, seed=2),
            "k_test_train": normal(3, 4, seed=3) / 3, "k_test_test": psd_matrix(3, seed=4), **extra}


_KTT = Arr(("N", "N"), psd=True)
_SINGULAR = Custom("k_train_train-singular", lambda v: replace(v, k_train_train=psd_matrix(4, seed=1, rank=2)),
                   expect="finite", names=("k_train_train",))


def _call_gp_inference(fn, v):
    predict_fn = fn(v["k_train_train"], v["y_train"], v["diag_reg"], trace_axes=v["trace_axes"],
                    solver=v["solver"])
    return predict_fn(v["get"], k_test_train=v["k_test_train"], k_test_test=v["k_test_test"])


def _call_gd_mse(fn, v):
    predict_fn = fn(v["k_train_train"], v["y_train"], v["learning_rate"], v["diag_reg"],
                    trace_axes=v["trace_axes"])
    return predict_fn(v["t"], fx_train_0=0.0, fx_test_0=v["fx_test_0"], k_test_train=v["k_test_train"])


def _call_gd_ensemble(fn, v):
    predict_fn = fn(v["kernel_fn"], v["x_train"], v["y_train"], v["learning_rate"], v["diag_reg"],
                    trace_axes=v["trace_axes"])
    return predict_fn(t=v["t"], x_test=v["x_test"], get=v["get"], compute_cov=True)


PREDICT_SPECS = [
    Spec(
        name="kjax.ntk.predict.gp_inference",
        slow=True,
        make=lambda: _predict_values(diag_reg=1e-3, trace_axes=(-1,), solver="cholesky", get="nngp"),
        args={"k_train_train": _KTT, "y_train": Arr(("N", "O")), "k_test_train": Arr(("M", "N")),
              "k_test_test": Arr(("M", "M")), "diag_reg": nonneg(), "trace_axes": axis(("not-the-output-axis", (0,))),
              "solver": choice(), "get": choice()},
        call=_call_gp_inference,
        custom=(_SINGULAR,),
    ),
    Spec(
        name="kjax.ntk.predict.gradient_descent_mse",
        make=lambda: _predict_values(learning_rate=0.5, diag_reg=0.0, trace_axes=(-1,), t=np.array([0.5, 2.0]),
                                     fx_test_0=np.zeros((3, 2))),
        args={"k_train_train": _KTT, "y_train": Arr(("N", "O")), "k_test_train": Arr(("M", "N")),
              "fx_test_0": Arr(("M", "O")), "t": Arr(("t",), leading=True, min_rank=0),
              "learning_rate": nonneg(), "diag_reg": nonneg(), "trace_axes": axis(("not-the-output-axis", (0,)))},
        call=_call_gd_mse,
        custom=(Custom("k_train_train-singular-t=None",
                       lambda v: replace(v, k_train_train=psd_matrix(4, seed=1, rank=2), t=None),
                       expect="finite", names=("k_train_train",)),),
    ),
    Spec(
        name="kjax.ntk.predict.gradient_descent_mse_ensemble",
        make=lambda: {"kernel_fn": _dense_net()[2], "x_train": normal(4, 3, seed=1), "y_train": normal(4, 2, seed=2),
                      "x_test": normal(3, 3, seed=3), "learning_rate": 1.0, "diag_reg": 1e-3, "trace_axes": (-1,),
                      "t": np.array([1.0]), "get": "ntk"},
        args={"x_train": Arr(("N", "d")), "y_train": Arr(("N", "O")), "x_test": Arr(("M", "d")),
              "learning_rate": nonneg(), "diag_reg": nonneg(), "trace_axes": axis(("not-the-output-axis", (0,))),
              "get": choice()},
        call=_call_gd_ensemble,
        empty=("N",),
    ),
]


# --------------------------------------------------------------------------------------------
# kjax.ntk.analysis

_KMAT = Arr(("n", "n"), ranks=(2, 4))


def _two_kernels():
    return {"k1": psd_matrix(5, seed=1), "k2": psd_matrix(5, seed=2)}


def _matvec(a: np.ndarray):
    import jax.numpy as jnp

    a = jnp.asarray(a)
    return lambda v: a @ v


def _lanczos_values():
    a = psd_matrix(6, seed=1)
    return {"key": _key(), "matvec": _matvec(a), "n": 6, "k": 2, "num_iters": 4, "dtype": None,
            "_indefinite": _matvec(_indefinite(a))}


def _indefinite(k: np.ndarray) -> np.ndarray:
    """``k`` with its largest eigenvalue negated (symmetric, indefinite)."""
    w, u = np.linalg.eigh(k)
    w[-1] = -w[-1]
    return (u * w) @ u.T


def _record_values():
    import jax.numpy as jnp
    import optax

    x = normal(6, 3, seed=1)
    y = normal(6, 2, seed=2)
    return {"f": _mlp, "params": {"w1": normal(3, 4, seed=5), "w2": normal(4, 2, seed=6)},
            "loss_fn": lambda p, b: jnp.mean((_mlp(p, b[0]) - b[1]) ** 2), "optimizer": optax.sgd(0.1),
            "batches": [(x, y)], "x_probe": x[:4], "num_steps": 2, "every": 1, "mode": "trace"}


ANALYSIS_SPECS = [
    Spec(name=f"kjax.ntk.analysis.{n}", make=_two_kernels, args={"k1": _KMAT, "k2": _KMAT}, empty=("n",))
    for n in ("alignment", "centered_kernel_alignment", "kernel_distance")
] + [
    Spec(
        name="kjax.ntk.analysis.effective_rank",
        make=lambda: {"k_or_eigenvalues": positive(5, seed=1), "kind": "entropy"},
        args={"k_or_eigenvalues": Arr(("n",), ranks=(1, 2, 4), psd=True), "kind": choice()},
        empty=("n",),
    ),
    Spec(
        name="kjax.ntk.analysis.eigenspectrum",
        make=lambda: {"k": psd_matrix(5, seed=1), "top_k": 2},
        args={"k": _KMAT, "top_k": count()},
        outputs=lambda r: r[0],  # eigenvectors are defined up to sign / rotation in degenerate eigenspaces
        empty=("n",),
    ),
    Spec(
        name="kjax.ntk.analysis.label_alignment",
        make=lambda: {"k": psd_matrix(5, seed=1), "y": normal(5, 2, seed=2)},
        args={"k": Arr(("n", "n")), "y": Arr(("n", "O"), ranks=(1, 2), ints="skip")},
        empty=("n",),
        custom=(Custom("y-negative-label", lambda v: replace(v, y=np.array([0, 1, -1, 1, 0])), names=("y",)),),
    ),
    Spec(
        name="kjax.ntk.analysis.lanczos_top_k",
        slow=True,
        make=_lanczos_values,
        args={"n": count(), "k": count(("above-n", 7)),
              "num_iters": Hyper((("below-k", 1), ("above-n", 7), ("zero", 0))),
              "dtype": dtype_arg(), "matvec": nonpsd(None)},
        call=lambda fn, v: fn(v["key"], v["matvec"] or v["_indefinite"], v["n"], v["k"], num_iters=v["num_iters"],
                              dtype=v["dtype"]),
    ),
    Spec(
        name="kjax.ntk.analysis.record_ntk",
        slow=True,
        make=_record_values,
        args={"x_probe": Arr(("n", "d"), leading=True, min_rank=2, only=frozenset({"nan"})),
              "num_steps": count(), "every": count(), "mode": choice()},
        outputs=lambda r: (r.kernels, r.losses, r.distance_to_init),
    ),
]


# --------------------------------------------------------------------------------------------
# kjax.attention

_B, _T, _H, _M, _DV = 1, 6, 2, 3, 2
_Q = ("B", "T", "H", "M")
_V = ("B", "T", "H", "Dv")


def _qkv(feature: bool):
    q, k = normal(_B, _T, _H, _M, seed=1), normal(_B, _T, _H, _M, seed=2)
    if feature:
        q, k = np.abs(q) + 0.1, np.abs(k) + 0.1
    return {"q": q, "k": k, "v": normal(_B, _T, _H, _DV, seed=3)}


def _state_custom(make_bad):
    return Custom("initial_state-shape", lambda v: replace(v, initial_state=make_bad()), names=("initial_state",))


def _seg_customs():
    return (
        Custom("segment_ids-float", lambda v: replace(v, segment_ids=np.zeros((_B, _T))), names=("segment_ids",)),
        Custom("segment_ids-shape", lambda v: replace(v, segment_ids=np.zeros(_T, np.int32)), names=("segment_ids",)),
    )


def _A():
    from kjax import attention

    return attention


_FEATURE_X = Arr(("b", "D"), leading=True, min_rank=1)

ATTENTION_SPECS = [
    Spec(
        name="kjax.attention.linear_attention",
        make=lambda: {**_qkv(True), "causal": True, "eps": 1e-6, "chunk_size": 4},
        args={"q": Arr(_Q), "k": Arr(_Q), "v": Arr(_V), "eps": nonneg(), "chunk_size": count(),
              "implementation": choice()},
        empty=("T",),
        lowp="none",  # documented: float32 / bfloat16 kernels, XLA otherwise, output in the input dtype
        custom=(_state_custom(lambda: _A().LinearAttentionState(np.zeros((1, 2, 3, 5)), np.zeros((1, 2, 3)))),
                *_seg_customs()),
    ),
    Spec(
        name="kjax.attention.kernel_attention",
        make=lambda: {**_qkv(False), "feature_map": "elu_plus_one", "causal": True, "eps": 1e-6, "chunk_size": 4},
        args={"q": Arr(_Q), "k": Arr(_Q), "v": Arr(_V), "eps": nonneg(), "chunk_size": count(),
              "feature_map": choice()},
        empty=("T",),
        lowp="none",
        custom=(Custom("feature_params-missing", lambda v: replace(v, feature_map="favor_positive"),
                       names=("feature_params",)), *_seg_customs()),
    ),
    Spec(
        name="kjax.attention.delta_rule_attention",
        make=lambda: {**_qkv(False), "beta": 1 / (1 + np.exp(-normal(_B, _T, _H, seed=4))), "chunk_size": 4},
        args={"q": Arr(_Q), "k": Arr(_Q), "v": Arr(_V), "beta": Arr(("B", "T", "H")), "chunk_size": count()},
        empty=("T",),
        custom=(_state_custom(lambda: _A().DeltaRuleState(np.zeros((1, 2, 3, 5)))),),
    ),
    Spec(
        name="kjax.attention.delta_rule_step",
        make=lambda: {"state": _A().DeltaRuleState(normal(_B, _H, _M, _DV, seed=5)),
                      "q_t": normal(_B, _H, _M, seed=1), "k_t": normal(_B, _H, _M, seed=2) / 2,
                      "v_t": normal(_B, _H, _DV, seed=3), "beta_t": np.full((_B, _H), 0.5)},
        args={"state.kv": Arr(("B", "H", "M", "Dv")), "q_t": Arr(("B", "H", "M"), primary=True),
              "k_t": Arr(("B", "H", "M")), "v_t": Arr(("B", "H", "Dv")), "beta_t": Arr(("B", "H"))},
        empty=("B",),
    ),
    Spec(
        name="kjax.attention.linear_attention_step",
        make=lambda: {"state": _A().LinearAttentionState(positive(_B, _H, _M, _DV, seed=5), positive(_B, _H, _M, seed=6)),
                      "q_t": positive(_B, _H, _M, seed=1), "k_t": positive(_B, _H, _M, seed=2),
                      "v_t": normal(_B, _H, _DV, seed=3), "eps": 1e-6},
        args={"state.kv": Arr(("B", "H", "M", "Dv")), "state.k_sum": Arr(("B", "H", "M")),
              "q_t": Arr(("B", "H", "M"), primary=True), "k_t": Arr(("B", "H", "M")),
              "v_t": Arr(("B", "H", "Dv")), "eps": nonneg()},
        empty=("B",),
    ),
    Spec(
        name="kjax.attention.rpe_kernel_attention",
        make=lambda: {**_qkv(False), "rpe": -0.1 * np.abs(np.arange(-(_T - 1), _T, dtype=float)) * np.ones((_H, 1)),
                      "feature_map": "elu_plus_one", "causal": True, "eps": 1e-6},
        # with causal=True the entries of negative offsets are ignored: put the NaN at the last one
        args={"q": Arr(_Q), "k": Arr(_Q), "v": Arr(_V), "rpe": Arr(("H", "R"), ranks=(1, 2), nan_at=-1),
              "eps": nonneg(), "feature_map": choice()},
        empty=("T",),
        custom=(Custom("rpe-plus-constant", lambda v: replace(v, rpe=v["rpe"] + 1000.0), expect="finite",
                       names=("rpe",)),),
    ),
    Spec(
        name="kjax.attention.softmax_attention_reference",
        make=lambda: {**_qkv(False), "causal": True},
        args={"q": Arr(_Q), "k": Arr(_Q), "v": Arr(_V)},
        empty=("T",),
        custom=_seg_customs(),
    ),
    Spec(
        name="kjax.attention.dpfp",
        make=lambda: {"x": normal(4, 3, seed=1), "nu": 2},
        args={"x": _FEATURE_X, "nu": count()},
    ),
    *[Spec(name=f"kjax.attention.{n}", make=lambda: {"x": normal(4, 3, seed=1)}, args={"x": _FEATURE_X})
      for n in ("elu_plus_one", "relu_features", "taylor2")],
    Spec(
        name="kjax.attention.favor_positive",
        make=lambda: {"x": normal(4, 3, seed=1), "w": normal(5, 3, seed=2), "stabilize": "weights"},
        args={"x": _FEATURE_X, "w": Arr(("M", "D")), "stabilize": choice()},
    ),
    Spec(
        name="kjax.attention.favor_trig",
        make=lambda: {"x": normal(4, 3, seed=1), "w": normal(5, 3, seed=2)},
        args={"x": _FEATURE_X, "w": Arr(("M", "D"))},
    ),
    Spec(
        name="kjax.attention.hedgehog",
        make=lambda: {"params": _A().HedgehogParams(w=normal(3, 5, seed=2), b=normal(5, seed=3)),
                      "x": normal(4, 3, seed=1)},
        args={"params.w": Arr(("D", "M")), "params.b": Arr(("M",)), "x": dataclasses.replace(_FEATURE_X, primary=True)},
    ),
    Spec(
        name="kjax.attention.learned_spectral",
        make=lambda: {"params": _A().LearnedSpectralParams(mu=normal(5, 3, seed=2) / 3,
                                                            log_sigma=normal(5, 3, seed=3) / 3,
                                                            noise=normal(5, 3, seed=4)),
                      "x": normal(4, 3, seed=1)},
        args={"params.mu": Arr(("M", "D")), "params.log_sigma": Arr(("M", "D")),
              "x": dataclasses.replace(_FEATURE_X, primary=True)},
    ),
    Spec(
        name="kjax.attention.init_hedgehog",
        make=lambda: {"key": _key(), "dim": 3, "num_features": 4},
        args={"dim": count(), "num_features": count(), "dtype": dtype_arg()},
    ),
    Spec(
        name="kjax.attention.init_learned_spectral",
        make=lambda: {"key": _key(), "dim": 3, "num_features": 4, "lengthscale": 1.5},
        args={"dim": count(), "num_features": count(), "lengthscale": pos(), "dtype": dtype_arg()},
    ),
    Spec(
        name="kjax.attention.random_projection",
        make=lambda: {"key": _key(), "num_features": 5, "dim": 3, "kind": "orthogonal"},
        args={"num_features": count(), "dim": count(), "kind": choice(), "dtype": dtype_arg()},
    ),
]


# --------------------------------------------------------------------------------------------
# kjax.ssm


def _ssm():
    from kjax import ssm

    return ssm


def _s4d_params():
    return tonp(_ssm().init_s4d(_key(), 3, 4))


def _rtf_state():
    st = _ssm().rtf_initial_state(_rtf_params(), 2, L=8)
    return tonp(st._replace(w=normal(2, 3, 2, seed=4)))


def _rtf_params():
    return _ssm().RTFParams(a=normal(3, 2, seed=1) * 0.2, b=normal(3, 2, seed=2), h0=normal(3, seed=3))


SSM_SPECS = [
    Spec(
        name="kjax.ssm.fftconv",
        make=lambda: {"u": normal(2, 8, 3, seed=1), "k": normal(4, 3, seed=2), "mode": "causal",
                      "gate": normal(2, 8, 3, seed=3), "skip": normal(3, seed=4)},
        args={"u": Arr(("B", "L", "D")), "k": Arr(("Lk", "D")), "gate": Arr(("B", "L", "D")), "skip": Arr(("D",)),
              "mode": choice(), "implementation": choice()},
        empty=("L", "B"),
        empty_error=("L",),  # documented: ValueError for L = 0
        lowp="none",  # documented: bf16 / f16 computed in float32, output cast back
        custom=(Custom("k-longer-than-u", lambda v: replace(v, k=normal(9, 3, seed=2)), names=("k",)),),
    ),
    Spec(
        name="kjax.ssm.hyena_filter",
        make=lambda: {"params": tonp(_ssm().init_hyena(_key(), 3, emb_dim=5, width=4, depth=1)), "L": 8,
                      "shift": 0.0},
        args={"params.w_in": Arr(("E", "W")), "params.w_out": Arr(("W", "D")), "params.decay": Arr(("D",)),
              "L": count()},
    ),
    Spec(
        name="kjax.ssm.init_hyena",
        make=lambda: {"key": _key(), "d_model": 3, "emb_dim": 5, "width": 4, "depth": 1, "fast_decay_pct": 0.3,
                      "slow_decay_pct": 1.5, "target": 0.01},
        args={"d_model": count(), "emb_dim": Hyper((("even", 4), ("too-small", 1), ("zero", 0))),
              "width": count(), "depth": count(zero_ok=True), "fast_decay_pct": pos(), "slow_decay_pct": pos(),
              "target": Hyper((("zero", 0.0), ("negative", -1.0), ("above-one", 2.0)))},
    ),
    Spec(
        name="kjax.ssm.rtf_filter",
        make=lambda: {"params": _rtf_params(), "L": 8},
        args={"params.a": Arr(("D", "N")), "params.b": Arr(("D", "N")), "params.h0": Arr(("D",)),
              "L": count(("not-above-N", 2))},
    ),
    Spec(
        name="kjax.ssm.init_rtf",
        make=lambda: {"key": _key(), "d_model": 3, "state_size": 2, "scale": 0.5},
        args={"d_model": count(), "state_size": count(), "scale": nonneg()},
    ),
    Spec(
        name="kjax.ssm.rtf_initial_state",
        make=lambda: {"params": _rtf_params(), "batch_size": 2, "L": 8},
        args={"batch_size": count(), "L": count(("not-above-N", 2))},
    ),
    Spec(
        name="kjax.ssm.rtf_step",
        make=lambda: {"params": _rtf_params(), "state": _rtf_state(), "u_t": normal(2, 3, seed=5)},
        # the feedthrough h0 is read into the state by rtf_initial_state: rtf_step does not use it
        args={"params.a": Arr(("D", "N")), "state.w": Arr(("B", "D", "N")), "u_t": Arr(("B", "D"), primary=True)},
        empty=("B",),
    ),
    Spec(
        name="kjax.ssm.s4d_filter",
        make=lambda: {"params": _s4d_params(), "L": 8, "discretization": "zoh"},
        args={"params.log_dt": Arr(("D",)), "params.log_a_real": Arr(("D", "M")), "params.c_re": Arr(("D", "M")),
              "L": count(), "discretization": choice()},
        custom=(Custom("log_a_real-heavy-damping",
                       lambda v: replace(v, params=v["params"]._replace(log_a_real=np.full((3, 2), 10.0))),
                       expect="finite", names=("params", "log_a_real")),),
    ),
    Spec(
        name="kjax.ssm.init_s4d",
        make=lambda: {"key": _key(), "d_model": 3, "state_size": 4, "init": "lin", "dt_min": 1e-3, "dt_max": 1e-1},
        args={"d_model": count(), "state_size": Hyper((("odd", 3), ("zero", 0), ("negative", -2))),
              "init": choice(), "dt_min": pos(), "dt_max": pos()},
        custom=(Custom("dt_min-above-dt_max", lambda v: replace(v, dt_min=0.1, dt_max=0.01), names=("dt_min", "dt_max")),),
    ),
    Spec(
        name="kjax.ssm.s4d_initial_state",
        make=lambda: {"params": _s4d_params(), "batch_size": 2},
        args={"batch_size": count(zero_ok=True)},
    ),
    Spec(
        name="kjax.ssm.s4d_step",
        make=lambda: {"params": _s4d_params(), "state": _ssm().S4DState(normal(2, 3, 2, seed=4) + 1j * normal(2, 3, 2, seed=5)),
                      "u_t": normal(2, 3, seed=6), "discretization": "zoh"},
        args={"params.log_dt": Arr(("D",)), "state.x": Arr(("B", "D", "M"), kind="complex", ints="skip"),
              "u_t": Arr(("B", "D"), primary=True), "discretization": choice()},
        empty=("B",),
    ),
    Spec(
        name="kjax.ssm.sgconv_filter",
        make=lambda: {"params": _ssm().SGConvParams(normal(2, 3, 3, seed=1)), "L": 8, "decay": 0.5},
        args={"params.kernels": Arr(("S", "k", "D")), "L": count(), "decay": unit()},
    ),
    Spec(
        name="kjax.ssm.init_sgconv",
        make=lambda: {"key": _key(), "d_model": 3, "L": 8, "kernel_dim": 2},
        args={"d_model": count(), "L": count(), "kernel_dim": count()},
    ),
    Spec(
        name="kjax.ssm.smooth",
        make=lambda: {"k": normal(8, 3, seed=1), "width": 3},
        args={"k": Arr(("L", "D")), "width": count(("even", 2))},
        empty=("L",),
    ),
    Spec(
        name="kjax.ssm.spectral_conv",
        make=lambda: {"u": normal(2, 8, 3, seed=1), "weights": normal(3, 3, 2, seed=2) + 1j * normal(3, 3, 2, seed=3),
                      "modes": 3},
        args={"u": Arr(("B", "L", "Ci"), ranks=(3, 4)), "weights": Arr(("m", "Ci", "Co"), kind="complex"),
              "modes": count(("too-many", 6))},
        empty=("L",),
    ),
    Spec(
        name="kjax.ssm.squash",
        make=lambda: {"k": normal(8, 3, seed=1), "lam": 0.1},
        args={"k": Arr(("L", "D"), leading=True, min_rank=0), "lam": nonneg()},
    ),
    Spec(
        name="kjax.ssm.stu_filters",
        make=lambda: {"L": 8, "K": 3},
        args={"L": count(), "K": count(("above-L", 9))},
    ),
]


# --------------------------------------------------------------------------------------------
# kjax.regression


def _R():
    from kjax import regression

    return regression


def _reg_values(y: bool = True, **extra):
    out = {"kernel": _rbf, "x": normal(6, 2, seed=1), "y": normal(6, seed=2), **extra}
    if not y:
        del out["y"]
    return out


_RX = Arr(("n", "d"), nan="error")
_RY = Arr(("n",), ranks=(1, 2), nan="error")
_RXNEW = Arr(("m", "d"), nan="error", shared=("d",))
_KERNEL = nonpsd(_neg_rbf)


@functools.cache
def _fitted(which: str):
    """A fitted state, from the fit spec's own valid call (so the two share their compilations)."""
    import jax

    spec = SPECS[f"kjax.regression.{which}_fit"]
    return jax.block_until_ready(spec.invoke(spec.values()))


def _predict_spec(which, fit, slow=False):
    return Spec(
        name=f"kjax.regression.{which}_predict",
        slow=slow,
        lowp="none",  # predictions are one kernel_matvec, whose spec has the case
        make=lambda: {"state": _fitted(fit), "x_new": normal(3, 2, seed=3), "block_size": 2},
        args={"x_new": _RXNEW, "block_size": count()},
        empty=("m",),
        mesh=True,
    )


def _coef(r):
    return r.coef


REGRESSION_SPECS = [
    Spec(
        name="kjax.regression.krr_fit",
        make=lambda: _reg_values(ridge=0.1, ridge_scaling="none", jitter=1e-10, block_size=3),
        args={"x": _RX, "y": _RY, "kernel": _KERNEL, "ridge": pos(), "ridge_scaling": choice(), "jitter": pos(),
              "block_size": count()},
        empty=("n",),
        mesh=True,
        outputs=_coef,
        psd_status=True,
    ),
    Spec(
        name="kjax.regression.spectral_fit",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        make=lambda: _reg_values(filter="iterated_tikhonov", ridge=0.1, order=2, ridge_scaling="none", block_size=3),
        args={"x": _RX, "y": _RY, "kernel": _KERNEL, "filter": choice(), "ridge": pos(), "order": count(),
              "ridge_scaling": choice(), "block_size": count()},
        empty=("n",),
        mesh=True,
        outputs=_coef,
        psd_status=True,
    ),
    _predict_spec("krr", "krr"),
    Spec(
        name="kjax.regression.falkon_fit",
        make=lambda: {"key": _key(), **_reg_values(ridge=1e-2, num_centers=3, maxiter=3, tol=1e-7,
                                                   center_method="uniform", ridge_scaling="n", block_size=3)},
        args={"x": _RX, "y": _RY, "kernel": _KERNEL, "ridge": pos(), "num_centers": count(("above-n", 7)),
              "maxiter": count(), "tol": nonneg(), "center_method": choice(), "ridge_scaling": choice(),
              "block_size": count(), "solver_dtype": dtype_arg(("float16", np.float16))},
        empty=("n",),
        mesh=True,
        outputs=lambda r: r.alpha,  # residuals / val_errors hold documented NaNs after the last iteration
        psd_status=True,
        custom=(Custom("centers-and-num_centers", lambda v: replace(v, centers=v["x"][:3]),
                       names=("centers", "num_centers")),
                Custom("centers-d+1", lambda v: replace(v, num_centers=None, centers=normal(3, 3, seed=7)),
                       names=("centers",))),
    ),
    _predict_spec("falkon", "falkon", slow=True),
    Spec(
        name="kjax.regression.eigenpro_fit",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        make=lambda: {"key": _key(), **_reg_values(epochs=1, num_eigen=2, subsample_size=5, batch_size=None,
                                                   max_batch_size=8, block_size=3)},
        args={"x": _RX, "y": _RY, "kernel": _KERNEL, "epochs": count(),
              "num_eigen": count(("not-below-subsample_size", 5)), "subsample_size": count(),
              "batch_size": count(), "max_batch_size": count(), "block_size": count()},
        empty=("n",),
        mesh=True,
        outputs=lambda r: (r.alpha, r.train_errors),
        psd_status=True,
    ),
    Spec(
        name="kjax.regression.eigenpro3_fit",
        lowp="none",  # the same low-precision path as eigenpro_fit / gp_posterior, which have the case
        make=lambda: {"key": _key(), **_reg_values(epochs=1, num_eigen=2, subsample_size=3, batch_size=None,
                                                   max_batch_size=8, jitter=1e-10, block_size=3),
                      "centers": normal(4, 2, seed=3)},
        args={"x": _RX, "y": _RY, "centers": Arr(("p", "d"), nan="error"), "kernel": _KERNEL, "epochs": count(),
              "num_eigen": count(("not-below-subsample_size", 3)), "subsample_size": count(),
              "batch_size": count(), "max_batch_size": count(), "jitter": pos(), "block_size": count()},
        empty=("n",),
        mesh=True,
        outputs=lambda r: (r.alpha, r.train_errors),
        psd_status=True,
    ),
    _predict_spec("eigenpro", "eigenpro", slow=True),
    Spec(
        name="kjax.regression.gp_posterior",
        slow=True,
        make=lambda: {**_reg_values(ridge=0.1, jitter=1e-10, block_size=3), "x_new": normal(3, 2, seed=3)},
        args={"x": _RX, "y": _RY, "x_new": Arr(("m", "d"), nan="error"), "kernel": _KERNEL, "ridge": pos(),
              "block_size": count(), "jitter": pos()},
        empty=("n", "m"),
        mesh=True,
        psd_status=True,
    ),
    Spec(
        name="kjax.regression.gp_log_marginal_likelihood",
        lowp="none",  # the same low-precision path as eigenpro_fit / gp_posterior, which have the case
        make=lambda: _reg_values(ridge=0.1, jitter=1e-10, block_size=3),
        args={"x": _RX, "y": _RY, "kernel": _KERNEL, "ridge": pos(), "jitter": pos(), "block_size": count()},
        empty=("n",),
        mesh=True,
        psd_ok=lambda r: bool(np.asarray(r) == -np.inf),  # documented: a failed factorisation gives -inf
    ),
    Spec(
        name="kjax.regression.effective_dimension",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        make=lambda: _reg_values(False, ridge=0.1, ridge_scaling="n"),
        args={"x": _RX, "kernel": _KERNEL, "ridge": pos(), "ridge_scaling": choice()},
        empty=("n",),
    ),
    Spec(
        name="kjax.regression.ridge_leverage_scores",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        make=lambda: _reg_values(False, ridge=0.1, ridge_scaling="n"),
        args={"x": _RX, "kernel": _KERNEL, "ridge": pos(), "ridge_scaling": choice()},
        empty=("n",),
    ),
    Spec(
        name="kjax.regression.leverage_dictionary",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        make=lambda: {"key": _key(), **_reg_values(False, ridge=1e-2, ridge_scaling="n", method="bless",
                                                   oversampling=2.0, chunk_size=4, jitter=1e-10)},
        args={"x": _RX, "kernel": _KERNEL, "ridge": pos(), "ridge_scaling": choice(), "method": choice(),
              "oversampling": pos(), "chunk_size": count(), "jitter": pos()},
        empty=("n",),
        outputs=lambda r: (r.weights, r.scores),
    ),
    Spec(
        name="kjax.regression.nystrom_centers",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        make=lambda: {"key": _key(), **_reg_values(False, m=3, method="rls", ridge=1e-2, ridge_scaling="n")},
        args={"x": _RX, "kernel": _KERNEL, "m": count(("above-n", 7)), "method": choice(), "ridge": pos(),
              "ridge_scaling": choice()},
        empty=("n",),
    ),
    Spec(
        name="kjax.regression.rpcholesky",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        slow=True,
        make=lambda: {"key": _key(), **_reg_values(False, m=3)},
        args={"x": _RX, "kernel": _KERNEL, "m": count(("above-n", 7))},
        empty=("n",),
    ),
    Spec(
        name="kjax.regression.random_fourier_features",
        lowp="none",  # the regression pillar's low-precision path is checked on krr_fit, falkon_fit, gp_posterior
        make=lambda: {"key": _key(), "x": normal(6, 2, seed=1), "kernel": _rbf_partial(), "num_features": 4,
                      "kind": "iid"},
        args={"x": Arr(("n", "d")), "kernel": _KERNEL, "num_features": count(), "kind": choice()},
        empty=("n",),
        custom=(Custom("kernel-negative-lengthscale", lambda v: replace(v, kernel=_rbf_partial(-1.0)),
                       names=("kernel", "lengthscale")),),
    ),
    Spec(
        name="kjax.regression.status_name",
        make=lambda: {"status": 2},
        args={"status": Hyper((("float", 2.5), ("vector", np.array([1, 2])), ("string", "ok")))},
    ),
]


def _rbf_partial(lengthscale: float = 1.5):
    from kjax.kernels import rbf

    return functools.partial(rbf, lengthscale=lengthscale)


# --------------------------------------------------------------------------------------------
# kjax.nn (construct, then call)


def _nn_call(*ctor: str, pos_args: tuple[str, ...] = (), x: str = "u"):
    def call(cls, v):
        from flax import nnx

        layer = cls(*[v[k] for k in pos_args], **_pick(v, *ctor), rngs=nnx.Rngs(0))
        return layer(v[x])

    return call


_NN_U = Arr(("B", "L", "D"), shared=("D",))

NN_SPECS = [
    Spec(
        name="kjax.nn.S4D",
        make=lambda: {"d_model": 3, "state_size": 4, "init": "lin", "discretization": "zoh", "u": normal(2, 8, 3, seed=1)},
        args={"u": _NN_U, "d_model": count(), "state_size": Hyper((("odd", 3), ("zero", 0), ("negative", -2))),
              "init": choice(), "discretization": choice()},
        call=_nn_call("init", "discretization", pos_args=("d_model", "state_size")),
        empty=("L",),
    ),
    Spec(
        name="kjax.nn.STU",
        make=lambda: {"d_in": 3, "d_out": 2, "num_filters": 2, "u": normal(2, 8, 3, seed=1)},
        args={"u": _NN_U, "d_in": count(), "d_out": count(), "num_filters": count()},
        call=_nn_call("num_filters", pos_args=("d_in", "d_out")),
        empty=("L",),
        # K filters need L >= K: the error may be about the layer's num_filters or the input u
        custom=(Custom("num_filters-above-L", lambda v: replace(v, num_filters=9), names=("num_filters", "u")),),
    ),
    Spec(
        name="kjax.nn.Hyena",
        make=lambda: {"d_model": 3, "emb_dim": 5, "width": 4, "depth": 1, "u": normal(2, 8, 3, seed=1)},
        args={"u": _NN_U, "d_model": count(), "emb_dim": Hyper((("even", 4), ("zero", 0))), "width": count(),
              "depth": count(zero_ok=True)},
        call=_nn_call("emb_dim", "width", "depth", pos_args=("d_model",)),
        empty=("L",),
    ),
    Spec(
        name="kjax.nn.KernelAttention",
        make=lambda: {"in_features": 4, "num_heads": 2, "feature_map": "elu_plus_one", "chunk_size": 4, "eps": 1e-6,
                      "x": normal(1, 6, 4, seed=1)},
        args={"x": Arr(("B", "T", "D"), shared=("D",)), "in_features": count(),
              "num_heads": count(("not-dividing-in_features", 3)), "feature_map": choice(), "chunk_size": count(),
              "eps": nonneg()},
        call=_nn_call("num_heads", "feature_map", "chunk_size", "eps", pos_args=("in_features",), x="x"),
        empty=("T",),
    ),
]


# --------------------------------------------------------------------------------------------
# the registry

def _area_modules():
    """The ``specs_<area>.py`` modules beside this one: each defines ``SPECS`` (a list of
    :class:`Spec`) and may define ``EXEMPT`` (a dict of name -> reason) for the names it adds."""
    import importlib
    import pathlib

    here = pathlib.Path(__file__).parent
    return [importlib.import_module(f"{__package__}.{p.stem}") for p in sorted(here.glob("specs_*.py"))]


_AREAS = _area_modules()

SPECS: dict[str, Spec] = {
    s.name: s
    for s in (KERNEL_SPECS + NTK_SPECS + STAX_SPECS + PREDICT_SPECS + ANALYSIS_SPECS + ATTENTION_SPECS + SSM_SPECS
              + REGRESSION_SPECS + NN_SPECS + [s for m in _AREAS for s in m.SPECS])
}

#: the public modules whose ``__all__`` the suite enumerates
PILLARS = ("kjax.kernels", "kjax.ntk", "kjax.ntk.stax", "kjax.ntk.predict", "kjax.ntk.analysis",
           "kjax.ntk.experimental", "kjax.attention", "kjax.ssm", "kjax.regression", "kjax.nn")

_STATE = "a NamedTuple of arrays (a state, parameters or a result): it has no behaviour to feed bad input to"
_NOARG = "a stax layer without arguments: exercised by the networks of the serial / parallel / layer specs"

#: public names without a spec, and why
EXEMPT: dict[str, str] = {
    **{f"kjax.attention.{n}": _STATE for n in ("DeltaRuleState", "LinearAttentionState", "HedgehogParams",
                                                "LearnedSpectralParams")},
    **{f"kjax.ssm.{n}": _STATE for n in ("HyenaFilterParams", "RTFParams", "RTFState", "S4DParams", "S4DState",
                                          "SGConvParams")},
    **{f"kjax.regression.{n}": _STATE for n in ("EigenProState", "FalkonState", "GPPosterior", "KRRState",
                                                 "RLSDictionary", "RPCholeskyState")},
    "kjax.ntk.predict.Gaussian": _STATE,
    "kjax.ntk.analysis.NTKRecord": _STATE,
    "kjax.ntk.stax.Kernel": "a dataclass pytree of kernel arrays (NT's Kernel): a result, no behaviour to feed bad input to",
    "kjax.ntk.stax.KernelFn": "the type of a network's kernel_fn (built by the layers, not by users); every "
                              "stax spec calls one",
    **{f"kjax.ntk.stax.{n}": _NOARG for n in ("Flatten", "GlobalAvgPool", "Identity", "FanInSum")},
    **{f"kjax.ntk.experimental.{n}": "needs TensorFlow (the tf extra, not in make test's environment): "
       "its errors (ImportError without TensorFlow; NotImplementedError naming `f`, as NT) are tested in "
       "tests/ntk/test_experimental_tf.py (make test-tf)" for n in ("empirical_ntk_fn_tf",
                                                                     "get_apply_fn_and_params")},
    **{k: v for m in _AREAS for k, v in getattr(m, "EXEMPT", {}).items()},
}


# --------------------------------------------------------------------------------------------
# the cases that were not OK at the last regeneration (see the module docstring)

KNOWN_FAILURES: set[str] = {
}

"""Bad-input specs of the kernels given by their values: ``kjax.kernels.precomputed`` and
``kjax.kernels.operator`` (issue 17, item 2(c)).

Both return a kernel object, so each valid call builds the kernel and fits ``krr_fit`` on it (the
bad input must be caught at construction or by the solver, naming the argument, or give a status).
The solver-side errors (indices out of range, y that does not match, operators where entries are
needed, ...) are tested in tests/regression/test_precomputed.py.
"""

from __future__ import annotations

import numpy as np

from tests.bad_input.specs import Arr, Custom, Hyper, Spec, count, dtype_arg, normal, psd_matrix, replace

_CLASS = "a kernel pytree made by kjax.kernels.precomputed / operator (whose specs exercise it)"


def _fit(kernel, y, **kw):
    from kjax.regression import krr_fit

    return krr_fit(kernel, None, y, ridge=0.1, **kw)


def _gram_values():
    return {"gram": psd_matrix(5, seed=1), "_y": normal(5, seed=2)}


def _op_values():
    k = psd_matrix(5, seed=1)
    return {"matvec": lambda v: k @ v, "n": 5, "diag": np.diag(k).copy(), "_y": normal(5, seed=2)}


def _op_call(fn, v):
    kw = {k: v[k] for k in ("matvec", "n", "diag", "dtype") if k in v}
    return _fit(fn(**kw), v["_y"], solver="pcg", maxiter=20)


def _neg_gram(v):
    return replace(v, gram=-psd_matrix(5, seed=1))


SPECS = [
    Spec(
        name="kjax.kernels.precomputed",
        make=_gram_values,
        args={"gram": Arr(("n", "n"), nan="error", psd=True), "_y": Arr(("n",), nan="error", only=frozenset())},
        call=lambda fn, v: _fit(fn(v["gram"]), v["_y"]),
        outputs=lambda r: r.coef,
        empty=("n",),
        empty_error=("n",),
        psd_status=True,
        custom=(
            Custom("not-square", lambda v: replace(v, gram=v["gram"][:, :3]), names=("gram",)),
            Custom("not-2d", lambda v: replace(v, gram=v["gram"][0]), names=("gram",)),
            Custom("y-mismatch", lambda v: replace(v, _y=v["_y"][:3]), names=("y",), fns=("kjax.regression.krr_fit",)),
            Custom("columns-unsorted", lambda v: replace(v, columns=np.array([2, 0, 1]), gram=v["gram"][:, :3]),
                   names=("columns",)),
            Custom("non-psd", _neg_gram, names=("kernel", "gram")),
        ),
    ),
    Spec(
        name="kjax.kernels.operator",
        make=_op_values,
        args={"n": count(), "diag": Arr(("n",), nan="error", ints="skip", only=frozenset({"nan", "rank"})),
              "dtype": dtype_arg(), "matvec": Hyper((("array", np.eye(5)), ("none", None)))},
        call=_op_call,
        outputs=lambda r: r.coef,
        lowp="none",  # no float array data: the products run in `dtype`
        custom=(
            Custom("matvec-wrong-shape", lambda v: replace(v, matvec=lambda u: u[:3]), names=("matvec",)),
            Custom("y-mismatch", lambda v: replace(v, _y=v["_y"][:3]), names=("y",), fns=("kjax.regression.krr_fit",)),
        ),
    ),
]

EXEMPT = {"kjax.kernels.PrecomputedKernel": _CLASS, "kjax.kernels.KernelOperator": _CLASS}

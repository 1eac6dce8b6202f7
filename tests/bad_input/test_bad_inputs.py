"""The bad-input suite: a table of bad inputs generated from ``specs.py``, one pytest item each.

Each case is run and classified:

* ``OK``: a kjax error (``KjaxError`` / ``KjaxTypeError``, or an exception whose message starts
  with ``kjax.``) that names the public function and the argument; or documented behaviour: a
  returned status that is not ok, NaN/inf propagated from a NaN/inf input, integer / bool input
  promoted to float (finite and equal to the call on the same values as float64), a low-precision
  input computed to a finite, close result, a finite result for a hard but valid input.
* ``SILENT``: returned without an error, but the output is non-finite from finite input, or a bad
  input (out-of-domain hyperparameter, wrong shape or rank, complex values, NaN that the docs
  promise to report) was accepted.
* ``FOREIGN``: an exception from inside jax / numpy / LAPACK / Python, not a kjax message.
* ``MISNAMED``: a kjax error that does not name the function called or the argument.

``KJAX_BAD_INPUT_STRICT=1`` ignores ``KNOWN_FAILURES``; ``KJAX_BAD_INPUT_PRINT_KNOWN=1`` prints
the set of currently failing ids at the end of the run (to paste into ``specs.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Callable

import jax
import numpy as np
import pytest

from tests.bad_input import specs as S

OK, SILENT, FOREIGN, MISNAMED = "OK", "SILENT", "FOREIGN", "MISNAMED"
STRICT = os.environ.get("KJAX_BAD_INPUT_STRICT", "") not in ("", "0")


# --------------------------------------------------------------------------------------------
# the table


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    spec: S.Spec
    kind: str  # rank | shape | dtype | lowp | nan | inf | empty | hyper | axis | dtype-arg | psd | mesh | custom
    arg: str | None
    mutate: Callable[[dict], dict]
    names: tuple[str, ...]  # the arguments an error may name
    reference: Callable[[dict], dict] | None = None  # for promotions: the same values as float64
    expect: str = "error"  # for custom cases
    fns: tuple[str, ...] = ()


def get_path(values: dict, path: str):
    head, *rest = path.split(".")
    obj = values[head]
    for key in rest:
        obj = obj[key] if isinstance(obj, dict) else getattr(obj, key)
    return obj


def set_path(values: dict, path: str, new) -> dict:
    head, *rest = path.split(".")
    out = dict(values)
    out[head] = _set(values[head], rest, new) if rest else new
    return out


def _set(obj, rest, new):
    if not rest:
        return new
    key, rest = rest[0], rest[1:]
    if isinstance(obj, dict):
        d = dict(obj)
        d[key] = _set(obj[key], rest, new)
        return d
    return obj._replace(**{key: _set(getattr(obj, key), rest, new)})


def _arg_names(path: str) -> tuple[str, ...]:
    """An error about ``params.log_dt`` may say ``params`` or ``log_dt``."""
    parts = path.split(".")
    return tuple(dict.fromkeys([parts[0], parts[-1]]))


def _with(path: str, f: Callable[[np.ndarray], object]) -> Callable[[dict], dict]:
    return lambda v: set_path(v, path, f(np.asarray(get_path(v, path))))


def _extra_rank(a: np.ndarray, allowed: set[int]) -> np.ndarray:
    a = np.stack([a, a])
    while a.ndim in allowed:
        a = np.stack([a, a])
    return a


def _missing_rank(a: np.ndarray, allowed: set[int]) -> np.ndarray:
    a = a[0]
    while a.ndim in allowed and a.ndim > 0:
        a = a[0]
    return a


def _off_by_one(a: np.ndarray, ax: int) -> np.ndarray:
    if a.shape[ax] >= 2:
        return np.take(a, np.arange(a.shape[ax] - 1), axis=ax)
    return np.concatenate([a, a], axis=ax)


def _set_at(a: np.ndarray, index: int, value: float) -> np.ndarray:
    a = np.array(a, dtype=np.result_type(a.dtype, np.float64) if a.dtype.kind in "iub" else a.dtype)
    a.reshape(-1)[index] = value
    return a


def _non_psd(a: np.ndarray) -> np.ndarray:
    if a.ndim == 1:  # eigenvalues: one negative
        a = a.copy()
        a[0] = -a[0]
        return a
    return S._indefinite(a)


def _mismatch(path: str, i: int, nax: int) -> Callable[[dict], dict]:
    """Axis ``i`` of the ``nax`` described axes (after any leading ones) one shorter / longer."""

    def mutate(v):
        x = np.asarray(get_path(v, path))
        return set_path(v, path, _off_by_one(x, x.ndim - nax + i))

    return mutate


def _empty(values: dict, spec: S.Spec, symbol: str) -> dict:
    out = values
    for path, arg in spec.args.items():
        if isinstance(arg, S.Arr) and symbol in arg.axes:
            a = np.asarray(get_path(out, path))
            off = a.ndim - len(arg.axes)  # leading axes come first
            for i, s in enumerate(arg.axes):
                if s == symbol:
                    a = np.take(a, np.arange(0), axis=off + i)
            out = set_path(out, path, a)
    return out


def _to_float64(path: str) -> Callable[[dict], dict]:
    return _with(path, lambda a: a.astype(np.float64))


def _wants(arg: S.Arr, kind: str) -> bool:
    return arg.only is None or kind in arg.only


def cases_of(spec: S.Spec) -> list[Case]:
    out: list[Case] = []
    arrays = {p: a for p, a in spec.args.items() if isinstance(a, S.Arr)}
    floats = [p for p, a in arrays.items() if a.kind == "float" and a.ints == "promote" and _wants(a, "dtype")]
    primary = next((p for p in floats if arrays[p].primary), floats[0] if floats else None)

    def add(suffix, kind, arg, mutate, names, **kw):
        out.append(Case(f"{spec.name}-{suffix}", spec, kind, arg, mutate, names, **kw))

    for path, a in arrays.items():
        names = _arg_names(path)
        ranks = set(a.ranks or (len(a.axes),))
        # wrong rank: an extra and a missing axis
        if _wants(a, "rank"):
            if not a.leading:
                add(f"{path}-rank+1", "rank", path, _with(path, lambda x, r=ranks: _extra_rank(x, r)), names)
            lo = a.min_rank if a.leading else min(ranks)
            if lo >= 1:
                allowed = set(range(lo, 99)) if a.leading else ranks
                add(f"{path}-rank-1", "rank", path, _with(path, lambda x, r=allowed: _missing_rank(x, r)), names)
        # dtypes
        if _wants(a, "dtype"):
            # integer / bool promotion goes through one shared helper (kjax._src.dtypes), so it is
            # checked on the primary data argument; complex values are tried on every argument
            if a.kind == "float" and a.ints == "promote" and path == primary:
                add(f"{path}-int32", "dtype", path, _with(path, lambda x: np.round(x).astype(np.int32)), names,
                    reference=None if spec.slow else _to_float64(path))
                if not spec.slow:
                    add(f"{path}-bool", "dtype", path, _with(path, lambda x: x > 0), names,
                        reference=_to_float64(path))
            if a.kind == "float":
                add(f"{path}-complex128", "dtype", path, _with(path, lambda x: x + 0.5j), names)
            if a.kind == "int":
                add(f"{path}-float64", "dtype", path, _with(path, lambda x: x.astype(np.float64)), names)
        if path == primary and spec.lowp == "first" and not spec.slow:
            import ml_dtypes

            add(f"{path}-bfloat16", "lowp", path, _with(path, lambda x: x.astype(ml_dtypes.bfloat16)), names,
                reference=_to_float64(path) if spec.lowp_compare else None)
        # NaN / inf
        if a.nan != "skip" and a.kind != "int" and _wants(a, "nan"):
            add(f"{path}-nan", "nan", path, _with(path, lambda x, i=a.nan_at: _set_at(x, i, np.nan)), names)
            if not spec.slow:
                add(f"{path}-inf", "inf", path, _with(path, lambda x, i=a.nan_at: _set_at(x, i, np.inf)), names)
        if a.psd and _wants(a, "psd"):
            add(f"{path}-non-psd", "psd", path, _with(path, _non_psd), names)

    # mismatched shapes: one axis off by one, in the last array argument that shares the symbol
    carriers: dict[str, list[str]] = {}
    for path, a in arrays.items():
        for s in dict.fromkeys(a.axes):
            carriers.setdefault(s, []).append(path)
    for s, paths in carriers.items():
        path, a = paths[-1], arrays[paths[-1]]
        if not (len(paths) > 1 or s in a.shared) or not _wants(a, "shape"):
            continue
        i = len(a.axes) - 1 - a.axes[::-1].index(s)  # its last occurrence
        label = f"{s}-not-square" if a.axes.count(s) > 1 else f"{s}-off-by-one"
        names = tuple(dict.fromkeys(n for p in paths for n in _arg_names(p)))
        add(f"{path}-{label}", "shape", path, _mismatch(path, i, len(a.axes)), names)

    # empty inputs
    size_hypers = [p for p, h in spec.args.items()
                   if isinstance(h, S.Hyper) and any(lbl.startswith("above-") for lbl, _ in h.bad)]
    for s in spec.empty:
        names = tuple(dict.fromkeys([n for p, a in arrays.items() if s in a.axes for n in _arg_names(p)]
                                    + size_hypers))
        add(f"{s}=0", "empty", s, lambda v, s=s: _empty(v, spec, s), names)

    # hyperparameters, dtypes, axes, non-PSD kernels
    for path, h in spec.args.items():
        if not isinstance(h, S.Hyper):
            continue
        kind = {"hyper": "hyper", "dtype": "dtype-arg", "axis": "axis", "psd": "psd"}[h.kind]
        for label, value in h.bad:
            add(f"{path}-{label}", kind, path, lambda v, p=path, x=value: set_path(v, p, x), _arg_names(path))

    # meshes
    if spec.mesh:
        add("mesh_axis-missing", "mesh", "mesh_axis",
            lambda v: S.replace(v, mesh=S._mesh_1d(), mesh_axis="nope"), ("mesh_axis",))
        add("mesh-2d", "mesh", "mesh", lambda v: S.replace(v, mesh=S._mesh_2d()), ("mesh_axis", "mesh"))

    for c in spec.custom:
        add(c.label, "custom", None, c.mutate, c.names, expect=c.expect, fns=c.fns)
    return out


CASES: list[Case] = [c for spec in S.SPECS.values() for c in cases_of(spec)]
assert len({c.id for c in CASES}) == len(CASES), "duplicate case ids"


# --------------------------------------------------------------------------------------------
# running and classifying


def _leaves(tree) -> list[np.ndarray]:
    out = []
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, bool | str) or leaf is None:
            continue
        if isinstance(leaf, int | float | complex) or hasattr(leaf, "dtype"):
            try:
                arr = np.asarray(leaf)
            except Exception:  # a PRNG key, a sharded object...
                continue
            if arr.dtype.kind in "fciub" or arr.dtype.name == "bfloat16":
                out.append(arr)
    return out


def _finite(leaves) -> bool:
    return all(np.all(np.isfinite(a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)))
               for a in leaves)


def _block(result):
    jax.tree.map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, result)
    return result


def _invoke(spec: S.Spec, values: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _block(spec.invoke(values))


def _status(spec: S.Spec, result) -> int | None:
    if spec.status is not None:
        return spec.status(result)
    st = getattr(result, "status", None)
    if st is None:
        return None
    try:
        return int(np.asarray(st))
    except Exception:
        return None


def _outputs(spec: S.Spec, result):
    return spec.outputs(result) if spec.outputs is not None else result


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.complex128), b.astype(np.complex128)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _names_arg(msg: str, names: tuple[str, ...]) -> bool:
    return any(f"`{n}`" in msg or re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", msg) for n in names)


def classify_error(case: Case, e: BaseException) -> tuple[str, str]:
    msg = str(e)
    text = f"{type(e).__name__}: {msg}"
    from kjax._src.errors import KjaxError, KjaxTypeError

    is_kjax = isinstance(e, KjaxError | KjaxTypeError) or msg.startswith("kjax.")
    if not is_kjax:
        return FOREIGN, text
    fns = (case.spec.name, *case.spec.fns, *case.fns)
    if not any(re.search(re.escape(f) + r"(?![\w])", msg) for f in fns):  # linear_attention is not .._step
        return MISNAMED, f"does not name {case.spec.name}: {text}"
    if case.names and not _names_arg(msg, case.names):
        return MISNAMED, f"does not name {' / '.join(f'`{n}`' for n in case.names)}: {text}"
    return OK, text


def _same(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    """Equal up to ``tol`` (relative, Frobenius) with NaN / inf in the same places."""
    a, b = a.astype(np.complex128), b.astype(np.complex128)
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not np.array_equal(fa, fb) or not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    if not np.array_equal(a[~fa & ~np.isnan(a)], b[~fb & ~np.isnan(b)]):
        return False
    return _rel_err(a[fa], b[fb]) <= tol if fa.any() else True


_BASE: dict[str, list[np.ndarray]] = {}


def base_leaves(spec: S.Spec) -> list[np.ndarray]:
    """The output arrays of the spec's valid call (computed once per process)."""
    if spec.name not in _BASE:
        _BASE[spec.name] = _leaves(_outputs(spec, _invoke(spec, spec.values())))
    return _BASE[spec.name]


def _lost_float(leaves: list[np.ndarray], ref: list[np.ndarray]) -> bool:
    """An output that is floating in ``ref`` came back as an integer / bool array."""
    return len(leaves) == len(ref) and any(
        a.dtype.kind in "iub" and b.dtype.kind not in "iub" for a, b in zip(leaves, ref, strict=True))


#: cases where the input itself is wrong, so accepting it is SILENT whatever the output
_MUST_REJECT = ("rank", "shape", "hyper", "axis", "dtype-arg", "mesh")


def classify_result(case: Case, result, values: dict) -> tuple[str, str]:
    spec = case.spec
    status = _status(spec, result)
    if status not in (None, 0):
        return OK, f"status {status}"
    leaves = _leaves(_outputs(spec, result))
    finite = _finite(leaves)
    kind = case.kind
    nonfinite = "" if finite else "; the output is non-finite"
    if kind in ("nan", "inf"):
        if spec.args[case.arg].nan == "error":
            return SILENT, f"{kind} input accepted (documented: an error or a status){nonfinite}"
        if not finite:
            return OK, "propagated"
        if kind == "nan":
            return SILENT, "NaN input swallowed: the output is finite"
        return OK, "finite output for an infinite input"
    if kind in _MUST_REJECT:
        return SILENT, f"accepted ({kind}){nonfinite}"
    if kind in ("dtype", "lowp") and case.reference is None:
        if kind == "dtype" and case.id.endswith("-complex128"):  # the dtype policy rejects complex values
            return SILENT, f"complex input accepted{nonfinite}"
        if kind == "dtype" and _lost_float(leaves, base_leaves(spec)):
            return SILENT, f"integer result {[a.dtype.name for a in leaves]} (the valid call gives float)"
        return (OK, "finite") if finite else (SILENT, f"non-finite output from a {case.id.rsplit('-', 1)[1]} input")
    if kind in ("dtype", "lowp"):
        try:
            ref = _leaves(_outputs(spec, _invoke(spec, case.reference(values))))
        except Exception:
            ref = None
        if ref is None:
            return (OK, "finite (the float64 call fails)") if finite else (
                SILENT, "non-finite output (the float64 call fails)")
        if len(ref) != len(leaves) or any(a.shape != b.shape for a, b in zip(leaves, ref, strict=True)):
            return SILENT, "result shapes differ from the float64 call on the same values"
        if _lost_float(leaves, ref):
            return SILENT, f"integer result {[a.dtype.name for a in leaves]} (the float64 call gives float)"
        tol = 1e-6 if kind == "dtype" else 5e-2
        if not all(_same(a, b, tol) for a, b in zip(leaves, ref, strict=True)):
            errs = [_rel_err(a, b) for a, b in zip(leaves, ref, strict=True)]
            return SILENT, f"result differs from the float64 call on the same values (rel err {max(errs):.2g})"
        return OK, "promoted" if kind == "dtype" else "computed in higher precision"
    if kind == "psd":
        if spec.psd_ok is not None and spec.psd_ok(result):
            return OK, "documented result"
        if not finite:
            return SILENT, "non-finite output from a non-PSD input"
        if spec.psd_status:
            return SILENT, "non-PSD input accepted with status 0"
        return OK, "finite result (jitter / clipping)"
    if not finite:
        return SILENT, f"non-finite output from finite input ({kind} case)"
    if kind == "empty":
        if case.arg in spec.empty_error:  # case.arg is the emptied symbol
            return SILENT, "empty input accepted (documented: an error)"
        return OK, "finite (empty) result"
    if kind == "custom" and case.expect == "finite":
        return OK, "finite result"
    return SILENT, f"accepted ({kind})"


def run_case(case: Case) -> tuple[str, str]:
    values = case.spec.values()
    try:
        new = case.mutate(values)
    except Exception as e:  # a spec bug, not a library outcome
        raise AssertionError(f"cannot build the bad input for {case.id}: {e!r}") from e
    try:
        result = _invoke(case.spec, new)
    except Exception as e:
        return classify_error(case, e)
    return classify_result(case, result, new)


def _short(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


# --------------------------------------------------------------------------------------------
# the tests


def _enumerate_public() -> dict[str, object]:
    import importlib
    import inspect

    out = {}
    for mod_name in S.PILLARS:
        mod = importlib.import_module(mod_name)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.ismodule(obj):
                continue  # a sub-pillar, enumerated on its own
            out[f"{mod_name}.{name}"] = obj
    return out


def test_every_public_callable_has_a_spec():
    public = _enumerate_public()
    missing = sorted(n for n in public if n not in S.SPECS and n not in S.EXEMPT)
    stale = sorted(n for n in list(S.SPECS) + list(S.EXEMPT) if n not in public)
    assert not missing, f"public callables without a bad-input spec (add one to tests/bad_input/specs.py): {missing}"
    assert not stale, f"specs / exemptions for names that are no longer public: {stale}"


def check_valid(spec: S.Spec) -> str | None:
    """Run the spec's own valid call: ``None`` when it works and is finite, else the problem."""
    try:
        result = _invoke(spec, spec.values())
    except Exception as e:
        return f"{type(e).__name__}: {_short(str(e))}"
    status = _status(spec, result)
    _BASE[spec.name] = leaves = _leaves(_outputs(spec, result))
    if status not in (None, 0):
        return f"status {status}"
    if not _finite(leaves):
        return "non-finite output"
    return None


# Each spec's valid call comes right before its bad inputs, in one parametrised test: pytest-xdist
# hands out consecutive items in chunks, so a spec's cases mostly run on the worker that compiled
# its valid call (two separate test functions would send them to different workers).
ITEMS: list[S.Spec | Case] = []
for _spec in S.SPECS.values():
    ITEMS.append(_spec)
    ITEMS.extend(c for c in CASES if c.spec is _spec)


@pytest.mark.parametrize("item", ITEMS, ids=[f"{i.name}-valid" if isinstance(i, S.Spec) else i.id for i in ITEMS])
def test_bad_input(item, record_property):
    """A spec's valid call works (otherwise its cases mean nothing), or one bad input is answered."""
    if isinstance(item, S.Spec):
        problem = check_valid(item)
        _report(record_property, f"{item.name}-valid", item, "VALID" if problem is None else "BROKEN",
                problem or "")
        if problem is not None:
            _fail_or_xfail(f"{item.name}-valid", f"the valid call of {item.name} fails: {problem}")
        return
    try:
        base_leaves(item.spec)
    except Exception as e:  # the spec's valid call fails: its item says so, its cases mean nothing
        reason = f"the valid call of {item.spec.name} fails: {type(e).__name__}: {_short(str(e), 200)}"
        _report(record_property, item.id, item.spec, "SKIPPED", reason)
        pytest.skip(reason)
    outcome, message = run_case(item)
    _report(record_property, item.id, item.spec, outcome, _short(message))
    if outcome != OK:
        _fail_or_xfail(item.id, f"{outcome}: {_short(message, 600)}")


def _report(record_property, case_id, spec, outcome, message):
    known = case_id in S.KNOWN_FAILURES
    record_property("bad_input", json.dumps({"id": case_id, "pillar": spec.pillar, "outcome": outcome,
                                             "message": message, "known": known}))


def _fail_or_xfail(case_id: str, text: str):
    if case_id in S.KNOWN_FAILURES and not STRICT:
        pytest.xfail(f"known: {text}")
    pytest.fail(text, pytrace=False)

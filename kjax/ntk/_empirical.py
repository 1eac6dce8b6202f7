"""Empirical neural tangent kernels: the neural-tangents API, dispatched to three implementations.

Notation: ``f(params, x)`` returns an array whose axis 0 is the batch axis (as in neural-tangents,
"output axes" count the batch axis as axis 0). For a pair of batches the full kernel is

    Theta[n1, ..., n2, ...] = sum_theta  d f(x1)[n1, ...] / d theta  .  d f(x2)[n2, ...] / d theta

and ``trace_axes`` / ``diagonal_axes`` average / diagonalise pairs of output axes exactly as
``neural_tangents.empirical_ntk_fn`` does, with the result's axes zipped: ``(N1, N2, X1, X2, ...)``
(:mod:`kjax.ntk._axes`).

This is the API module: it checks arguments, builds the model (:mod:`kjax.ntk._model`), picks an
implementation (:mod:`kjax.ntk._implementations`) by the cost model among those whose estimated
memory fits, and raises before running when none fits (:mod:`kjax.ntk._memory`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src import dispatch
from kjax._src.errors import fail
from kjax.ntk import _memory
from kjax.ntk._axes import (
    canonical_axes,
    check_batch_pairing,
    contract_outputs,
    result_shape,
)
from kjax.ntk._implementations import (
    IMPLEMENTATIONS,
    contract_jacobians,
    implementation_costs,
    implementation_memory,
    jacobian_features,
    structured_plan,
)
from kjax.ntk._independence import rows_independent
from kjax.ntk._model import (
    Model,
    all_none,
    batch_first,
    check_x_pair,
    check_x_tree,
    make_model,
    out_shape_full,
    single_output,
    split_kwargs,
    split_vmap_axes,
    vmap_triple,
)

#: neural-tangents' ``NtkImplementation`` integers, accepted as aliases
NT_IMPLEMENTATIONS = {0: None, 1: "jacobian_contraction", 2: "ntk_vector_products", 3: "structured"}


def canonical_implementation(fn: str, implementation: Any) -> Any:
    """Map neural-tangents' integers (and its enum) to kjax's names."""
    if isinstance(implementation, bool):
        fail(fn, "implementation", "be None, a name or a neural-tangents integer", implementation)
    if isinstance(implementation, int | np.integer) and int(implementation) in NT_IMPLEMENTATIONS:
        return NT_IMPLEMENTATIONS[int(implementation)]
    value = getattr(implementation, "value", None)
    if isinstance(value, int) and value in NT_IMPLEMENTATIONS:
        return NT_IMPLEMENTATIONS[value]
    return implementation


def itemsize_of(model: Model, x) -> int:
    """Bytes per kernel entry: the output's dtype, at least float32."""
    xi = jax.tree.map(lambda a: a[0], x) if model.vmap else x
    dtype = jax.eval_shape(model.apply, model.leaves, xi).dtype
    return max(np.dtype(dtype).itemsize, 4)


# ------------------------------------------------------------------------------ dispatch


@dataclasses.dataclass(frozen=True)
class Choice:
    """The implementation picked for one pair of batches, and its estimated peak memory."""

    impl: dispatch.Implementation
    plan_bundle: Any  # (plan, closed jaxpr, leaf index) of the structured implementation, or None
    memory: dict[str, float]  # estimated bytes per estimated implementation
    itemsize: int  # bytes per kernel entry

    @property
    def need(self) -> float:
        return self.memory[self.impl.name]


def choose(model: Model, x1, x2, *, trace: tuple, diag: tuple, implementation,
           out_full: tuple, fn: str, free: float | None = None, n2: int | None = None) -> Choice:
    """Select the implementation: the named one, or (``None``) the cheapest in flops among those
    whose estimated memory is at most ``free`` (all of them when none fits or ``free`` is None).
    ``n2``: the size of axis 0 of ``f(x2)`` (default: that of ``x2``'s leaves)."""
    n1 = out_full[0]
    n2 = n2 or (n1 if x2 is None else jax.tree.leaves(x2)[0].shape[0])
    example = tuple(out_full[1:])
    out_shape = example if model.vmap else tuple(out_full)
    itemsize = itemsize_of(model, x1)
    bundle = None

    def auto_choice(ok):
        nonlocal bundle
        bundle = structured_plan(model, x1)
        costs = implementation_costs(model, bundle[0], n1, n2, out_shape, trace, diag)
        mem = implementation_memory(model, bundle[0], n1, n2, example, trace, diag, itemsize)
        fits = [im for im in ok if free is None or mem[im.name] <= free] or ok
        return min(fits, key=lambda im: costs.get(im.name, math.inf))

    impl = dispatch.select(fn, implementation, IMPLEMENTATIONS, chooser=auto_choice)
    if impl.name == "structured" and bundle is None:
        bundle = structured_plan(model, x1)
    memory = implementation_memory(model, bundle[0] if bundle else None, n1, n2, example, trace,
                                   diag, itemsize)
    return Choice(impl, bundle, memory, itemsize)


def ntk_of(model: Model, x1, x2, *, trace: tuple, diag: tuple, out_full: tuple, choice: Choice,
           precision=jax.lax.Precision.HIGHEST, n2: int | None = None) -> jax.Array:
    """The kernel of ``model`` between two batches (NT layout) with the chosen implementation."""
    n1 = out_full[0]
    n2 = n2 or (n1 if x2 is None else jax.tree.leaves(x2)[0].shape[0])
    size = int(np.prod([out_full[i] for i in trace])) if trace else 1
    return choice.impl.fn(model, x1, x2, trace=trace, diag=diag, out_ndim=len(out_full),
                          precision=precision, n1=n1, n2=n2,
                          out_shape=out_full[1:] if model.vmap else out_full, size=size,
                          plan_bundle=choice.plan_bundle)


def mode_of(trace: tuple, diag: tuple, ndim: int) -> str | None:
    """The :func:`kjax.ntk.empirical_ntk` mode with these axes, if there is one."""
    rest = tuple(range(1, ndim))
    return {((), ()): "full", (rest, ()): "trace", ((), rest): "diagonal"}.get((trace, diag))


def dataset_block_memory(model: Model, implementation: str | None, b1: int, b2: int,
                         example: tuple, trace: tuple, diag: tuple, itemsize: int,
                         plan) -> float:
    """Estimated bytes of one ``[b1, b2]`` block of :func:`kjax.ntk.empirical_ntk` (vmapped
    model): the named implementation's, or the least of them for ``None``."""
    mem = implementation_memory(model, plan, b1, b2, example, trace, diag, itemsize)
    if isinstance(implementation, str) and implementation in mem:
        return mem[implementation]
    return min(mem.values())


def _ntk_fn_advice(fn, f, params, kw, params_filter, x1, x2, trace, diag, out_full, itemsize,
                   implementation, out_full2):
    """What to tell a user whose empirical_ntk_fn call does not fit: blocks that do."""
    ndim = len(out_full)
    mode = mode_of(trace, diag, ndim)
    n1, n2 = out_full[0], out_full2[0]
    shape = result_shape(out_full, out_full2, trace, diag)
    result = float(np.prod(shape)) * itemsize

    def advice(free):
        try:
            return _blocks_advice(free)
        except Exception:  # the advice must not hide the memory error (e.g. f mixes examples)
            return ("compute it on fewer examples at a time (slices of x1 and x2), or trace more "
                    "output axes (`trace_axes`)")

    def _blocks_advice(free):
        if mode is None:
            return ("compute it on fewer examples at a time (slices of x1 and x2), or trace more "
                    "output axes (`trace_axes`)")
        model = make_model(fn, f, params, kw, 0, params_filter)
        plan = structured_plan(model, x1)[0]
        budget = _memory.HEADROOM * free - 3 * result

        def need(b):
            return dataset_block_memory(model, implementation, min(b, n1), min(b, n2),
                                        tuple(out_full[1:]), trace, diag, itemsize, plan)

        b = _memory.largest_fitting(need, max(n1, n2), budget)
        call = "kjax.ntk.empirical_ntk(f, params, x1, x2, mode={!r}, block_size={}{})"
        if b >= 1:
            text = "compute it in blocks with " + call.format(mode, b, "")
        else:
            b = max(1, _memory.largest_fitting(need, max(n1, n2), _memory.HEADROOM * free))
            text = ("its result alone does not fit: stream it to host memory or disk with "
                    + call.format(mode, b, ", out=np.lib.format.open_memmap(path, mode='w+', "
                                  f"dtype=..., shape={shape})"))
        return text + " (f must treat examples independently)"

    return shape, advice


def per_output(fn: str, f: Callable, make: Callable) -> Callable:
    """NT's pytree outputs: when ``f`` returns a pytree of arrays, the kernel of each leaf, in the
    output's tree structure. ``make(f_leaf, i)`` builds the kernel function of a single-array
    ``f`` (of output leaf ``i``; None: the only output)."""
    single = make(f, None)

    def kernel(x1, x2, params, **apply_kwargs):
        x2 = None if all_none(x2) else x2
        kw1, _ = split_kwargs(apply_kwargs)
        try:
            out = jax.eval_shape(lambda p, x: f(p, x, **kw1), params, x1)
        except Exception:  # noqa: BLE001 -- let the single-output path report the error
            return single(x1, x2, params, **apply_kwargs)
        leaves, treedef = jax.tree.flatten(out)
        if len(leaves) == 1 and treedef.num_nodes == 1:
            return single(x1, x2, params, **apply_kwargs)
        if not leaves:
            fail(fn, "f", "return at least one array", "an empty pytree")
        kernels = [make(lambda p, x, i=i, **kw: jax.tree.leaves(f(p, x, **kw))[i], i)(
            x1, x2, params, **apply_kwargs) for i in range(len(leaves))]
        return jax.tree.unflatten(treedef, kernels)

    return kernel


#: the default ``vmap_axes``: decided per call from the jaxpr of ``f`` (see resolve_vmap_axes)
AUTO = "auto"
_log = logging.getLogger("kjax.ntk")


def _signature(tree) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(a), str(jnp.result_type(a))) for a in leaves)


_DECISIONS: dict = {}


def _independent(fn: str, f: Callable, params, x) -> tuple[bool, str]:
    """:func:`rows_independent` of ``f`` on abstract ``params`` and ``x``, cached per ``(f,
    shapes)`` when ``f`` is hashable (the analysis traces ``f`` once per signature)."""
    def run():
        spec = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)), t)
        return rows_independent(lambda p, xx: single_output(fn, f(p, xx)), spec(params), spec(x))

    try:
        key = (f, _signature(params), _signature(x))
        hash(key)
    except TypeError:
        return run()
    if key not in _DECISIONS:
        if len(_DECISIONS) > 512:
            _DECISIONS.clear()
        _DECISIONS[key] = run()
    return _DECISIONS[key]


def resolve_vmap_axes(fn: str, f: Callable, vmap_axes, params, x1, x2, apply_kwargs: dict):
    """``vmap_axes`` itself, or for ``"auto"``: 0 when the jaxpr of ``f`` shows that every output
    row depends only on its own input row (:func:`kjax.ntk._independence.rows_independent`),
    else None (the whole-batch path, exact for any model). Keyword arguments, which may carry
    per-example data, keep the whole-batch path. The decision is logged on ``kjax.ntk`` (INFO)."""
    if not (isinstance(vmap_axes, str)):
        return vmap_axes
    if vmap_axes != AUTO:
        fail(fn, "vmap_axes", "be 'auto' (the default), None, an int or an (in, out, kwargs) triple",
             repr(vmap_axes))
    leading = [{np.shape(a)[0] if np.ndim(a) else None for a in jax.tree.leaves(x)}
               for x in (x1, x2) if x is not None]
    try:
        if apply_kwargs:
            ok, why = False, "keyword arguments for f may carry per-example data"
        elif any(len(s) != 1 or None in s for s in leading):
            ok, why = False, "the inputs' arrays have no common leading batch axis"
        else:
            ok, why = _independent(fn, f, params, x1)
            if ok and x2 is not None:
                ok, why = _independent(fn, f, params, x2)
    except Exception as e:  # noqa: BLE001 -- f fails on these inputs: the general path reports it
        ok, why = False, f"f could not be traced ({type(e).__name__})"
    _log.info("%s: vmap_axes=%s (%s)", fn, 0 if ok else None,
              "examples are independent in f's jaxpr" if ok else why)
    return 0 if ok else None


def make_ntk_fn(fn: str, f: Callable, trace_axes, diagonal_axes, vmap_axes, implementation, *,
                params_filter: Callable[[str], bool] | None = None) -> Callable:
    """:func:`empirical_ntk_fn` whose errors name ``fn`` (the public function the user called);
    an ``f`` returning a pytree gets one kernel per output leaf, as in NT."""
    return per_output(fn, f, lambda g, i: _make_ntk_fn(
        fn, g, trace_axes, diagonal_axes, _leaf_vmap_axes(vmap_axes, i), implementation,
        params_filter=params_filter))


def _leaf_vmap_axes(vmap_axes, i: int | None):
    """NT's ``vmap_axes`` (``(in_axes, out_axes, kwargs_axes)``, or one value for both ``in_axes``
    and ``out_axes``) for a pytree output: ``out_axes`` is a pytree like the output; the kernel of
    output leaf ``i`` gets its leaf (``i`` None: a single output, whose ``out_axes`` may be a
    one-leaf pytree). Returned as a triple with an int ``out_axes`` where one is found."""
    if vmap_axes is None or isinstance(vmap_axes, int | str):
        return vmap_axes
    in_axes, out_axes, kw_axes = split_vmap_axes(vmap_axes)
    if isinstance(out_axes, int):
        return vmap_axes
    leaves = jax.tree.leaves(out_axes)
    if i is None:
        return (in_axes, leaves[0], kw_axes) if len(leaves) == 1 else vmap_axes
    return (in_axes, leaves[i], kw_axes) if i < len(leaves) else vmap_axes


@dataclasses.dataclass(frozen=True)
class Prepared:
    """One call's inputs made batch-first (see :func:`prepare`)."""

    model1: Model
    model2: Model | None  # None: x2 is evaluated by model1 (the same keyword arguments)
    x1: Any
    x2: Any
    out1: tuple  # shape of the model's output for x1 (canonical: batch first when vmapped)
    out2: tuple
    trace: tuple  # canonical trace / diagonal axes
    diag: tuple
    order: tuple  # the output's axes in canonical order (order[j]: actual axis of canonical j)

    def to_nt(self, k: jax.Array) -> jax.Array:
        """A canonical result with its axis groups in the output's own axis order (NT's)."""
        if self.order == tuple(range(len(self.order))):
            return k
        groups, at = {}, 0
        for j, i in enumerate(self.order):  # canonical j is actual axis i
            if j in self.trace:
                continue
            size = 1 if j in self.diag else 2
            groups[i], at = tuple(range(at, at + size)), at + size
        return jnp.transpose(k, [a for i in sorted(groups) for a in groups[i]])


def on_x2(fn: str, x1, x2, thunk: Callable):
    """``thunk()`` (``f`` on ``x2``); when ``f`` fails there and ``x2``'s leaves differ from
    ``x1``'s beyond axis 0, the error names ``x2`` (the usual mistake)."""
    try:
        return thunk()
    except (TypeError, ValueError) as e:
        s1 = [np.shape(a)[1:] for a in jax.tree.leaves(x1)]
        s2 = [np.shape(a)[1:] for a in jax.tree.leaves(x2)]
        if s1 == s2:
            raise
        fail(fn, "x2", f"have the per-example shape of `x1` {s1} (f fails on it: "
             f"{type(e).__name__}: {str(e).splitlines()[0][:160]})", f"{s2}")


def whole_batch_axes(fn: str, out1: tuple, out2: tuple, trace_axes, diagonal_axes):
    """NT's kernel of whole-batch outputs of shapes ``out1`` / ``out2`` zips all their axes: the
    canonical trace / diagonal axes, checked (same rank, equal sizes where paired)."""
    if not out1:
        fail(fn, "f", "return an array with at least one axis", "a scalar")
    trace, diag = canonical_axes(fn, trace_axes, diagonal_axes, len(out1))
    if 0 in out1 or 0 in out2:
        fail(fn, "x1" if 0 in out1 else "x2", "give a non-empty output of f",
             f"output shape {out1 if 0 in out1 else out2}")
    check_batch_pairing(fn, trace, diag, out1[0], out2[0])
    if len(out2) != len(out1) or any(out1[i] != out2[i] for i in trace + diag):
        fail(fn, "x2", f"give an output of f of rank {len(out1)} with the sizes of f(x1) "
             f"{out1} on the traced / diagonal axes {trace + diag}", f"shape {out2}")
    return trace, diag


def prepare(fn: str, f: Callable, params, x1, x2, kw1: dict, kw2: dict, axes, trace_axes,
            diagonal_axes, params_filter) -> Prepared:
    """Models and inputs for one kernel, as neural-tangents reads ``vmap_axes``.

    ``axes`` None (whole batch): any pytrees of inputs; the kernel zips the output's axes, so
    ``f(x2)`` must have ``f(x1)``'s rank and sizes on the traced / diagonal axes. Otherwise the
    inputs' batch axes (``in_axes``, a pytree prefix of ``x``) are moved first, keywords named in
    ``kwargs_axes`` travel with the examples, and the output's batch axis is ``out_axes``: the
    kernel is computed batch-first and :meth:`Prepared.to_nt` puts its axes back in NT's order."""
    if axes is None:
        check_x_tree(fn, x1, x2)
        model1 = make_model(fn, f, params, kw1, None, params_filter)
        same = kw1 is kw2 or all(kw1[k] is kw2[k] for k in kw1)
        model2 = None if same else make_model(fn, f, params, kw2, None, params_filter)
        out1 = out_shape_full(model1, x1)
        out2 = out1 if x2 is None else on_x2(fn, x1, x2, lambda: out_shape_full(model2 or model1,
                                                                                  x2))
        trace, diag = whole_batch_axes(fn, out1, out2, trace_axes, diagonal_axes)
        return Prepared(model1, model2, x1, x2, out1, out2, trace, diag, tuple(range(len(out1))))
    in_axes, out_axes, kw_axes = vmap_triple(fn, axes, any_out_axis=True)
    batched = tuple(k for k in kw_axes if k in kw1 and kw1[k] is not None)

    def examples(arg, x, kw):
        x = batch_first(fn, arg, x, in_axes)
        if not batched:
            return x
        try:
            kwb = {k: jnp.moveaxis(jnp.asarray(kw[k]), kw_axes[k], 0) for k in batched}
        except (ValueError, TypeError) as e:
            fail(fn, "vmap_axes", "have kwargs_axes within the rank of the keyword arguments",
                 f"{kw_axes!r}: {str(e).splitlines()[0][:160]}")
        return x, kwb

    X1 = examples("x1", x1, kw1)
    X2 = None if x2 is None else examples("x2", x2, kw2)
    n1, n2 = check_x_pair(fn, X1, X2)
    closed1 = {k: v for k, v in kw1.items() if k not in batched}
    closed2 = {k: v for k, v in kw2.items() if k not in batched}
    model1 = make_model(fn, f, params, closed1, axes, params_filter, any_out_axis=True,
                        batched_kwargs=batched)
    same = all(closed1[k] is closed2[k] for k in closed1)
    model2 = None if same else make_model(fn, f, params, closed2, axes, params_filter,
                                          any_out_axis=True, batched_kwargs=batched)
    out1 = out_shape_full(model1, X1)
    nd = len(out1)
    a = out_axes % nd
    order = (a, *(i for i in range(nd) if i != a))
    t, d = canonical_axes(fn, trace_axes, diagonal_axes, nd)
    trace = tuple(sorted(order.index(i) for i in t))
    diag = tuple(sorted(order.index(i) for i in d))
    check_batch_pairing(fn, trace, diag, n1, n2)
    return Prepared(model1, model2, X1, X2, out1, (n2, *out1[1:]), trace, diag, order)


def _make_ntk_fn(fn: str, f: Callable, trace_axes, diagonal_axes, vmap_axes, implementation, *,
                 params_filter: Callable[[str], bool] | None = None) -> Callable:
    implementation = canonical_implementation(fn, implementation)

    def ntk(x1, x2, params, **apply_kwargs):
        kw1, kw2 = split_kwargs(apply_kwargs)
        if x2 is None:
            # a pair (v1, None) means x1's value for both (NT's rng=(key, None)); other pairs
            # give the kernel between x1 under v1 and x1 under v2 (identity: values may be arrays)
            kw2 = {k: kw1[k] if kw2[k] is None else kw2[k] for k in kw1}
            if any(kw1[k] is not kw2[k] for k in kw1):
                x2 = x1
        axes = resolve_vmap_axes(fn, f, vmap_axes, params, x1, x2, apply_kwargs)
        p = prepare(fn, f, params, x1, x2, kw1, kw2, axes, trace_axes, diagonal_axes,
                    params_filter)
        model1, X1, X2, out_full, trace, diag = p.model1, p.x1, p.x2, p.out1, p.trace, p.diag
        choice = choose(model1, X1, X2, trace=trace, diag=diag,
                        implementation=implementation if p.model2 is None
                        else "jacobian_contraction",
                        out_full=out_full, fn=fn, free=_memory.available_bytes(), n2=p.out2[0])
        shape, advice = _ntk_fn_advice(fn, f, params, kw1, params_filter, X1, X2, trace, diag,
                                       out_full, choice.itemsize, implementation, p.out2)
        _memory.check_memory(fn, choice.need, f"the kernel {list(shape)} (implementation "
                             f"{choice.impl.name!r})", advice)
        if p.model2 is None:
            return p.to_nt(ntk_of(model1, X1, X2, trace=trace, diag=diag, out_full=out_full,
                                  choice=choice, n2=p.out2[0]))
        # different kwargs for x1 and x2: contract Jacobians of two models
        j1 = jacobian_features(model1, X1)
        j2 = jacobian_features(p.model2, X2)
        total = int(np.prod([out_full[i] for i in trace])) if trace else 1
        return p.to_nt(sum(contract_jacobians(a, b, len(out_full), trace, diag, model1.vmap,
                                              jax.lax.Precision.HIGHEST)
                           for a, b in zip(j1, j2, strict=True)) / total)

    return ntk


def make_nngp_fn(fn: str, f: Callable, trace_axes, diagonal_axes) -> Callable:
    """:func:`empirical_nngp_fn` whose errors name ``fn`` (the public function the user called);
    an ``f`` returning a pytree gets one kernel per output leaf, as in NT."""
    return per_output(fn, f, lambda g, i: _make_nngp_fn(fn, g, trace_axes, diagonal_axes))


def _make_nngp_fn(fn: str, f: Callable, trace_axes, diagonal_axes) -> Callable:

    def nngp(x1, x2, params, **apply_kwargs):
        kw1, kw2 = split_kwargs(apply_kwargs)
        check_x_tree(fn, x1, x2)
        o1 = single_output(fn, f(params, x1, **kw1))
        o2 = o1 if x2 is None else on_x2(fn, x1, x2,
                                         lambda: single_output(fn, f(params, x2, **kw2)))
        trace, diag = whole_batch_axes(fn, o1.shape, o2.shape, trace_axes, diagonal_axes)
        return contract_outputs(o1, o2, trace, diag)

    return nngp


# -------------------------------------------------------------------------- public NT API


def choose_implementation(f, params, x1, x2=None, *, trace_axes=(-1,), diagonal_axes=(),
                          vmap_axes=0, **apply_kwargs) -> tuple[str, dict[str, float]]:
    """The implementation ``implementation=None`` picks, and the cost model's estimates (flops).

    The estimates follow Novak et al. (2022, Table 1): Jacobians and their contraction, vector
    products, and structured derivatives (taps of dense / convolutional layers). The memory guard
    of :func:`empirical_ntk_fn` may pass over the cheapest when its estimated memory does not fit.

    Args:
      f: ``f(params, x, **apply_kwargs) -> [N, ...]``.
      params: pytree of parameters.
      x1: inputs ``[n1, ...]``.
      x2: inputs ``[n2, ...]`` or None for ``x1``.
      trace_axes: as in :func:`empirical_ntk_fn`.
      diagonal_axes: as in :func:`empirical_ntk_fn`.
      vmap_axes: as in :func:`empirical_ntk_fn` (default 0: examples independent).
      **apply_kwargs: keyword arguments for ``f``.

    Returns:
      ``(name, {name: estimated flops})``.

    Raises:
      ValueError: axes out of range, an empty batch, mismatched ``x1`` / ``x2``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import choose_implementation
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> p = {"w1": jnp.ones((3, 64)), "w2": jnp.ones((64, 2))}
      >>> choose_implementation(f, p, jnp.ones((8, 3)))[0]
      'structured'
    """
    fn = "kjax.ntk.choose_implementation"
    p = prepare(fn, f, params, x1, x2, apply_kwargs, apply_kwargs, vmap_axes, trace_axes,
                diagonal_axes, None)
    model, out_full = p.model1, p.out1
    plan, _, _ = structured_plan(model, p.x1)
    costs = implementation_costs(model, plan, out_full[0], p.out2[0],
                                 out_full[1:] if model.vmap else out_full, p.trace, p.diag)
    return min(costs, key=costs.get), costs


def empirical_ntk_fn(
    f: Callable,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = AUTO,
    implementation: None | str | int | Sequence[str] = None,
    *,
    params_filter: Callable[[str], bool] | None = None,
) -> Callable:
    r"""The empirical NTK of ``f``, with neural-tangents' signature, semantics and output layout.

    .. math::
       \Theta_\theta(x_1, x_2) = \frac{\partial f(\theta, x_1)}{\partial\theta}
       \frac{\partial f(\theta, x_2)}{\partial\theta}^\top

    Output axes (axis 0 is the batch axis) listed in ``trace_axes`` are averaged over, those in
    ``diagonal_axes`` are kept once (only the diagonal), and the other axes come in pairs, so for
    ``f(params, x): [N, O]`` the default gives ``[N1, N2]`` and ``trace_axes=()`` gives
    ``[N1, N2, O, O]``. A neural-tangents user migrates by changing the import.

    The batch axis 0 in ``trace_axes`` or ``diagonal_axes`` is treated like any other output
    axis, as neural-tangents 0.6.5 does: it pairs ``x1[i]`` with ``x2[i]`` (so both batches need
    the same size), and ``trace_axes=(0,)`` gives ``mean_i Theta(x1[i], x2[i])``, ``[O, O]`` for
    ``[N, O]`` outputs, not a kernel between the two batches.

    Before it runs, the call's peak memory is estimated from shapes for the chosen implementation
    (``implementation=None`` takes the cheapest whose estimate fits); when even that exceeds the
    free memory it raises at once, naming a :func:`kjax.ntk.empirical_ntk` block size that fits.

    Args:
      f: ``f(params, x, **kwargs) -> [N, ...]``, a single array; ``params`` any pytree. Integer
        leaves of ``params`` are held fixed (not differentiated).
      trace_axes: output axes to average the kernel over.
      diagonal_axes: output axes on which only the diagonal is kept.
      vmap_axes: ``"auto"`` (the default, a kjax extension): kjax reads the jaxpr of ``f`` and
        takes the per-example path (``0``) when every output row provably depends only on its
        own input row, else the whole-batch path (``None``); the choice is logged on the
        ``kjax.ntk`` logger at INFO level (``logging.getLogger("kjax.ntk").setLevel("INFO")``
        shows it, with the reason). ``None`` keeps neural-tangents' meaning: ``f`` is
        differentiated on the whole batch, exact for models that mix examples, such as BatchNorm
        in training mode. An int is the batch axis of ``x`` and of the output (``f`` evaluated
        per example on ``x[i:i+1]``, much faster); or a triple ``(in_axes, out_axes,
        kwargs_axes)`` as in neural-tangents: ``in_axes`` an int or a pytree prefix of ``x``
        (None only where ``x`` has None), ``out_axes`` the batch axis of the output (the kernel's
        axes stay in the output's order, as with ``None``), ``kwargs_axes`` a dict of keyword
        arguments holding one value per example along that axis. With ``None`` the inputs need
        no common batch axis (the kernel zips the output's axes). ``f`` with keyword
        arguments keeps the whole-batch path under ``"auto"``.
      implementation: ``None`` (automatic: the cheapest by the cost model of
        :func:`choose_implementation`), ``"jacobian_contraction"``, ``"ntk_vector_products"``,
        ``"structured"`` (structured derivatives: dense and convolutional layers are contracted
        through their inputs and pre-activation gradients), or neural-tangents' integers 0-3.
      params_filter: optional predicate on parameter paths (``"layers/0/kernel"``) selecting the
        parameters the kernel differentiates (kjax extension).

    Returns:
      ``ntk(x1, x2, params, **kwargs)``; ``x2=None`` means ``x1``. Keyword arguments given as a
      pair ``(kw1, kw2)`` apply their halves to ``x1`` and ``x2`` (as in neural-tangents).

    Raises:
      ValueError: trace or diagonal axes out of range or overlapping, ``f`` returning several
        arrays, an unknown implementation, ``x1``/``x2`` of different feature shapes, an empty
        batch, the batch axis traced or diagonal with batches of different sizes.
      MemoryError: (``kjax.ntk._memory.KjaxMemoryError``, also a ``ValueError``) the estimated
        peak memory exceeds the free memory; the message names a block size that fits.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import empirical_ntk_fn
      >>> def f(p, x):
      ...     return jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> params = {"w1": jax.random.normal(k1, (3, 16)), "w2": jax.random.normal(k2, (16, 2))}
      >>> x = jnp.ones((4, 3))
      >>> empirical_ntk_fn(f, vmap_axes=0)(x, None, params).shape
      (4, 4)
      >>> empirical_ntk_fn(f, trace_axes=())(x, x[:2], params).shape
      (4, 2, 2, 2)

    References:
      Jacot, Gabriel, Hongler, *Neural Tangent Kernel*, NeurIPS 2018; Novak et al., *Fast
      Finite Width Neural Tangent Kernel*, ICML 2022 (the three implementations).
    """
    return make_ntk_fn("kjax.ntk.empirical_ntk_fn", f, trace_axes, diagonal_axes, vmap_axes,
                       implementation, params_filter=params_filter)


def empirical_nngp_fn(
    f: Callable,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
) -> Callable:
    r"""The empirical NNGP kernel of ``f``: the inner product of its outputs, ``f(x1) f(x2)^T``.

    Pass the network up to its last hidden layer (its features) to get the usual empirical NNGP;
    with ``trace_axes`` averaging the feature axis this is ``f(x1) f(x2)^T / width``, the quantity
    that converges to the NNGP kernel as width grows. Same axes conventions as
    :func:`empirical_ntk_fn`.

    Args:
      f: ``f(params, x, **kwargs) -> [N, ...]``.
      trace_axes: output axes averaged over.
      diagonal_axes: output axes on which only the diagonal is kept.

    Returns:
      ``nngp(x1, x2, params, **kwargs)``.

    Raises:
      ValueError: axes out of range or overlapping, ``f`` returning several arrays, an empty
        batch, the batch axis traced or diagonal with batches of different sizes.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import empirical_nngp_fn
      >>> f = lambda p, x: x @ p
      >>> empirical_nngp_fn(f)(jnp.eye(3), None, 2 * jnp.eye(3)).tolist()[0]
      [1.3333333333333333, 0.0, 0.0]
    """
    return make_nngp_fn("kjax.ntk.empirical_nngp_fn", f, trace_axes, diagonal_axes)


_KERNEL_TYPES: dict[tuple[str, ...], type] = {}


def empirical_kernel_type(names: tuple[str, ...]) -> type:
    """NT's ``EmpiricalKernel`` namedtuple with the fields ``names`` (one class per field tuple)."""
    if names not in _KERNEL_TYPES:
        _KERNEL_TYPES[names] = collections.namedtuple("EmpiricalKernel", names)
    return _KERNEL_TYPES[names]


def empirical_kernel_fn(
    f: Callable,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = AUTO,
    implementation: None | str | int | Sequence[str] = None,
) -> Callable:
    r"""neural-tangents' ``empirical_kernel_fn``: ``kernel_fn(x1, x2, get, params, **kwargs)``.

    ``get`` is ``"ntk"``, ``"nngp"`` (the inner product of the outputs of ``f``), any case, or a
    tuple of them, for which NT's ``EmpiricalKernel`` namedtuple is returned; ``get=None`` means
    ``("nngp", "ntk")``. When ``f`` returns a pytree, each kernel is that pytree of per-output
    kernels (a tuple ``get`` gives the pytree of namedtuples, as NT does).

    Args:
      f: ``f(params, x, **kwargs) -> [N, ...]``.
      trace_axes: as in :func:`empirical_ntk_fn`.
      diagonal_axes: as in :func:`empirical_ntk_fn`.
      vmap_axes: as in :func:`empirical_ntk_fn`.
      implementation: as in :func:`empirical_ntk_fn`.

    Returns:
      ``kernel_fn(x1, x2, get, params, **kwargs)``.

    Raises:
      KjaxError: an unknown or repeated ``get``, and the errors of :func:`empirical_ntk_fn`.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import empirical_kernel_fn
      >>> f = lambda p, x: x @ p
      >>> out = empirical_kernel_fn(f)(jnp.eye(2), None, None, jnp.eye(2))
      >>> out._fields, out.ntk.shape
      (('nngp', 'ntk'), (2, 2))
    """
    fn = "kjax.ntk.empirical_kernel_fn"
    fns = {"ntk": make_ntk_fn(fn, f, trace_axes, diagonal_axes, vmap_axes, implementation),
           "nngp": make_nngp_fn(fn, f, trace_axes, diagonal_axes)}

    def kernel_fn(x1, x2, get, params, **kwargs):
        many = not isinstance(get, str)
        gets = ("nngp", "ntk") if get is None else (tuple(get) if many else (get,))
        expected = "be None, 'ntk', 'nngp' (any case) or a non-empty tuple of them"
        if not gets or not all(isinstance(g, str) for g in gets):
            fail(fn, "get", expected, repr(get))
        gets = tuple(g.lower() for g in gets)
        for g in gets:
            if g not in fns:
                fail(fn, "get", expected, repr(get))
        if len(set(gets)) < len(gets):
            fail(fn, "get", "name each kernel once", repr(get))
        x2 = None if all_none(x2) else x2
        check_x_tree(fn, x1, x2)
        out = [fns[g](x1, x2, params, **kwargs) for g in gets]
        if not many:
            return out[0]
        # NT: an ``EmpiricalKernel`` namedtuple (per output leaf when ``f`` returns a pytree)
        nt = empirical_kernel_type(gets)
        return jax.tree.map(lambda *leaves: nt(*leaves), *out)

    return kernel_fn

"""Empirical neural tangent kernels: the neural-tangents API, three implementations, a cost model.

Notation: ``f(params, x)`` returns an array whose axis 0 is the batch axis (as in neural-tangents,
"output axes" count the batch axis as axis 0). For a pair of batches the full kernel is

    Theta[n1, ..., n2, ...] = sum_theta  d f(x1)[n1, ...] / d theta  .  d f(x2)[n2, ...] / d theta

and ``trace_axes`` / ``diagonal_axes`` average / diagonalise pairs of output axes exactly as
``neural_tangents.empirical_ntk_fn`` does, with the result's axes zipped: ``(N1, N2, X1, X2, ...)``.
"""

from __future__ import annotations

import dataclasses
import math
import string
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src import dispatch
from kjax._src.errors import KjaxError, KjaxTypeError, fail
from kjax.ntk import _jaxpr

PyTree = Any

#: neural-tangents' ``NtkImplementation`` integers, accepted as aliases
_NT_INTS = {0: None, 1: "jacobian_contraction", 2: "ntk_vector_products", 3: "structured"}


# -------------------------------------------------------------------------------- arguments


def canonical_implementation(fn: str, implementation: Any) -> Any:
    if isinstance(implementation, bool):
        fail(fn, "implementation", "be None, a name or a neural-tangents integer", implementation)
    if isinstance(implementation, int | np.integer) and int(implementation) in _NT_INTS:
        return _NT_INTS[int(implementation)]
    if hasattr(implementation, "value") and getattr(implementation, "value", None) in _NT_INTS:
        return _NT_INTS[implementation.value]
    return implementation


def canonical_axes(fn: str, trace_axes, diagonal_axes, ndim: int) -> tuple[tuple, tuple]:
    """Normalise and validate trace / diagonal axes against an output of rank ``ndim``."""

    def norm(name, axes):
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        out = []
        for a in axes:
            if isinstance(a, bool) or not isinstance(a, int | np.integer):
                fail(fn, name, "contain Python ints", repr(axes), cls=KjaxTypeError)
            if not -ndim <= a < ndim:
                fail(fn, name, f"be axes of the output of rank {ndim} (in [-{ndim}, {ndim}))",
                     repr(axes))
            out.append(int(a) % ndim)
        if len(set(out)) != len(out):
            fail(fn, name, "not repeat an axis", repr(axes))
        return tuple(sorted(out))

    t, d = norm("trace_axes", trace_axes), norm("diagonal_axes", diagonal_axes)
    if set(t) & set(d):
        fail(fn, "diagonal_axes", f"not overlap `trace_axes` {t}", repr(d))
    return t, d


def split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """neural-tangents' convention: a kwarg given as a pair applies its halves to x1 and x2."""
    k1, k2 = {}, {}
    for k, v in kwargs.items():
        if isinstance(v, tuple) and len(v) == 2:
            k1[k], k2[k] = v
        else:
            k1[k] = k2[k] = v
    return k1, k2


def float_leaves(params: PyTree):
    """(float leaves, rebuild(float_leaves) -> params): integer leaves are held fixed."""
    leaves, treedef = jax.tree.flatten(params)
    is_f = [jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) for leaf in leaves]
    fl = [leaf for leaf, f in zip(leaves, is_f, strict=True) if f]

    def rebuild(new_fl):
        it = iter(new_fl)
        return jax.tree.unflatten(treedef, [next(it) if f else leaf
                                            for leaf, f in zip(leaves, is_f, strict=True)])

    return fl, rebuild, is_f


def leaf_paths(params: PyTree) -> list[str]:
    """'a/b/0/kernel'-style path strings of the float leaves, in flatten order."""
    out = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            out.append(path_str(path))
    return out


def path_str(path) -> str:
    parts = []
    for k in path:
        if isinstance(k, jax.tree_util.DictKey):
            parts.append(str(k.key))
        elif isinstance(k, jax.tree_util.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, jax.tree_util.GetAttrKey):
            if k.name == "value":  # flax nnx Variable wrappers
                continue
            parts.append(str(k.name))
        else:
            parts.append(str(k))
    return "/".join(parts)


# -------------------------------------------------------------------------------- the model


@dataclasses.dataclass(frozen=True)
class Model:
    """``f`` closed over its fixed parts: ``apply(float_leaves, x) -> array``."""

    apply: Callable
    leaves: list
    paths: list[str]
    selected: tuple[bool, ...]  # which float leaves the kernel differentiates
    vmap: bool  # examples evaluated one at a time (batch axis squeezed)

    @property
    def sel(self) -> list[int]:
        """Indices of the differentiated leaves."""
        return [i for i, s in enumerate(self.selected) if s]

    def selected_leaves(self) -> list:
        return [self.leaves[i] for i in self.sel]

    def apply_selected(self, sub: list, x):
        """``apply`` with the differentiated leaves replaced by ``sub`` (the others fixed)."""
        leaves = list(self.leaves)
        for i, s in zip(self.sel, sub, strict=True):
            leaves[i] = s
        return self.apply(leaves, x)


def make_model(fn: str, f: Callable, params: PyTree, kwargs: dict, vmap_axes,
               params_filter: Callable[[str], bool] | None) -> Model:
    if not callable(f):
        fail(fn, "f", "be a callable f(params, x)", type(f).__name__, cls=KjaxTypeError)
    fl, rebuild, _ = float_leaves(params)
    if not fl:
        fail(fn, "params", "contain at least one floating-point leaf", "none")
    paths = leaf_paths(params)
    if params_filter is None:
        selected = (True,) * len(fl)
    else:
        selected = tuple(bool(params_filter(p)) for p in paths)
        if not any(selected):
            fail(fn, "params_filter", f"select at least one parameter (paths: {paths[:6]}...)",
                 "a filter that selects none")
    vmap = vmap_axes is not None
    if vmap:
        in_axes, out_axes, kw_axes = _vmap_triple(fn, vmap_axes)

        def apply(leaves, x, kw=kwargs):
            x = jax.tree.map(lambda a, ax: jnp.expand_dims(a, ax), x, in_axes) \
                if not isinstance(in_axes, int) else jax.tree.map(
                    lambda a: jnp.expand_dims(a, in_axes), x)
            kw = {k: (jnp.expand_dims(v, kw_axes[k]) if k in kw_axes else v)
                  for k, v in kw.items()}
            out = f(rebuild(leaves), x, **kw)
            return jnp.squeeze(_single(fn, out), out_axes)
    else:
        def apply(leaves, x, kw=kwargs):
            return _single(fn, f(rebuild(leaves), x, **kw))

    return Model(apply, fl, paths, selected, vmap)


def _vmap_triple(fn, vmap_axes):
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        in_axes, out_axes, kw_axes = vmap_axes
    else:
        in_axes, out_axes, kw_axes = vmap_axes, vmap_axes, {}
    if out_axes != 0:
        fail(fn, "vmap_axes", "have output axis 0 (the batch axis of f's output)", repr(vmap_axes))
    return in_axes, out_axes, dict(kw_axes or {})


def _single(fn, out):
    leaves = jax.tree.leaves(out)
    if len(leaves) != 1:
        fail(fn, "f", "return a single array (wrap several outputs into one, or compute one kernel "
             "per output)", f"a pytree with {len(leaves)} leaves")
    return leaves[0]


# ------------------------------------------------------------------------- einsum bookkeeping


class _Letters:
    def __init__(self):
        self._it = iter(string.ascii_letters)

    def __call__(self, n=1):
        return "".join(next(self._it) for _ in range(n))


def _out_letters(ndim: int, trace: tuple, diag: tuple, L: _Letters):
    """Letters for the output axes of f(x1) and f(x2), and the result's letters (NT's order)."""
    l1 = [L() for _ in range(ndim)]
    l2 = [c if (i in trace or i in diag) else L() for i, c in enumerate(l1)]
    res = []
    for i in range(ndim):
        if i in trace:
            continue
        res += [l1[i]] if i in diag else [l1[i], l2[i]]
    return l1, l2, "".join(res)


# ----------------------------------------------------------------------------- features


def _basis(shape, dtype):
    n = int(np.prod(shape))
    return jnp.eye(n, dtype=dtype).reshape(n, *shape)


def _jacobian_features(model: Model, x):
    """Per-leaf Jacobians ``[*out_full, *leaf]`` of the selected leaves."""
    sel = model.sel

    def one(xi):
        out, vjp = jax.vjp(lambda sub: model.apply_selected(sub, xi), model.selected_leaves())
        (jac,) = jax.vmap(vjp)(_basis(out.shape, out.dtype))
        return [j.reshape(*out.shape, *model.leaves[i].shape) for i, j in zip(sel, jac, strict=True)]

    return jax.vmap(one)(x) if model.vmap else one(x)


def structured_plan(model: Model, x) -> tuple[_jaxpr.Plan, Any, dict]:
    """Trace one example (or the batch) and find the taps."""
    xi = jax.tree.map(lambda a: a[0], x) if model.vmap else x
    closed = jax.make_jaxpr(model.apply)(model.leaves, xi)
    n_leaves = len(model.leaves)
    leaf_index = {i: i for i in range(n_leaves)}
    args = [jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))
            for a in [*model.leaves, *jax.tree.leaves(xi)]]
    plan = _jaxpr.analyse(closed, args, leaf_index)
    sel = set(model.sel)
    plan = _jaxpr.Plan([t for t in plan.taps if t.leaf in sel],
                       frozenset(t.leaf for t in plan.taps if t.leaf in sel), plan.flops)
    return plan, closed, leaf_index


def _structured_features(model: Model, x, plan, closed, leaf_index, materialise: set):
    """Per example: for each tap (a [B,P,C], g [*out, B,P,F]) or its materialised Jacobian; and
    the Jacobians of the other selected leaves."""
    rest = [i for i in model.sel if i not in plan.tapped_leaves]
    taps = plan.taps
    x_treedef = jax.tree.structure(jax.tree.map(lambda a: a[0], x) if model.vmap else x)

    def one(xi):
        xl = jax.tree.leaves(xi)

        def g(eps_list, rest_leaves):
            leaves = list(model.leaves)
            for i, r in zip(rest, rest_leaves, strict=True):
                leaves[i] = r
            captured = {}
            eps = {t.path: e for t, e in zip(taps, eps_list, strict=True)}
            outs, _ = _jaxpr.run_jaxpr(closed, [*leaves, *xl], leaf_index=leaf_index, plan=plan,
                                       eps=eps, captured=captured)
            return outs[0], [captured[t.path] for t in taps]

        eps0 = [jnp.zeros(t.y_shape, model.leaves[t.leaf].dtype) for t in taps]
        out, vjp, a_list = jax.vjp(g, eps0, [model.leaves[i] for i in rest], has_aux=True)
        gs, js = jax.vmap(vjp)(_basis(out.shape, out.dtype))
        feats = []
        for t, a, gy in zip(taps, a_list, gs, strict=True):
            gy = gy.reshape(*out.shape, *t.y_shape)
            nout = out.ndim
            gy = jnp.transpose(gy, (*range(nout), *(nout + p for p in t.g_perm)))
            gy = gy.reshape(*out.shape, *t.bpf)
            if t.leaf in materialise:  # per-example Jacobian of this layer: [*out, B, C, F]
                feats.append(jnp.einsum("...bpf,bpc->...bcf", gy, a,
                                        precision=jax.lax.Precision.HIGHEST))
            else:
                feats.append((a, gy))
        jacs = [j.reshape(*out.shape, *model.leaves[i].shape) for i, j in zip(rest, js, strict=True)]
        return feats, jacs

    del x_treedef
    return jax.vmap(one)(x) if model.vmap else one(x)


def _contract_jac(j1, j2, ndim_out, trace, diag, vmap, precision):
    """sum over parameter axes of j1[*out1, *p] j2[*out2, *p] -> NT-ordered kernel."""
    L = _Letters()
    l1, l2, res = _out_letters(ndim_out, trace, diag, L)
    p = L(j1.ndim - ndim_out)
    return jnp.einsum(f"{''.join(l1)}{p},{''.join(l2)}{p}->{res}", j1, j2, precision=precision)


def _contract_ag(f1, f2, ndim_out, trace, diag, vmap, precision):
    """sum_{b,p,q} <a1[b,p], a2[b,q]> <g1[..., b, p], g2[..., b, q]>."""
    (a1, g1), (a2, g2) = f1, f2
    L = _Letters()
    l1, l2, res = _out_letters(ndim_out, trace, diag, L)
    b, p, q, c, f = L(), L(), L(), L(), L()
    e1 = l1[0] if vmap else ""
    e2 = l2[0] if vmap else ""
    A = jnp.einsum(f"{e1}{b}{p}{c},{e2}{b}{q}{c}->{''.join(dict.fromkeys(e1 + e2))}{b}{p}{q}",
                   a1, a2, precision=precision)
    a_sub = "".join(dict.fromkeys(e1 + e2)) + b + p + q
    return jnp.einsum(f"{a_sub},{''.join(l1)}{b}{p}{f},{''.join(l2)}{b}{q}{f}->{res}", A, g1, g2,
                      precision=precision, optimize="optimal")


# ------------------------------------------------------------------------------ cost model


def _out_pair_factor(out_shape, trace, diag, offset):
    """How many (o1, o2) pairs the contraction visits per example pair."""
    fac = 1
    for i, s in enumerate(out_shape):
        ax = i + offset
        fac *= s if (ax in trace or ax in diag) else s * s
    return fac


def structured_costs(model: Model, plan, n1, n2, out_shape, trace, diag):
    """Per tap: (cost of the Gram trick, cost of materialising the layer's Jacobian)."""
    offset = 1 if model.vmap else 0
    pairs = _out_pair_factor(out_shape, trace, diag, offset)
    o = int(np.prod(out_shape))
    e1, e2 = (n1, n2) if model.vmap else (1, 1)
    res = {}
    for t in plan.taps:
        B, P, C = t.a_shape
        F = t.bpf[2]
        gram = e1 * e2 * B * P * P * (C + pairs * F)
        mat = (e1 + e2) * o * B * P * C * F + e1 * e2 * pairs * B * C * F
        res[t.leaf] = (gram, mat)
    return res


def implementation_costs(model: Model, plan, n1, n2, out_shape, trace, diag) -> dict[str, float]:
    """Estimated flops of each implementation (Novak et al. 2022, Table 1, adapted)."""
    offset = 1 if model.vmap else 0
    pairs = _out_pair_factor(out_shape, trace, diag, offset)
    o = int(np.prod(out_shape))
    e1, e2 = (n1, n2) if model.vmap else (1, 1)
    fp = max(plan.flops, 1.0)  # forward pass of one example (or of the batch)
    n_params = sum(int(np.prod(np.shape(leaf))) for leaf, s in zip(model.leaves, model.selected,
                                                                    strict=True) if s)
    jc = (e1 + e2) * o * 3 * fp + e1 * e2 * pairs * n_params
    nvp = e2 * o * 3 * fp + e2 * o * e1 * 3 * fp
    sc = structured_costs(model, plan, n1, n2, out_shape, trace, diag)
    rest_params = sum(int(np.prod(np.shape(model.leaves[i]))) for i, s in enumerate(model.selected)
                      if s and i not in plan.tapped_leaves)
    # The structured backward pass stops at the tapped pre-activations (about 2 forward passes per
    # output instead of 3); a layer's weight-gradient work reappears only if it is materialised,
    # and that is counted in its own cost (sc).
    sd = (e1 + e2) * o * 2 * fp + e1 * e2 * pairs * rest_params + sum(min(v) for v in sc.values())
    # dict order breaks ties: structured first
    return {"structured": sd, "jacobian_contraction": jc, "ntk_vector_products": nvp}


# ------------------------------------------------------------------------------ kernels


# Every implementation takes ``(model, x1, x2, *, trace, diag, out_ndim, precision, n1, n2, out_shape,
# size, plan_bundle)`` and returns the kernel in NT's layout, averaged over the traced axes (``size``
# elements).


def _kernel_from_jacobians(model, x1, x2, *, trace, diag, out_ndim, precision, size=1, **_):
    j1 = _jacobian_features(model, x1)
    j2 = j1 if x2 is None else _jacobian_features(model, x2)
    return sum(_contract_jac(a, b, out_ndim, trace, diag, model.vmap, precision)
               for a, b in zip(j1, j2, strict=True)) / size


def _kernel_structured(model, x1, x2, *, trace, diag, out_ndim, precision, n1, n2, out_shape, size=1,
                       plan_bundle=None):
    plan, closed, leaf_index = plan_bundle or structured_plan(model, x1)
    costs = structured_costs(model, plan, n1, n2, out_shape, trace, diag)
    materialise = {leaf for leaf, (gram, mat) in costs.items() if mat < gram}
    f1, j1 = _structured_features(model, x1, plan, closed, leaf_index, materialise)
    if x2 is None:
        f2, j2 = f1, j1
    else:
        # without vmap the jaxpr is specialised to the batch size: trace x2's batch too
        plan2, closed2, _ = (plan, closed, None) if model.vmap else structured_plan(model, x2)
        if plan2.tapped_leaves != plan.tapped_leaves:
            return _kernel_from_jacobians(model, x1, x2, trace=trace, diag=diag, out_ndim=out_ndim,
                                          precision=precision, size=size)
        f2, j2 = _structured_features(model, x2, plan2, closed2, leaf_index, materialise)
    total = 0.0
    for t, a, b in zip(plan.taps, f1, f2, strict=True):
        if t.leaf in materialise:
            total = total + _contract_jac(a, b, out_ndim, trace, diag, model.vmap, precision)
        else:
            total = total + _contract_ag(a, b, out_ndim, trace, diag, model.vmap, precision)
    for a, b in zip(j1, j2, strict=True):
        total = total + _contract_jac(a, b, out_ndim, trace, diag, model.vmap, precision)
    return total / size


def _kernel_nvp(model, x1, x2, *, trace, diag, out_ndim, precision, **_):
    """Theta = J1 J2^T by vector products: a VJP per output of x2, then a JVP through x1 (averaged
    over the traced axes by :func:`trace_and_diagonal`)."""
    x2_ = x1 if x2 is None else x2
    with_sub = model.apply_selected
    p0 = model.selected_leaves()

    def f1_all(sub):
        return jax.vmap(lambda xi: with_sub(sub, xi))(x1) if model.vmap else with_sub(sub, x1)

    def columns_for(xj):
        out, vjp = jax.vjp(lambda sub: with_sub(sub, xj), p0)

        def col(ct):
            (v,) = vjp(ct)
            return jax.jvp(f1_all, (p0,), (v,))[1]

        cols = jax.lax.map(col, _basis(out.shape, out.dtype))  # [O2, *f(x1) shape]
        return cols.reshape(*out.shape, *cols.shape[1:])

    if model.vmap:
        full = jax.lax.map(columns_for, x2_)  # [N2, *out2, N1, *out1]
    else:
        full = columns_for(x2_)  # [*out_full2, *out_full1]
    half = full.ndim // 2
    full = jnp.moveaxis(full, tuple(range(half)), tuple(range(half, 2 * half)))
    return trace_and_diagonal(full, trace, diag)


#: the eNTK's algorithms, one signature (see above), chosen by name or by the cost model
_IMPLS = (dispatch.Implementation("jacobian_contraction", _kernel_from_jacobians),
          dispatch.Implementation("ntk_vector_products", _kernel_nvp),
          dispatch.Implementation("structured", _kernel_structured))


def trace_and_diagonal(full: jax.Array, trace: tuple, diag: tuple) -> jax.Array:
    """From ``[N1, X, Y, ..., N2, X, Y, ...]`` to NT's traced / diagonalised, zipped layout."""
    nd = full.ndim // 2
    L = _Letters()
    l1, l2, res = _out_letters(nd, trace, diag, L)
    out = jnp.einsum(f"{''.join(l1)}{''.join(l2)}->{res}", full)
    size = int(np.prod([full.shape[i] for i in trace])) if trace else 1
    return out / size


def ntk_of(model: Model, x1, x2, *, trace, diag, implementation, out_shape_full,
           precision=jax.lax.Precision.HIGHEST, fn="kjax.ntk.empirical_ntk_fn"):
    """The kernel of ``model`` between batches (NT layout), with the chosen implementation."""
    out_ndim = len(out_shape_full)
    n1 = jax.tree.leaves(x1)[0].shape[0]
    n2 = n1 if x2 is None else jax.tree.leaves(x2)[0].shape[0]
    out_shape = out_shape_full[1:] if model.vmap else out_shape_full
    bundle = None

    def auto_choice(ok):
        nonlocal bundle
        bundle = structured_plan(model, x1)
        costs = implementation_costs(model, bundle[0], n1, n2, out_shape, trace, diag)
        names = {im.name for im in ok}
        return min(ok, key=lambda im: costs[im.name] if im.name in names else math.inf)

    impl = dispatch.select(fn, implementation, _IMPLS, chooser=auto_choice)
    size = trace and int(np.prod([out_shape_full[i] for i in trace])) or 1
    return impl.fn(model, x1, x2, trace=trace, diag=diag, out_ndim=out_ndim, precision=precision, n1=n1,
                   n2=n2, out_shape=out_shape, size=size, plan_bundle=bundle)


def choose_implementation(f, params, x1, x2=None, *, trace_axes=(-1,), diagonal_axes=(),
                          vmap_axes=0, **apply_kwargs) -> tuple[str, dict[str, float]]:
    """The implementation ``implementation=None`` picks, and the cost model's estimates (flops).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import choose_implementation
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> p = {"w1": jnp.ones((3, 64)), "w2": jnp.ones((64, 2))}
      >>> choose_implementation(f, p, jnp.ones((8, 3)))[0]
      'structured'
    """
    fn = "kjax.ntk.choose_implementation"
    model = make_model(fn, f, params, apply_kwargs, vmap_axes, None)
    out_full = _out_shape_full(model, x1)
    trace, diag = canonical_axes(fn, trace_axes, diagonal_axes, len(out_full))
    n1 = jax.tree.leaves(x1)[0].shape[0]
    n2 = n1 if x2 is None else jax.tree.leaves(x2)[0].shape[0]
    plan, _, _ = structured_plan(model, x1)
    costs = implementation_costs(model, plan, n1, n2, out_full[1:] if model.vmap else out_full,
                                 trace, diag)
    return min(costs, key=costs.get), costs


def _out_shape_full(model: Model, x) -> tuple[int, ...]:
    if model.vmap:
        xi = jax.tree.map(lambda a: a[0], x)
        out = jax.eval_shape(model.apply, model.leaves, xi)
        return (jax.tree.leaves(x)[0].shape[0], *out.shape)
    return tuple(jax.eval_shape(model.apply, model.leaves, x).shape)


# -------------------------------------------------------------------------- public NT API


def empirical_ntk_fn(
    f: Callable,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
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

    Args:
      f: ``f(params, x, **kwargs) -> [N, ...]``, a single array; ``params`` any pytree. Integer
        leaves of ``params`` are held fixed (not differentiated).
      trace_axes: output axes to average the kernel over.
      diagonal_axes: output axes on which only the diagonal is kept.
      vmap_axes: ``None`` (``f`` is differentiated on the whole batch, exact for models that mix
        examples, such as BatchNorm in training mode), an int (the batch axis of ``x`` and of the
        output: ``f`` is evaluated per example on ``x[i:i+1]``, which is faster), or a triple
        ``(in_axes, out_axes, kwargs_axes)`` as in neural-tangents (``out_axes`` must be 0).
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
        arrays, an unknown implementation, ``x1``/``x2`` of different feature shapes.

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
    fn = "kjax.ntk.empirical_ntk_fn"
    implementation = canonical_implementation(fn, implementation)

    def ntk(x1, x2, params, **apply_kwargs):
        kw1, kw2 = split_kwargs(apply_kwargs)
        if kw1 != kw2 and x2 is None:
            x2 = x1
        _check_x_pair(fn, x1, x2)
        model1 = make_model(fn, f, params, kw1, vmap_axes, params_filter)
        out_full = _out_shape_full(model1, x1)
        trace, diag = canonical_axes(fn, trace_axes, diagonal_axes, len(out_full))
        if kw1 is kw2 or all(kw1[k] is kw2[k] for k in kw1):
            return ntk_of(model1, x1, x2, trace=trace, diag=diag, implementation=implementation,
                          out_shape_full=out_full, fn=fn)
        # different kwargs for x1 and x2: contract Jacobians of two models
        model2 = make_model(fn, f, params, kw2, vmap_axes, params_filter)
        j1 = _jacobian_features(model1, x1)
        j2 = _jacobian_features(model2, x2)
        total = int(np.prod([out_full[i] for i in trace])) if trace else 1
        return sum(_contract_jac(a, b, len(out_full), trace, diag, model1.vmap,
                                 jax.lax.Precision.HIGHEST)
                   for a, b in zip(j1, j2, strict=True)) / total

    return ntk


def _check_x_pair(fn, x1, x2):
    if x2 is None:
        return
    s1 = [np.shape(a)[1:] for a in jax.tree.leaves(x1)]
    s2 = [np.shape(a)[1:] for a in jax.tree.leaves(x2)]
    if jax.tree.structure(x1) != jax.tree.structure(x2) or s1 != s2:
        fail(fn, "x2", f"have the per-example shape of `x1` {s1}", f"{s2}")


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
      ValueError: axes out of range or overlapping, ``f`` returning several arrays.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import empirical_nngp_fn
      >>> f = lambda p, x: x @ p
      >>> empirical_nngp_fn(f)(jnp.eye(3), None, 2 * jnp.eye(3)).tolist()[0]
      [1.3333333333333333, 0.0, 0.0]
    """
    fn = "kjax.ntk.empirical_nngp_fn"

    def nngp(x1, x2, params, **apply_kwargs):
        kw1, kw2 = split_kwargs(apply_kwargs)
        _check_x_pair(fn, x1, x2)
        o1 = _single(fn, f(params, x1, **kw1))
        o2 = o1 if x2 is None else _single(fn, f(params, x2, **kw2))
        trace, diag = canonical_axes(fn, trace_axes, diagonal_axes, o1.ndim)
        L = _Letters()
        l1, l2, res = _out_letters(o1.ndim, trace, diag, L)
        k = jnp.einsum(f"{''.join(l1)},{''.join(l2)}->{res}", o1, o2,
                       precision=jax.lax.Precision.HIGHEST)
        size = int(np.prod([o1.shape[i] for i in trace])) if trace else 1
        return k / size

    return nngp


def empirical_kernel_fn(
    f: Callable,
    trace_axes: int | Sequence[int] = (-1,),
    diagonal_axes: int | Sequence[int] = (),
    vmap_axes: Any = None,
    implementation: None | str | int | Sequence[str] = None,
) -> Callable:
    r"""neural-tangents' ``empirical_kernel_fn``: ``kernel_fn(x1, x2, get, params, **kwargs)``.

    ``get`` is ``"ntk"``, ``"nngp"`` (the inner product of the outputs of ``f``), or a tuple of them,
    for which a dict is returned.

    Args:
      f: ``f(params, x, **kwargs) -> [N, ...]``.
      trace_axes: as in :func:`empirical_ntk_fn`.
      diagonal_axes: as in :func:`empirical_ntk_fn`.
      vmap_axes: as in :func:`empirical_ntk_fn`.
      implementation: as in :func:`empirical_ntk_fn`.

    Returns:
      ``kernel_fn(x1, x2, get, params, **kwargs)``.

    Raises:
      ValueError: an unknown ``get``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk import empirical_kernel_fn
      >>> f = lambda p, x: x @ p
      >>> out = empirical_kernel_fn(f)(jnp.eye(2), None, ("nngp", "ntk"), jnp.eye(2))
      >>> sorted(out), out["ntk"].shape
      (['nngp', 'ntk'], (2, 2))
    """
    fn = "kjax.ntk.empirical_kernel_fn"
    fns = {"ntk": empirical_ntk_fn(f, trace_axes, diagonal_axes, vmap_axes, implementation),
           "nngp": empirical_nngp_fn(f, trace_axes, diagonal_axes)}

    def kernel_fn(x1, x2, get, params, **kwargs):
        many = isinstance(get, tuple | list)
        gets = tuple(get) if many else (get,)
        for g in gets:
            if g not in fns:
                raise KjaxError(f"{fn}: `get` must be 'ntk', 'nngp' or a tuple of them; got {g!r}.")
        out = {g: fns[g](x1, x2, params, **kwargs) for g in gets}
        return out if many else out[gets[0]]

    return kernel_fn

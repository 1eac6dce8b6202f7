"""The eNTK's model: ``f(params, x)`` closed over its fixed parts, and the checks of its inputs.

``make_model`` splits the parameters into the floating-point leaves the kernel differentiates (all
of them, or those a ``params_filter`` selects) and the rest (integer leaves, held fixed), and
wraps ``f`` so that it is evaluated on the whole batch (``vmap_axes=None``) or one example at a
time (``vmap_axes=0`` and neural-tangents' triples).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxError, KjaxTypeError, fail

PyTree = Any


def float_leaves(params: PyTree):
    """(float leaves, rebuild(float_leaves) -> params, is_float mask): integer leaves are fixed."""
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

    @property
    def n_selected(self) -> int:
        """Number of differentiated scalar parameters."""
        return sum(int(np.prod(np.shape(self.leaves[i]))) for i in self.sel)

    def apply_selected(self, sub: list, x):
        """``apply`` with the differentiated leaves replaced by ``sub`` (the others fixed)."""
        leaves = list(self.leaves)
        for i, s in zip(self.sel, sub, strict=True):
            leaves[i] = s
        return self.apply(leaves, x)


def make_model(fn: str, f: Callable, params: PyTree, kwargs: dict, vmap_axes,
               params_filter: Callable[[str], bool] | None, *, any_out_axis: bool = False,
               batched_kwargs: tuple[str, ...] = ()) -> Model:
    """``f`` as a :class:`Model`. With ``vmap_axes`` the model takes one example with its batch
    axis removed (``x`` batch-first, see :func:`batch_first`), re-inserts it at ``in_axes``, and
    removes the output's at ``out_axes`` (0 unless ``any_out_axis``). ``batched_kwargs``: keywords
    of ``kwargs_axes`` that carry one value per example; the model then takes ``(x, {name:
    value})`` and ``kwargs`` holds only the others."""
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
        in_axes, out_axes, kw_axes = vmap_triple(fn, vmap_axes, any_out_axis)

        def apply(leaves, x, kw=kwargs):
            x, kwb = x if batched_kwargs else (x, {})
            x = map_axes(jnp.expand_dims, in_axes, x)
            kw = {**kw, **{k: jnp.expand_dims(v, kw_axes[k]) for k, v in kwb.items()}}
            out = single_output(fn, f(rebuild(leaves), x, **kw))
            if not -out.ndim <= out_axes < out.ndim:
                fail(fn, "vmap_axes", f"have an output axis of f's output of rank {out.ndim}",
                     repr(out_axes))
            return jnp.squeeze(out, out_axes)
    else:
        def apply(leaves, x, kw=kwargs):
            return single_output(fn, f(rebuild(leaves), x, **kw))

    return Model(apply, fl, paths, selected, vmap)


def split_vmap_axes(vmap_axes) -> tuple:
    """``(in_axes, out_axes, kwargs_axes)`` of neural-tangents' ``vmap_axes``: a triple as given,
    or one value for both ``in_axes`` and ``out_axes`` (no ``kwargs_axes``); unchecked."""
    if isinstance(vmap_axes, tuple) and len(vmap_axes) == 3:
        return vmap_axes
    return vmap_axes, vmap_axes, {}


def vmap_triple(fn: str, vmap_axes, any_out_axis: bool = False):
    """neural-tangents' ``vmap_axes``: an int or ``(in_axes, out_axes, kwargs_axes)``; ``out_axes``
    must be 0 unless ``any_out_axis`` (then any int)."""
    in_axes, out_axes, kw_axes = split_vmap_axes(vmap_axes)
    if any_out_axis:
        if isinstance(out_axes, bool) or not isinstance(out_axes, int | np.integer):
            fail(fn, "vmap_axes", "have an int output axis (or a pytree of them like f's "
                 "output)", repr(vmap_axes))
    elif out_axes != 0:
        fail(fn, "vmap_axes", "have output axis 0 (the batch axis of f's output)", repr(vmap_axes))
    if kw_axes is not None and not isinstance(kw_axes, dict):
        fail(fn, "vmap_axes", "have a dict {keyword: axis} (or None) as kwargs_axes",
             repr(vmap_axes))
    return in_axes, int(out_axes), dict(kw_axes or {})


def map_axes(op: Callable, in_axes, x: PyTree) -> PyTree:
    """``op(leaf, axis)`` on every leaf of ``x``, its axis from ``in_axes`` (an int, or a pytree
    prefix of ``x``'s tree, as ``jax.vmap``'s ``in_axes``)."""
    if isinstance(in_axes, int | np.integer):
        return jax.tree.map(lambda a: op(a, int(in_axes)), x)
    return jax.tree.map(lambda ax, sub: jax.tree.map(lambda a: op(a, ax), sub), in_axes, x)


def batch_first(fn: str, arg: str, x: PyTree, in_axes) -> PyTree:
    """``x`` with each leaf's batch axis (from ``in_axes``) moved to axis 0."""
    def move(a, ax):
        if isinstance(ax, bool) or not isinstance(ax, int | np.integer):
            fail(fn, "vmap_axes", "have an int in_axes for every array of `x` (kjax does not "
                 "broadcast unbatched inputs)", repr(ax))
        if not -np.ndim(a) <= ax < np.ndim(a):
            fail(fn, "vmap_axes", f"have in_axes within the rank of `{arg}`'s arrays",
                 f"axis {ax} for shape {np.shape(a)}")
        return jnp.moveaxis(a, ax, 0)

    try:
        return map_axes(move, in_axes, x)
    except (ValueError, TypeError) as e:
        if isinstance(e, KjaxTypeError | KjaxError):
            raise
        fail(fn, "vmap_axes", f"have in_axes that match the tree of `{arg}` (an int, or a pytree "
             "prefix of it)", f"{in_axes!r}: {str(e).splitlines()[0][:160]}")


def single_output(fn: str, out) -> jax.Array:
    """The one array ``f`` returns (kjax computes one kernel per output)."""
    leaves = jax.tree.leaves(out)
    if len(leaves) != 1:
        fail(fn, "f", "return a single array (wrap several outputs into one, or compute one kernel "
             "per output)", f"a pytree with {len(leaves)} leaves")
    return leaves[0]


def out_shape_full(model: Model, x) -> tuple[int, ...]:
    """The shape of ``f(params, x)`` (batch axis first), from shapes only."""
    if model.vmap:
        xi = jax.tree.map(lambda a: a[0], x)
        out = jax.eval_shape(model.apply, model.leaves, xi)
        return (jax.tree.leaves(x)[0].shape[0], *out.shape)
    return tuple(jax.eval_shape(model.apply, model.leaves, x).shape)


def split_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """neural-tangents' convention: a kwarg given as a pair applies its halves to x1 and x2."""
    k1, k2 = {}, {}
    for k, v in kwargs.items():
        if isinstance(v, tuple) and len(v) == 2:
            k1[k], k2[k] = v
        else:
            k1[k] = k2[k] = v
    return k1, k2


def all_none(x: Any) -> bool:
    """neural-tangents' ``utils.all_none``: ``x`` is None or a (nested) list / tuple / dict of
    Nones -- what NT's tests pass as ``x2`` for parallel inputs with ``x2 = x1`` (e.g. ``(None,
    None)``, ``{"a": (None, None)}``)."""
    if isinstance(x, dict):
        return bool(x) and all(all_none(v) for v in x.values())
    return x is None or (isinstance(x, list | tuple) and all(all_none(v) for v in x))


def num_examples(fn: str, arg: str, x: PyTree) -> int:
    """The batch size of ``x`` (a pytree of arrays ``[n, ...]``), checked to be >= 1."""
    leaves = jax.tree.leaves(x)
    if not leaves:
        fail(fn, arg, "contain at least one array [n, ...]", "an empty pytree")
    shapes = [np.shape(a) for a in leaves]
    if any(len(s) == 0 for s in shapes):
        fail(fn, arg, "have a leading batch axis on every leaf", f"shapes {shapes}")
    ns = {s[0] for s in shapes}
    if len(ns) != 1:
        fail(fn, arg, "have the same batch size (leading axis) on every leaf", f"shapes {shapes}")
    n = ns.pop()
    if n == 0:
        fail(fn, arg, "hold at least one example", f"shape {shapes[0]} (n = 0)")
    for a in leaves:
        if jnp.issubdtype(jnp.result_type(a), jnp.complexfloating):
            fail(fn, arg, "be real (complex inputs have no NTK here)", f"dtype {jnp.result_type(a)}",
                 cls=KjaxTypeError)
    return n


def check_x_tree(fn: str, x1, x2) -> None:
    """neural-tangents' whole-batch inputs (``vmap_axes=None``): pytrees of real arrays with no
    common batch axis assumed (``f``'s output says where the examples are); ``x2`` (if given)
    with ``x1``'s tree structure."""
    for arg, x in (("x1", x1), ("x2", x2)):
        if x is None:
            continue
        leaves = jax.tree.leaves(x)
        if not leaves:
            fail(fn, arg, "contain at least one array", "an empty pytree")
        for a in leaves:
            if jnp.issubdtype(jnp.result_type(a), jnp.complexfloating):
                fail(fn, arg, "be real (complex inputs have no NTK here)",
                     f"dtype {jnp.result_type(a)}", cls=KjaxTypeError)
    if x2 is not None and jax.tree.structure(x1) != jax.tree.structure(x2):
        fail(fn, "x2", f"have the tree structure of `x1` {jax.tree.structure(x1)}",
             f"{jax.tree.structure(x2)}")


def check_x_pair(fn: str, x1, x2) -> tuple[int, int]:
    """``(n1, n2)``: both batches non-empty, with the same per-example shapes (n2 = n1 for None)."""
    n1 = num_examples(fn, "x1", x1)
    if x2 is None:
        return n1, n1
    n2 = num_examples(fn, "x2", x2)
    s1 = [np.shape(a)[1:] for a in jax.tree.leaves(x1)]
    s2 = [np.shape(a)[1:] for a in jax.tree.leaves(x2)]
    if jax.tree.structure(x1) != jax.tree.structure(x2) or s1 != s2:
        fail(fn, "x2", f"have the per-example shape of `x1` {s1}", f"{s2}")
    return n1, n2

"""Does each output row of ``f(params, x)`` depend only on its own input row? Decided from the jaxpr.

The batched ("vmap") eNTK paths evaluate ``f`` one example at a time, which is exact only when
the model never mixes examples: no batch norm, no reduction or attention over the batch axis, no
per-row constants. neural-tangents asks the user to declare this with ``vmap_axes``; kjax finds it
out by propagating, through the jaxpr of ``f`` traced on the user's batch, which axis of every
value is the batch axis:

* elementwise primitives (any primitive whose operands have the output's rank, with sizes equal
  to the output's or 1) keep the axis;
* ``dot_general`` keeps it when the batch axis is a free or a matching batch dimension, and
  fails when it is contracted or when both operands carry the batch in free dimensions (an outer
  product over examples, as in attention across the batch);
* reductions, cumulative ops, sorts, reverses, slices, pads, concatenations and ``reshape`` keep
  it unless they act on the batch axis; ``conv_general_dilated`` keeps the input's batch
  dimension; ``gather`` of a parameter table by batched indices (embeddings) keeps it;
* nested ``jit``, ``custom_jvp`` / ``custom_vjp``, ``remat``, ``cond`` (with a batch-free
  predicate) and ``scan`` / ``while`` (carries iterated to a fixed point) are followed inside;
* anything else that touches a batched value, and any ``iota``, random draw or closed-over
  constant with a dimension of the batch size (a per-row constant that one example would not
  see), answers "no".

The answer is conservative: "yes" is a proof for the primitives covered, "no" may be a model the
analysis cannot see through, and then the general (whole-batch) path runs, which is always exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend import core as jcore

_CALLS = ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint", "custom_jvp_call",
          "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_lin")
_REDUCE = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
           "reduce_xor", "argmax", "argmin", "reduce_precision_sum")
_CUMULATIVE = ("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")
_ALONG_LAST_TWO = ("cholesky", "triangular_solve", "lu", "qr", "eigh", "svd", "householder_product",
                   "lu_pivots_to_permutation", "tridiagonal_solve", "schur", "eig")
_RANDOM = ("random_bits", "rng_bit_generator", "rng_uniform", "threefry2x32", "iota")


class _NotIndependent(Exception):
    pass


class PerRow:
    """A batch-free value with a dimension of the batch size that was not broadcast: a per-row
    constant (closed-over data, an ``iota`` over the batch, a random draw per row)."""

    def __init__(self, axes):
        self.axes = tuple(axes)


def _no(why: str):
    raise _NotIndependent(why)


def _shape(v) -> tuple[int, ...]:
    return tuple(getattr(v.aval, "shape", ()))


def _sub_jaxpr(eqn):
    """``(jaxpr, consts)`` of a call-like equation, or None."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in eqn.params:
            j = eqn.params[key]
            return (j.jaxpr, j.consts) if hasattr(j, "jaxpr") else (j, [])
    return None


def _batched(states) -> list[tuple[int, int]]:
    return [(i, s) for i, s in enumerate(states) if isinstance(s, int)]


def _elementwise(eqn, states, n):
    out_shapes = [_shape(v) for v in eqn.outvars]
    if not out_shapes:
        return None
    rank = len(out_shapes[0])
    shapes = [_shape(v) for v in eqn.invars]
    if any(len(s) != rank for s in out_shapes) or any(
            len(s) not in (0, rank) or any(d not in (1, o) for d, o in zip(s, out_shapes[0], strict=False))
            for s in shapes if len(s)):
        return None
    axes = {s for s in states if isinstance(s, int)}
    if len(axes) > 1:
        _no(f"`{eqn.primitive.name}` combines values whose batch axes differ ({sorted(axes)})")
    if not axes:
        return [None] * len(eqn.outvars)
    (b,) = axes
    for st in states:
        if isinstance(st, PerRow) and b in st.axes:
            _no(f"`{eqn.primitive.name}` combines examples with a per-row constant (closed-over data, an "
                "iota over the batch or a random draw per row): one example alone would see another value")
    if out_shapes[0][b] != n:
        _no(f"`{eqn.primitive.name}` broadcasts the batch axis")
    return [b] * len(eqn.outvars)


def _drop_axes(b: int, axes, what: str, name: str) -> int:
    axes = tuple(int(a) for a in axes)
    if b in axes:
        _no(f"`{name}` {what} the batch axis")
    return b - sum(a < b for a in axes)


def _dot_general(eqn, states):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    sl, sr = states
    nl, nr = len(_shape(eqn.invars[0])), len(_shape(eqn.invars[1]))
    lfree = [d for d in range(nl) if d not in lc and d not in lb]
    rfree = [d for d in range(nr) if d not in rc and d not in rb]
    for st in (sl, sr):
        if isinstance(st, PerRow):
            _no("`dot_general` uses a per-row constant")
    if isinstance(sl, int) and isinstance(sr, int):
        if sl in lb and sr in rb and list(lb).index(sl) == list(rb).index(sr):
            return [list(lb).index(sl)]
        _no("`dot_general` multiplies two batched operands across examples (attention or a Gram over the "
            "batch)")
    if isinstance(sl, int):
        if sl in lc:
            _no("`dot_general` contracts the batch axis")
        if sl in lb:
            _no("`dot_general` pairs the batch axis with a batch-free operand's dimension")
        return [len(lb) + lfree.index(sl)]
    if isinstance(sr, int):
        if sr in rc:
            _no("`dot_general` contracts the batch axis")
        if sr in rb:
            _no("`dot_general` pairs the batch axis with a batch-free operand's dimension")
        return [len(lb) + len(lfree) + rfree.index(sr)]
    return [None]


def _reshape(eqn, b: int):
    old, new = _shape(eqn.invars[0]), tuple(eqn.params["new_sizes"])
    if eqn.params.get("dimensions") is not None:
        _no("`reshape` with a dimension permutation moves the batch axis")
    before = int(np.prod(old[:b]))
    for nb in range(len(new)):
        if int(np.prod(new[:nb])) == before and new[nb] == old[b]:
            return nb
    _no("`reshape` merges or splits the batch axis")


def _gather(eqn, states):
    s_op, s_idx = states[0], states[1]
    if s_op is not None:
        _no("`gather` reads from a batched array (only lookups of a batch-free table by batched indices, "
            "as in embeddings, are understood)")
    if not isinstance(s_idx, int):
        return [s_idx if isinstance(s_idx, PerRow) else None]
    dn = eqn.params["dimension_numbers"]
    idx_rank = len(_shape(eqn.invars[1]))
    if s_idx == idx_rank - 1:
        _no("`gather` indexes with the batch axis as the index vector")
    out_rank = len(_shape(eqn.outvars[0]))
    batch_dims = [d for d in range(out_rank) if d not in dn.offset_dims]
    return [batch_dims[s_idx]]


def _rule(eqn, states, n, run):
    name = eqn.primitive.name
    params = eqn.params
    batched = _batched(states)
    per_row = [s for s in states if isinstance(s, PerRow)]

    if name in _RANDOM:
        outs = []
        for v in eqn.outvars:
            axes = [i for i, d in enumerate(_shape(v)) if d == n]
            outs.append(PerRow(axes) if axes else None)
        if batched:
            _no(f"`{name}` depends on batched values")
        return outs
    sub = _sub_jaxpr(eqn)
    if name in _CALLS or (sub is not None and name not in ("scan", "while", "cond")):
        if sub is None:
            _no(f"`{name}` hides its computation")
        return run(sub[0], list(states), n, sub[1])
    if not batched and not per_row:
        return [None] * len(eqn.outvars)
    if name == "cond":
        if states[0] is not None:
            _no("`cond` branches on a batched predicate")
        outs = None
        for br in params["branches"]:
            o = run(br.jaxpr, list(states[1:]), n, br.consts)
            if outs is not None and [str(a) for a in o] != [str(a) for a in outs]:
                _no("`cond` branches disagree on the batch axis")
            outs = o
        return outs
    if name == "scan":
        return _scan(eqn, states, n, run)
    if name == "while":
        return _while(eqn, states, n, run)
    if name == "dot_general":
        return _dot_general(eqn, states)
    if name == "gather":
        return _gather(eqn, states)
    if per_row and not batched:
        return [PerRow([]) if _shape(v) else None for v in eqn.outvars] if name not in (
            "broadcast_in_dim", "reshape", "transpose") else _structural(eqn, states, n, per_row_only=True)
    return _structural(eqn, states, n)


def _structural(eqn, states, n, per_row_only: bool = False):
    name = eqn.primitive.name
    params = eqn.params
    if per_row_only:  # follow the per-row axes through broadcasts and transposes; else all axes
        st = states[0]
        if name == "broadcast_in_dim" and isinstance(st, PerRow):
            return [PerRow(params["broadcast_dimensions"][a] for a in st.axes)]
        if name == "transpose" and isinstance(st, PerRow):
            return [PerRow(list(params["permutation"]).index(a) for a in st.axes)]
        return [PerRow(range(len(_shape(v)))) for v in eqn.outvars]
    b = next(s for s in states if isinstance(s, int))
    if name == "broadcast_in_dim":
        if states[0] is None:
            return [None]
        return [params["broadcast_dimensions"][b]]
    if name == "reshape":
        return [_reshape(eqn, b)]
    if name == "transpose":
        return [list(params["permutation"]).index(b)]
    if name == "squeeze":
        return [_drop_axes(b, params["dimensions"], "squeezes", name)]
    if name == "expand_dims":
        dims = sorted(params["dimensions"])
        for d in dims:
            if d <= b:
                b += 1
        return [b]
    if name in _REDUCE:
        return [_drop_axes(b, params["axes"], "reduces over", name)] * len(eqn.outvars)
    if name in _CUMULATIVE:
        if params["axis"] == b:
            _no(f"`{name}` accumulates along the batch axis")
        return [b]
    if name in ("sort", "argsort"):
        if params["dimension"] == b:
            _no(f"`{name}` sorts along the batch axis")
        return [b] * len(eqn.outvars)
    if name == "rev":
        _drop_axes(b, params["dimensions"], "reverses", name)
        return [b]
    if name == "top_k":
        if b == len(_shape(eqn.invars[0])) - 1:
            _no("`top_k` selects along the batch axis")
        return [b, b]
    if name == "fft":
        rank = len(_shape(eqn.invars[0]))
        if b >= rank - len(params["fft_lengths"]):
            _no("`fft` transforms along the batch axis")
        return [b]
    if name in _ALONG_LAST_TWO:
        rank = len(_shape(eqn.invars[0]))
        if b >= rank - 2 or any(isinstance(s, int) and s != b for s in states):
            _no(f"`{name}` acts on the batch axis")
        return [b] * len(eqn.outvars)
    if name == "concatenate":
        if params["dimension"] == b or any(s is None or isinstance(s, PerRow) for s in states
                                           if s != b and _shape(eqn.invars[0])[b:b + 1] == (n,)):
            _no("`concatenate` joins along the batch axis or with per-row data")
        return [b]
    if name == "pad":
        lo, hi, interior = params["padding_config"][b]
        if states[1] is not None or (lo, hi, interior) != (0, 0, 0):
            _no("`pad` pads the batch axis")
        return [b]
    if name == "slice":
        shp = _shape(eqn.invars[0])
        strides = params["strides"] or (1,) * len(shp)
        if (params["start_indices"][b], params["limit_indices"][b], strides[b]) != (0, shp[b], 1):
            _no("`slice` slices the batch axis")
        return [b]
    if name == "dynamic_slice":
        if any(s is not None for s in states[1:]) or params["slice_sizes"][b] != _shape(eqn.invars[0])[b]:
            _no("`dynamic_slice` slices the batch axis")
        return [b]
    if name == "split":
        if params["axis"] == b:
            _no("`split` splits the batch axis")
        return [b] * len(eqn.outvars)
    if name == "conv_general_dilated":
        dn = params["dimension_numbers"]
        if isinstance(states[1], int):
            _no("`conv_general_dilated` has a batched filter")
        if states[0] != dn.lhs_spec[0] or params.get("batch_group_count", 1) != 1:
            _no("`conv_general_dilated` mixes the batch axis")
        return [dn.out_spec[0]]
    if name in ("reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window",
                "cumsum_window"):
        dims = params["window_dimensions"]
        strides = params["window_strides"]
        pad = params["padding"][b]
        if dims[b] != 1 or strides[b] != 1 or tuple(pad) != (0, 0):
            _no(f"`{name}` pools over the batch axis")
        return [b] * len(eqn.outvars)
    if name in ("select_and_scatter_add", "select_and_gather_add"):
        _no(f"`{name}` is not analysed")
    outs = _elementwise(eqn, states, n)
    if outs is None:
        _no(f"`{name}` is not understood by the analysis")
    return outs


def _merge(a, b, what):
    if a == b:
        return a
    if a is None:
        return b
    if b is None:
        return a
    _no(f"`{what}` moves the batch axis between iterations")


def _scan(eqn, states, n, run):
    p = eqn.params
    nc, ncarry = p["num_consts"], p["num_carry"]
    consts, carry, xs = states[:nc], list(states[nc:nc + ncarry]), states[nc + ncarry:]
    if any(isinstance(s, PerRow) for s in states):
        _no("`scan` over per-row constants")
    xs_in = []
    for s in xs:
        if s == 0:
            _no("`scan` iterates over the batch axis")
        xs_in.append(None if s is None else s - 1)
    body = p["jaxpr"]
    for _ in range(3):
        outs = run(body.jaxpr, list(consts) + carry + xs_in, n, body.consts)
        new = [_merge(c, o, "scan") for c, o in zip(carry, outs[:ncarry], strict=True)]
        if new == carry:
            break
        carry = new
    else:
        _no("`scan` carries do not settle")
    ys = [None if s is None else s + 1 for s in outs[ncarry:]]
    return carry + ys


def _while(eqn, states, n, run):
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, carry = states[:cn], states[cn:cn + bn], list(states[cn + bn:])
    for _ in range(3):
        outs = run(p["body_jaxpr"].jaxpr, list(bconsts) + carry, n, p["body_jaxpr"].consts)
        new = [_merge(c, o, "while") for c, o in zip(carry, outs, strict=True)]
        if new == carry:
            break
        carry = new
    else:
        _no("`while` carries do not settle")
    (pred,) = run(p["cond_jaxpr"].jaxpr, list(cconsts) + carry, n, p["cond_jaxpr"].consts)
    if pred is not None:
        _no("`while` stops on a batched condition")
    return carry


def _const_state(c, n):
    axes = [i for i, d in enumerate(np.shape(c)) if d == n]
    return PerRow(axes) if axes else None


def _run(jaxpr, in_states, n, consts):
    env: dict[Any, Any] = {}

    def read(v):
        if isinstance(v, jcore.Literal):
            return None
        return env.get(v)

    for v, c in zip(jaxpr.constvars, consts, strict=False):
        env[v] = _const_state(c, n)
    for v in jaxpr.constvars[len(consts):]:
        env[v] = _const_state(np.empty(_shape(v)), n)
    for v, s in zip(jaxpr.invars, in_states, strict=True):
        env[v] = s
    for eqn in jaxpr.eqns:
        outs = _rule(eqn, [read(v) for v in eqn.invars], n, _run)
        for v, s in zip(eqn.outvars, outs, strict=True):
            env[v] = s
    return [read(v) for v in jaxpr.outvars]


def rows_independent(f: Callable, params: Any, x: Any, in_axes: Any = 0) -> tuple[bool, str]:
    """``(True, "")`` when every output row of ``f(params, x)`` (axis 0) provably depends only on
    the same row of ``x`` (axis ``in_axes`` of each leaf), else ``(False, why)``.

    ``params`` and ``x`` may be concrete or abstract (``jax.ShapeDtypeStruct`` leaves); ``f``
    returns one array. Arrays that ``f`` closes over are checked as per-row constants when a
    dimension has the batch size (which can refuse a model whose closed-over weights happen to
    have that size: pass weights in ``params``).
    """
    p_leaves, p_def = jax.tree.flatten(params)
    leaves, treedef = jax.tree.flatten(x)
    axes = jax.tree.leaves(in_axes) if not isinstance(in_axes, int) else [in_axes] * len(leaves)
    if len(axes) != len(leaves):
        return False, "in_axes does not match the inputs"
    ns = {np.shape(leaf)[a] for leaf, a in zip(leaves, axes, strict=True)}
    if len(ns) != 1:
        return False, "the inputs disagree on the batch size"
    n = ns.pop()
    if n < 2:
        return False, "a batch of one example shows nothing"
    def spec(leaf):
        return jax.ShapeDtypeStruct(np.shape(leaf), jax.numpy.result_type(leaf))

    np_ = len(p_leaves)

    def flat(*ls):
        return f(jax.tree.unflatten(p_def, ls[:np_]), jax.tree.unflatten(treedef, ls[np_:]))

    closed = jax.make_jaxpr(flat)(*map(spec, p_leaves), *map(spec, leaves))
    try:
        outs = _run(closed.jaxpr, [None] * np_ + list(axes), n, closed.consts)
    except _NotIndependent as e:
        return False, str(e)
    for o in outs:
        if o != 0:
            return False, ("an output does not depend on the inputs" if o is None else
                           "an output keeps the batch on another axis" if isinstance(o, int) else
                           "an output is a per-row constant")
    return True, ""

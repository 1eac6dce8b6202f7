"""Find the dense and convolutional uses of parameters in a model's jaxpr, and tap them.

Structured derivatives rest on one identity. If a parameter ``W`` enters the model only through
``y = dot(a, W)`` (or a convolution, which is a ``dot`` of image patches), then
``d f / d W = sum_p g[p] (x) a[p]`` with ``g = d f / d y``, so the NTK contribution of ``W`` is

    Theta_W(x1, x2) = sum_{p, q} <a1[p], a2[q]> <g1[p], g2[q]>

and neither the Jacobian nor its contraction over ``W``'s entries is ever formed. ``a`` is a
forward-pass value, and ``g`` comes from one backward pass with a zero "tap" added to ``y``.

This module finds such uses with public JAX APIs only: ``jax.make_jaxpr`` traces the model, and an
interpreter (the same loop as ``jax.core.eval_jaxpr``) walks the equations, inlining nested ``jit``
calls, tracking which values are views of a parameter leaf (transpose, reshape, dtype casts, and
multiplication or division by a scalar that does not depend on the parameters, as in the NTK
parameterisation ``W_std / sqrt(fan_in) * W``), and counting how often each leaf is used. A leaf
used exactly once, by a ``dot_general`` against a parameter-free operand or as the filter of a
``conv_general_dilated`` with one feature group, is tapped. Every other leaf (biases, norms, shared
weights, weights inside ``scan``) keeps the plain Jacobian, so the result is exact for any model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

_INLINE = ("jit", "pjit", "closed_call", "core_call")
_VIEWS = ("transpose", "reshape", "convert_element_type", "squeeze", "expand_dims", "copy",
          "copy_p")


@dataclasses.dataclass(frozen=True)
class Tap:
    """A tapped use of parameter leaf ``leaf`` at equation ``path``."""

    path: tuple[int, ...]
    leaf: int
    kind: str  # "dot" or "conv"
    y_shape: tuple[int, ...]
    a_shape: tuple[int, ...]  # canonical [B, P, C] of the parameter-free operand (or patches)
    g_perm: tuple[int, ...]  # permutation of y's axes to (batch, positions..., features...)
    bpf: tuple[int, int, int]  # (B, P, F) sizes after reshaping y


@dataclasses.dataclass
class Plan:
    taps: list[Tap]
    tapped_leaves: frozenset[int]
    flops: float  # forward-pass flops of dot/conv equations (for the cost model)


@dataclasses.dataclass
class _Prov:
    """Provenance of a value: a view of parameter leaf ``leaf`` times a runtime ``scale``."""

    leaf: int
    scale: Any = None


class _Recorder:
    def __init__(self):
        self.uses: dict[int, int] = {}
        self.candidates: list[tuple[tuple[int, ...], int, str, dict]] = []
        self.flops = 0.0

    def use(self, leaf):
        self.uses[leaf] = self.uses.get(leaf, 0) + 1


def _read(env, v):
    return v.val if isinstance(v, jcore.Literal) else env[v]


def _is_scalar(x) -> bool:
    return int(np.prod(np.shape(x))) == 1


def _dot_flops(eqn) -> float:
    (lc, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    out = eqn.outvars[0].aval.shape
    return 2.0 * float(np.prod(out)) * float(np.prod([lhs[i] for i in lc]))


def _conv_flops(eqn) -> float:
    rhs = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    dn = eqn.params["dimension_numbers"]
    out_feat = rhs[dn.rhs_spec[0]]
    return 2.0 * float(np.prod(out)) * float(np.prod(rhs)) / max(out_feat, 1)


def run_jaxpr(closed: jcore.ClosedJaxpr, args: list, *, leaf_index: dict[int, int],
              recorder: _Recorder | None = None, plan: Plan | None = None,
              eps: dict[tuple[int, ...], jax.Array] | None = None,
              captured: dict[tuple[int, ...], jax.Array] | None = None,
              path: tuple[int, ...] = (), prov_in: list | None = None):
    """Evaluate ``closed`` on ``args``; record candidates, or add taps and capture operands.

    ``leaf_index`` maps argument positions to parameter-leaf ids (at the top level).
    """
    jaxpr = closed.jaxpr
    env: dict = {}
    prov: dict = {}
    for v, c in zip(jaxpr.constvars, closed.consts, strict=True):
        env[v] = c
    for i, (v, a) in enumerate(zip(jaxpr.invars, args, strict=True)):
        env[v] = a
        if prov_in is not None:
            if prov_in[i] is not None:
                prov[v] = prov_in[i]
        elif i in leaf_index:
            prov[v] = _Prov(leaf_index[i], None)
    taps_here = {t.path: t for t in plan.taps} if plan is not None else {}

    for k, eqn in enumerate(jaxpr.eqns):
        here = (*path, k)
        invals = [_read(env, v) for v in eqn.invars]
        inprov = [prov.get(v) if not isinstance(v, jcore.Literal) else None for v in eqn.invars]
        name = eqn.primitive.name

        if name in _INLINE and "jaxpr" in eqn.params:
            sub = eqn.params["jaxpr"]
            if not isinstance(sub, jcore.ClosedJaxpr):
                sub = jcore.ClosedJaxpr(sub, ())
            outs, outprov = run_jaxpr(sub, invals, leaf_index={}, recorder=recorder, plan=plan,
                                      eps=eps, captured=captured, path=here, prov_in=inprov)
            for v, o, p in zip(eqn.outvars, outs, outprov, strict=True):
                env[v] = o
                if p is not None:
                    prov[v] = p
            continue

        n_prov = [p for p in inprov if p is not None]
        out_prov = None
        if n_prov and name in _VIEWS and len(eqn.invars) == 1:
            out_prov = n_prov[0]
        elif n_prov and name == "neg":
            out_prov = _Prov(n_prov[0].leaf, _mul_scale(n_prov[0].scale, -1.0))
        elif n_prov and name in ("mul", "div") and len(n_prov) == 1:
            pi = 0 if inprov[0] is not None else 1
            other = invals[1 - pi]
            if _is_scalar(other) and (name == "mul" or pi == 0):
                c = jnp.reshape(other, ())
                c = c if name == "mul" else 1.0 / c
                out_prov = _Prov(n_prov[0].leaf, _mul_scale(n_prov[0].scale, c))
        is_candidate = None
        if recorder is not None:
            if name == "dot_general":
                recorder.flops += _dot_flops(eqn)
            elif name == "conv_general_dilated":
                recorder.flops += _conv_flops(eqn)
        if out_prov is None and n_prov:
            if (name == "dot_general" and len(n_prov) == 1):
                is_candidate = "dot"
            elif (name == "conv_general_dilated" and inprov[1] is not None and inprov[0] is None
                  and eqn.params["feature_group_count"] == 1
                  and eqn.params["batch_group_count"] == 1):
                is_candidate = "conv"
            if recorder is not None:
                for p in n_prov:
                    recorder.use(p.leaf)
                if is_candidate:
                    recorder.candidates.append((here, n_prov[0].leaf, is_candidate, {
                        "eqn": eqn, "param_pos": 0 if inprov[0] is not None else 1}))

        subfuns, bind_params = _bind_params(eqn)
        ans = eqn.primitive.bind(*subfuns, *invals, **bind_params)

        if here in taps_here:
            tap = taps_here[here]
            ans = ans + eps[here].astype(ans.dtype)
            pp = 0 if inprov[0] is not None else 1
            captured[here] = _capture_operand(tap, eqn, invals, pp, inprov[pp].scale)

        if eqn.primitive.multiple_results:
            for v, o in zip(eqn.outvars, ans, strict=True):
                env[v] = o
        else:
            env[eqn.outvars[0]] = ans
            if out_prov is not None:
                prov[eqn.outvars[0]] = out_prov

    outs = [_read(env, v) for v in jaxpr.outvars]
    outprov = [prov.get(v) if not isinstance(v, jcore.Literal) else None for v in jaxpr.outvars]
    if recorder is not None and not path:
        for p in outprov:
            if p is not None:
                recorder.use(p.leaf)
    return outs, outprov


def _bind_params(eqn):
    """``(subfuns, params)`` for ``bind``: jax >= 0.8 returns params only, older a pair."""
    res = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], dict):
        return res
    return (), res


def _mul_scale(scale, c):
    return c if scale is None else scale * c


# ----------------------------------------------------------------------------------------------
# canonical forms of a tapped equation


def _dot_layout(eqn, param_pos):
    """Axes of the parameter-free operand A and of y, canonicalised to (batch, free, contract)."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    a_pos = 1 - param_pos
    a_shape = eqn.invars[a_pos].aval.shape
    a_contract = list(lc if a_pos == 0 else rc)
    a_batch = list(lb if a_pos == 0 else rb)
    a_free = [i for i in range(len(a_shape)) if i not in a_contract and i not in a_batch]
    p_shape = eqn.invars[param_pos].aval.shape
    p_contract = list(lc if param_pos == 0 else rc)
    p_batch = list(lb if param_pos == 0 else rb)
    p_free = [i for i in range(len(p_shape)) if i not in p_contract and i not in p_batch]
    nb = len(a_batch)
    # y axes: batch, lhs free, rhs free
    lhs_free_n = len(a_free) if a_pos == 0 else len(p_free)
    y_batch = list(range(nb))
    y_lhs = list(range(nb, nb + lhs_free_n))
    y_rhs = list(range(nb + lhs_free_n, len(eqn.outvars[0].aval.shape)))
    y_a_free, y_p_free = (y_lhs, y_rhs) if a_pos == 0 else (y_rhs, y_lhs)
    g_perm = tuple(y_batch + y_a_free + y_p_free)
    B = int(np.prod([a_shape[i] for i in a_batch]))
    P = int(np.prod([a_shape[i] for i in a_free]))
    C = int(np.prod([a_shape[i] for i in a_contract]))
    F = int(np.prod([p_shape[i] for i in p_free]))
    a_perm = tuple(a_batch + a_free + a_contract)
    return a_perm, (B, P, C), g_perm, (B, P, F)


def _conv_layout(eqn):
    dn = eqn.params["dimension_numbers"]
    out_spec = dn.out_spec  # (batch, feature, spatial...)
    y_shape = eqn.outvars[0].aval.shape
    g_perm = (out_spec[0], *out_spec[2:], out_spec[1])
    P = int(np.prod([y_shape[i] for i in g_perm[:-1]]))
    F = y_shape[out_spec[1]]
    rhs = eqn.invars[1].aval.shape
    C = int(np.prod(rhs)) // F
    return g_perm, (1, P, C), (1, P, F)


def _capture_operand(tap, eqn, invals, param_pos, scale):
    """The parameter-free operand in canonical [B, P, C] form (times the view's scale)."""
    if tap.kind == "dot":
        a_perm, (B, P, C), _, _ = _dot_layout(eqn, param_pos)
        a = jnp.transpose(invals[1 - param_pos], a_perm).reshape(B, P, C)
    else:
        p = eqn.params
        rhs_shape = eqn.invars[1].aval.shape
        dn = p["dimension_numbers"]
        filt = tuple(rhs_shape[i] for i in dn.rhs_spec[2:])
        patches = jax.lax.conv_general_dilated_patches(
            invals[0], filter_shape=filt, window_strides=p["window_strides"],
            padding=p["padding"], lhs_dilation=p["lhs_dilation"], rhs_dilation=p["rhs_dilation"],
            dimension_numbers=dn, precision=jax.lax.Precision.HIGHEST)
        g_perm, (B, P, C), _ = _conv_layout(eqn)
        a = jnp.transpose(patches, g_perm).reshape(B, P, C)
    if scale is not None:
        a = a * jnp.asarray(scale, a.dtype)
    return a


def analyse(closed: jcore.ClosedJaxpr, args_abstract: list, leaf_index: dict[int, int]) -> Plan:
    """Find the taps of ``closed`` (evaluated abstractly, nothing is computed)."""
    rec = _Recorder()

    def go(*args):
        outs, _ = run_jaxpr(closed, list(args), leaf_index=leaf_index, recorder=rec)
        return outs

    jax.eval_shape(go, *args_abstract)
    taps = []
    for path, leaf, kind, info in rec.candidates:
        if rec.uses.get(leaf, 0) != 1:
            continue
        eqn = info["eqn"]
        y_shape = tuple(eqn.outvars[0].aval.shape)
        if kind == "dot":
            _, a_bpc, g_perm, bpf = _dot_layout(eqn, info["param_pos"])
        else:
            g_perm, a_bpc, bpf = _conv_layout(eqn)
        taps.append(Tap(path, leaf, kind, y_shape, a_bpc, g_perm, bpf))
    return Plan(taps, frozenset(t.leaf for t in taps), rec.flops)

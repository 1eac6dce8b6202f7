"""The eNTK's three implementations, one signature, and the cost and memory models that choose.

* ``jacobian_contraction``: per-example Jacobians of every differentiated leaf, contracted.
* ``ntk_vector_products``: one VJP per output of ``x2`` and a JVP through ``x1`` (no Jacobian).
* ``structured``: dense and convolutional uses of a leaf found in the model's jaxpr
  (:mod:`kjax.ntk._jaxpr`) are contracted through their inputs ``a`` and pre-activation gradients
  ``g``; the other leaves keep their Jacobians (Novak et al., *Fast Finite Width Neural Tangent
  Kernel*, ICML 2022).

Every implementation takes ``(model, x1, x2, *, trace, diag, out_ndim, precision, n1, n2,
out_shape, size, plan_bundle)`` and returns the kernel in neural-tangents' layout, averaged over
the traced axes (``size`` elements). :data:`IMPLEMENTATIONS` lists them for the dispatcher;
:func:`implementation_costs` (flops) and :func:`implementation_memory` (peak bytes) describe them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src import dispatch
from kjax.ntk import _jaxpr
from kjax.ntk._axes import Letters, out_letters, result_shape, trace_and_diagonal
from kjax.ntk._model import Model

# ----------------------------------------------------------------------------- features


def basis(shape, dtype):
    n = int(np.prod(shape))
    return jnp.eye(n, dtype=dtype).reshape(n, *shape)


def jacobian_features(model: Model, x):
    """Per-leaf Jacobians ``[*out_full, *leaf]`` of the selected leaves."""
    sel = model.sel

    def one(xi):
        out, vjp = jax.vjp(lambda sub: model.apply_selected(sub, xi), model.selected_leaves())
        (jac,) = jax.vmap(vjp)(basis(out.shape, out.dtype))
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


def structured_features(model: Model, x, plan, closed, leaf_index, materialise: set):
    """Per example: for each tap (a [B,P,C], g [*out, B,P,F]) or its materialised Jacobian; and
    the Jacobians of the other selected leaves."""
    rest = [i for i in model.sel if i not in plan.tapped_leaves]
    taps = plan.taps

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
        gs, js = jax.vmap(vjp)(basis(out.shape, out.dtype))
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

    return jax.vmap(one)(x) if model.vmap else one(x)


def contract_jacobians(j1, j2, ndim_out, trace, diag, vmap, precision):
    """sum over parameter axes of j1[*out1, *p] j2[*out2, *p] -> NT-ordered kernel."""
    L = Letters()
    l1, l2, res = out_letters(ndim_out, trace, diag, L)
    p = L(j1.ndim - ndim_out)
    return jnp.einsum(f"{''.join(l1)}{p},{''.join(l2)}{p}->{res}", j1, j2, precision=precision)


def contract_taps(f1, f2, ndim_out, trace, diag, vmap, precision):
    """sum_{b,p,q} <a1[b,p], a2[b,q]> <g1[..., b, p], g2[..., b, q]>."""
    (a1, g1), (a2, g2) = f1, f2
    L = Letters()
    l1, l2, res = out_letters(ndim_out, trace, diag, L)
    b, p, q, c, f = L(), L(), L(), L(), L()
    e1 = l1[0] if vmap else ""
    e2 = l2[0] if vmap else ""
    A = jnp.einsum(f"{e1}{b}{p}{c},{e2}{b}{q}{c}->{''.join(dict.fromkeys(e1 + e2))}{b}{p}{q}",
                   a1, a2, precision=precision)
    a_sub = "".join(dict.fromkeys(e1 + e2)) + b + p + q
    return jnp.einsum(f"{a_sub},{''.join(l1)}{b}{p}{f},{''.join(l2)}{b}{q}{f}->{res}", A, g1, g2,
                      precision=precision, optimize="optimal")


# ------------------------------------------------------------------------------ cost model


def out_pair_factor(out_shape, trace, diag, offset):
    """How many (o1, o2) pairs the contraction visits per example pair."""
    fac = 1
    for i, s in enumerate(out_shape):
        ax = i + offset
        fac *= s if (ax in trace or ax in diag) else s * s
    return fac


def structured_costs(model: Model, plan, n1, n2, out_shape, trace, diag):
    """Per tap: (cost of the Gram trick, cost of materialising the layer's Jacobian)."""
    offset = 1 if model.vmap else 0
    pairs = out_pair_factor(out_shape, trace, diag, offset)
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
    pairs = out_pair_factor(out_shape, trace, diag, offset)
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


# ---------------------------------------------------------------------------- memory model


def implementation_memory(model: Model, plan, n1: int, n2: int, example_shape: tuple,
                          trace: tuple, diag: tuple, itemsize: int) -> dict[str, float]:
    """Estimated peak bytes of each implementation for one pair of batches ``[n1]``, ``[n2]``.

    ``example_shape`` is the shape of one example's output; ``plan`` (from :func:`structured_plan`)
    may be None, and then ``structured`` is not estimated. Counted: the features each
    implementation holds (Jacobians, tap operands and gradients, or the untraced ``[N2, O, N1, O]``
    block of vector products), the cotangent basis of the backward passes, and the result twice
    (the sum and its last term). An estimate from shapes, not a measurement: XLA may fuse some of
    these away or keep more temporaries alive.
    """
    o_ex = int(np.prod(example_shape))
    res = int(np.prod(result_shape((n1, *example_shape), (n2, *example_shape), trace, diag)))
    n_params = model.n_selected
    # cotangent basis of the backward passes: one output row per output element
    basis_1 = max(n1, n2) * o_ex * o_ex if model.vmap else (max(n1, n2) * o_ex) ** 2
    est = {
        "jacobian_contraction": (n1 + n2) * o_ex * n_params + basis_1 + 2 * res,
        "ntk_vector_products": 2 * n1 * n2 * o_ex * o_ex + basis_1 + res,
    }
    if plan is not None:
        e1, e2 = (n1, n2) if model.vmap else (1, 1)
        o = o_ex if model.vmap else max(n1, n2) * o_ex
        rest = n_params
        feats, gram = 0, 0
        for t in plan.taps:
            B, P, C = t.a_shape
            F = t.bpf[2]
            rest -= int(np.prod(np.shape(model.leaves[t.leaf])))
            feats += (e1 + e2) * min(B * P * C + o * B * P * F, o * B * C * F + B * P * C)
            gram = max(gram, e1 * e2 * B * P * P)
        est["structured"] = feats + (n1 + n2) * o_ex * rest + gram + basis_1 + 2 * res
    return {k: float(v) * itemsize for k, v in est.items()}


# ------------------------------------------------------------------------------ kernels


def kernel_from_jacobians(model, x1, x2, *, trace, diag, out_ndim, precision, size=1, **_):
    j1 = jacobian_features(model, x1)
    j2 = j1 if x2 is None else jacobian_features(model, x2)
    return sum(contract_jacobians(a, b, out_ndim, trace, diag, model.vmap, precision)
               for a, b in zip(j1, j2, strict=True)) / size


def kernel_structured(model, x1, x2, *, trace, diag, out_ndim, precision, n1, n2, out_shape, size=1,
                      plan_bundle=None):
    plan, closed, leaf_index = plan_bundle or structured_plan(model, x1)
    costs = structured_costs(model, plan, n1, n2, out_shape, trace, diag)
    materialise = {leaf for leaf, (gram, mat) in costs.items() if mat < gram}
    f1, j1 = structured_features(model, x1, plan, closed, leaf_index, materialise)
    if x2 is None:
        f2, j2 = f1, j1
    else:
        # without vmap the jaxpr is specialised to the batch size: trace x2's batch too
        plan2, closed2, _ = (plan, closed, None) if model.vmap else structured_plan(model, x2)
        if plan2.tapped_leaves != plan.tapped_leaves:
            return kernel_from_jacobians(model, x1, x2, trace=trace, diag=diag, out_ndim=out_ndim,
                                         precision=precision, size=size)
        f2, j2 = structured_features(model, x2, plan2, closed2, leaf_index, materialise)
    total = 0.0
    for t, a, b in zip(plan.taps, f1, f2, strict=True):
        if t.leaf in materialise:
            total = total + contract_jacobians(a, b, out_ndim, trace, diag, model.vmap, precision)
        else:
            total = total + contract_taps(a, b, out_ndim, trace, diag, model.vmap, precision)
    for a, b in zip(j1, j2, strict=True):
        total = total + contract_jacobians(a, b, out_ndim, trace, diag, model.vmap, precision)
    return total / size


def kernel_nvp(model, x1, x2, *, trace, diag, out_ndim, precision, **_):
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

        cols = jax.lax.map(col, basis(out.shape, out.dtype))  # [O2, *f(x1) shape]
        return cols.reshape(*out.shape, *cols.shape[1:])

    if model.vmap:
        full = jax.lax.map(columns_for, x2_)  # [N2, *out2, N1, *out1]
    else:
        full = columns_for(x2_)  # [*out_full2, *out_full1]
    half = full.ndim // 2
    full = jnp.moveaxis(full, tuple(range(half)), tuple(range(half, 2 * half)))
    return trace_and_diagonal(full, trace, diag)


#: the eNTK's algorithms, one signature (see above), chosen by name or by the cost model
IMPLEMENTATIONS = (dispatch.Implementation("jacobian_contraction", kernel_from_jacobians),
                   dispatch.Implementation("ntk_vector_products", kernel_nvp),
                   dispatch.Implementation("structured", kernel_structured))


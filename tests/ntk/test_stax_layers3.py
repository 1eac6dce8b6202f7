"""kjax.ntk.stax's DotGeneral, ImageResize, Aggregate and GlobalSelfAttention (issue #14) against
neural-tangents.

Oracle: NT 0.6.5's stored outputs (benchmarks/peers/nt_stax_reference3.py ->
tests/ntk/data/nt_stax_reference3.npz) for the networks of tests/ntk/stax_archs3.py: nngp / ntk /
cov1 / cov2 for x1 vs x2 and x1 vs None (with the diagonal_batch / diagonal_spatial variants the
networks declare) to 1e-9 relative (Frobenius) in float64, apply_fn with NT's params to 1e-12,
shapes and is_gaussian; plus closed forms (identity maps leave the kernel unchanged, a dense and a
sparse graph give the same kernel) and the errors NT documents.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src.errors import KjaxError
from kjax.ntk import stax
from tests.conformance import assert_close
from tests.ntk.stax_archs3 import architectures

REF = np.load(os.path.join(os.path.dirname(__file__), "data", "nt_stax_reference3.npz"))
ARCHS = architectures(stax)
RTOL = 1e-9
RTOL_SELF = 1e-7  # arccos at cos = 1 on the diagonal (see tests/ntk/test_stax_structure.py)
# networks also compared with x2=None (a pattern without pattern2, attention's weights from the
# batch's own block, a full cov1); one compile each, so not all of them
SELF = ("dot_batch_diag", "resize_nearest", "agg_sparse", "attn_softmax", "attn_identity")


@pytest.fixture(autouse=True)
def _rank_promotion_raise():
    with jax.numpy_rank_promotion("raise"):
        yield


def _raises(match, f, *a, **kw):
    with pytest.raises(KjaxError, match=match):
        f(*a, **kw)


@pytest.mark.parametrize("name", list(ARCHS))
def test_kernel_matches_neural_tangents(name):
    (_, _, kernel_fn), _, _, kw = ARCHS[name]
    x1, x2 = REF[f"{name}/x1"], REF[f"{name}/x2"]
    k = kernel_fn(x1, x2, **kw)
    assert isinstance(k, stax.Kernel)
    for field in ("nngp", "ntk", "cov1", "cov2"):
        assert_close(getattr(k, field), REF[f"{name}/{field}"], RTOL, f"{name} {field}")
    assert k.shape1 == tuple(REF[f"{name}/shape1"]), name
    assert k.is_gaussian == bool(REF[f"{name}/is_gaussian"]), name
    if name not in SELF:
        return
    kw11 = dict(kw)
    if "pattern" in kw:
        kw11["pattern"] = (kw["pattern"][0], None)
    k11 = kernel_fn(x1, None, ("nngp", "ntk", "cov1"), **kw11)
    assert_close(k11.nngp, REF[f"{name}/nngp11"], RTOL_SELF, f"{name} nngp(x1, None)")
    assert_close(k11.ntk, REF[f"{name}/ntk11"], RTOL_SELF, f"{name} ntk(x1, None)")
    assert_close(k11.cov1, REF[f"{name}/cov1_11"], RTOL_SELF, f"{name} cov1(x1, None)")


@pytest.mark.parametrize("name", list(ARCHS))
def test_init_and_apply_match_neural_tangents(name):
    (init_fn, apply_fn, _), _, _, kw = ARCHS[name]
    x1 = REF[f"{name}/x1"]
    shapes = []

    def init(key):
        out_shape, params = init_fn(key, x1.shape)
        shapes.append(out_shape)
        return params

    params = jax.eval_shape(init, jax.random.key(0))
    leaves, treedef = jax.tree.flatten(params)
    nt_leaves = [REF[f"{name}/params/{j}"] for j in range(len(leaves))]
    assert f"{name}/params/{len(leaves)}" not in REF.files, "leaf count"
    assert [leaf.shape for leaf in leaves] == [leaf.shape for leaf in nt_leaves]
    nt_params = jax.tree.unflatten(treedef, [jnp.asarray(v, jnp.float64) for v in nt_leaves])
    akw = {"pattern": kw["pattern"][0]} if "pattern" in kw else {}
    y = apply_fn(nt_params, jnp.asarray(x1), **akw)
    assert y.shape == tuple(shapes[0]) == REF[f"{name}/apply"].shape
    assert_close(y, REF[f"{name}/apply"], 1e-12, f"{name} apply_fn")


X = np.random.default_rng(7).standard_normal((2, 3, 2))
BASE = stax.serial(stax.Conv(3, (2,), padding="SAME", b_std=0.1), stax.Relu())


def test_identity_maps_leave_the_kernel_unchanged():
    eye = np.eye(3)
    _, _, kernel_fn = stax.serial(BASE, stax.FanOut(4), stax.parallel(
        stax.Identity(),
        stax.DotGeneral(rhs=eye, dimension_numbers=(((1,), (0,)), ((), ()))),  # -> [n, C, W]
        stax.ImageResize((-1, 3, -1), "linear"),
        stax.Aggregate()))
    pattern = np.broadcast_to(eye, (2, 3, 3))
    ref, dot, resize, agg = kernel_fn(X, None, ("nngp", "ntk"), pattern=(pattern, None))
    for k, what in ((resize, "resize"), (agg, "aggregate")):
        assert_close(k.nngp, ref.nngp, 1e-12, what)
        assert_close(k.ntk, ref.ntk, 1e-12, what)
    assert_close(dot.nngp, ref.nngp, 1e-12, "dot_general")  # W stays the only spatial axis


def test_sparse_and_dense_graphs_give_the_same_kernel():
    edges = np.array([[[0, 1], [1, 2], [2, 0], [1, 1], [2, -1]],
                      [[0, 0], [0, 0], [2, 1], [-1, -1], [1, 2]]], np.int32)
    dense = np.zeros((2, 3, 3))
    for n in range(2):
        for s, r in edges[n]:
            if r >= 0:
                dense[n, s, r] += 1.0  # a negative tail wraps to the last vertex
    _, apply_s, kernel_s = stax.serial(BASE, stax.Aggregate(implementation="SPARSE"))
    _, apply_d, kernel_d = stax.serial(BASE, stax.Aggregate(
        implementation=stax.AggregateImplementation.DENSE, to_dense=lambda p: 2.0 * p))
    ks = kernel_s(X, None, "nngp", pattern=(edges, None))
    kd = kernel_d(X, None, "nngp", pattern=(0.5 * dense, None))
    assert_close(ks, kd, 1e-12, "sparse vs dense")
    x = jnp.asarray(X)
    assert_close(stax.Aggregate(implementation="SPARSE")[1]((), x, pattern=edges),
                 jnp.einsum("nsc,nsr->nrc", x, dense), 1e-12, "sparse apply_fn")


def test_documented_errors():
    _raises("`rhs` must be None when `lhs` is given", stax.DotGeneral, lhs=1.0, rhs=2.0)
    _raises("`dimension_numbers` must be", stax.DotGeneral, rhs=1.0, dimension_numbers=((0,), ()))
    dot_c = stax.DotGeneral(rhs=np.ones(2), dimension_numbers=(((2,), (0,)), ((), ())))
    _raises("`dimension_numbers` must leave the channel axis", dot_c[2], X[:, :, :2])
    dot_b = stax.DotGeneral(rhs=np.ones(2), dimension_numbers=(((0,), (0,)), ((), ())))
    _raises("`dimension_numbers` must not contract the batch axis", dot_b[2], X)
    dot_s = stax.DotGeneral(rhs=np.ones(3), dimension_numbers=(((1,), (0,)), ((), ())))
    _raises("`diagonal_spatial` must be None or False", dot_s[2], X, diagonal_spatial=True)
    dot_n = stax.DotGeneral(rhs=np.ones((2, 3)), dimension_numbers=(((), ()), ((0,), (0,))))
    _raises("`x2` must have 2 examples", dot_n[2], X, X[:1])
    _raises("`shape` must be", stax.ImageResize, (2, 0), "linear")
    _raises("`x1` must have rank 4", stax.ImageResize((-1, 2, 2, -1), "linear")[2], X)
    cubic = stax.ImageResize((-1, 4, -1), "cubic")
    assert cubic[1]((), X).shape == (2, 4, 2)  # apply_fn works, kernel_fn does not (as NT)
    _raises("`method` must be 'linear' or 'nearest'", cubic[2], X)
    _raises("`shape` must be -1 at the channel axis", stax.ImageResize((-1, -1, 4), "linear")[2],
            X)
    _raises("`shape` must be -1 at the batch axis", stax.ImageResize((4, -1, -1), "linear")[2], X)
    _raises("`implementation` must be one of", stax.Aggregate, implementation="CSR")
    _raises("`aggregate_axis` must hold spatial axes only", stax.Aggregate(aggregate_axis=0)[0],
            None, X.shape)
    agg = stax.Aggregate()
    _raises("`pattern` must give both", agg[2], X, X, pattern=(None, np.ones((2, 3, 3))))
    _raises("`diagonal_spatial` must be None or False", agg[2], X, diagonal_spatial=True)
    _raises("`pattern` must be", agg[2], X, None, pattern=(np.ones((2, 3, 4)), None))
    _raises("`pattern` must have a trailing dimension of 2",
            stax.Aggregate(implementation="SPARSE")[1], (), X, pattern=np.ones((2, 3, 3), int))
    _raises("`attention_mechanism` must be 'IDENTITY' when linear_scaling=False",
            stax.GlobalSelfAttention(2, 2, 2, 2, linear_scaling=False)[2], X)
    _raises("`pos_emb_type` must be one of", stax.GlobalSelfAttention, 2, 2, 2, 2,
            pos_emb_type="ROPE")
    gsa = stax.GlobalSelfAttention(2, 2, 2, 2, pos_emb_type="SUM", n_chan_pos_emb=3)
    _raises("`n_chan_pos_emb` must be None or the input channels", gsa[0], jax.random.key(0),
            X.shape)
    _raises("`diagonal_spatial` must be None or False",
            stax.serial(stax.Dense(2), stax.GlobalSelfAttention(2, 2, 2, 2))[2], X,
            diagonal_spatial=True)


def test_weightless_layers_map_the_input_kernel_exactly():
    # a layer without weights maps x to y = L x; its kernel_fn on x must be the input kernel of y,
    # sum_c y1[i, p, c] y2[j, p', c] / C (NumPy), for every position pair
    from tests.ntk.stax_archs3 import _patterns

    rng = np.random.default_rng(11)
    x1, x2 = rng.standard_normal((2, 3, 2, 4)), rng.standard_normal((3, 3, 2, 4))
    _, _, sparse1, sparse2 = _patterns()
    layers = {
        "dot-lhs-batch": (stax.DotGeneral(lhs=rng.standard_normal((3, 2)),
                                          dimension_numbers=(((), ()), ((0,), (1,)))), {},
                          (2, 4)),  # [H, 2, n, W, C]: the constant's batch dimension pairs with H
        "resize": (stax.ImageResize((-1, 5, 1, -1), "linear"), {}, (0, 3)),
        "aggregate": (stax.Aggregate(aggregate_axis=(1, 2), implementation="SPARSE"),
                      {"pattern": (sparse1, sparse2)}, (0, 3)),
    }
    for what, ((_, apply_fn, kernel_fn), kw, (b, c)) in layers.items():
        a1 = {"pattern": kw["pattern"][0]} if kw else {}
        a2 = {"pattern": kw["pattern"][1]} if kw else {}
        y1 = np.moveaxis(np.asarray(apply_fn((), jnp.asarray(x1), **a1)), (b, c), (0, -1))
        y2 = np.moveaxis(np.asarray(apply_fn((), jnp.asarray(x2), **a2)), (b, c), (0, -1))
        s = y1.ndim - 2
        lo, up = "abcd"[:s], "ABCD"[:s]
        spec = f"i{lo}z,j{up}z->ij" + "".join(p + q for p, q in zip(lo, up, strict=True))
        want = np.einsum(spec, y1, y2) / y1.shape[-1]
        k = kernel_fn(x1, x2, "nngp", **kw)
        assert_close(k, want, 1e-12, what)


@pytest.mark.parametrize("layer", ["DotGeneral", "ImageResize", "Aggregate", "GlobalSelfAttention"])
def test_signature_is_neural_tangents(layer):
    # NT's parameter names, kinds and plain defaults, stored by the reference script
    import inspect
    import json

    want = json.loads(str(REF[f"signature/{layer}"]))
    have = []
    for p in inspect.signature(getattr(stax, layer)).parameters.values():
        d = p.default
        if d is inspect.Parameter.empty:
            d = "<empty>"
        elif not isinstance(d, int | float | str | tuple | type(None)):
            d = f"<{type(d).__name__}>"
        have.append([p.name, p.kind.name, json.loads(json.dumps(d))])
    assert have == want

"""The Pallas kernels of decayed linear attention and of the (gated) delta rule, in interpret mode.

``pallas_interpret`` runs the Triton kernels with ``interpret=True``, ``pallas_tpu_interpret`` the TPU
kernels under ``pltpu.InterpretParams()``. Values are compared in float64 with the NumPy token
recurrences of ``oracle`` and, with their gradients (``q, k, v``, the log-decay, ``beta`` and the
initial state), with the XLA path (itself checked against the oracle and by ``check_grads`` in
test_decay.py); the decayed Triton kernels also pass ``check_grads`` (reverse mode) here. Shapes are tiny and shared: the Triton kernels run chunks of 16 over T = 40 (three
chunks, ragged); the TPU kernels use 128-token chunks, so their shape has T = 136 (two chunks,
ragged) and one head, to cross a chunk boundary forward and in the reverse scan.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from kjax import attention as A
from kjax._src import dispatch
from tests.attention import oracle
from tests.conformance import assert_close

# (B, T, H, M, Dv) per implementation
SHAPE = {"pallas_interpret": (1, 40, 2, 16, 16), "pallas_tpu_interpret": (1, 136, 1, 16, 16)}
IMPLS = list(SHAPE)
RNG = np.random.default_rng(4)


def _data(impl, *, positive=False):
    b, t, h, m, dv = SHAPE[impl]
    q, k = RNG.normal(size=(2, b, t, h, m)) * 0.5
    if positive:  # normalised attention needs a positive denominator
        q, k = np.abs(q) + 0.1, np.abs(k) + 0.1
    return dict(
        q=jnp.asarray(q), k=jnp.asarray(k), v=jnp.asarray(RNG.normal(size=(b, t, h, dv))),
        kn=jnp.asarray(k / np.linalg.norm(k, axis=-1, keepdims=True)),
        beta=jnp.asarray(RNG.uniform(0, 2, size=(b, t, h))),
        head=jnp.asarray(-RNG.uniform(0.05, 1.0, size=(h,))),
        scalar=jnp.asarray(-RNG.uniform(0.05, 1.0, size=(b, t, h))),
        kv=jnp.asarray(RNG.normal(size=(b, h, m, dv))), ks=jnp.asarray(RNG.uniform(0.5, 1.0, size=(b, h, m))))


def _ct(x):
    return jnp.cos(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape)


def _vjp(f, args):
    """``(outputs, gradients)`` of ``f`` at ``args`` for fixed cotangents, in one jitted call."""
    def run(*a):
        out, vjp = jax.vjp(f, *a)
        return out, vjp(jax.tree.map(_ct, out))
    return jax.jit(run)(*args)


# ----------------------------------------------------------------------------------- decayed attention

# (impl, decay kind, normalize, segment lengths or None): the Triton case packs four sequences whose
# runs cross chunk boundaries (a decay with segment_ids)
CASES = [("pallas_interpret", "scalar", False, (7, 12, 19, 2)), ("pallas_tpu_interpret", "head", True, None)]


def _oracle_packed(q, k, v, g, lens, *, normalize, s0, z0):
    """The token recurrence run sequence by sequence: the first starts from ``(s0, z0)``, the others
    from zero; the returned state is the last one's."""
    if lens is None:
        return oracle.decayed_linear_attention(q, k, v, g, normalize=normalize, s0=s0, z0=z0)
    g = np.broadcast_to(np.asarray(g), q.shape[:3]) if np.ndim(g) == 1 else np.asarray(g)
    outs, start = [], 0
    for i, n in enumerate(lens):
        sl = slice(start, start + n)
        out, s, z = oracle.decayed_linear_attention(q[:, sl], k[:, sl], v[:, sl], g[:, sl], normalize=normalize,
                                                    s0=s0 if i == 0 else None, z0=z0 if i == 0 else None)
        outs.append(out)
        start += n
    return np.concatenate(outs, axis=1), s, z


@pytest.mark.parametrize(("impl", "kind", "normalize", "lens"), CASES)
def test_decayed_attention_forward_and_gradients(impl, kind, normalize, lens):
    d = _data(impl, positive=normalize)
    seg = None if lens is None else jnp.asarray(np.repeat(np.arange(len(lens)), lens)[None])

    def f(q, k, v, g, kv, ks, *, impl):
        out, st = A.linear_attention(q, k, v, decay=g, normalize=normalize, chunk_size=16, return_state=True,
                                     initial_state=A.LinearAttentionState(kv, ks), segment_ids=seg,
                                     implementation=impl)
        return out, st.kv, st.k_sum

    args = (d["q"], d["k"], d["v"], d[kind], d["kv"], d["ks"])
    (out, kv, ks), grads = _vjp(functools.partial(f, impl=impl), args)
    want, s, z = _oracle_packed(*args[:4], lens, normalize=normalize, s0=d["kv"], z0=d["ks"])
    assert_close(out, want, 1e-12, "output vs token recurrence")
    assert_close(kv, s, 1e-12, "final state")
    assert_close(ks, z, 1e-12, "final normaliser")
    _, ref = _vjp(functools.partial(f, impl="xla"), args)
    for name, a, r in zip(("q", "k", "v", "decay", "kv", "k_sum"), grads, ref, strict=True):
        assert_close(a, r, 1e-11, f"d{name}")


# ----------------------------------------------------------------------------------- delta rule

DELTA = [("pallas_interpret", False), ("pallas_tpu_interpret", True)]


@pytest.mark.parametrize(("impl", "gated"), DELTA)
def test_delta_rule_forward_and_gradients(impl, gated):
    d = _data(impl)

    def f(q, k, v, beta, g, kv, *, impl):
        out, st = A.delta_rule_attention(q, k, v, beta, decay=g, chunk_size=16, return_state=True,
                                         initial_state=A.DeltaRuleState(kv), implementation=impl)
        return out, st.kv

    g = d["scalar"] if gated else None
    args = (d["q"], d["kn"], d["v"], d["beta"], g, d["kv"])
    (out, kv), grads = _vjp(functools.partial(f, impl=impl), args)
    want, s = oracle.gated_delta_rule(*args)
    assert_close(out, want, 1e-12, "output vs token recurrence")
    assert_close(kv, s, 1e-12, "final state")
    _, ref = _vjp(functools.partial(f, impl="xla"), args)
    for name, a, r in zip(("q", "k", "v", "beta", "decay", "kv"), grads, ref, strict=True):
        if a is not None:
            assert_close(a, r, 1e-11, f"d{name}")


def test_gated_delta_rule_forward_triton():
    # the form the gradient test runs on the TPU kernels only (the TPU kernels' plain form differs
    # from the gated one by the absent gate inputs: covered by lowering and the shared chunk maths)
    impl = "pallas_interpret"
    d = _data(impl)
    g = d["scalar"]
    out = A.delta_rule_attention(d["q"], d["kn"], d["v"], d["beta"], decay=g, chunk_size=16, implementation=impl)
    want, _ = oracle.gated_delta_rule(d["q"], d["kn"], d["v"], d["beta"], g)
    assert_close(out, want, 1e-12, "output vs token recurrence")


# ----------------------------------------------------------------------------------- low precision


def test_bfloat16_strong_decays_stay_finite():
    # log-decays of -5 (gates e^-5) over chunks of 16: exp(+b) of the factorised form would be e^80,
    # beyond float16 and a large fraction of the float32 range; the kernels exponentiate only b_t - b_s
    # for s <= t (and b_C - b_s, b_t), all <= 0
    impl = "pallas_interpret"
    d = _data(impl)
    lo = {n: d[n].astype(jnp.bfloat16) for n in ("q", "k", "v", "kn", "beta")}
    g = jnp.full(d["scalar"].shape, -5.0, jnp.bfloat16)
    for fn, args in ((functools.partial(A.linear_attention, normalize=False), (lo["q"], lo["k"], lo["v"])),
                     (A.delta_rule_attention, (lo["q"], lo["kn"], lo["v"], lo["beta"]))):
        out = fn(*args, decay=g, chunk_size=16, implementation=impl)
        assert out.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(out)))
        want = fn(*(x.astype(jnp.float32) for x in args), decay=g.astype(jnp.float32), chunk_size=16,
                  implementation="xla")
        assert_close(out, want, 2e-2, f"{fn} bf16 vs float32 XLA")


# ----------------------------------------------------------------------------------- dispatch


def test_dispatch_declares_what_the_kernels_serve():
    impls = A._attention.IMPLEMENTATIONS
    config = dict(causal=True, feature_map="identity", dtype=jnp.dtype(jnp.float32), d=16, m=16, dv=16, t=40,
                  segments=False, decay="scalar", varlen=False)
    sel = dispatch.dispatch("f", None, impls, config)
    assert sel.names() == {"cpu": "xla", "cuda": "pallas", "rocm": "xla", "tpu": "pallas"}
    assert dispatch.dispatch("f", None, impls, {**config, "decay": "head", "segments": True}).names()["tpu"] == "pallas"
    for change, reason in (({"decay": "feature"}, "per-feature `decay`"), ({"varlen": True}, "`cu_seqlens`")):
        sel = dispatch.dispatch("f", None, impls, {**config, **change})
        assert set(sel.names().values()) == {"xla"}
        why = dict(((n, p), r) for n, p, r in sel.skipped)
        assert reason in why[("pallas", "cuda")] and reason in why[("pallas", "tpu")]

    dimpls = A._attention.DELTA_IMPLEMENTATIONS
    dconfig = dict(dtype=jnp.dtype(jnp.bfloat16), m=64, dv=64, t=40, gated=True, segments=False, varlen=False)
    assert dispatch.dispatch("f", None, dimpls, dconfig).names() == {
        "cpu": "xla", "cuda": "pallas", "rocm": "xla", "tpu": "pallas"}
    for change, reason in (({"segments": True}, "`segment_ids`"), ({"varlen": True}, "`cu_seqlens`"),
                           ({"m": 200}, "above 128"), ({"dtype": jnp.dtype("float64")}, "float64")):
        sel = dispatch.dispatch("f", None, dimpls, {**dconfig, **change})
        assert sel.names()["cuda"] == "xla"
        assert reason in dict(((n, p), r) for n, p, r in sel.skipped)[("pallas", "cuda")]


def test_unsupported_calls_fall_back_or_raise():
    impl = "pallas_interpret"
    d = _data(impl)
    g4 = jnp.broadcast_to(d["scalar"][..., None], d["q"].shape)
    # a list falls through to XLA for a per-feature decay ...
    out = A.linear_attention(d["q"], d["k"], d["v"], decay=g4, normalize=False, chunk_size=16,
                             implementation=[impl, "xla"])
    assert_close(out, oracle.decayed_linear_attention(d["q"], d["k"], d["v"], g4)[0], 1e-12, "fallback")
    # ... and the single name raises, naming the argument and the reason
    with pytest.raises(Exception, match="implementation.*per-feature `decay`"):
        A.linear_attention(d["q"], d["k"], d["v"], decay=g4, implementation=impl)
    with pytest.raises(Exception, match="implementation.*`cu_seqlens`"):
        A.delta_rule_attention(d["q"], d["kn"], d["v"], d["beta"], cu_seqlens=jnp.array([0, 10, 40]),
                               implementation=impl)


def test_decayed_kernel_gradients_pass_check_grads():
    # reverse mode against finite differences, Triton kernels in interpret mode (normalised, with
    # initial state), jitted so the finite differences reuse one compiled forward
    impl = "pallas_interpret"
    d = _data(impl, positive=True)

    @jax.jit
    def f(q, k, v, g, kv):
        return A.linear_attention(q, k, v, decay=g, chunk_size=16, implementation=impl,
                                  initial_state=A.LinearAttentionState(kv, d["ks"]))

    check_grads(f, (d["q"], d["k"], d["v"], d["scalar"], d["kv"]), order=1, modes=("rev",), eps=1e-6)

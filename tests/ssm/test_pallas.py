"""The Pallas fftconv kernels (Triton and Mosaic TPU), forward and VJP, against the reference.

On CPU they run in interpret mode (``interpret=True`` for the Triton kernels, ``pltpu.InterpretParams()``
for the TPU kernels); on a GPU (TPU) the same class runs the compiled Triton (TPU) kernels. Each case
is one jitted program computing the output and the four gradients, to keep compile time down.
Small tile budgets reach the two-level path (XLA outer step) at small ``L``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kjax._src import dispatch
from kjax._src.errors import KjaxError
from kjax.ssm import _fftconv, _pallas_tpu, _pallas_triton, fftconv
from kjax.ssm import _pallas_common as pc
from kjax.ssm._reference import fftconv_reference
from tests.conformance import assert_close, tol

RNG = np.random.default_rng(3)
PLATFORM = dispatch.current_platform()
FN = "kjax.ssm.fftconv"

#: tiny tiles so that N = 512 (Triton) / 4096 (TPU) already needs the two-level path; bwd_programs=1 makes the Triton
#: backward loop over the whole batch in one program per (outer index, channel)
TRITON_SMALL = pc.Budget("Triton", 16, 16, 16, 16, 1 << 18, (), bwd_programs=1)
TPU_SMALL = pc.Budget("Mosaic TPU", 16, 128, 16, 128, 1 << 18, ())


def _args(mode, B, L, D, lk, dtype=np.float64):
    u = jnp.asarray(RNG.normal(size=(B, L, D)), dtype)
    k = jnp.asarray(RNG.normal(size=(2, lk, D) if mode == "bidirectional" else (lk, D)), dtype)
    gate = jnp.asarray(RNG.normal(size=(B, L, D)), dtype)
    skip = jnp.asarray(RNG.normal(size=(D,)), dtype)
    return u, k, gate, skip


def _value_and_vjp(conv, args, ct):
    """``conv(*args)`` and the VJP of ``ct`` w.r.t. all four arguments, as one jitted program."""
    def f(*args):
        y, vjp = jax.vjp(conv, *args)
        return y, vjp(ct)
    return jax.jit(f)(*args)


class _KernelTests:
    module = None
    compiled_on = None
    small = None
    # (mode, B, L, D, L_k, small tiles): one level, two levels (circular: N = L), ragged shapes
    cases = None

    @property
    def interpret(self):
        return PLATFORM != self.compiled_on

    def test_forward_and_vjp_match_reference(self, case):
        mode, B, L, D, lk, small = case
        dtype = np.float64 if self.interpret else np.float32
        args = _args(mode, B, L, D, lk, dtype)
        budget = self.small if small else self.module.BUDGET
        plan = pc.make_plan(mode, L, lk, budget)
        assert (plan.p > 1) == small, plan  # the case exercises the path it says
        ct = jnp.asarray(RNG.normal(size=(B, L, D)), dtype)
        conv = lambda u, k, g, s: self.module.fftconv(u, k, g, s, mode=mode, interpret=self.interpret,
                                                      budget=budget)
        y, grads = _value_and_vjp(conv, args, ct)
        y_ref, grads_ref = _value_and_vjp(lambda *a: fftconv_reference(*a, mode=mode), args, ct)
        rtol = 1e-12 if self.interpret else tol(np.float32, 30)
        assert y.dtype == dtype
        assert_close(y, y_ref, rtol, f"{mode} y")
        for g, g_ref, name in zip(grads, grads_ref, ("u", "k", "gate", "skip"), strict=True):
            assert g.dtype == dtype
            assert_close(g, g_ref, rtol, f"{mode} grad {name}")


def _cases(one_level, two_level_circular, two_level_bidir):
    return pytest.mark.parametrize("case", [one_level, two_level_circular, two_level_bidir],
                                   ids=["causal-one-level", "circular-two-level", "bidirectional-two-level"])


@_cases(("causal", 2, 13, 3, 5, False),             # N = 256 = 16 x 16
        ("circular", 1, 1024, 2, 300, True),         # N = L = 1024 = 4 x (16 x 16)
        ("bidirectional", 3, 300, 2, 57, True))      # N = 512 = 2 x (16 x 16)
class TestTritonKernels(_KernelTests):
    module = _pallas_triton
    compiled_on = "cuda"
    small = TRITON_SMALL


@_cases(("causal", 2, 13, 3, 5, False),             # N = 2048 = 16 x 128
        ("circular", 1, 4096, 2, 300, True),         # N = L = 4096 = 2 x (16 x 128)
        ("bidirectional", 2, 2000, 1, 57, True))     # N = 4096 = 2 x (16 x 128)
class TestTPUKernels(_KernelTests):
    module = _pallas_tpu
    compiled_on = "tpu"
    small = TPU_SMALL


def test_bf16_in_out_float32_accumulation_through_dispatch():
    """bf16 inputs near float32's range through the public function: finite, bf16 out, accurate."""
    u, k, _, _ = _args("causal", 1, 40, 2, 40, np.float32)
    ub, kb = (u * 1e30).astype(jnp.bfloat16), k.astype(jnp.bfloat16)
    got = fftconv(ub, kb, implementation="pallas" if PLATFORM == "cuda" else "pallas_interpret")
    assert got.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(got)))
    assert_close(got, fftconv_reference(ub.astype(jnp.float64), kb.astype(jnp.float64)), tol(jnp.bfloat16))


# ------------------------------------------------------------------------------- plans and dispatch


def test_plans():
    tb, pb = _pallas_triton.BUDGET, _pallas_tpu.BUDGET
    assert pc.make_plan("causal", 13, 5, tb) == pc.Plan(n=256, p=1, n1=16, n2=16)
    assert pc.make_plan("causal", 300, 300, tb) == pc.Plan(n=1024, p=1, n1=32, n2=32)
    assert pc.make_plan("causal", 65536, 65536, tb) == pc.Plan(n=131072, p=32, n1=64, n2=64)
    assert pc.make_plan("circular", 512, 3, tb) == pc.Plan(n=512, p=1, n1=16, n2=32)
    assert pc.make_plan("causal", 13, 5, pb) == pc.Plan(n=2048, p=1, n1=16, n2=128)
    assert pc.make_plan("bidirectional", 3000, 100, pb) == pc.Plan(n=4096, p=1, n1=32, n2=128)
    assert pc.make_plan("causal", 65536, 65536, pb) == pc.Plan(n=131072, p=8, n1=128, n2=128)
    assert pc.make_plan("causal", 131072, 131072, pb).n == 1 << 18


def _config(mode, L, lk, dtype="float32"):
    return dict(mode=mode, L=L, lk=lk, dtype=dtype, u_dtype=dtype)


def test_default_selection_per_platform():
    """None: XLA on CPU / ROCm, the kernels on cuda and tpu, XLA there for what they do not cover."""
    names = dispatch.dispatch(FN, None, _fftconv.IMPLEMENTATIONS, _config("causal", 65536, 65536)).names()
    assert names == {"cpu": "xla", "cuda": "pallas", "rocm": "xla", "tpu": "pallas"}
    for config, arg, where in [
        (_config("causal", 1000, 1000, "float64"), "`u`", ("cuda", "tpu")),     # compiled: no float64
        (_config("causal", 200000, 200000), "`u`", ("cuda", "tpu")),            # N = 2^19 > 2^18
        (_config("circular", 3000, 10), "`u`", ("cuda", "tpu")),                # circular L not 2^a
        (_config("circular", 1024, 10), "`u`", ("tpu",)),                       # TPU tiles need N >= 2048
        (_config("causal", 1000, 1000, "float16"), "`u`", ("tpu",)),            # float16 on cuda only
    ]:
        sel = dispatch.dispatch(FN, None, _fftconv.IMPLEMENTATIONS, config)
        assert {p for p, name in sel.names().items() if name == "pallas"} == {"cuda", "tpu"} - set(where)
        reasons = [why for name, p, why in sel.skipped if name == "pallas" and p in where]
        assert len(reasons) == len(where) and all(why.startswith(arg) for why in reasons), reasons


def test_error_pallas_cannot_serve_here():
    u, k, _, _ = _args("causal", 1, 8, 2, 8)
    if PLATFORM not in dispatch.PALLAS_PLATFORMS:
        with pytest.raises(KjaxError, match=r"kjax.ssm.fftconv: implementation 'pallas' cannot serve this "
                                            r"call on cpu: it lowers on cuda, tpu, not on cpu"):
            fftconv(u, k, implementation="pallas")
    assert_close(fftconv(u, k, implementation=["pallas", "xla"]), fftconv_reference(u, k), 1e-12)


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_error_pallas_does_not_cover_the_call_on_its_platform(platform, monkeypatch):
    """implementation="pallas" where cuda / tpu is the default backend (simulated: the dispatcher is
    told so) raises naming the argument, for float64 and for a circular L that is not a power of two."""
    monkeypatch.setattr(dispatch, "current_platform", lambda: platform)
    for config, reason in [(_config("causal", 1000, 1000, "float64"), r"`u`: the compiled .* kernel takes "
                            r"float32 / bfloat16.*, not float64"),
                           (_config("circular", 3000, 10), r"`u`: circular mode runs at FFT length L")]:
        with pytest.raises(KjaxError, match=rf"kjax.ssm.fftconv: implementation 'pallas' cannot serve this call "
                                            rf"on {platform}: {reason}"):
            dispatch.dispatch(FN, "pallas", _fftconv.IMPLEMENTATIONS, config)
    assert dispatch.dispatch(FN, "pallas", _fftconv.IMPLEMENTATIONS, _config("causal", 1000, 1000)).names() == {
        "cuda": "pallas", "tpu": "pallas"}


@pytest.mark.parametrize("implementation,minimum", [("pallas_interpret", 256), ("pallas_tpu_interpret", 2048)])
def test_error_kernel_does_not_cover_the_call(implementation, minimum):
    """A single implementation raises naming the argument; a list falls through to XLA."""
    u, k, _, _ = _args("circular", 1, 300, 2, 7)
    with pytest.raises(KjaxError, match=rf"kjax.ssm.fftconv: implementation '{implementation}' cannot serve "
                                        rf"this call on \w+: `u`: circular mode runs at FFT length L, which the "
                                        rf".* kernel needs to be a power of two >= {minimum}; got L=300"):
        fftconv(u, k, mode="circular", implementation=implementation)
    got = fftconv(u, k, mode="circular", implementation=[implementation, "xla"])
    assert_close(got, fftconv_reference(u, k, mode="circular"), 1e-12)


def test_error_direct_call_outside_the_plan():
    """The kernels' entry points raise (never fall back silently) on a call they do not cover."""
    u, k, _, _ = _args("circular", 1, 300, 2, 7)
    for module in (_pallas_triton, _pallas_tpu):
        with pytest.raises(KjaxError, match=r"kjax.ssm.fftconv: `u`: circular mode runs at FFT length L"):
            module.fftconv(u, k, mode="circular", interpret=True)
    with pytest.raises(KjaxError, match=r"`u`: the Triton kernel covers FFT lengths up to 1024; "
                                        r"L \+ L_k - 1 = 1599 needs 2048"):
        _pallas_triton.fftconv(*_args("causal", 1, 800, 1, 800)[:2], interpret=True,
                               budget=pc.Budget("Triton", 16, 16, 16, 16, 1024, ()))

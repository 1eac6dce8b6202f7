"""Public kernel-attention functions: validation, dtype policy and dispatch over implementations."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from kjax._src import dispatch, dtypes
from kjax._src.errors import (
    KjaxTypeError,
    check_int,
    check_positive,
    check_rank,
    fail,
    is_static_number,
    shape_of,
)
from kjax.attention import _feature_maps as fm
from kjax.attention import _reference as ref
from kjax.attention import _xla


class LinearAttentionState(NamedTuple):
    """Recurrent state of (normalised) linear attention.

    Attributes:
      kv: ``[B, H, M, Dv]``, :math:`S = \\sum_s \\phi(k_s) v_s^\\top`.
      k_sum: ``[B, H, M]``, :math:`z = \\sum_s \\phi(k_s)` (the normaliser).
    """

    kv: jax.Array
    k_sum: jax.Array


class DeltaRuleState(NamedTuple):
    """Recurrent state of the delta rule: the fast weights ``kv: [B, H, M, Dv]``."""

    kv: jax.Array


# ----------------------------------------------------------------------------------- validation


def _check_nonempty(fn: str, arg: str, x, axes: Sequence[str]) -> None:
    """Every axis of ``x`` (named by ``axes``, e.g. ``("B", "T", "H", "D")``) has size >= 1."""
    for name, size in zip(axes, x.shape, strict=True):
        if size == 0:
            fail(fn, arg, f"have {name} >= 1 in [{', '.join(axes)}]", f"shape {tuple(x.shape)}")


def _check_qkv(fn: str, q, k, v, feat: str = "D"):
    """``q, k: [B, T, H, feat]``, ``v: [B, T, H, Dv]``, real, non-empty, of matching sizes."""
    q = dtypes.as_float_array(fn, "q", q)
    k = dtypes.as_float_array(fn, "k", k)
    v = dtypes.as_float_array(fn, "v", v)
    for name, x, last in (("q", q, feat), ("k", k, feat), ("v", v, "Dv")):
        axes = ("B", "T", "H", last)
        check_rank(fn, name, x, 4, layout=f"[{', '.join(axes)}]")
        _check_nonempty(fn, name, x, axes)
    if k.shape[-1] != q.shape[-1]:
        fail(fn, "k", f"have the feature size of `q` (M={q.shape[-1]}) in its last axis",
             f"shape {k.shape}")
    if k.shape[:3] != q.shape[:3]:
        fail(fn, "k", f"have the batch, time and head sizes of `q` {q.shape[:3]}", f"shape {k.shape}")
    if v.shape[:3] != q.shape[:3]:
        fail(fn, "v", f"have the batch, time and head sizes [B, T, H] = {q.shape[:3]} of `q`",
             f"shape {v.shape}")
    return q, k, v


def _check_segments(fn: str, segment_ids, q):
    if segment_ids is None:
        return None
    seg = jnp.asarray(segment_ids)
    if seg.shape != q.shape[:2]:
        fail(fn, "segment_ids", f"have shape [B, T] = {q.shape[:2]}", f"shape {seg.shape}")
    if not jnp.issubdtype(seg.dtype, jnp.integer):
        fail(fn, "segment_ids", "be an integer array", f"dtype {seg.dtype}", cls=TypeError)
    return ref.run_ids(seg, q.shape[1])


def _real_state(fn: str, arg: str, *fields):
    for x in fields:
        dtype = getattr(x, "dtype", None)
        if dtype is not None and not jnp.issubdtype(dtype, jnp.floating) and not (
                jnp.issubdtype(dtype, jnp.integer) or dtype == np.bool_):
            fail(fn, arg, "hold real arrays", f"dtype {dtype}", cls=KjaxTypeError)


def _check_state(fn: str, state, q, v, acc, m=None, arg: str = "initial_state", n=None, what: str = ""):
    """``(s0 [N, H, M, Dv], z0 [N, H, M])`` in ``acc`` (zeros for None, where ``arg`` allows it);
    ``N`` is ``n`` (the number of packed sequences) or the batch ``B``."""
    b, _, h, mq = q.shape
    b = b if n is None else n
    m = mq if m is None else m
    dv = v.shape[-1]
    if state is None:
        return jnp.zeros((b, h, m, dv), acc), jnp.zeros((b, h, m), acc)
    if not isinstance(state, LinearAttentionState):
        fail(fn, arg, "be a LinearAttentionState(kv, k_sum) or None", type(state).__name__, cls=KjaxTypeError)
    if shape_of(state.kv) != (b, h, m, dv) or shape_of(state.k_sum) != (b, h, m):
        fail(fn, arg, f"have kv of shape {(b, h, m, dv)} and k_sum of shape {(b, h, m)}{what}",
             f"kv {shape_of(state.kv)}, k_sum {shape_of(state.k_sum)}")
    _real_state(fn, arg, state.kv, state.k_sum)
    return jnp.asarray(state.kv).astype(acc), jnp.asarray(state.k_sum).astype(acc)


def _check_decay(fn: str, decay, q, arg: str = "decay", shapes: tuple[str, ...] = ("H", "BTH", "BTHM")):
    """Log-decays as ``[B, T, H]`` (a fixed ``[H]`` is broadcast) or ``[B, T, H, M]``, or None.

    A concrete positive value raises (a gate ``exp(decay) > 1`` grows the state without bound)."""
    if decay is None:
        return None
    b, t, h, m = q.shape
    decay = dtypes.as_float_array(fn, arg, decay)
    allowed = {"H": (h,), "BTH": (b, t, h), "BTHM": (b, t, h, m)}
    names = {"H": "[H]", "BTH": "[B, T, H]", "BTHM": "[B, T, H, M]"}
    if not any(decay.shape == allowed[s_] for s_ in shapes):
        want = " or ".join(f"{names[s_]} = {allowed[s_]}" for s_ in shapes)
        fail(fn, arg, f"have shape {want}", f"shape {decay.shape}")
    _check_log_decay(fn, arg, decay)
    if decay.shape == (h,):
        decay = jnp.broadcast_to(decay, (b, t, h))
    return decay


def _check_log_decay(fn: str, arg: str, decay) -> None:
    if is_static_number(decay):
        arr = np.asarray(decay, np.float64)
        if np.any(arr > 0):
            fail(fn, arg, "be <= 0 (a log-decay: the gate exp(decay) must be <= 1)",
                 f"a maximum of {np.nanmax(arr)!r}")


def _check_beta(fn: str, arg: str, beta) -> None:
    """``beta`` in [0, 2], where it is concrete (outside it the delta rule is unstable)."""
    if is_static_number(beta):
        arr = np.asarray(beta, np.float64)
        if np.any(arr < 0) or np.any(arr > 2):
            fail(fn, arg, "lie in [0, 2] (the delta rule is stable only there)",
                 f"values in [{np.nanmin(arr)!r}, {np.nanmax(arr)!r}]")


def _check_scale(fn: str, scale):
    """``None`` or a finite scalar (may be traced)."""
    if scale is None:
        return None
    if shape_of(scale) != ():
        fail(fn, "scale", "be a scalar", f"shape {shape_of(scale)}")
    if is_static_number(scale) and not math.isfinite(float(scale)):
        fail(fn, "scale", "be finite", repr(float(scale)))
    return dtypes.as_float_array(fn, "scale", scale) if not isinstance(scale, int | float) else scale


def _check_cu_seqlens(fn: str, cu_seqlens, q, segment_ids, causal: bool = True):
    """Offsets ``[N + 1]`` of packed sequences (``B == 1``, strictly increasing from 0 to ``T``)."""
    if cu_seqlens is None:
        return None
    cu = jnp.asarray(cu_seqlens)
    if not jnp.issubdtype(cu.dtype, jnp.integer):
        fail(fn, "cu_seqlens", "be an integer array", f"dtype {cu.dtype}", cls=KjaxTypeError)
    if cu.ndim != 1 or cu.shape[0] < 2:
        fail(fn, "cu_seqlens", "have shape [N + 1] with N >= 1 sequences", f"shape {cu.shape}")
    if segment_ids is not None:
        fail(fn, "cu_seqlens", "not be given with `segment_ids` (one way of packing)", "both")
    if not causal:
        fail(fn, "cu_seqlens", "come with causal=True (use `segment_ids` for packed non-causal attention)",
             "causal=False")
    b, t = q.shape[:2]
    if b != 1:
        fail(fn, "cu_seqlens", "come with inputs of batch B = 1 (the sequences are packed along T)",
             f"inputs of batch B = {b}")
    if is_static_number(cu_seqlens):
        arr = np.asarray(cu_seqlens)
        if arr[0] != 0 or arr[-1] != t or np.any(np.diff(arr) <= 0):
            fail(fn, "cu_seqlens", f"increase strictly from 0 to T = {t}", f"{arr.tolist()}")
    return cu.astype(jnp.int32)


def _check_flags(fn: str, **flags) -> None:
    """Static Python (or NumPy) bools: a traced or truthy value would silently pick a branch."""
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            fail(fn, name, "be a Python bool", repr(value), cls=KjaxTypeError)


def _chunk(fn: str, chunk_size) -> int:
    return check_int(fn, "chunk_size", chunk_size, minimum=1)


def _eps(fn: str, eps) -> float:
    check_positive(fn, "eps", eps, allow_zero=True)
    return eps


# ----------------------------------------------------------------------------------- linear attention

_LA = "kjax.attention.linear_attention"


def _la_pallas(q, k, v, w, s0, z0, runs, g, cu, *, feature_map, causal, normalize, eps, chunk_size):
    """The Pallas kernels: Triton on cuda, Mosaic on tpu (chosen when the call is lowered).

    ``g`` is None or scalar log-decays ``[B, T, H]``; ``cu`` is None (``supports`` refuses
    per-feature decays and ``cu_seqlens``)."""
    from kjax.attention import _pallas_tpu, _pallas_triton

    kw = dict(feature_map=feature_map, normalize=normalize, eps=eps, chunk_size=chunk_size)
    return jax.lax.platform_dependent(
        q, k, v, w, s0, z0, runs, g,
        cuda=functools.partial(_pallas_triton.causal_linear_attention, **kw),
        tpu=functools.partial(_pallas_tpu.causal_linear_attention, **kw))


def _interpret(module: str):
    def run(q, k, v, w, s0, z0, runs, g, cu, *, feature_map, causal, normalize, eps, chunk_size):
        import importlib

        mod = importlib.import_module(f"kjax.attention.{module}")
        return mod.causal_linear_attention_interpret(q, k, v, w, s0, z0, runs, g, feature_map=feature_map,
                                                     normalize=normalize, eps=eps, chunk_size=chunk_size)
    return run


def _supports(module: str):
    def supports(platform, config):
        import importlib

        return importlib.import_module(f"kjax.attention.{module}").supports(platform, config)
    return supports


def _pallas_supports(platform, config):
    return _supports("_pallas_tpu" if platform == "tpu" else "_pallas_triton")(platform, config)


#: the implementations of :func:`linear_attention` / :func:`kernel_attention`, in order of preference;
#: all share the signature of :func:`kjax.attention._xla.linear_attention_xla`. The configuration has
#: ``decay`` (None, ``"head"``, ``"scalar"`` or ``"feature"``) and ``varlen`` (``cu_seqlens`` given)
IMPLEMENTATIONS = (
    dispatch.Implementation("pallas", _la_pallas, platforms=dispatch.PALLAS_PLATFORMS,
                            supports=_pallas_supports),
    dispatch.Implementation("xla", _xla.linear_attention_xla),
    dispatch.Implementation("pallas_interpret", _interpret("_pallas_triton"),
                            supports=_supports("_pallas_triton"), auto=False),
    dispatch.Implementation("pallas_tpu_interpret", _interpret("_pallas_tpu"),
                            supports=_supports("_pallas_tpu"), auto=False),
)

def _delta_pallas(q, k, v, beta, g, s0, runs, cu, *, chunk_size):
    """The delta-rule Pallas kernels: Triton on cuda, Mosaic on tpu (chosen when the call is lowered)."""
    from kjax.attention import _pallas_delta_tpu, _pallas_delta_triton

    kw = dict(chunk_size=chunk_size)
    return jax.lax.platform_dependent(
        q, k, v, beta, g, s0, runs, cu,
        cuda=functools.partial(_pallas_delta_triton.delta_rule, **kw),
        tpu=functools.partial(_pallas_delta_tpu.delta_rule, **kw))


def _delta_module(module: str):
    import importlib

    return importlib.import_module(f"kjax.attention.{module}")


def _delta_interpret(module: str):
    def run(q, k, v, beta, g, s0, runs, cu, *, chunk_size):
        mod = _delta_module(module)
        return mod.delta_rule_interpret(q, k, v, beta, g, s0, runs, cu, chunk_size=chunk_size)
    return run


def _delta_supports(module: str):
    return lambda platform, config: _delta_module(module).supports(platform, config)


def _delta_pallas_supports(platform, config):
    module = "_pallas_delta_tpu" if platform == "tpu" else "_pallas_delta_triton"
    return _delta_supports(module)(platform, config)


#: the implementations of :func:`delta_rule_attention`, sharing the signature of
#: :func:`kjax.attention._xla.delta_rule_xla`; the configuration has ``gated``, ``segments`` and
#: ``varlen``. The Pallas entries run a Pallas forward; their backward is the VJP of the XLA path
DELTA_IMPLEMENTATIONS = (
    dispatch.Implementation("pallas", _delta_pallas, platforms=dispatch.PALLAS_PLATFORMS,
                            supports=_delta_pallas_supports),
    dispatch.Implementation("xla", _xla.delta_rule_xla),
    dispatch.Implementation("pallas_interpret", _delta_interpret("_pallas_delta_triton"),
                            supports=_delta_supports("_pallas_delta_triton"), auto=False),
    dispatch.Implementation("pallas_tpu_interpret", _delta_interpret("_pallas_delta_tpu"),
                            supports=_delta_supports("_pallas_delta_tpu"), auto=False),
)


def _decay_kind(decay_arg, g) -> str | None:
    if g is None:
        return None
    if shape_of(decay_arg) == (g.shape[2],):
        return "head"
    return "feature" if g.ndim == 4 else "scalar"


def _attend(fn, q, k, v, *, causal, normalize, eps, chunk_size, initial_state, return_state,
            segment_ids, implementation, feature_map="identity", w=None, decay=None, cu_seqlens=None):
    """Shared body of :func:`linear_attention` and :func:`kernel_attention`: ``q, k`` are raw inputs
    of the fused ``feature_map`` (``"identity"`` when they are features already)."""
    dtype = dtypes.result_dtype(q, k, v)
    acc = dtypes.accum_dtype(dtype)
    chunk_size = _chunk(fn, chunk_size)
    eps = _eps(fn, eps)
    runs = _check_segments(fn, segment_ids, q)
    g = _check_decay(fn, decay, q)
    if g is not None and not causal:
        fail(fn, "decay", "come with causal=True (a decay orders the tokens)", "causal=False")
    cu = _check_cu_seqlens(fn, cu_seqlens, q, segment_ids, causal)
    n = None if cu is None else cu.shape[0] - 1
    what = "" if n is None else f" (one row per sequence: N = len(cu_seqlens) - 1 = {n})"
    m = w.shape[0] if feature_map == "favor_positive" else q.shape[-1]
    s0, z0 = _check_state(fn, initial_state, q, v, acc, m, n=n, what=what)
    w = jnp.zeros((1, 1), dtype) if w is None else w.astype(dtype)
    config = dict(causal=causal, feature_map=feature_map, dtype=jnp.dtype(dtype), d=q.shape[-1], m=m,
                  dv=v.shape[-1], t=q.shape[1], segments=runs is not None, decay=_decay_kind(decay, g),
                  varlen=cu is not None)
    run = dispatch.dispatch(fn, implementation, IMPLEMENTATIONS, config)
    out, s, z = run(q.astype(dtype), k.astype(dtype), v.astype(dtype), w, s0, z0, runs, g, cu,
                    feature_map=feature_map, causal=causal, normalize=normalize, eps=eps,
                    chunk_size=chunk_size)
    out = out.astype(dtype)
    if not return_state:
        return out
    return out, LinearAttentionState(kv=s.astype(dtype), k_sum=z.astype(dtype))


def linear_attention(
    q: Float[ArrayLike, "B T H M"],
    k: Float[ArrayLike, "B T H M"],
    v: Float[ArrayLike, "B T H Dv"],
    *,
    decay: Float[ArrayLike, " H"] | Float[ArrayLike, "B T H"] | Float[ArrayLike, "B T H M"] | None = None,
    scale: float | Float[ArrayLike, ""] | None = None,
    causal: bool = True,
    normalize: bool = True,
    eps: float = 1e-6,
    chunk_size: int = 64,
    initial_state: LinearAttentionState | None = None,
    return_state: bool = False,
    segment_ids: Int[ArrayLike, "B T"] | None = None,
    cu_seqlens: Int[ArrayLike, " N+1"] | None = None,
    implementation: None | str | Sequence[str] = None,
) -> Float[Array, "B T H Dv"] | tuple[Float[Array, "B T H Dv"], LinearAttentionState]:
    r"""Linear attention on feature-mapped queries and keys, plain or with decays and gates.

    With :math:`\phi(q_t), \phi(k_s) \in \mathbb R^M` given as ``q`` and ``k`` (``q`` multiplied by
    ``scale``), the causal form is the recurrence

    .. math::
        S_t = \mathrm{Diag}(a_t)\, S_{t-1} + \phi(k_t) v_t^\top,\quad
        z_t = a_t \odot z_{t-1} + \phi(k_t),\quad
        o_t = \frac{S_t^\top \phi(q_t)}{\phi(q_t)^\top z_t + \varepsilon}

    with gates :math:`a_t = \exp(\text{decay}_t) \in (0, 1]` (:math:`a_t = 1` without ``decay``) and,
    without normalisation, :math:`o_t = S_t^\top \phi(q_t)`. ``S: [M, Dv]`` is the state ``kv``, in
    flash-linear-attention's ``initial_state`` layout ``[N, H, K, V]`` (the transpose of the
    ``S: [Dv, M]`` of the convention ``o_t = S_t q_t``). Without a
    decay this equals the masked quadratic form :math:`(\phi(Q)\phi(K)^\top \odot \text{mask})V`,
    row-normalised; ``causal=False`` sums over all tokens (no decay then).

    ``decay`` is the log of the gate, as flash-linear-attention's ``g``:

    * ``[H]``: a fixed decay per head (RetNet's retention, lightning attention: ``log(gamma_h)``);
    * ``[B, T, H]``: one scalar per head and step (Mamba-2's SSD, simple GLA, ``dt * A``);
    * ``[B, T, H, M]``: one gate per key feature (GLA).

    The gated papers use ``normalize=False`` (and fla's ``scale = M ** -0.5``); the default
    ``normalize=True`` and ``scale=None`` (1) keep the behaviour of plain linear attention.

    The causal form is chunked: inside a chunk of ``chunk_size`` tokens attention is a masked
    ``[C, C]`` matmul, and the state is carried from chunk to chunk by a ``lax.scan``. Decays enter
    as cumulative log-gates within a chunk, exponentiated only where their exponent is <= 0 (so
    float32 and bfloat16 inputs with strong decays do not overflow); per-feature gates use
    sub-chunks of 16 tokens (GLA's secondary chunking; ``chunk_size`` is rounded up to a multiple
    of 16 there). ``T`` need not be a multiple of ``chunk_size``.

    Packed sequences:

    * ``cu_seqlens`` (flash-linear-attention's convention): ``B = 1``, sequence ``n`` is tokens
      ``cu_seqlens[n]:cu_seqlens[n+1]``; each sequence starts from its own row of
      ``initial_state`` and returns its own final state: both have ``N = len(cu_seqlens) - 1`` rows
      in place of ``B``. The result equals running the sequences one by one. Causal only.
    * ``segment_ids``: a new segment starts wherever the id changes from one token to the next
      (an id reused later starts a new segment). Row ``b``'s ``initial_state`` belongs to its first
      segment and the returned state to its last one; use ``cu_seqlens`` for a state per sequence.

    Args:
      q: ``[B, T, H, M]`` feature-mapped queries :math:`\phi(q)`.
      k: ``[B, T, H, M]`` feature-mapped keys :math:`\phi(k)`.
      v: ``[B, T, H, Dv]`` values.
      decay: log-decays (<= 0), shape ``[H]``, ``[B, T, H]`` or ``[B, T, H, M]``, or None. A concrete
        positive value raises; a traced one cannot be checked (values > 0 give growing states).
      scale: multiplies ``q`` (a finite scalar, may be traced); None for 1.
      causal: causal (autoregressive) or full attention.
      normalize: divide by :math:`\phi(q_t)^\top z_t + \varepsilon` (softmax-like weights).
      eps: :math:`\varepsilon \ge 0` added to the denominator, so rows whose features vanish
        (e.g. :func:`relu_features`) give 0 instead of NaN.
      chunk_size: tokens per chunk of the causal form (>= 1); see docs/benchmarks.md for tuning.
      initial_state: a :class:`LinearAttentionState` ``(S_0, z_0)`` to continue from (e.g. the state
        returned for a prompt), or None for zeros; ``N`` rows with ``cu_seqlens``.
      return_state: also return the final :class:`LinearAttentionState` (for decoding with
        :func:`linear_attention_step`).
      segment_ids: ``[B, T]`` integer ids of packed sequences, or None.
      cu_seqlens: ``[N + 1]`` integer offsets of ``N`` packed sequences (strictly increasing from 0
        to ``T``; a concrete array is checked, a traced one cannot be), or None.
      implementation: chosen per platform when the call is lowered. None: the Pallas kernels on
        GPU (Triton) and TPU (Mosaic) for the calls they support (causal; no decay or a decay
        ``[H]`` / ``[B, T, H]``, not ``[B, T, H, M]``; no ``cu_seqlens``; feature sizes <= 256;
        float32/bfloat16), XLA otherwise and on CPU;
        ``"xla"``; ``"pallas"`` (exactly the kernels, an error where they cannot serve);
        ``"pallas_interpret"`` / ``"pallas_tpu_interpret"`` (the Triton / TPU kernels in interpret
        mode, any backend, for tests); or a list, the first that supports the call on each
        platform. ``chunk_size`` is a hint for the kernels (Triton: a power of two in [16, 64];
        TPU: 128 tokens).

    Returns:
      ``[B, T, H, Dv]`` outputs with the dtype of the inputs, and the final state if
      ``return_state``.

    Raises:
      ValueError: ranks other than 4; ``q`` and ``k`` of different shapes; ``v`` with another
        ``[B, T, H]``; ``chunk_size < 1``; ``eps < 0``; ``segment_ids`` not ``[B, T]``;
        ``initial_state`` of the wrong shapes (with ``cu_seqlens``: not ``N`` rows); ``decay`` of
        another shape, with a positive value, or with ``causal=False``; ``scale`` not a finite
        scalar; ``cu_seqlens`` not ``[N + 1]``, not strictly increasing from 0 to ``T``, with
        ``B != 1``, with ``segment_ids`` or with ``causal=False``; an implementation that cannot
        serve the call here.
      TypeError: complex inputs, non-integer ``segment_ids`` / ``cu_seqlens``, ``chunk_size`` not an
        int, ``causal`` / ``normalize`` / ``return_state`` not Python bools.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.attention import elu_plus_one, linear_attention
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 2, 10, 4, 8))
      >>> out = linear_attention(elu_plus_one(q), elu_plus_one(k), v, chunk_size=4)
      >>> print(out.shape)
      (2, 10, 4, 8)
      >>> gates = jnp.log(1 - 2.0 ** (-5 - jnp.arange(4.0)))  # retention: a fixed decay per head
      >>> out = linear_attention(q, k, v, decay=gates, scale=8 ** -0.5, normalize=False)
      >>> print(out.shape)
      (2, 10, 4, 8)

    References:
      Katharopoulos et al., *Transformers are RNNs*, ICML 2020; Sun et al., *Retentive Network*,
      2023; Yang et al., *Gated Linear Attention Transformers with Hardware-Efficient Training*,
      ICML 2024 (the chunked form, secondary chunking); Dao & Gu, *Transformers are SSMs* (Mamba-2),
      ICML 2024.
    """
    q, k, v = _check_qkv(_LA, q, k, v, "M")
    _check_flags(_LA, causal=causal, normalize=normalize, return_state=return_state)
    scale = _check_scale(_LA, scale)
    if scale is not None:
        q = (q * scale).astype(dtypes.result_dtype(q, k, v))
    return _attend(_LA, q, k, v, causal=causal, normalize=normalize, eps=eps, chunk_size=chunk_size,
                   initial_state=initial_state, return_state=return_state, segment_ids=segment_ids,
                   implementation=implementation, decay=decay, cu_seqlens=cu_seqlens)


def _step_decay(fn: str, decay_t, q_t, shapes: tuple[str, ...]):
    """``decay_t`` as gates ``exp(decay_t)`` broadcast to ``[B, H, M]`` (None stays None)."""
    if decay_t is None:
        return None
    b, h, m = q_t.shape
    decay_t = dtypes.as_float_array(fn, "decay_t", decay_t)
    allowed = {"H": (h,), "BH": (b, h), "BHM": (b, h, m)}
    names = {"H": "[H]", "BH": "[B, H]", "BHM": "[B, H, M]"}
    if not any(decay_t.shape == allowed[s_] for s_ in shapes):
        want = " or ".join(f"{names[s_]} = {allowed[s_]}" for s_ in shapes)
        fail(fn, "decay_t", f"have shape {want}", f"shape {decay_t.shape}")
    _check_log_decay(fn, "decay_t", decay_t)
    if decay_t.shape == (h,):
        decay_t = jnp.broadcast_to(decay_t, (b, h))
    return decay_t


def linear_attention_step(
    state: LinearAttentionState,
    q_t: Float[ArrayLike, "B H M"],
    k_t: Float[ArrayLike, "B H M"],
    v_t: Float[ArrayLike, "B H Dv"],
    *,
    decay_t: Float[ArrayLike, " H"] | Float[ArrayLike, "B H"] | Float[ArrayLike, "B H M"] | None = None,
    scale: float | Float[ArrayLike, ""] | None = None,
    normalize: bool = True,
    eps: float = 1e-6,
) -> tuple[Float[Array, "B H Dv"], LinearAttentionState]:
    r"""One recurrent step of causal (decayed) linear attention (decoding).

    .. math:: S \leftarrow \mathrm{Diag}(a_t) S + \phi(k_t) v_t^\top,\quad
        z \leftarrow a_t \odot z + \phi(k_t),\quad
        o_t = \frac{S^\top \phi(q_t)}{\phi(q_t)^\top z + \varepsilon}

    with :math:`a_t = \exp(\text{decay}_t)` (1 without ``decay_t``) and ``q_t`` multiplied by
    ``scale``. Running it over ``t`` from a state equals :func:`linear_attention` (causal, with the
    same ``decay``, ``scale`` and ``normalize``) from that state.

    Args:
      state: :class:`LinearAttentionState` with ``kv: [B, H, M, Dv]`` and ``k_sum: [B, H, M]``
        (zeros to start, or the state returned by :func:`linear_attention`).
      q_t: ``[B, H, M]`` feature-mapped query of this token.
      k_t: ``[B, H, M]`` feature-mapped key.
      v_t: ``[B, H, Dv]`` value.
      decay_t: log-decay (<= 0) of this token: ``[H]`` (fixed per head), ``[B, H]`` (scalar per
        head) or ``[B, H, M]`` (per key feature), or None.
      scale: multiplies ``q_t`` (a finite scalar); None for 1.
      normalize: divide by the normaliser (as in :func:`linear_attention`).
      eps: :math:`\varepsilon \ge 0` in the denominator.

    Returns:
      ``(o_t [B, H, Dv], new_state)``, in the dtype of the inputs.

    Raises:
      ValueError: shapes that do not match each other or the state; an empty axis; ``eps < 0``;
        ``decay_t`` of another shape or positive (concrete); ``scale`` not a finite scalar.
      TypeError: ``state`` not a :class:`LinearAttentionState` or with complex arrays; complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.attention import LinearAttentionState, linear_attention_step
      >>> s = LinearAttentionState(jnp.zeros((1, 2, 4, 3)), jnp.zeros((1, 2, 4)))
      >>> o, s = linear_attention_step(s, jnp.ones((1, 2, 4)), jnp.ones((1, 2, 4)), jnp.ones((1, 2, 3)))
      >>> print(o.shape, s.kv.shape)
      (1, 2, 3) (1, 2, 4, 3)

    References:
      Katharopoulos et al., *Transformers are RNNs*, ICML 2020, sec. 3.4; Yang et al., *Gated
      Linear Attention Transformers with Hardware-Efficient Training*, ICML 2024.
    """
    fn = "kjax.attention.linear_attention_step"
    q_t, k_t, v_t = (dtypes.as_float_array(fn, n, x) for n, x in (("q_t", q_t), ("k_t", k_t), ("v_t", v_t)))
    for name, x, last in (("q_t", q_t, "M"), ("k_t", k_t, "M"), ("v_t", v_t, "Dv")):
        check_rank(fn, name, x, 3, layout=f"[B, H, {last}]")
        _check_nonempty(fn, name, x, ("B", "H", last))
    if k_t.shape != q_t.shape:
        fail(fn, "k_t", f"have the shape of `q_t` {q_t.shape}", f"shape {k_t.shape}")
    if v_t.shape[:2] != q_t.shape[:2]:
        fail(fn, "v_t", f"have the [B, H] = {q_t.shape[:2]} of `q_t`", f"shape {v_t.shape}")
    _eps(fn, eps)
    _check_flags(fn, normalize=normalize)
    g = _step_decay(fn, decay_t, q_t, ("H", "BH", "BHM"))
    scale = _check_scale(fn, scale)
    dtype = dtypes.result_dtype(q_t, k_t, v_t)
    acc = dtypes.accum_dtype(dtype)
    s0, z0 = _check_state(fn, state, q_t[:, None], v_t[:, None], acc, arg="state")
    s = jnp.concatenate([s0, z0[..., None]], axis=-1)
    q_t = q_t.astype(acc) if scale is None else q_t.astype(acc) * scale
    a = None
    if g is not None:
        a = jnp.exp(g.astype(acc))
        a = jnp.broadcast_to(a[..., None] if a.ndim == 2 else a, q_t.shape)
    out, s = ref.decay_step(s, q_t, k_t.astype(acc), ref.augment(v_t.astype(acc)), a)
    return ref.finish(out, normalize, eps).astype(dtype), LinearAttentionState(
        kv=s[..., :-1].astype(dtype), k_sum=s[..., -1].astype(dtype))


# ----------------------------------------------------------------------------------- feature maps by name

#: maps that take no parameters, by name
_PLAIN = {"elu_plus_one": fm.elu_plus_one, "relu": fm.relu_features, "taylor2": fm.taylor2}
#: maps that take ``feature_params`` (the projection ``w``, ``nu``, or the NamedTuple of parameters)
_PARAM = ("favor_positive", "favor_trig", "dpfp", "hedgehog", "learned_spectral")
FEATURE_MAPS = tuple(_PLAIN) + _PARAM
#: maps the implementations take by name (the Pallas kernels apply them inside the kernel)
FUSED_MAPS = ("elu_plus_one", "relu", "favor_positive")


def check_feature_params(fn: str, feature_map, feature_params, d: int, *, stacklevel: int = 4):
    """Validate ``feature_map`` and its ``feature_params`` for inputs of size ``d`` once, with errors
    that name ``fn`` and its arguments; returns the parameters in checked form."""
    if callable(feature_map):
        return feature_params
    if not isinstance(feature_map, str) or feature_map not in FEATURE_MAPS:
        fail(fn, "feature_map", f"be a callable or one of {FEATURE_MAPS!r}", repr(feature_map))
    if feature_map in _PLAIN:
        return None
    if feature_map == "dpfp":
        return 1 if feature_params is None else check_int(fn, "feature_params", feature_params, minimum=1)
    if feature_params is None:
        fail(fn, "feature_params", f"be given for feature_map={feature_map!r}", "None")
    if feature_map in ("favor_positive", "favor_trig"):
        return fm.check_projection(fn, d, feature_params, "feature_params")
    if feature_map == "hedgehog":
        return fm.as_hedgehog_params(fn, "feature_params", d, feature_params, stacklevel=stacklevel)
    return fm.as_spectral_params(fn, "feature_params", d, feature_params, stacklevel=stacklevel)


def apply_feature_map(fn: str, feature_map, feature_params, x, *, is_query: bool):
    """``phi(x)`` for a feature map given by name (with parameters checked by
    :func:`check_feature_params`) or as a callable, whose output is checked."""
    if callable(feature_map):
        out = feature_map(x)
        if shape_of(out)[:-1] != x.shape[:-1] or shape_of(out)[-1:] == (0,):
            fail(fn, "feature_map", f"map [B, T, H, D] to [B, T, H, M] with M >= 1 (inputs {x.shape})",
                 f"an output of shape {shape_of(out)}")
        return dtypes.as_float_array(fn, "feature_map", out)
    if feature_map in _PLAIN:
        return _PLAIN[feature_map](x)
    if feature_map == "favor_positive":
        return fm.favor_positive(x, feature_params, stabilize="row" if is_query else "weights")
    if feature_map == "favor_trig":
        return fm.favor_trig(x, feature_params)
    if feature_map == "dpfp":
        return fm.dpfp(x, nu=feature_params)
    if feature_map == "hedgehog":
        return fm.hedgehog(feature_params, x)
    return fm.learned_spectral(feature_params, x)


_KA = "kjax.attention.kernel_attention"


def kernel_attention(
    q: Float[ArrayLike, "B T H D"],
    k: Float[ArrayLike, "B T H D"],
    v: Float[ArrayLike, "B T H Dv"],
    *,
    feature_map: str | Callable[[jax.Array], jax.Array],
    feature_params: Any = None,
    causal: bool = True,
    normalize: bool = True,
    eps: float = 1e-6,
    chunk_size: int = 64,
    initial_state: LinearAttentionState | None = None,
    return_state: bool = False,
    segment_ids: Int[ArrayLike, "B T"] | None = None,
    implementation: None | str | Sequence[str] = None,
) -> Float[Array, "B T H Dv"] | tuple[Float[Array, "B T H Dv"], LinearAttentionState]:
    r"""Kernel attention: apply a feature map to queries and keys, then :func:`linear_attention`.

    .. math:: o_t = \frac{\sum_{s} \phi(q_t)^\top\phi(k_s)\, v_s}{\sum_s \phi(q_t)^\top\phi(k_s)
        + \varepsilon}

    (sums over :math:`s \le t` when causal), i.e. attention with the kernel
    :math:`\kappa(q, k) = \phi(q)^\top\phi(k)` in place of :math:`e^{q^\top k}`.

    ``feature_map`` is a callable ``[..., D] -> [..., M]`` (e.g.
    ``functools.partial(dpfp, nu=2)``) or a name: ``"elu_plus_one"``, ``"relu"``, ``"taylor2"``,
    or, with ``feature_params``, ``"favor_positive"`` / ``"favor_trig"`` (``w: [M, D]``),
    ``"dpfp"`` (``nu``), ``"hedgehog"`` / ``"learned_spectral"`` (:class:`HedgehogParams` /
    :class:`LearnedSpectralParams`; their old dict form warns). A callable must map
    ``[B, T, H, D]`` to ``[B, T, H, M]``. For
    ``"favor_positive"`` queries use the per-row stabiliser and keys the weight stabiliser (both
    cancel in normalised attention). The Pallas kernel fuses the map for ``"elu_plus_one"`` and
    ``"favor_positive"``.

    Args:
      q: ``[B, T, H, D]`` queries (before the feature map).
      k: ``[B, T, H, D]`` keys.
      v: ``[B, T, H, Dv]`` values.
      feature_map: a callable or a name (see above).
      feature_params: the map's parameters, if it has any.
      causal, normalize, eps, chunk_size, initial_state, return_state, segment_ids, implementation:
        as in :func:`linear_attention` (the state is in feature space, ``M`` features).

    Returns:
      ``[B, T, H, Dv]`` outputs (and the final state if ``return_state``).

    Raises:
      ValueError: as :func:`linear_attention`; an unknown ``feature_map`` name; missing
        ``feature_params`` or ones of the wrong shape (errors name ``feature_params``); a callable
        ``feature_map`` whose output is not ``[B, T, H, M]``.
      TypeError: as :func:`linear_attention`; ``feature_params`` of the wrong type.

    Example:
      >>> import jax
      >>> from kjax.attention import kernel_attention, random_projection
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 1, 12, 2, 8)) * 8 ** -0.25
      >>> w = random_projection(jax.random.key(1), 16, 8, kind="orthogonal")
      >>> out = kernel_attention(q, k, v, feature_map="favor_positive", feature_params=w)
      >>> print(out.shape)
      (1, 12, 2, 8)

    References:
      Tsai et al., *Transformer Dissection: A Unified Understanding of Transformer's Attention via
      the Lens of Kernel*, EMNLP 2019; Choromanski et al., *Rethinking Attention with Performers*,
      ICLR 2021.
    """
    q, k, v = _check_qkv(_KA, q, k, v)
    _check_flags(_KA, causal=causal, normalize=normalize, return_state=return_state)
    feature_params = check_feature_params(_KA, feature_map, feature_params, q.shape[-1])
    fmap = lambda x, is_query: apply_feature_map(_KA, feature_map, feature_params, x, is_query=is_query)
    if isinstance(feature_map, str) and feature_map in FUSED_MAPS:
        w = feature_params if feature_map == "favor_positive" else None
        return _attend(_KA, q, k, v, causal=causal, normalize=normalize, eps=eps, chunk_size=chunk_size,
                       initial_state=initial_state, return_state=return_state, segment_ids=segment_ids,
                       implementation=implementation, feature_map=feature_map, w=w)
    return _attend(_KA, fmap(q, True), fmap(k, False), v, causal=causal, normalize=normalize, eps=eps,
                   chunk_size=chunk_size, initial_state=initial_state, return_state=return_state,
                   segment_ids=segment_ids, implementation=implementation)


# ----------------------------------------------------------------------------------- delta rule

_DR = "kjax.attention.delta_rule_attention"


def delta_rule_attention(
    q: Float[ArrayLike, "B T H M"],
    k: Float[ArrayLike, "B T H M"],
    v: Float[ArrayLike, "B T H Dv"],
    beta: Float[ArrayLike, "B T H"],
    *,
    decay: Float[ArrayLike, "B T H"] | None = None,
    scale: float | Float[ArrayLike, ""] | None = None,
    chunk_size: int = 64,
    initial_state: DeltaRuleState | None = None,
    return_state: bool = False,
    segment_ids: Int[ArrayLike, "B T"] | None = None,
    cu_seqlens: Int[ArrayLike, " N+1"] | None = None,
    implementation: None | str | Sequence[str] = None,
) -> Float[Array, "B T H Dv"] | tuple[Float[Array, "B T H Dv"], DeltaRuleState]:
    r"""Causal attention with the delta rule (fast weight programmers), plain or gated, in chunks.

    .. math:: S_t = a_t \big(I - \beta_t k_t k_t^\top\big) S_{t-1} + \beta_t k_t v_t^\top
        = a_t S_{t-1} + \beta_t\, k_t\big(v_t - a_t S_{t-1}^\top k_t\big)^\top,\qquad
        o_t = S_t^\top q_t

    with :math:`S \in \mathbb R^{M \times D_v}` (``kv``, fla's ``[K, V]`` state layout),
    ``q`` multiplied by ``scale`` and gates :math:`a_t = \exp(\text{decay}_t)` (``a_t = 1`` without
    ``decay``: the delta rule; with it: the gated delta rule of Gated DeltaNet). Each token writes
    :math:`v_t` at key :math:`k_t`, replacing (for :math:`\beta_t = 1` and unit :math:`k_t`) what was
    stored there instead of adding to it. Computed in chunks with the WY representation: inside a
    chunk the updates are a unit-triangular solve and matmuls with the cumulative log-gates
    exponentiated only where their exponent is <= 0, and the state is carried across chunks; the
    result equals the token recurrence. Keys are used as given: normalise them (e.g. ``k / |k|``).
    :math:`\beta \in [0, 2]` is required (for unit keys the recurrence is stable exactly there);
    a concrete ``beta`` outside it raises.

    Packed sequences: ``cu_seqlens`` (``B = 1``; a state per sequence, ``N`` rows) or
    ``segment_ids`` (a state per row), exactly as in :func:`linear_attention`.

    Args:
      q: ``[B, T, H, M]`` queries (feature-mapped if desired).
      k: ``[B, T, H, M]`` keys (typically L2-normalised).
      v: ``[B, T, H, Dv]`` values.
      beta: ``[B, T, H]`` write strengths in [0, 2] (e.g. a sigmoid).
      decay: ``[B, T, H]`` log-decays (<= 0; Gated DeltaNet's ``g``), or None.
      scale: multiplies ``q`` (a finite scalar, may be traced); None for 1 (fla's default is
        ``M ** -0.5``).
      chunk_size: tokens per chunk (>= 1).
      initial_state: a :class:`DeltaRuleState` to continue from (``N`` rows with ``cu_seqlens``),
        or None for zeros.
      return_state: also return the final :class:`DeltaRuleState`.
      segment_ids: ``[B, T]`` integer ids of packed sequences, or None.
      cu_seqlens: ``[N + 1]`` offsets of packed sequences, or None.
      implementation: as in :func:`linear_attention`: None picks per platform, the Pallas
        kernels on GPU / TPU where they serve the call (plain or gated with a decay ``[B, T, H]``;
        not with ``segment_ids`` or ``cu_seqlens``, ``M`` / ``Dv`` above 128 on GPU or 256 on
        TPU, or float64), XLA otherwise and on CPU; ``"xla"``, ``"pallas"``,
        ``"pallas_interpret"``, ``"pallas_tpu_interpret"`` or a list. The kernels run the forward
        pass; the backward pass is the VJP of the XLA path (recomputed, exact).

    Returns:
      ``[B, T, H, Dv]`` outputs (and the final state if ``return_state``), in the input dtype.

    Raises:
      ValueError: shapes that do not match (as in :func:`linear_attention`), ``beta`` not
        ``[B, T, H]`` or outside [0, 2], ``decay`` not ``[B, T, H]`` or positive, ``chunk_size < 1``,
        a state of the wrong shape (with ``cu_seqlens``: not ``N`` rows), ``cu_seqlens`` and
        ``segment_ids`` as in :func:`linear_attention`.
      TypeError: complex inputs or state; non-integer ``segment_ids`` / ``cu_seqlens``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.attention import delta_rule_attention
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 1, 10, 2, 4))
      >>> k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
      >>> out = delta_rule_attention(q, k, v, jnp.full((1, 10, 2), 0.5), chunk_size=4)
      >>> print(out.shape)
      (1, 10, 2, 4)
      >>> gated = delta_rule_attention(q, k, v, jnp.full((1, 10, 2), 0.5), decay=jnp.full((1, 10, 2), -0.1))
      >>> print(gated.shape)
      (1, 10, 2, 4)

    References:
      Schlag, Irie & Schmidhuber, *Linear Transformers Are Secretly Fast Weight Programmers*, ICML
      2021; Yang et al., *Parallelizing Linear Transformers with the Delta Rule over Sequence
      Length*, NeurIPS 2024 (chunked WY form); Yang, Kautz & Hatamizadeh, *Gated Delta Networks:
      Improving Mamba2 with Delta Rule*, ICLR 2025.
    """
    q, k, v = _check_qkv(_DR, q, k, v, "M")
    _check_flags(_DR, return_state=return_state)
    beta = dtypes.as_float_array(_DR, "beta", beta)
    if beta.shape != q.shape[:3]:
        fail(_DR, "beta", f"have shape [B, T, H] = {q.shape[:3]}", f"shape {beta.shape}")
    _check_beta(_DR, "beta", beta)
    g = _check_decay(_DR, decay, q, shapes=("BTH",))
    scale = _check_scale(_DR, scale)
    chunk_size = _chunk(_DR, chunk_size)
    runs = _check_segments(_DR, segment_ids, q)
    cu = _check_cu_seqlens(_DR, cu_seqlens, q, segment_ids)
    dtype = dtypes.result_dtype(q, k, v, beta)
    acc = dtypes.accum_dtype(dtype)
    b, _, h, m = q.shape
    b = b if cu is None else cu.shape[0] - 1
    dv = v.shape[-1]
    if initial_state is None:
        s = jnp.zeros((b, h, m, dv), acc)
    else:
        what = "" if cu is None else f" (one row per sequence: N = len(cu_seqlens) - 1 = {b})"
        if not isinstance(initial_state, DeltaRuleState) or shape_of(initial_state.kv) != (b, h, m, dv):
            fail(_DR, "initial_state", f"be a DeltaRuleState with kv of shape {(b, h, m, dv)}{what}",
                 repr(jax.tree.map(shape_of, initial_state)))
        _real_state(_DR, "initial_state", initial_state.kv)
        s = jnp.asarray(initial_state.kv).astype(acc)
    if scale is not None:
        q = (q * scale).astype(dtype)
    config = dict(dtype=jnp.dtype(dtype), m=m, dv=dv, t=q.shape[1], gated=g is not None,
                  segments=runs is not None, varlen=cu is not None)
    run = dispatch.dispatch(_DR, implementation, DELTA_IMPLEMENTATIONS, config)
    out, s = run(q, k, v, beta, g, s, runs, cu, chunk_size=chunk_size)
    out = out.astype(dtype)
    return (out, DeltaRuleState(s.astype(dtype))) if return_state else out


def delta_rule_step(
    state: DeltaRuleState,
    q_t: Float[ArrayLike, "B H M"],
    k_t: Float[ArrayLike, "B H M"],
    v_t: Float[ArrayLike, "B H Dv"],
    beta_t: Float[ArrayLike, "B H"],
    *,
    decay_t: Float[ArrayLike, "B H"] | None = None,
    scale: float | Float[ArrayLike, ""] | None = None,
) -> tuple[Float[Array, "B H Dv"], DeltaRuleState]:
    r"""One token of the (gated) delta rule (decoding):
    :math:`S \leftarrow a_t S + \beta_t k_t (v_t - a_t S^\top k_t)^\top`, :math:`o_t = S^\top q_t`.

    Running it over ``t`` equals :func:`delta_rule_attention` with the same ``decay`` and ``scale``.

    Args:
      state: :class:`DeltaRuleState` with ``kv: [B, H, M, Dv]``.
      q_t: ``[B, H, M]`` query.
      k_t: ``[B, H, M]`` key.
      v_t: ``[B, H, Dv]`` value.
      beta_t: ``[B, H]`` write strength in [0, 2].
      decay_t: ``[B, H]`` log-decay (<= 0) of this token, or None (:math:`a_t = 1`).
      scale: multiplies ``q_t`` (a finite scalar); None for 1.

    Returns:
      ``(o_t [B, H, Dv], new_state)``.

    Raises:
      ValueError: ranks or shapes that do not match each other or the state; an empty axis;
        ``beta_t`` outside [0, 2] or ``decay_t`` positive (concrete); ``decay_t`` not ``[B, H]``.
      TypeError: ``state`` not a :class:`DeltaRuleState` or complex; complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.attention import DeltaRuleState, delta_rule_step
      >>> s = DeltaRuleState(jnp.zeros((1, 1, 2, 2)))
      >>> e0 = jnp.array([[[1.0, 0.0]]])
      >>> o, s = delta_rule_step(s, e0, e0, jnp.array([[[3.0, 4.0]]]), jnp.ones((1, 1)))
      >>> print(o)
      [[[3. 4.]]]

    References:
      Schlag, Irie & Schmidhuber, *Linear Transformers Are Secretly Fast Weight Programmers*, ICML
      2021, eq. 29; Yang, Kautz & Hatamizadeh, *Gated Delta Networks*, ICLR 2025.
    """
    fn = "kjax.attention.delta_rule_step"
    q_t, k_t, v_t, beta_t = (dtypes.as_float_array(fn, n, x) for n, x in
                             (("q_t", q_t), ("k_t", k_t), ("v_t", v_t), ("beta_t", beta_t)))
    for name, x, axes in (("q_t", q_t, ("B", "H", "M")), ("k_t", k_t, ("B", "H", "M")),
                          ("v_t", v_t, ("B", "H", "Dv")), ("beta_t", beta_t, ("B", "H"))):
        check_rank(fn, name, x, len(axes), layout=f"[{', '.join(axes)}]")
        _check_nonempty(fn, name, x, axes)
    b, h, m = q_t.shape
    if k_t.shape != q_t.shape:
        fail(fn, "k_t", f"have the shape [B, H, M] = {q_t.shape} of `q_t`", f"shape {k_t.shape}")
    if not isinstance(state, DeltaRuleState):
        fail(fn, "state", "be a DeltaRuleState(kv)", type(state).__name__, cls=KjaxTypeError)
    dv = v_t.shape[-1]
    if shape_of(state.kv) != (b, h, m, dv) or v_t.shape != (b, h, dv) or beta_t.shape != (b, h):
        fail(fn, "state", f"have kv of shape {(b, h, m, dv)} with v_t {(b, h, dv)} and beta_t {(b, h)}",
             f"kv {shape_of(state.kv)}, v_t {v_t.shape}, beta_t {beta_t.shape}")
    _real_state(fn, "state", state.kv)
    _check_beta(fn, "beta_t", beta_t)
    g = _step_decay(fn, decay_t, q_t, ("BH",))
    scale = _check_scale(fn, scale)
    dtype = dtypes.result_dtype(q_t, k_t, v_t, beta_t)
    acc = dtypes.accum_dtype(dtype)
    q_t = q_t.astype(acc) if scale is None else q_t.astype(acc) * scale
    a = None if g is None else jnp.exp(g.astype(acc))
    out, s = ref.delta_step(jnp.asarray(state.kv).astype(acc), q_t, k_t.astype(acc), v_t.astype(acc),
                            beta_t.astype(acc), a)
    return out.astype(dtype), DeltaRuleState(s.astype(dtype))


# ----------------------------------------------------------------------------------- RPE

_RPE = "kjax.attention.rpe_kernel_attention"


def rpe_kernel_attention(
    q: Float[ArrayLike, "B T H D"],
    k: Float[ArrayLike, "B T H D"],
    v: Float[ArrayLike, "B T H Dv"],
    rpe: Float[ArrayLike, "H 2T-1"],
    *,
    feature_map: str | Callable[[jax.Array], jax.Array] | None = None,
    feature_params: Any = None,
    causal: bool = True,
    normalize: bool = True,
    eps: float = 1e-6,
) -> Float[Array, "B T H Dv"]:
    r"""Kernelized attention with relative positional encoding, by FFT Toeplitz products.

    .. math::
        o_i = \frac{\sum_j e^{b_{i-j}}\,\phi(q_i)^\top\phi(k_j)\, v_j}
                   {\sum_j e^{b_{i-j}}\,\phi(q_i)^\top\phi(k_j) + \varepsilon}
            = \frac{\phi(q_i)^\top \big[\,C\,(\phi(K) \otimes [V, 1])\big]_i}{\cdots}

    (sums over :math:`j \le i` when causal), where :math:`C_{ij} = e^{b_{i-j}}` is Toeplitz, so
    :math:`C` applied to the ``T`` outer products :math:`\phi(k_j) [v_j, 1]^\top` costs
    :math:`O(T \log T\, M D_v)` by FFT (``kjax._src.fft.toeplitz_matmul``, shared with kjax.ssm)
    instead of :math:`O(T^2)`. Memory is :math:`O(T M D_v)` per head.

    The weights are computed as :math:`e^{b - m_h}` with :math:`m_h` the largest bias of head
    :math:`h` that is used (offsets :math:`\ge 0` when causal), and the result is rescaled exactly,
    so large biases do not overflow. Normalised, a constant :math:`c` added to the biases cancels
    (exactly for ``eps = 0``; otherwise it scales :math:`\varepsilon` by :math:`e^{-c}`, as the
    formula says: biases far below 0 let :math:`\varepsilon` dominate and outputs go to 0).
    Unnormalised (``normalize=False``), it scales the output by :math:`e^{c}`, which overflows to
    ``inf`` only where the exact result exceeds the dtype's range. A bias of ``-inf`` gives weight 0
    (masks the pair out).

    Args:
      q: ``[B, T, H, D]`` queries.
      k: ``[B, T, H, D]`` keys.
      v: ``[B, T, H, Dv]`` values.
      rpe: relative-position biases :math:`b`, shape ``[H, 2T - 1]`` or ``[2T - 1]`` (shared by
        heads), ordered by offset :math:`i - j = -(T-1), \dots, T-1` (index ``T - 1`` is offset 0).
        The weights are :math:`e^{b}`; with ``causal=True`` the entries of negative offsets
        (``j > i``, indices ``< T - 1``) are ignored.
      feature_map: as in :func:`kernel_attention`, or None when ``q`` and ``k`` are already features.
      feature_params: parameters of a named feature map.
      causal: causal or full attention.
      normalize: divide by the weighted normaliser plus ``eps``.
      eps: :math:`\varepsilon \ge 0`.

    Returns:
      ``[B, T, H, Dv]`` outputs in the input dtype.

    Raises:
      ValueError: as :func:`linear_attention`; ``rpe`` not of shape ``[H, 2T-1]`` or ``[2T-1]``;
        ``feature_params`` as in :func:`kernel_attention`.
      TypeError: complex inputs; ``causal`` / ``normalize`` not Python bools; ``feature_params``
        of the wrong type.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.attention import rpe_kernel_attention
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 1, 16, 2, 4))
      >>> rpe = -0.1 * jnp.abs(jnp.arange(-15, 16.0))  # decays with distance
      >>> out = rpe_kernel_attention(q, k, v, rpe, feature_map="elu_plus_one")
      >>> print(out.shape)
      (1, 16, 2, 4)

    References:
      Luo et al., *Stable, Fast and Accurate: Kernelized Attention with Relative Positional
      Encoding*, NeurIPS 2021.
    """
    q, k, v = _check_qkv(_RPE, q, k, v)
    _check_flags(_RPE, causal=causal, normalize=normalize)
    _eps(_RPE, eps)
    t, h = q.shape[1], q.shape[2]
    rpe = dtypes.as_float_array(_RPE, "rpe", rpe)
    if rpe.shape == (2 * t - 1,):
        rpe = jnp.broadcast_to(rpe, (h, 2 * t - 1))
    if rpe.shape != (h, 2 * t - 1):
        fail(_RPE, "rpe", f"have shape [H, 2T - 1] = {(h, 2 * t - 1)} or [2T - 1] = ({2 * t - 1},)",
             f"shape {rpe.shape}")
    if feature_map is not None:
        feature_params = check_feature_params(_RPE, feature_map, feature_params, q.shape[-1])
        q = apply_feature_map(_RPE, feature_map, feature_params, q, is_query=True)
        k = apply_feature_map(_RPE, feature_map, feature_params, k, is_query=False)
    dtype = dtypes.result_dtype(q, k, v)
    acc = dtypes.accum_dtype(dtype)
    out = ref.rpe_attention(q.astype(acc), k.astype(acc), v.astype(acc), rpe.astype(acc), eps, causal=causal,
                            normalize=normalize)
    return out.astype(dtype)


# ----------------------------------------------------------------------------------- softmax


def softmax_attention_reference(
    q: Float[ArrayLike, "B T H D"],
    k: Float[ArrayLike, "B T H D"],
    v: Float[ArrayLike, "B T H Dv"],
    *,
    causal: bool = True,
    scale: float | None = None,
    segment_ids: Int[ArrayLike, "B T"] | None = None,
) -> Float[Array, "B T H Dv"]:
    r"""Quadratic softmax attention, the baseline kernel attention approximates.

    .. math:: o_t = \sum_s \frac{e^{\tau q_t^\top k_s}}{\sum_{s'} e^{\tau q_t^\top k_{s'}}} v_s

    over :math:`s \le t` when causal and within the segment of :math:`t` (as in
    :func:`linear_attention`), with :math:`\tau` = ``scale`` (default :math:`1/\sqrt D`).
    :math:`O(T^2)` time and memory: a reference for tests and experiments.

    Args:
      q: ``[B, T, H, D]`` queries.
      k: ``[B, T, H, D]`` keys.
      v: ``[B, T, H, Dv]`` values.
      causal: causal mask.
      scale: logit scale :math:`\tau` (a finite scalar, may be traced), default :math:`1/\sqrt D`.
      segment_ids: ``[B, T]`` integer segment ids, or None.

    Returns:
      ``[B, T, H, Dv]`` outputs in the input dtype.

    Raises:
      ValueError: mismatched shapes or an empty axis (as in :func:`linear_attention`); ``scale``
        not a finite scalar.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.attention import softmax_attention_reference
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 1, 5, 2, 4))
      >>> out = softmax_attention_reference(q, k, v)
      >>> print(bool(jnp.allclose(out[:, 0], v[:, 0])))  # the first token sees only itself
      True

    References:
      Vaswani et al., *Attention Is All You Need*, NeurIPS 2017.
    """
    fn = "kjax.attention.softmax_attention_reference"
    q, k, v = _check_qkv(fn, q, k, v)
    _check_flags(fn, causal=causal)
    runs = _check_segments(fn, segment_ids, q)
    dtype = dtypes.result_dtype(q, k, v)
    acc = dtypes.accum_dtype(dtype)
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    elif shape_of(scale) != ():
        fail(fn, "scale", "be a scalar", f"shape {shape_of(scale)}")
    elif is_static_number(scale) and not math.isfinite(float(scale)):
        fail(fn, "scale", "be finite", repr(float(scale)))
    scale = dtypes.as_float_array(fn, "scale", scale).astype(acc)
    out = ref.softmax_attention(q.astype(acc), k.astype(acc), v.astype(acc), scale, causal=causal, runs=runs)
    return out.astype(dtype)


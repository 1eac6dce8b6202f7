"""What the Pallas kernels of causal linear attention share: tile maths, padding plan, custom VJP.

The chunk algebra (Yang et al., GLA, sec. 3): with features :math:`\\phi(Q), \\phi(K)` of one chunk
(``[C, M]``), values ``V [C, Dv]`` and the state :math:`S = \\sum \\phi(k) v^\\top` (``[M, Dv]``),
normaliser :math:`z = \\sum \\phi(k)` (``[1, M]``) of the earlier chunks,

* forward: ``A = mask(phi(Q) phi(K)^T)``, ``num = A V + phi(Q) S``, ``den = A 1 + phi(Q) z^T``,
  ``out = num / (den + eps)``; then ``S += phi(K)^T V``, ``z += 1^T phi(K)``.

The backward needs no augmented ``[V, 1]`` tensor: the normaliser is its own reduction. With
``dn = dO / (den + eps)`` and ``dd = -sum(dO * O) / (den + eps)`` per token (``dn = dO, dd = 0``
unnormalised) and ``G = mask(dn V^T + dd 1^T)``:

* ``dphi(Q) = G phi(K) + dn S^T + dd z`` (a forward-direction scan with the forward's state);
* ``dphi(K) = G^T phi(Q) + V R^T + r`` and ``dV = A^T dn + phi(K) R`` (a reverse scan whose state
  ``R = sum_{later t} phi(q_t) dn_t^T``, ``r = sum_{later t} dd_t phi(q_t)`` starts at the
  cotangent of the returned final state and ends as the gradient of the initial state).

Values are split over ``Dv`` tiles (one program per tile); the ``dphi`` partial sums of the tiles
are added in XLA, and the ``dd`` / ``z`` / ``r`` terms are counted in tile 0 only.

Packed sequences (``segment_ids``) enter as per-token integers computed here in XLA: the run id
(``mask`` adds ``run_t == run_s``) and flag bits saying whether the state carried into a chunk
applies to a token, whether a token feeds the state carried out, and the same two for the reverse
scan; a state that does not survive a chunk is reset (each packed sequence starts from zero state,
``initial_state`` belongs to the first and the returned state to the last).

Scalar decays (log-gates ``g [B, T, H]``, a gate ``exp(g_t)`` per head and token, as the XLA path in
``_decay``) enter as the chunk-local inclusive cumulative log-gates ``b`` (computed in XLA, in the
accumulation dtype): the ``[C, C]`` score and ``G`` tiles are weighted by ``exp(b_t - b_s)`` formed
only where ``s <= t`` (masked before the exponential), the carried state is read with ``exp(b_t)``,
decayed by ``exp(b_C)`` and fed with ``exp(b_C - b_s)``; no exponent is positive, so strong decays
do not overflow in float32 / bfloat16. Without decay (``b`` None) none of this is traced. The
gradient of ``g`` is computed in XLA from ``dphi(Q)``, ``dphi(K)`` (:func:`decay_grad`).

The feature maps ``identity``, ``elu_plus_one``, ``relu`` and ``favor_positive`` (with ``w``) are
applied to each loaded tile inside the forward kernel; the backward kernels take the features
computed in XLA, and the chain rule through the map is the VJP of its jnp definition.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src import dtypes
from kjax.attention import _feature_maps as fm
from kjax.attention._xla import apply_fused_map

#: feature maps the kernels apply inside the forward kernel (others come as precomputed features)
FUSED_MAPS = ("identity", "elu_plus_one", "relu", "favor_positive")

# flag bits of the per-token flags array
VALID, CIN, COUT, RIN, ROUT = 1, 2, 4, 8, 16


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class Plan:
    """Padded sizes of one call: chunk ``c``, padded ``tp``, ``dp``, ``mp``, value tile ``bv``."""

    c: int
    tp: int
    dp: int
    mp: int
    dvp: int
    bv: int

    @property
    def n_chunks(self) -> int:
        return self.tp // self.c

    @property
    def n_v(self) -> int:
        return self.dvp // self.bv


def make_plan(t: int, d: int, m: int, dv: int, *, chunk: int, lane: int, max_bv: int) -> Plan:
    """Triton: ``lane=16`` (power-of-two sides >= 16); TPU: ``lane=128`` (multiples of 128)."""
    def side(n):
        return max(lane, next_pow2(n)) if lane < 128 else -(-n // lane) * lane
    dp, mp = side(d), side(m)
    bv = min(max_bv, side(dv))
    dvp = -(-dv // bv) * bv
    tp = -(-t // chunk) * chunk
    return Plan(chunk, tp, dp, mp, dvp, bv)


def acc_dot(a, b, acc, ca=1, cb=0):
    """``a @ b`` contracting ``a``'s axis ``ca`` with ``b``'s axis ``cb``, accumulated in ``acc``."""
    prec = jax.lax.Precision.HIGHEST if a.dtype == jnp.float32 or a.dtype == jnp.float64 else None
    return jax.lax.dot_general(a, b, (((ca,), (cb,)), ((), ())), preferred_element_type=acc, precision=prec)


def phi_tile(x, w, *, feature_map: str, is_query: bool, m: int, mp: int, io_dtype):
    """The feature map on a loaded ``[C, Dp]`` tile -> ``[C, Mp]`` (padded features are zero)."""
    acc = x.dtype
    if feature_map in ("identity", "relu"):
        return jnp.maximum(x, 0) if feature_map == "relu" else x
    col = jax.lax.broadcasted_iota(jnp.int32, (1, mp), 1) < m
    if feature_map == "elu_plus_one":
        return jnp.where(col, jnp.where(x > 0, x + 1, jnp.exp(jnp.minimum(x, 0))), 0)
    wx = acc_dot(x, w, acc, 1, 1)  # [C, Mp]
    expo = wx - 0.5 * jnp.sum(x * x, axis=1, keepdims=True)
    if is_query:
        expo = expo - jnp.max(jnp.where(col, expo, -jnp.inf), axis=1, keepdims=True)
    else:
        expo = expo - fm.weight_stabilizer(w, io_dtype)
    return jnp.where(col, jnp.exp(expo), 0) * (1.0 / math.sqrt(m))


def _masks(c: int, runs_col, runs_row):
    row = jax.lax.broadcasted_iota(jnp.int32, (c, c), 0)
    col = jax.lax.broadcasted_iota(jnp.int32, (c, c), 1)
    mask = row >= col
    if runs_col is not None:
        mask = mask & (runs_col == runs_row)
    return mask


def _bit(flags, bit):
    return (flags & bit) != 0


def _first_or_last(x, c: int, last: bool):
    """The scalar at row ``c - 1`` (or 0) of a ``[C, 1]`` boolean tile, as a reduction."""
    row = jax.lax.broadcasted_iota(jnp.int32, (c, 1), 0)
    return jnp.max(jnp.where(row == (c - 1 if last else 0), x.astype(jnp.int32), 0)) > 0


def decay_tiles(b_col, b_row, mask):
    """Decays of one chunk from its inclusive cumulative log-gates ``b`` (``[C, 1]`` and ``[1, C]``):
    ``(gam [C, C]`` = ``exp(b_t - b_s)`` where ``mask`` (0 elsewhere, masked before the exponential),
    ``ein [C, 1]`` = ``exp(b_t)``, ``eout [C, 1]`` = ``exp(b_C - b_s)``, ``etot`` = ``exp(b_C)``); every
    exponent is <= 0 for log-gates <= 0, so nothing overflows in float32 or bfloat16."""
    c = b_col.shape[0]
    gam = jnp.where(mask, jnp.exp(jnp.where(mask, b_col - b_row, 0.0)), 0.0)
    row = jax.lax.broadcasted_iota(jnp.int32, (c, 1), 0)
    last = jnp.sum(jnp.where(row == c - 1, b_col, 0.0))
    return gam, jnp.exp(b_col), jnp.exp(last - b_col), jnp.exp(last)


def forward_chunk(pq, pk, v, s, z, flags, runs_col, runs_row, *, normalize: bool, eps: float, acc,
                  b_col=None, b_row=None):
    """One chunk of the forward recurrence; returns ``(out [C, BV], den [C, 1], s, z)``.

    With cumulative log-gates ``b_col [C, 1]`` / ``b_row [1, C]`` (decayed linear attention), the
    scores are weighted by ``exp(b_t - b_s)``, the carried state read with ``exp(b_t)`` and decayed
    by ``exp(b_C)``, and a key enters the state with ``exp(b_C - b_s)``."""
    c = pq.shape[0]
    pk = jnp.where(_bit(flags, VALID), pk, 0)
    mask = _masks(c, runs_col, runs_row)
    inter = pq if runs_col is None else jnp.where(_bit(flags, CIN), pq, 0)
    if b_col is None:
        a = jnp.where(mask, acc_dot(pq, pk, acc, 1, 1), 0)
    else:
        gam, ein, eout, etot = decay_tiles(b_col, b_row, mask)
        a = acc_dot(pq, pk, acc, 1, 1) * gam
        inter = inter.astype(acc) * ein
    num = acc_dot(a.astype(v.dtype), v, acc) + acc_dot(inter.astype(acc), s, acc)
    den = jnp.sum(a, axis=1, keepdims=True) + jnp.sum(inter * z, axis=1, keepdims=True)
    out = num / (den + eps) if normalize else num
    if runs_col is not None:
        keep = _first_or_last(_bit(flags, CIN), c, last=True)
        s, z = jnp.where(keep, s, 0), jnp.where(keep, z, 0)
        pk = jnp.where(_bit(flags, COUT), pk, 0)
    pk = pk.astype(acc)
    if b_col is not None:
        pk, s, z = pk * eout, s * etot, z * etot
    s = s + acc_dot(pk, v.astype(acc), acc, 0, 0)
    z = z + jnp.sum(pk, axis=0, keepdims=True)
    return out, den, s, z


def dq_chunk(pk, v, dn, dd, s, z, flags, runs_col, runs_row, *, acc, b_col=None, b_row=None):
    """One chunk of the forward-direction backward scan: ``(dphi(Q) partial [C, Mp], s, z)``."""
    c = pk.shape[0]
    mask = _masks(c, runs_col, runs_row)
    if b_col is None:
        g = jnp.where(mask, acc_dot(dn, v, acc, 1, 1) + dd, 0)
    else:
        gam, ein, eout, etot = decay_tiles(b_col, b_row, mask)
        g = (acc_dot(dn, v, acc, 1, 1) + dd) * gam
    dn_in, dd_in = (dn, dd) if runs_col is None else (jnp.where(_bit(flags, CIN), x, 0) for x in (dn, dd))
    inter = acc_dot(dn_in, s, acc, 1, 1) + dd_in * z
    dpq = acc_dot(g, pk, acc) + (inter if b_col is None else inter * ein)
    if runs_col is not None:
        keep = _first_or_last(_bit(flags, CIN), c, last=True)
        s, z = jnp.where(keep, s, 0), jnp.where(keep, z, 0)
        pk = jnp.where(_bit(flags, COUT), pk, 0)
    if b_col is not None:
        pk, s, z = pk * eout, s * etot, z * etot
    s = s + acc_dot(pk, v, acc, 0, 0)
    z = z + jnp.sum(pk, axis=0, keepdims=True)
    return dpq, s, z


def dkv_chunk(pq, pk, v, dn, dd, r_s, r_z, flags, runs_col, runs_row, *, acc, b_col=None, b_row=None):
    """One chunk of the reverse backward scan: ``(dphi(K) partial [C, Mp], dV [C, BV], R, r)``.

    With decays, ``R`` (the cotangent of the state after the chunk) reaches key ``s`` with
    ``exp(b_C - b_s)`` and the state before the chunk as ``exp(b_C) R + (phi(Q) exp(b))^T dn``."""
    c = pq.shape[0]
    mask = _masks(c, runs_col, runs_row)
    if b_col is None:
        g = jnp.where(mask, acc_dot(dn, v, acc, 1, 1) + dd, 0)  # [t, s]
        a = jnp.where(mask, acc_dot(pq, pk, acc, 1, 1), 0)     # [t, s]
    else:
        gam, ein, eout, etot = decay_tiles(b_col, b_row, mask)
        g = (acc_dot(dn, v, acc, 1, 1) + dd) * gam
        a = acc_dot(pq, pk, acc, 1, 1) * gam
    inter_k = acc_dot(v, r_s, acc, 1, 1) + r_z            # [s, Mp]
    inter_v = acc_dot(pk, r_s, acc)                        # [s, BV]
    if b_col is not None:
        inter_k, inter_v = inter_k * eout, inter_v * eout
    if runs_col is not None:
        rin = _bit(flags, RIN)
        inter_k, inter_v = jnp.where(rin, inter_k, 0), jnp.where(rin, inter_v, 0)
    dpk = acc_dot(g, pq, acc, 0, 0) + inter_k
    dv = acc_dot(a, dn, acc, 0, 0) + inter_v
    if runs_col is not None:
        keep = _first_or_last(_bit(flags, RIN), c, last=False)
        r_s, r_z = jnp.where(keep, r_s, 0), jnp.where(keep, r_z, 0)
        rout = _bit(flags, ROUT)
        dn, dd = jnp.where(rout, dn, 0), jnp.where(rout, dd, 0)
    if b_col is not None:
        pq, r_s, r_z = pq * ein, r_s * etot, r_z * etot
    r_s = r_s + acc_dot(pq, dn, acc, 0, 0)
    r_z = r_z + jnp.sum(pq * dd, axis=0, keepdims=True)
    return dpk, dv, r_s, r_z


# ------------------------------------------------------------------------------ XLA-side helpers


def token_flags(runs, b: int, t: int, tp: int, c: int):
    """``(runs [B, Tp], flags [B, Tp])`` int32 for the kernels (``runs=None``: validity only)."""
    valid = (jnp.arange(tp) < t).astype(jnp.int32) * VALID
    if runs is None:
        return None, jnp.broadcast_to(valid, (b, tp))
    rp = jnp.concatenate([runs, jnp.broadcast_to(runs[:, -1:], (b, tp - t))], axis=1) if tp > t else runs
    pos = jnp.arange(tp)
    start, end = (pos // c) * c, (pos // c) * c + c - 1
    prev = rp[:, jnp.maximum(start - 1, 0)]  # run of the token before the chunk (token 0 for chunk 0)
    prev = jnp.where(start[None] == 0, rp[:, :1], prev)
    last = rp[:, end]
    nxt = jnp.where(end[None] + 1 < tp, rp[:, jnp.minimum(end + 1, tp - 1)], rp[:, -1:])
    first = rp[:, start]
    flags = (valid[None]
             + CIN * (rp == prev) + COUT * (rp == last) + RIN * (rp == nxt) + ROUT * (rp == first))
    return rp.astype(jnp.int32), flags.astype(jnp.int32)


def pad_axis(x, axis: int, size: int):
    if x.shape[axis] == size:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths)


def chunk_cumsum(g, tp: int, c: int):
    """Log-gates ``[B, T, H]`` -> inclusive cumulative sums within each chunk of ``c`` tokens,
    ``[B, Tp, H]`` (padded tokens have gate 1, log-gate 0)."""
    b, t, h = g.shape
    gp = pad_axis(g, 1, tp).reshape(b, tp // c, c, h)
    return jnp.cumsum(gp, axis=2).reshape(b, tp, h)


def decay_grad(pq, dpq, pk, dpk, s, gs, z, gz):
    """The gradient of the log-gates ``g [B, T, H]`` from those of the (decayed) features.

    Every decay is ``exp(B_t - B_s)`` (or ``exp(B_t)``) of the global cumulative log-gate ``B``, so
    ``dL/dB_t = phi(q_t) . dphi(q_t) - phi(k_t) . dphi(k_t)``, plus ``<S_T, dS_T> + <z_T, dz_T>`` at
    the last token (the final state carries ``exp(B_T)``); ``dL/dg`` is its reversed cumsum (as
    flash-linear-attention computes ``dg``)."""
    db = jnp.sum(pq * dpq, axis=-1) - jnp.sum(pk * dpk, axis=-1)
    last = jnp.sum(s * gs, axis=(2, 3)) + jnp.sum(z * gz, axis=2)  # [B, H]
    db = db.at[:, -1].add(last)
    return jnp.flip(jnp.cumsum(jnp.flip(db, 1), axis=1), 1)


#: ``phi(q), phi(k)`` with the jnp definitions (for the backward's chain rule): the XLA path's maps
features_jnp = apply_fused_map


def kernel_family(forward, dq, dkv, plan):
    """``(compiled, interpret)`` attention functions of a kernel family (its forward, dq and dkv
    drivers and its padding plan), each ``f(q, k, v, w, s0, z0, runs, g, *, feature_map, normalize,
    eps, chunk_size) -> (out, s, z)``."""
    def driver(interpret):
        return types.SimpleNamespace(forward=functools.partial(forward, interpret=interpret),
                                     dq=functools.partial(dq, interpret=interpret),
                                     dkv=functools.partial(dkv, interpret=interpret), plan=plan)
    return make_attention(driver(False)), make_attention(driver(True))


def make_supports(compiled_dtypes: tuple, what: str):
    """The ``supports(platform, config)`` predicate of a kernel family: causal, a fused map, no decay
    or a scalar one (``decay`` ``"head"`` / ``"scalar"``, also with ``segment_ids``), no
    ``cu_seqlens``, feature sizes up to 256, and ``compiled_dtypes`` when compiled (interpret mode
    takes any float)."""
    names = ", ".join(jnp.dtype(d).name for d in compiled_dtypes)

    def supports(platform: str, config) -> str | None:
        if config.get("decay") not in (None, "head", "scalar"):
            return "a per-feature `decay` [B, T, H, M] is served by the XLA path"
        if config.get("varlen"):
            return "`cu_seqlens` is served by the XLA path"
        if not config["causal"]:
            return "`causal=False` is served by the XLA path"
        if config["feature_map"] not in FUSED_MAPS:
            return f"`feature_map` {config['feature_map']!r} is not fused"
        if platform != "cpu" and config["dtype"] not in compiled_dtypes:
            return f"compiled {what} kernels take {names} inputs, not {config['dtype']}"
        if max(config["d"], config["m"], config["dv"]) > 256:
            return "feature sizes (D, M, Dv) of `q`, `k`, `v` above 256 are served by the XLA path"
        return None
    return supports


def make_attention(driver):
    """The differentiable causal linear attention of a kernel driver.

    ``driver`` provides ``forward(q, k, v, w, s0, z0, runs, flags, b, *, plan, feature_map, m,
    normalize, eps)``, ``dq(pk, v, dn, dd, s0, z0, runs, flags, b, *, plan)`` and ``dkv(pq, pk, v,
    dn, dd, gs, gz, runs, flags, b, *, plan)`` on padded arrays in ``[B, Tp, H, *]`` layout (``b``:
    None, or the chunk-local cumulative log-gates ``[B, Tp, H]`` in the accumulation dtype), and
    ``plan(t, d, m, dv, chunk_size)``.
    Returns ``f(q, k, v, w, s0, z0, runs, g, *, feature_map, normalize, eps, chunk_size)`` ->
    ``(out [B, T, H, Dv], s [B, H, M, Dv], z [B, H, M])``; ``g`` is None (no decay: the kernels are
    traced without any decay code) or scalar log-decays ``[B, T, H]``, differentiated as well.
    """

    def pads(q, v, w, feature_map, chunk_size):
        b, t, h, d = q.shape
        m = w.shape[0] if feature_map == "favor_positive" else d
        return driver.plan(t, d, m, v.shape[-1], chunk_size), m

    @functools.partial(jax.custom_vjp, nondiff_argnums=(8, 9, 10, 11))
    def attention(q, k, v, w, s0, z0, runs, g, feature_map, normalize, eps, chunk_size):
        return fwd(q, k, v, w, s0, z0, runs, g, feature_map, normalize, eps, chunk_size)[0]

    def gates(g, p, acc):
        return None if g is None else chunk_cumsum(g.astype(acc), p.tp, p.c)

    def fwd(q, k, v, w, s0, z0, runs, g, feature_map, normalize, eps, chunk_size):
        b, t, h, d = q.shape
        dv = v.shape[-1]
        p, m = pads(q, v, w, feature_map, chunk_size)
        rp, flags = token_flags(runs, b, t, p.tp, p.c)
        qp, kp = (pad_axis(pad_axis(x, 1, p.tp), 3, p.dp) for x in (q, k))
        vp = pad_axis(pad_axis(v, 1, p.tp), 3, p.dvp)
        wp = pad_axis(pad_axis(w, 0, p.mp), 1, p.dp) if feature_map == "favor_positive" else w
        s0p = pad_axis(pad_axis(s0, 2, p.mp), 3, p.dvp)
        z0p = pad_axis(z0, 2, p.mp)[:, :, None, :]
        out, den, s, z = driver.forward(qp, kp, vp, wp, s0p, z0p, rp, flags, gates(g, p, s0.dtype), plan=p,
                                        feature_map=feature_map, m=m, normalize=normalize, eps=eps)
        out, den = out[:, :t, :, :dv], den[:, :t]
        s, z = s[:, :, :m, :dv], z[:, :, 0, :m]
        final = None if g is None else (s, z)
        res = (q, k, v, w, s0, z0, runs, g, out, den, final)
        return (out, s, z), res

    def bwd(feature_map, normalize, eps, chunk_size, res, cts):
        q, k, v, w, s0, z0, runs, g_in, out, den, final = res
        g, gs, gz = cts
        b, t, h, d = q.shape
        dv = v.shape[-1]
        p, m = pads(q, v, w, feature_map, chunk_size)
        acc = s0.dtype
        (pq, pk), map_vjp = jax.vjp(lambda q_, k_, w_: features_jnp(q_, k_, w_, feature_map), q, k, w)
        g = g.astype(acc)
        if normalize:
            inv = 1.0 / (den + eps)
            dn, dd = g * inv, -jnp.sum(g * out.astype(acc), -1, keepdims=True) * inv
        else:
            dn, dd = g, jnp.zeros_like(den)
        rp, flags = token_flags(runs, b, t, p.tp, p.c)
        padt = lambda x, f: pad_axis(pad_axis(x, 1, p.tp), 3, f)
        pqp, pkp = padt(pq.astype(acc), p.mp), padt(pk.astype(acc), p.mp)
        vp, dnp, ddp = padt(v.astype(acc), p.dvp), padt(dn, p.dvp), pad_axis(dd, 1, p.tp)
        s0p = pad_axis(pad_axis(s0, 2, p.mp), 3, p.dvp)
        z0p = pad_axis(z0, 2, p.mp)[:, :, None, :]
        gsp = pad_axis(pad_axis(gs.astype(acc), 2, p.mp), 3, p.dvp)
        gzp = pad_axis(gz.astype(acc), 2, p.mp)[:, :, None, :]
        bp = gates(g_in, p, acc)
        dpq = driver.dq(pkp, vp, dnp, ddp, s0p, z0p, rp, flags, bp, plan=p)
        dpk, dvv, ds0, dz0 = driver.dkv(pqp, pkp, vp, dnp, ddp, gsp, gzp, rp, flags, bp, plan=p)
        dpq, dpk = dpq[:, :t, :, :m], dpk[:, :t, :, :m]
        dq, dk, dw = map_vjp((dpq.astype(pq.dtype), dpk.astype(pk.dtype)))
        dg = None
        if g_in is not None:
            dg = decay_grad(pq.astype(acc), dpq, pk.astype(acc), dpk, final[0], gs.astype(acc), final[1],
                            gz.astype(acc)).astype(g_in.dtype)
        return (dq.astype(q.dtype), dk.astype(k.dtype), dvv[:, :t, :, :dv].astype(v.dtype),
                dw.astype(w.dtype), ds0[:, :, :m, :dv].astype(s0.dtype), dz0[:, :, 0, :m].astype(z0.dtype),
                None if runs is None else np.zeros(runs.shape, jax.dtypes.float0), dg)

    attention.defvjp(fwd, bwd)

    def run(q, k, v, w, s0, z0, runs, g=None, *, feature_map, normalize, eps, chunk_size):
        return attention(q, k, v, w, s0, z0, runs, g, feature_map, bool(normalize), float(eps),
                         int(chunk_size))

    return run


def accum(dtype):
    return dtypes.accum_dtype(dtype)

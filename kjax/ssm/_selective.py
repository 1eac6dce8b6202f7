"""Selective diagonal SSMs (Mamba, Mamba-2 / SSD) through the decayed linear attention of
kjax.attention, and the implicit attention matrix of an SSM.

A selective diagonal SSM with input-dependent step ``dt_t``, input and output projections
``B_t, C_t`` and a diagonal ``A`` is, per head ``h`` (state ``h_t: [N, P]``),

    h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t^T,    y_t = h_t^T C_t + D u_t,

which is decayed linear attention with keys ``B``, queries ``C``, values ``dt u`` and log-decay
``dt A`` (a scalar per head and step for Mamba-2's ``A: [H]``, one per state for Mamba's
``A: [H, N]``). Unrolled, ``y = alpha u + D u`` with the causal matrix
``alpha[t, s] = C_t^T exp(A (dt_{s+1} + ... + dt_t)) B_s dt_s`` (Ali, Zimerman & Wolf, 2024).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, check_int, check_rank, fail, is_static_number, shape_of
from kjax.attention import LinearAttentionState, linear_attention, linear_attention_step


class SelectiveScanState(NamedTuple):
    """State of a selective SSM: ``h: [Bt, H, N, P]`` (state size ``N`` by head dimension ``P``)."""

    h: jax.Array


_SS = "kjax.ssm.selective_scan"


def _check_a(fn: str, A, h: int, n: int):
    A = dtypes.as_float_array(fn, "A", A)
    if A.shape not in ((h,), (h, n)):
        fail(fn, "A", f"have shape [H] = {(h,)} or [H, N] = {(h, n)}", f"shape {A.shape}")
    if is_static_number(A) and np.any(np.asarray(A, np.float64) > 0):
        fail(fn, "A", "be <= 0 (a stable diagonal state matrix)",
             f"a maximum of {np.nanmax(np.asarray(A))!r}")
    return A


def _check_dt(fn: str, arg: str, dt, shape):
    dt = dtypes.as_float_array(fn, arg, dt)
    if dt.shape != shape:
        fail(fn, arg, f"have shape {shape}", f"shape {dt.shape}")
    if is_static_number(dt) and np.any(np.asarray(dt, np.float64) < 0):
        fail(fn, arg, "be >= 0 (a step size, e.g. softplus of a projection)",
             f"a minimum of {np.nanmin(np.asarray(dt))!r}")
    return dt


def _check_bcs(fn: str, names: tuple[str, str], b, c, lead: tuple[int, ...], h: int):
    """``B, C: [*lead, G, N]`` of one shape with ``G`` dividing ``H``."""
    b = _check_bc(fn, names[0], b, lead, h)
    c = _check_bc(fn, names[1], c, lead, h)
    if c.shape != b.shape:
        fail(fn, names[1], f"have the shape of `{names[0]}` {b.shape}", f"shape {c.shape}")
    return b, c


def _heads(x, h: int):
    """``[..., G, N] -> [..., H, N]``: head ``h`` uses group ``h // (H / G)``."""
    return jnp.repeat(x, h // x.shape[-2], axis=-2)


def _check_bc(fn: str, arg: str, x, lead: tuple[int, ...], h: int):
    """``[*lead, G, N]`` with ``G`` dividing ``H``."""
    x = dtypes.as_float_array(fn, arg, x)
    layout = "[Bt, T, G, N]" if len(lead) == 2 else "[Bt, G, N]"
    check_rank(fn, arg, x, len(lead) + 2, layout=layout)
    g = x.shape[-2]
    if x.shape[:-2] != lead or g == 0 or h % g or x.shape[-1] == 0:
        fail(fn, arg, f"have shape {layout} with leading axes {lead}, G dividing H = {h} and N >= 1",
             f"shape {x.shape}")
    return x


def _check_d(fn: str, D, h: int):
    if D is None:
        return None
    D = dtypes.as_float_array(fn, "D", D)
    if D.shape != (h,):
        fail(fn, "D", f"have shape [H] = {(h,)}", f"shape {D.shape}")
    return D


def _decay(dt, A):
    """Log-decays ``dt A``: ``[..., H]`` for ``A: [H]``, ``[..., H, N]`` for ``A: [H, N]``."""
    return dt * A if A.ndim == 1 else dt[..., None] * A


def selective_scan(
    u: Float[ArrayLike, "Bt T H P"],
    dt: Float[ArrayLike, "Bt T H"],
    A: Float[ArrayLike, " H"] | Float[ArrayLike, "H N"],
    B: Float[ArrayLike, "Bt T G N"],
    C: Float[ArrayLike, "Bt T G N"],
    D: Float[ArrayLike, " H"] | None = None,
    *,
    initial_state: SelectiveScanState | None = None,
    return_state: bool = False,
    chunk_size: int = 64,
) -> Float[Array, "Bt T H P"] | tuple[Float[Array, "Bt T H P"], SelectiveScanState]:
    r"""A selective diagonal SSM (Mamba-2's SSD, or Mamba's per-state ``A``), by chunked decayed
    linear attention.

    .. math:: h_t = e^{\Delta_t A}\, h_{t-1} + \Delta_t\, B_t u_t^\top,\qquad
        y_t = h_t^\top C_t + D u_t

    per head, with state :math:`h_t \in \mathbb R^{N \times P}`. It is computed as
    ``linear_attention(C, B, dt * u, decay=dt * A, normalize=False)`` (keys ``B``, queries ``C``),
    in chunks of ``chunk_size`` tokens, and equals the sequential scan. ``dt`` is used as given:
    the caller applies the softplus (and the bias) of the papers. Layout ``[Bt, T, H, P]`` (Mamba-2's
    heads ``H`` of dimension ``P``); ``B`` and ``C`` have ``G`` groups shared by ``H / G`` heads each
    (heads ``h`` use group ``h // (H / G)``; ``G = H`` for one per head).

    Args:
      u: ``[Bt, T, H, P]`` inputs.
      dt: ``[Bt, T, H]`` step sizes (>= 0; a concrete negative value raises).
      A: ``[H]`` (Mamba-2: a scalar per head) or ``[H, N]`` (Mamba: one per state), <= 0 (a
        concrete positive value raises; a traced one cannot be checked, keep it ``-exp(a_log)``).
      B: ``[Bt, T, G, N]`` input projections.
      C: ``[Bt, T, G, N]`` output projections.
      D: ``[H]`` skip connection, or None.
      initial_state: a :class:`SelectiveScanState` (``h: [Bt, H, N, P]``), or None for zeros.
      return_state: also return the final state (for :func:`selective_scan_step`).
      chunk_size: tokens per chunk (>= 1).

    Returns:
      ``y: [Bt, T, H, P]`` in the input dtype (and the final :class:`SelectiveScanState` if
      ``return_state``).

    Raises:
      ValueError: shapes that do not match as above; an empty axis; ``A > 0`` or ``dt < 0``
        (concrete); ``chunk_size < 1``; a state of another shape.
      TypeError: complex inputs; ``initial_state`` not a :class:`SelectiveScanState`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ssm import selective_scan
      >>> k = jax.random.split(jax.random.key(0), 4)
      >>> u = jax.random.normal(k[0], (1, 12, 2, 3))
      >>> dt = jax.nn.softplus(jax.random.normal(k[1], (1, 12, 2)))
      >>> B, C = jax.random.normal(k[2], (2, 1, 12, 1, 4))
      >>> y = selective_scan(u, dt, -jnp.ones(2), B, C, jnp.ones(2), chunk_size=4)
      >>> print(y.shape)
      (1, 12, 2, 3)

    References:
      Gu & Dao, *Mamba: Linear-Time Sequence Modeling with Selective State Spaces*, 2023; Dao & Gu,
      *Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured State
      Space Duality*, ICML 2024.
    """
    u = dtypes.as_float_array(_SS, "u", u)
    check_rank(_SS, "u", u, 4, layout="[Bt, T, H, P]")
    if 0 in u.shape:
        fail(_SS, "u", "have every axis of [Bt, T, H, P] >= 1", f"shape {u.shape}")
    bt, t, h, p = u.shape
    dt = _check_dt(_SS, "dt", dt, (bt, t, h))
    B, C = _check_bcs(_SS, ("B", "C"), B, C, (bt, t), h)
    n = B.shape[-1]
    A = _check_a(_SS, A, h, n)
    D = _check_d(_SS, D, h)
    check_int(_SS, "chunk_size", chunk_size, minimum=1)
    if not isinstance(return_state, bool | np.bool_):
        fail(_SS, "return_state", "be a Python bool", repr(return_state), cls=KjaxTypeError)
    dtype = dtypes.result_dtype(u, dt, A, B, C, D)
    if initial_state is not None:
        if not isinstance(initial_state, SelectiveScanState):
            fail(_SS, "initial_state", "be a SelectiveScanState(h) or None", type(initial_state).__name__,
                 cls=KjaxTypeError)
        if shape_of(initial_state.h) != (bt, h, n, p):
            fail(_SS, "initial_state", f"have h of shape [Bt, H, N, P] = {(bt, h, n, p)}",
                 f"shape {shape_of(initial_state.h)}")
    h0 = None if initial_state is None else dtypes.as_float_array(_SS, "initial_state", initial_state.h)
    return _scan(u, dt, A, B, C, D, h0, chunk_size=chunk_size, return_state=return_state, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("chunk_size", "return_state", "dtype"))
def _scan(u, dt, A, B, C, D, h0, *, chunk_size: int, return_state: bool, dtype):
    acc = dtypes.accum_dtype(dtype)
    h = u.shape[2]
    u, dt, A, B, C = (x.astype(acc) for x in (u, dt, A, _heads(B, h), _heads(C, h)))
    state = None if h0 is None else LinearAttentionState(h0.astype(acc), jnp.zeros(h0.shape[:-1], acc))
    out = linear_attention(C, B, u * dt[..., None], decay=_decay(dt, A), normalize=False,
                           chunk_size=chunk_size, initial_state=state, return_state=return_state,
                           implementation="xla")
    y, st = out if return_state else (out, None)
    if D is not None:
        y = y + D.astype(acc)[:, None] * u
    y = y.astype(dtype)
    return (y, SelectiveScanState(st.kv.astype(dtype))) if return_state else y


def selective_scan_step(
    state: SelectiveScanState,
    u_t: Float[ArrayLike, "Bt H P"],
    dt_t: Float[ArrayLike, "Bt H"],
    A: Float[ArrayLike, " H"] | Float[ArrayLike, "H N"],
    B_t: Float[ArrayLike, "Bt G N"],
    C_t: Float[ArrayLike, "Bt G N"],
    D: Float[ArrayLike, " H"] | None = None,
) -> tuple[Float[Array, "Bt H P"], SelectiveScanState]:
    r"""One token of :func:`selective_scan` (decoding):
    :math:`h \leftarrow e^{\Delta_t A} h + \Delta_t B_t u_t^\top`, :math:`y_t = h^\top C_t + D u_t`.

    Args:
      state: :class:`SelectiveScanState` with ``h: [Bt, H, N, P]`` (zeros to start, or the state
        returned by :func:`selective_scan`).
      u_t: ``[Bt, H, P]`` input.
      dt_t: ``[Bt, H]`` step size (>= 0).
      A: ``[H]`` or ``[H, N]`` (<= 0).
      B_t: ``[Bt, G, N]`` input projection.
      C_t: ``[Bt, G, N]`` output projection.
      D: ``[H]`` skip connection, or None.

    Returns:
      ``(y_t [Bt, H, P], new_state)`` in the input dtype.

    Raises:
      ValueError: shapes that do not match each other or the state; ``A > 0`` or ``dt_t < 0``
        (concrete).
      TypeError: ``state`` not a :class:`SelectiveScanState` or complex; complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ssm import SelectiveScanState, selective_scan_step
      >>> s = SelectiveScanState(jnp.zeros((1, 2, 4, 3)))
      >>> y, s = selective_scan_step(s, jnp.ones((1, 2, 3)), jnp.ones((1, 2)), -jnp.ones(2),
      ...                            jnp.ones((1, 1, 4)), jnp.ones((1, 1, 4)))
      >>> print(y[0, 0])
      [4. 4. 4.]

    References:
      Dao & Gu, *Transformers are SSMs*, ICML 2024.
    """
    fn = "kjax.ssm.selective_scan_step"
    u_t = dtypes.as_float_array(fn, "u_t", u_t)
    check_rank(fn, "u_t", u_t, 3, layout="[Bt, H, P]")
    if 0 in u_t.shape:
        fail(fn, "u_t", "have every axis of [Bt, H, P] >= 1", f"shape {u_t.shape}")
    bt, h, p = u_t.shape
    dt_t = _check_dt(fn, "dt_t", dt_t, (bt, h))
    B_t, C_t = _check_bcs(fn, ("B_t", "C_t"), B_t, C_t, (bt,), h)
    n = B_t.shape[-1]
    A = _check_a(fn, A, h, n)
    D = _check_d(fn, D, h)
    if not isinstance(state, SelectiveScanState):
        fail(fn, "state", "be a SelectiveScanState(h)", type(state).__name__, cls=KjaxTypeError)
    if shape_of(state.h) != (bt, h, n, p):
        fail(fn, "state", f"have h of shape [Bt, H, N, P] = {(bt, h, n, p)}", f"shape {shape_of(state.h)}")
    hs = dtypes.as_float_array(fn, "state", state.h)
    dtype = dtypes.result_dtype(u_t, dt_t, A, B_t, C_t, D)
    return _step(hs, u_t, dt_t, A, B_t, C_t, D, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("dtype",))
def _step(hs, u_t, dt_t, A, B_t, C_t, D, *, dtype):
    acc = dtypes.accum_dtype(dtype)
    h = u_t.shape[1]
    u_t, dt_t, A, B_t, C_t = (x.astype(acc) for x in (u_t, dt_t, A, _heads(B_t, h), _heads(C_t, h)))
    st = LinearAttentionState(hs.astype(acc), jnp.zeros(hs.shape[:-1], acc))
    y, st = linear_attention_step(st, C_t, B_t, u_t * dt_t[..., None], decay_t=_decay(dt_t, A),
                                  normalize=False)
    if D is not None:
        y = y + D.astype(acc)[:, None] * u_t
    return y.astype(dtype), SelectiveScanState(st.kv.astype(dtype))


def ssm_attention_matrix(
    dt: Float[ArrayLike, "Bt T H"],
    A: Float[ArrayLike, " H"] | Float[ArrayLike, "H N"],
    B: Float[ArrayLike, "Bt T G N"],
    C: Float[ArrayLike, "Bt T G N"],
) -> Float[Array, "Bt H T T"]:
    r"""The implicit attention matrix of a selective (or LTI) diagonal SSM.

    .. math:: \alpha_{ts} = C_t^\top \exp\Big(A \sum_{r=s+1}^{t} \Delta_r\Big) B_s\, \Delta_s
        \quad (s \le t),\qquad \alpha_{ts} = 0 \quad (s > t)

    so that :func:`selective_scan` is ``y[:, t, h] = sum_s alpha[:, h, t, s] u[:, s, h] + D u``
    (Ali, Zimerman & Wolf's hidden attention of Mamba models). The exponents are masked before the
    exponential (never positive). An LTI diagonal SSM (S4D with real ``A``) is the case of
    constant ``dt``, ``B`` and ``C``: broadcast them over ``T`` (``alpha`` is then Toeplitz). For
    analysis: :math:`O(T^2)` memory (:math:`O(T^2 N)` for ``A: [H, N]``).

    Args:
      dt: ``[Bt, T, H]`` step sizes (>= 0).
      A: ``[H]`` or ``[H, N]`` (<= 0).
      B: ``[Bt, T, G, N]`` input projections (``G`` dividing ``H``).
      C: ``[Bt, T, G, N]`` output projections.

    Returns:
      ``alpha: [Bt, H, T, T]``, lower triangular, in the input dtype.

    Raises:
      ValueError: shapes that do not match; an empty axis; ``A > 0`` or ``dt < 0`` (concrete).
      TypeError: complex inputs.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ssm import ssm_attention_matrix
      >>> alpha = ssm_attention_matrix(jnp.ones((1, 3, 1)), -jnp.log(2.0) * jnp.ones(1),
      ...                              jnp.ones((1, 3, 1, 1)), jnp.ones((1, 3, 1, 1)))
      >>> print(alpha[0, 0])
      [[1.   0.   0.  ]
       [0.5  1.   0.  ]
       [0.25 0.5  1.  ]]

    References:
      Ali, Zimerman & Wolf, *The Hidden Attention of Mamba Models*, 2024; Dao & Gu, *Transformers
      are SSMs*, ICML 2024 (the semiseparable matrix).
    """
    fn = "kjax.ssm.ssm_attention_matrix"
    dt = dtypes.as_float_array(fn, "dt", dt)
    check_rank(fn, "dt", dt, 3, layout="[Bt, T, H]")
    if 0 in dt.shape:
        fail(fn, "dt", "have every axis of [Bt, T, H] >= 1", f"shape {dt.shape}")
    bt, t, h = dt.shape
    _check_dt(fn, "dt", dt, dt.shape)
    B, C = _check_bcs(fn, ("B", "C"), B, C, (bt, t), h)
    A = _check_a(fn, A, h, B.shape[-1])
    dtype = dtypes.result_dtype(dt, A, B, C)
    return _matrix(dt, A, B, C, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("dtype",))
def _matrix(dt, A, B, C, *, dtype):
    acc = dtypes.accum_dtype(dtype)
    t, h = dt.shape[1:]
    dt, A, B, C = (x.astype(acc) for x in (dt, A, _heads(B, h), _heads(C, h)))
    cum = jnp.cumsum(_decay(dt, A), axis=1)  # [Bt, T, H] or [Bt, T, H, N]
    mask = jnp.tril(jnp.ones((t, t), dtype=bool))
    if A.ndim == 1:
        cum = cum.transpose(0, 2, 1)  # [Bt, H, T]
        diff = cum[..., :, None] - cum[..., None, :]
        gates = jnp.where(mask, jnp.exp(jnp.where(mask, diff, 0.0)), 0.0)
        alpha = jnp.einsum("bthn,bshn->bhts", C, B) * gates
    else:
        cum = cum.transpose(0, 2, 1, 3)  # [Bt, H, T, N]
        diff = cum[..., :, None, :] - cum[..., None, :, :]
        m = mask[..., None]
        gates = jnp.where(m, jnp.exp(jnp.where(m, diff, 0.0)), 0.0)
        alpha = jnp.einsum("bthn,bshn,bhtsn->bhts", C, B, gates)
    alpha = alpha * dt.transpose(0, 2, 1)[:, :, None, :]
    return alpha.astype(dtype)

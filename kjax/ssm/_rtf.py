"""RTF: the rational transfer function SSM, its state-free filter (:func:`rtf_filter`) and the
recurrence that streams exactly that filter (:func:`rtf_initial_state`, :func:`rtf_step`)."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from kjax._src import dtypes
from kjax._src.errors import check_int, check_positive, fail
from kjax.ssm import _checks


class RTFParams(NamedTuple):
    r"""Rational transfer function :math:`H(z) = h_0 + \frac{b_1 z^{-1} + \dots + b_N z^{-N}}
    {1 + a_1 z^{-1} + \dots + a_N z^{-N}}` per channel: ``a, b: [D, N]``, ``h0: [D]``."""

    a: Float[Array, "D N"]
    b: Float[Array, "D N"]
    h0: Float[Array, " D"]


#: the axes of each field, for the checks
AXES = {"a": ("D", "N"), "b": ("D", "N"), "h0": ("D",)}


def init_rtf(key: Array, d_model: int, state_size: int = 16, *, scale: float = 0.5) -> RTFParams:
    """RTF parameters: ``a = 0`` (FIR at init, as in the paper), ``b ~ N(0, scale^2 / N)``, ``h0 = 0``.

    Args:
      key: PRNG key.
      d_model: channels ``D`` (>= 1).
      state_size: order ``N`` of the transfer function (>= 1).
      scale: standard deviation of the numerator times sqrt(N) (finite, >= 0).

    Returns:
      :class:`RTFParams`.

    Raises:
      ValueError: non-positive sizes, negative or non-finite ``scale``.

    Example:
      >>> import jax
      >>> from kjax.ssm import init_rtf
      >>> init_rtf(jax.random.key(0), 4, 8).a.shape
      (4, 8)

    References:
      Parnichkun et al., *State-Free Inference of State-Space Models: The Transfer Function
      Approach*, ICML 2024.
    """
    fn = "kjax.ssm.init_rtf"
    d_model = check_int(fn, "d_model", d_model, minimum=1)
    n = check_int(fn, "state_size", state_size, minimum=1)
    check_positive(fn, "scale", scale, allow_zero=True)
    dt = dtypes.default_float()
    b = jax.random.normal(key, (d_model, n), dt) * (scale / math.sqrt(n))
    return RTFParams(a=jnp.zeros((d_model, n), dt), b=b, h0=jnp.zeros((d_model,), dt))


def _check_length(fn: str, L, n: int) -> int:
    L = check_int(fn, "L", L, minimum=1)
    if L <= n:
        fail(fn, "L", f"be larger than the order N={n} of the transfer function", repr(L))
    return L


def rtf_filter(params: RTFParams, L: int) -> Float[Array, "L D"]:
    r"""State-free RTF filter: one FFT of the zero-padded coefficients, ``O(L log L)`` for any ``N``.

    .. math:: \hat K_j = h_0 + \frac{\sum_{n=1}^N b_n \omega^{-jn}}{1 + \sum_{n=1}^N a_n \omega^{-jn}},
        \quad \omega = e^{2\pi i / L}, \qquad K = \mathrm{IDFT}_L(\hat K).

    This is the impulse response ``h`` of :math:`H(z)` periodised over ``L``,
    :math:`K_\ell = \sum_{m \ge 0} h_{\ell + mL}`: exact for circular convolution. As Parnichkun et
    al. note, it is also exactly the *truncated* impulse response of another realisation of the same
    denominator: with the companion matrix ``A`` of ``a`` and ``B = e_1``, the output row
    :math:`C = b\,(I - A^L)^{-1}` (their correction :math:`C' = C(I - A^L)`, ``C' = b``) gives
    :math:`K_\ell = C A^{\ell - 1} B` for :math:`1 \le \ell < L`, and the feedthrough
    :math:`K_0 = h_0 + C A^{L-1} B` (the tap the length-``L`` DFT folds onto 0). That realisation is
    what :func:`rtf_step` runs from ``rtf_initial_state(params, B, L=L)``, so streaming equals the
    causal :func:`fftconv` with this filter. (In a trained model ``b`` is that ``C'``; the RTF paper
    trains it directly.) A denominator with a zero on the unit circle gives inf/NaN.

    Args:
      params: :class:`RTFParams` with ``a, b: [D, N]``, ``h0: [D]``.
      L: filter length (static int, ``L > N``).

    Returns:
      ``[L, D]`` real filter, dtype at least float32.

    Raises:
      ValueError: ``L <= N``; parameters of inconsistent shapes.
      TypeError: ``params`` not an :class:`RTFParams`, complex parameters.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ssm import RTFParams, rtf_filter
      >>> p = RTFParams(a=jnp.array([[-0.5]]), b=jnp.array([[1.0]]), h0=jnp.array([0.0]))
      >>> k = rtf_filter(p, 8)                 # z^-1 / (1 - z^-1 / 2): 0, 1, 1/2, 1/4, ...
      >>> bool(jnp.allclose(k[:4, 0], jnp.array([0.0, 1, 0.5, 0.25]), atol=1e-2))
      True

    References:
      Parnichkun et al., *State-Free Inference of State-Space Models: The Transfer Function
      Approach*, ICML 2024.
    """
    fn = "kjax.ssm.rtf_filter"
    dims = _checks.params(fn, params, RTFParams, AXES, "init_rtf")
    L = _check_length(fn, L, dims["N"])
    return _rtf_filter(params, L)


@functools.partial(jax.jit, static_argnums=1)
def _rtf_filter(params, L):
    acc = dtypes.accum_dtype(jnp.result_type(params.a.dtype, params.b.dtype, params.h0.dtype, float))
    d = params.a.shape[0]
    one = jnp.ones((1, d), acc)
    zero = jnp.zeros((1, d), acc)
    den = jnp.fft.rfft(jnp.concatenate([one, params.a.T.astype(acc)]), n=L, axis=0)
    num = jnp.fft.rfft(jnp.concatenate([zero, params.b.T.astype(acc)]), n=L, axis=0)
    return jnp.fft.irfft(num / den + params.h0.astype(acc), n=L, axis=0)


class RTFState(NamedTuple):
    """Recurrent state of :func:`rtf_step`.

    ``w: [B, D, N]``: the last ``N`` values of ``u / A(z)`` (``w[..., 0]`` the most recent);
    ``c: [D, N]`` and ``d: [D]``: the output row and feedthrough of the realisation that is
    streamed (see :func:`rtf_initial_state`), fixed by it and carried unchanged.
    """

    w: Array
    c: Array
    d: Array


def rtf_initial_state(params: RTFParams, batch_size: int, *, L: int | None) -> RTFState:
    r"""The zero state for :func:`rtf_step`, with the realisation that streams ``rtf_filter(params, L)``.

    With ``L`` an int, the output map is the one of Parnichkun et al.'s truncated realisation
    (see :func:`rtf_filter`): :math:`C = b\,(I - A^L)^{-1}` and :math:`d = h_0 + C A^{L-1} e_1`,
    read off the filter itself (:math:`d = K_0`, :math:`C_n = \sum_{j < n} a_j K_{n-j}` with
    :math:`a_0 = 1`, i.e. the numerator of :math:`A(z) K(z)`), so stepping through ``u[:, t]``
    gives exactly ``fftconv(u, rtf_filter(params, L))`` for ``t < L`` (later outputs keep the IIR
    tail that the length-``L`` filter cuts off). With ``L=None`` it is ``C = b``, ``d = h0``: the
    exact, untruncated IIR response of :math:`H(z)` (``scipy.signal.lfilter``), which differs from
    the filter by its periodised tail.

    Args:
      params: :class:`RTFParams`.
      batch_size: ``B`` (>= 1).
      L: keyword-only and required: the length of the filter to reproduce (``L > N``), or ``None``
        for the untruncated response.

    Returns:
      :class:`RTFState` with ``w = 0: [B, D, N]``, ``c: [D, N]``, ``d: [D]``, dtype at least float32.

    Raises:
      ValueError: ``batch_size < 1``, ``L <= N``, parameters of inconsistent shapes.
      TypeError: ``params`` not an :class:`RTFParams`.

    Example:
      >>> import jax
      >>> from kjax.ssm import init_rtf, rtf_initial_state
      >>> s = rtf_initial_state(init_rtf(jax.random.key(0), 3, 4), 2, L=64)
      >>> s.w.shape, s.c.shape, s.d.shape
      ((2, 3, 4), (3, 4), (3,))

    References:
      Parnichkun et al., *State-Free Inference of State-Space Models: The Transfer Function
      Approach*, ICML 2024 (the truncated transfer function and its corrected ``C``).
    """
    fn = "kjax.ssm.rtf_initial_state"
    dims = _checks.params(fn, params, RTFParams, AXES, "init_rtf")
    batch_size = check_int(fn, "batch_size", batch_size, minimum=1)
    if L is not None:
        L = _check_length(fn, L, dims["N"])
    return _rtf_initial_state(params, batch_size, L)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _rtf_initial_state(params, batch_size, L):
    acc = dtypes.accum_dtype(jnp.result_type(params.a.dtype, params.b.dtype, params.h0.dtype, float))
    D, N = params.a.shape
    w = jnp.zeros((batch_size, D, N), acc)
    if L is None:
        return RTFState(w, params.b.astype(acc), params.h0.astype(acc))
    k = _rtf_filter(params, L)  # [L, D]
    a = jnp.concatenate([jnp.ones((D, 1), acc), params.a.astype(acc)], axis=1)  # a_0 = 1
    h = k[1:N + 1].T  # [D, N]: taps 1..N
    # c[:, n] = sum_{j <= n} a[:, j] h[:, n - j], n = 0..N-1 (a lower-triangular Toeplitz product)
    idx = jnp.arange(N)[:, None] - jnp.arange(N)[None, :]
    toe = jnp.where(idx >= 0, h[:, jnp.clip(idx, 0, N - 1)], 0.0)  # [D, n, j] = h[n - j]
    c = jnp.einsum("dnj,dj->dn", toe, a[:, :N], precision=jax.lax.Precision.HIGHEST)
    return RTFState(w, c, k[0])


def rtf_step(params: RTFParams, state: RTFState, u_t: Float[ArrayLike, "B D"]
             ) -> tuple[Float[Array, "B D"], RTFState]:
    r"""One step of the RTF recurrence (direct form II, companion state of size ``N``).

    .. math:: w_t = u_t - \sum_{n=1}^N a_n w_{t-n}, \qquad
        y_t = d\, u_t + \sum_{n=1}^N c_n w_{t-n},

    with the output map ``(c, d)`` of the state (:func:`rtf_initial_state`): from
    ``rtf_initial_state(params, B, L=L)`` the outputs equal the causal
    ``fftconv(u, rtf_filter(params, L))`` exactly (up to rounding) for ``t < L``; from ``L=None``
    they are the untruncated IIR output of :math:`H(z)`. ``O(N)`` per step and channel.

    Args:
      params: :class:`RTFParams` (its denominator ``a`` drives the recurrence).
      state: :class:`RTFState`, ``w: [B, D, N]``, ``c: [D, N]``, ``d: [D]``.
      u_t: ``[B, D]`` input at one step (integers are promoted to float).

    Returns:
      ``(y_t, new_state)``, ``y_t: [B, D]`` in the (floating) dtype of ``u_t``.

    Raises:
      ValueError: ``u_t`` not ``[B, D]`` with the parameters' ``D``; a ``state`` whose shapes do not
        match ``u_t``'s batch and the parameters.
      TypeError: complex ``u_t``; ``state`` not an :class:`RTFState` or with complex fields;
        ``params`` not an :class:`RTFParams`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ssm import init_rtf, rtf_initial_state, rtf_step
      >>> p = init_rtf(jax.random.key(0), 3, 4)
      >>> y, state = rtf_step(p, rtf_initial_state(p, 2, L=16), jnp.ones((2, 3)))
      >>> y.shape
      (2, 3)

    References:
      Parnichkun et al., *State-Free Inference of State-Space Models: The Transfer Function
      Approach*, ICML 2024.
    """
    fn = "kjax.ssm.rtf_step"
    dims = _checks.params(fn, params, RTFParams, AXES, "init_rtf")
    D, N = dims["D"], dims["N"]
    u_t = _checks.step_input(fn, "u_t", u_t, D)
    B = u_t.shape[0]
    _checks.state(fn, state, RTFState, {"w": (B, D, N), "c": (D, N), "d": (D,)}, "rtf_initial_state",
                  f"for u_t's batch B={B} and the parameters' D={D}, N={N}")
    return _rtf_step(params, state, u_t)


@jax.jit
def _rtf_step(params, state, u_t):
    u = u_t.astype(state.w.dtype)
    y = state.d * u + jnp.sum(state.c * state.w, axis=-1)
    w_t = u - jnp.sum(params.a * state.w, axis=-1)
    w = jnp.concatenate([w_t[..., None], state.w[..., :-1]], axis=-1)
    return y.astype(u_t.dtype), RTFState(w.astype(state.w.dtype), state.c, state.d)

"""Long-convolution filters ``[L, D]`` (or ``[L, K]``) from SSM and implicit parametrisations.

Every filter is a pure function of a NamedTuple of parameters and a static length ``L``, so it
composes with ``jit`` / ``grad`` / ``vmap`` and feeds :func:`kjax.ssm.fftconv` directly. Each
``*_init(key, ...)`` returns the parameters with the initialisation of the paper.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from kjax._src import dtypes
from kjax._src.errors import check_in, check_int, check_positive, fail

# --------------------------------------------------------------------------------------------- S4D


class S4DParams(NamedTuple):
    """Diagonal SSM ``x' = A x + B u, y = 2 Re(C x)`` per channel, ``N/2`` complex modes.

    ``A = -exp(log_a_real) + i a_imag``; ``B = b_re + i b_im``; ``C = c_re + i c_im``, each
    ``[D, N/2]``; step size ``dt = exp(log_dt)``, ``[D]``.
    """

    log_dt: Float[Array, " D"]
    log_a_real: Float[Array, "D M"]
    a_imag: Float[Array, "D M"]
    b_re: Float[Array, "D M"]
    b_im: Float[Array, "D M"]
    c_re: Float[Array, "D M"]
    c_im: Float[Array, "D M"]


def _legs_diagonal(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (positive imaginary part) and projected B of the normal part of HiPPO-LegS."""
    q = np.arange(n, dtype=np.float64)
    r = np.sqrt(2 * q + 1)
    # HiPPO-LegS: A[i, j] = -sqrt(2i+1) sqrt(2j+1) for i > j, -(i+1) on the diagonal, 0 above
    a = -np.where(q[:, None] > q[None, :], r[:, None] * r[None, :], np.diag(q + 1))
    b = r.copy()
    p = np.sqrt(q + 0.5)
    s = a + p[:, None] * p[None, :]  # normal part: -1/2 I + skew-symmetric
    w, v = np.linalg.eigh(-1j * (s + 0.5 * np.eye(n)))  # -i * skew is Hermitian: real eigenvalues
    keep = np.argsort(-w)[: n // 2]  # positive imaginary parts (conjugate pairs dropped)
    lam = -0.5 + 1j * w[keep]
    bv = v.conj().T @ b
    return lam, bv[keep]


def s4d_init(key: Array, d_model: int, state_size: int = 64, *, init: str = "lin",
             dt_min: float = 1e-3, dt_max: float = 1e-1) -> S4DParams:
    r"""S4D parameters for ``d_model`` channels with a real state of size ``state_size``.

    The state matrix is diagonal with ``M = state_size / 2`` complex-conjugate pairs (only one of
    each pair is stored):

    * ``"lin"`` (S4D-Lin): :math:`A_n = -\tfrac12 + i\pi n`;
    * ``"inv"`` (S4D-Inv): :math:`A_n = -\tfrac12 + i \tfrac{N}{\pi}\left(\tfrac{N}{2n+1} - 1\right)`;
    * ``"legs"`` (S4D-LegS): the eigenvalues of the normal part of HiPPO-LegS, with
      :math:`B = V^* B_{\mathrm{LegS}}` projected onto its eigenvectors.

    ``B = 1`` for lin/inv, ``C ~ CN(0, 1)``, ``log dt ~ U[log dt_min, log dt_max]``.

    Args:
      key: PRNG key (for ``C`` and ``dt``).
      d_model: number of channels ``D``.
      state_size: the real state size ``N`` (even); ``N / 2`` complex modes are stored.
      init: ``"lin"``, ``"inv"`` or ``"legs"``.
      dt_min: smallest initial step size (> 0).
      dt_max: largest initial step size (> dt_min).

    Returns:
      :class:`S4DParams` with ``[D]`` and ``[D, N/2]`` float arrays (default float dtype).

    Raises:
      ValueError: odd or non-positive ``state_size``, non-positive ``d_model``, unknown ``init``.

    Example:
      >>> import jax
      >>> from kjax.ssm import s4d_init
      >>> p = s4d_init(jax.random.key(0), 4, 16)
      >>> p.a_imag.shape
      (4, 8)

    References:
      Gu, Gupta, Goel & Re, *On the Parameterization and Initialization of Diagonal State Space
      Models*, NeurIPS 2022.
    """
    fn = "kjax.ssm.s4d_init"
    d_model = check_int(fn, "d_model", d_model, minimum=1)
    n = check_int(fn, "state_size", state_size, minimum=2)
    if n % 2:
        fail(fn, "state_size", "be even (N/2 complex-conjugate pairs are stored)", repr(n))
    check_in(fn, "init", init, ("lin", "inv", "legs"))
    check_positive(fn, "dt_min", dt_min)
    check_positive(fn, "dt_max", dt_max)
    m = n // 2
    idx = np.arange(m, dtype=np.float64)
    b = np.ones(m, np.complex128)
    if init == "lin":
        lam = -0.5 + 1j * np.pi * idx
    elif init == "inv":
        lam = -0.5 + 1j * (n / np.pi) * (n / (2 * idx + 1) - 1)
    else:
        lam, b = _legs_diagonal(n)
    dt = dtypes.default_float()
    c, log_dt = _s4d_random(key, d_model, m, float(dt_min), float(dt_max))
    tile = lambda x: jnp.broadcast_to(jnp.asarray(x, dt), (d_model, m))
    return S4DParams(log_dt=log_dt, log_a_real=tile(np.log(-lam.real)), a_imag=tile(lam.imag),
                     b_re=tile(b.real), b_im=tile(b.imag), c_re=c[0], c_im=c[1])


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _s4d_random(key, d_model, m, dt_min, dt_max):
    dt = dtypes.default_float()
    kc, kd = jax.random.split(key)
    c = jax.random.normal(kc, (2, d_model, m), dt) * math.sqrt(0.5)
    log_dt = jax.random.uniform(kd, (d_model,), dt, math.log(dt_min), math.log(dt_max))
    return c, log_dt


def _s4d_discrete(params: S4DParams, discretization: str):
    """``(dA, dB, C)`` complex ``[D, M]`` of the discretised diagonal SSM."""
    ct = jnp.result_type(params.log_a_real.dtype, jnp.complex64)
    a = (-jnp.exp(params.log_a_real) + 1j * params.a_imag).astype(ct)
    b = (params.b_re + 1j * params.b_im).astype(ct)
    c = (params.c_re + 1j * params.c_im).astype(ct)
    dt = jnp.exp(params.log_dt)[:, None].astype(ct)
    if discretization == "zoh":
        da = jnp.exp(dt * a)
        db = (da - 1.0) / a * b
    else:
        den = 1.0 - dt * a / 2
        da = (1.0 + dt * a / 2) / den
        db = dt * b / den
    return da, db, c


def s4d_filter(params: S4DParams, L: int, *, discretization: str = "zoh") -> Float[Array, "L D"]:
    r"""The S4D convolution filter ``[L, D]`` by a Vandermonde product.

    .. math:: K_\ell = 2\,\mathrm{Re} \sum_{n=1}^{N/2} C_n\, \bar A_n^{\ell}\, \bar B_n, \qquad
        \ell = 0, \dots, L-1,

    with zero-order hold :math:`\bar A = e^{\Delta A}`, :math:`\bar B = A^{-1}(e^{\Delta A} - 1) B`, or
    bilinear :math:`\bar A = (1 + \Delta A/2)/(1 - \Delta A/2)`, :math:`\bar B = \Delta B / (1 - \Delta A/2)`.
    Convolving with it (:func:`fftconv`, causal) equals running :func:`s4d_step` over the sequence.
    Memory is ``O(D N L)`` (the Vandermonde matrix is materialised).

    Args:
      params: :class:`S4DParams` (from :func:`s4d_init`).
      L: filter length (static int >= 1).
      discretization: ``"zoh"`` or ``"bilinear"``.

    Returns:
      ``[L, D]`` real filter in the parameters' dtype.

    Raises:
      ValueError: ``L < 1``, unknown ``discretization``.

    Example:
      >>> import jax
      >>> from kjax.ssm import s4d_init, s4d_filter
      >>> k = s4d_filter(s4d_init(jax.random.key(0), 4, 16), 32)
      >>> k.shape
      (32, 4)

    References:
      Gu, Gupta, Goel & Re, *On the Parameterization and Initialization of Diagonal State Space
      Models*, NeurIPS 2022 (Listing 1).
    """
    fn = "kjax.ssm.s4d_filter"
    L = check_int(fn, "L", L, minimum=1)
    check_in(fn, "discretization", discretization, ("zoh", "bilinear"))
    return _s4d_filter(params, L, discretization)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _s4d_filter(params, L, discretization):
    da, db, c = _s4d_discrete(params, discretization)
    ell = jnp.arange(L, dtype=params.log_a_real.dtype)
    vander = jnp.exp(jnp.log(da)[..., None] * ell)  # [D, M, L]
    k = 2.0 * jnp.einsum("dm,dml->ld", c * db, vander).real
    return k.astype(params.log_a_real.dtype)


class S4DState(NamedTuple):
    """Recurrent state of :func:`s4d_step`: ``x: [B, D, N/2]`` complex."""

    x: Array


def s4d_initial_state(params: S4DParams, batch_size: int) -> S4DState:
    """The zero state ``[batch_size, D, N/2]`` for :func:`s4d_step` (complex, at least complex64)."""
    check_int("kjax.ssm.s4d_initial_state", "batch_size", batch_size, minimum=1)
    ct = jnp.result_type(params.log_a_real.dtype, jnp.complex64)
    return S4DState(jnp.zeros((batch_size,) + params.a_imag.shape, ct))


def s4d_step(params: S4DParams, state: S4DState, u_t: Float[Array, "B D"], *,
             discretization: str = "zoh") -> tuple[S4DState, Float[Array, "B D"]]:
    r"""One recurrent step of the discretised S4D SSM (streaming inference).

    .. math:: x_t = \bar A x_{t-1} + \bar B u_t, \qquad y_t = 2\,\mathrm{Re}(C x_t).

    Starting from :func:`s4d_initial_state` and stepping through ``u[:, t]`` gives exactly
    ``fftconv(u, s4d_filter(params, L))`` (up to rounding).

    Args:
      params: :class:`S4DParams`.
      state: :class:`S4DState` with ``x: [B, D, N/2]``.
      u_t: ``[B, D]`` input at one time step.
      discretization: ``"zoh"`` or ``"bilinear"`` (as in :func:`s4d_filter`).

    Returns:
      ``(new_state, y_t)`` with ``y_t: [B, D]`` in the dtype of ``u_t``.

    Raises:
      ValueError: ``u_t`` not ``[B, D]`` matching the state, unknown ``discretization``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ssm import s4d_init, s4d_initial_state, s4d_step
      >>> p = s4d_init(jax.random.key(0), 3, 8)
      >>> state, y = s4d_step(p, s4d_initial_state(p, 2), jnp.ones((2, 3)))
      >>> y.shape
      (2, 3)

    References:
      Gu, Gupta, Goel & Re, *On the Parameterization and Initialization of Diagonal State Space
      Models*, NeurIPS 2022.
    """
    fn = "kjax.ssm.s4d_step"
    check_in(fn, "discretization", discretization, ("zoh", "bilinear"))
    if tuple(u_t.shape) != tuple(state.x.shape[:2]):
        fail(fn, "u_t", f"have shape {tuple(state.x.shape[:2])} [B, D] matching the state",
             f"shape {tuple(u_t.shape)}")
    return _s4d_step(params, state, u_t, discretization)


@functools.partial(jax.jit, static_argnums=3)
def _s4d_step(params, state, u_t, discretization):
    da, db, c = _s4d_discrete(params, discretization)
    x = da * state.x + db * u_t[..., None].astype(state.x.dtype)
    y = 2.0 * jnp.sum(c * x, axis=-1).real
    return S4DState(x), y.astype(u_t.dtype)


# --------------------------------------------------------------------------------------------- RTF


class RTFParams(NamedTuple):
    r"""Rational transfer function :math:`H(z) = h_0 + \frac{b_1 z^{-1} + \dots + b_N z^{-N}}
    {1 + a_1 z^{-1} + \dots + a_N z^{-N}}` per channel: ``a, b: [D, N]``, ``h0: [D]``."""

    a: Float[Array, "D N"]
    b: Float[Array, "D N"]
    h0: Float[Array, " D"]


def rtf_init(key: Array, d_model: int, state_size: int = 16, *, scale: float = 0.5) -> RTFParams:
    """RTF parameters: ``a = 0`` (FIR at init, as in the paper), ``b ~ N(0, scale^2 / N)``, ``h0 = 0``.

    Args:
      key: PRNG key.
      d_model: channels ``D``.
      state_size: order ``N`` of the transfer function.
      scale: standard deviation of the numerator times sqrt(N).

    Returns:
      :class:`RTFParams`.

    Raises:
      ValueError: non-positive sizes.

    Example:
      >>> import jax
      >>> from kjax.ssm import rtf_init
      >>> rtf_init(jax.random.key(0), 4, 8).a.shape
      (4, 8)

    References:
      Parnichkun et al., *State-Free Inference of State-Space Models: The Transfer Function
      Approach*, ICML 2024.
    """
    fn = "kjax.ssm.rtf_init"
    d_model = check_int(fn, "d_model", d_model, minimum=1)
    n = check_int(fn, "state_size", state_size, minimum=1)
    dt = dtypes.default_float()
    b = jax.random.normal(key, (d_model, n), dt) * (scale / math.sqrt(n))
    return RTFParams(a=jnp.zeros((d_model, n), dt), b=b, h0=jnp.zeros((d_model,), dt))


def rtf_filter(params: RTFParams, L: int) -> Float[Array, "L D"]:
    r"""State-free RTF filter: one FFT of the zero-padded coefficients, ``O(L log L)`` for any ``N``.

    .. math:: \hat K_j = h_0 + \frac{\sum_{n=1}^N b_n \omega^{-jn}}{1 + \sum_{n=1}^N a_n \omega^{-jn}},
        \quad \omega = e^{2\pi i / L}, \qquad K = \mathrm{IDFT}_L(\hat K).

    This is the impulse response ``h`` of :math:`H(z)` periodised over ``L``,
    :math:`K_\ell = \sum_{m \ge 0} h_{\ell + mL}`: exact for circular convolution and equal to the
    truncated impulse response up to the tail ``h[L:]`` (which decays like ``|pole|^L`` for a stable
    denominator). A denominator with a zero on the unit circle gives inf/NaN.

    Args:
      params: :class:`RTFParams` with ``a, b: [D, N]``, ``h0: [D]``.
      L: filter length (static int, ``L > N``).

    Returns:
      ``[L, D]`` real filter, dtype at least float32.

    Raises:
      ValueError: ``L <= N``.

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
    L = check_int(fn, "L", L, minimum=1)
    n = params.a.shape[-1]
    if L <= n:
        fail(fn, "L", f"be larger than the order N={n} of the transfer function", repr(L))
    return _rtf_filter(params, L)


@functools.partial(jax.jit, static_argnums=1)
def _rtf_filter(params, L):
    acc = dtypes.accum_dtype(params.a.dtype)
    d = params.a.shape[0]
    one = jnp.ones((1, d), acc)
    zero = jnp.zeros((1, d), acc)
    den = jnp.fft.rfft(jnp.concatenate([one, params.a.T.astype(acc)]), n=L, axis=0)
    num = jnp.fft.rfft(jnp.concatenate([zero, params.b.T.astype(acc)]), n=L, axis=0)
    k = jnp.fft.irfft(num / den + params.h0.astype(acc), n=L, axis=0)
    return k


class RTFState(NamedTuple):
    """Recurrent state of :func:`rtf_step`: ``w: [B, D, N]``, the last ``N`` values of ``u / A(z)``."""

    w: Array


def rtf_initial_state(params: RTFParams, batch_size: int) -> RTFState:
    """The zero state ``[batch_size, D, N]`` for :func:`rtf_step`."""
    check_int("kjax.ssm.rtf_initial_state", "batch_size", batch_size, minimum=1)
    return RTFState(jnp.zeros((batch_size,) + params.a.shape, dtypes.accum_dtype(params.a.dtype)))


def rtf_step(params: RTFParams, state: RTFState, u_t: Float[Array, "B D"]
             ) -> tuple[RTFState, Float[Array, "B D"]]:
    r"""One step of the RTF recurrence (direct form II, companion state of size ``N``).

    .. math:: w_t = u_t - \sum_{n=1}^N a_n w_{t-n}, \qquad
        y_t = h_0 u_t + \sum_{n=1}^N b_n w_{t-n}.

    Stepping from :func:`rtf_initial_state` gives the exact IIR output, i.e. the causal
    :func:`fftconv` with the untruncated impulse response; with :func:`rtf_filter` (periodised at
    ``L``) the two agree up to the tail ``h[L:]``.

    Args:
      params: :class:`RTFParams`.
      state: :class:`RTFState`, ``w: [B, D, N]`` (``w[..., 0]`` is the most recent).
      u_t: ``[B, D]`` input at one step.

    Returns:
      ``(new_state, y_t)``, ``y_t: [B, D]`` in the dtype of ``u_t``.

    Raises:
      ValueError: ``u_t`` not ``[B, D]`` matching the state.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ssm import rtf_init, rtf_initial_state, rtf_step
      >>> p = rtf_init(jax.random.key(0), 3, 4)
      >>> state, y = rtf_step(p, rtf_initial_state(p, 2), jnp.ones((2, 3)))
      >>> y.shape
      (2, 3)

    References:
      Parnichkun et al., *State-Free Inference of State-Space Models: The Transfer Function
      Approach*, ICML 2024.
    """
    fn = "kjax.ssm.rtf_step"
    if tuple(u_t.shape) != tuple(state.w.shape[:2]):
        fail(fn, "u_t", f"have shape {tuple(state.w.shape[:2])} [B, D] matching the state",
             f"shape {tuple(u_t.shape)}")
    return _rtf_step(params, state, u_t)


@jax.jit
def _rtf_step(params, state, u_t):
    u = u_t.astype(state.w.dtype)
    y = params.h0 * u + jnp.sum(params.b * state.w, axis=-1)
    w_t = u - jnp.sum(params.a * state.w, axis=-1)
    w = jnp.concatenate([w_t[..., None], state.w[..., :-1]], axis=-1)
    return RTFState(w.astype(state.w.dtype)), y.astype(u_t.dtype)


# --------------------------------------------------------------------------------------------- STU


@functools.lru_cache(maxsize=16)
def _stu_numpy(L: int, K: int) -> np.ndarray:
    i = np.arange(1, L + 1, dtype=np.float64)
    s = i[:, None] + i[None, :]
    z = 2.0 / (s**3 - s)
    w, v = np.linalg.eigh(z)
    w, v = w[::-1][:K], v[:, ::-1][:, :K]
    # sign convention: the entry of largest magnitude of each eigenvector is positive
    sign = np.sign(v[np.argmax(np.abs(v), axis=0), np.arange(K)])
    phi = v * sign * np.clip(w, 0.0, None) ** 0.25
    phi.setflags(write=False)
    return phi


def stu_filters(L: int, K: int) -> Float[Array, "L K"]:
    r"""Spectral filters of the Spectral Transform Unit: top-``K`` eigenvectors of a Hankel matrix.

    .. math:: Z_{ij} = \frac{2}{(i+j)^3 - (i+j)}, \quad i, j = 1, \dots, L, \qquad
        Z = \sum_k \sigma_k \phi_k \phi_k^\top,

    returning :math:`\sigma_k^{1/4} \phi_k` for the ``K`` largest :math:`\sigma_k` (descending), as in
    the paper's features. The eigendecomposition runs in float64 NumPy (``O(L^3)``, cached per
    ``(L, K)``, outside any trace); the result has the default float dtype. Each eigenvector's entry
    of largest magnitude is positive (the sign is otherwise arbitrary). Convolve them with
    :func:`fftconv` (causal) against each input channel to build STU features.

    Args:
      L: sequence length (static int >= 1).
      K: number of filters (1 <= K <= L).

    Returns:
      ``[L, K]`` filters.

    Raises:
      ValueError: ``L < 1`` or ``K`` outside ``[1, L]``.

    Example:
      >>> from kjax.ssm import stu_filters
      >>> stu_filters(64, 8).shape
      (64, 8)

    References:
      Agarwal, Suo, Chen, Hazan, *Spectral State Space Models*, 2023 (arXiv:2312.06837).
    """
    fn = "kjax.ssm.stu_filters"
    L = check_int(fn, "L", L, minimum=1)
    K = check_int(fn, "K", K, minimum=1)
    if K > L:
        fail(fn, "K", f"be <= L={L}", repr(K))
    return jnp.asarray(_stu_numpy(L, K), dtypes.default_float())


# ------------------------------------------------------------------------------------------- Hyena


class HyenaFilterParams(NamedTuple):
    """Implicit Hyena filter: a sine-activated MLP over positional features, times a decay.

    ``w_in: [E, W]``, ``b_in: [W]``, ``w_hidden: [depth, W, W]``, ``b_hidden: [depth, W]``,
    ``w_out: [W, D]``, ``freq: [W]`` (sine frequencies), ``decay: [D]`` (decay rates).
    """

    w_in: Array
    b_in: Array
    w_hidden: Array
    b_hidden: Array
    w_out: Array
    freq: Array
    decay: Array


def hyena_init(key: Array, d_model: int, *, emb_dim: int = 33, width: int = 64, depth: int = 2,
               fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5, target: float = 1e-2
               ) -> HyenaFilterParams:
    """Hyena filter parameters: uniform fan-in MLP weights, ``freq = 1``, decays spread over channels.

    The decay rates are ``|linspace(log(target)/slow_decay_pct, log(target)/fast_decay_pct, D)|``,
    so channel 0 decays to ``target`` at ``slow_decay_pct`` of the sequence and the last one at
    ``fast_decay_pct``.

    Args:
      key: PRNG key.
      d_model: channels ``D``.
      emb_dim: positional feature size ``E`` (odd >= 3: time plus ``(E-1)/2`` sine/cosine bands).
      width: MLP width ``W``.
      depth: number of hidden ``W x W`` layers.
      fast_decay_pct: see above.
      slow_decay_pct: see above.
      target: see above.

    Returns:
      :class:`HyenaFilterParams`.

    Raises:
      ValueError: even or too small ``emb_dim``, non-positive sizes.

    Example:
      >>> import jax
      >>> from kjax.ssm import hyena_init
      >>> hyena_init(jax.random.key(0), 8).w_out.shape
      (64, 8)

    References:
      Poli et al., *Hyena Hierarchy: Towards Larger Convolutional Language Models*, ICML 2023.
    """
    fn = "kjax.ssm.hyena_init"
    d_model = check_int(fn, "d_model", d_model, minimum=1)
    e = check_int(fn, "emb_dim", emb_dim, minimum=3)
    if e % 2 == 0:
        fail(fn, "emb_dim", "be odd (time plus (E-1)/2 cosine/sine pairs)", repr(e))
    w = check_int(fn, "width", width, minimum=1)
    depth = check_int(fn, "depth", depth, minimum=0)
    return _hyena_init(key, d_model, e, w, depth, float(fast_decay_pct), float(slow_decay_pct),
                       float(target))


@functools.partial(jax.jit, static_argnums=tuple(range(1, 8)))
def _hyena_init(key, d_model, e, w, depth, fast_decay_pct, slow_decay_pct, target):
    dt = dtypes.default_float()
    # one random draw, sliced (each separate draw is a separate threefry program to compile)
    shapes = [(e, w), (w,), (depth, w, w), (depth, w), (w, d_model)]
    fans = [e, e, w, w, w]
    sizes = [math.prod(sh) for sh in shapes]
    flat = jax.random.uniform(key, (sum(sizes),), dt, -1.0, 1.0)
    starts = np.cumsum([0] + sizes).tolist()
    w_in, b_in, w_hidden, b_hidden, w_out = (
        flat[starts[i]:starts[i + 1]].reshape(shapes[i]) / math.sqrt(fans[i]) for i in range(5))

    decay = jnp.abs(jnp.linspace(math.log(target) / slow_decay_pct, math.log(target) / fast_decay_pct,
                                 d_model, dtype=dt))
    return HyenaFilterParams(
        w_in=w_in, b_in=b_in, w_hidden=w_hidden, b_hidden=b_hidden, w_out=w_out,
        freq=jnp.ones((w,), dt), decay=decay)


def hyena_positional(L: int, emb_dim: int, dtype) -> jax.Array:
    """Hyena's positional features ``[L, E]``: ``t`` in [0, 1], then ``cos, -sin`` of ``f_b 2 pi l / L``."""
    bands = (emb_dim - 1) // 2
    t = jnp.linspace(0.0, 1.0, L, dtype=dtype)[:, None]
    w = 2 * math.pi * jnp.arange(L, dtype=dtype)[:, None] / L
    f = jnp.linspace(1e-4, bands - 1, bands, dtype=dtype)[None]
    return jnp.concatenate([t, jnp.cos(f * w), -jnp.sin(f * w)], axis=1)


def hyena_filter(params: HyenaFilterParams, L: int, *, shift: float = 0.0) -> Float[Array, "L D"]:
    r"""Hyena's implicit long filter ``[L, D]``.

    .. math:: h_\ell = \big(\mathrm{FFN}(z_\ell)\big) \odot \big(e^{-|\alpha| t_\ell} + \text{shift}\big),
        \quad \mathrm{FFN} = W_{\mathrm{out}}^\top \circ \sin(\omega \odot (W_{\mathrm{hidden}} \cdot + b))
        \circ \dots \circ \sin(\omega \odot (W_{\mathrm{in}}^\top z + b_{\mathrm{in}})),

    with positional features :math:`z_\ell = (t_\ell, \cos(f_b w_\ell), -\sin(f_b w_\ell))`,
    :math:`t_\ell = \ell / (L-1)`, :math:`w_\ell = 2\pi\ell / L`, :math:`f_b` = linspace(1e-4, bands-1).

    Args:
      params: :class:`HyenaFilterParams` (from :func:`hyena_init`).
      L: filter length (static int >= 1).
      shift: constant added to the decay window.

    Returns:
      ``[L, D]`` filter in the parameters' dtype.

    Raises:
      ValueError: ``L < 1``.

    Example:
      >>> import jax
      >>> from kjax.ssm import hyena_init, hyena_filter
      >>> hyena_filter(hyena_init(jax.random.key(0), 8), 100).shape
      (100, 8)

    References:
      Poli et al., *Hyena Hierarchy: Towards Larger Convolutional Language Models*, ICML 2023.
    """
    L = check_int("kjax.ssm.hyena_filter", "L", L, minimum=1)
    return _hyena_filter(params, L, shift)


@functools.partial(jax.jit, static_argnums=1)
def _hyena_filter(params, L, shift):
    dt = params.w_in.dtype
    z = hyena_positional(L, params.w_in.shape[0], dt)
    h = jnp.sin(params.freq * (z @ params.w_in + params.b_in))
    for i in range(params.w_hidden.shape[0]):
        h = jnp.sin(params.freq * (h @ params.w_hidden[i] + params.b_hidden[i]))
    h = h @ params.w_out
    t = jnp.linspace(0.0, 1.0, L, dtype=dt)[:, None]
    return h * (jnp.exp(-jnp.abs(params.decay) * t) + shift)


# ------------------------------------------------------------------------------------------ SGConv


class SGConvParams(NamedTuple):
    """SGConv sub-kernels ``[S, d, D]``: ``S`` scales of ``d`` taps per channel."""

    kernels: Array


def sgconv_init(key: Array, d_model: int, L: int, *, kernel_dim: int = 32) -> SGConvParams:
    """SGConv parameters covering length ``L``: ``S = 1 + ceil(log2(L / d))`` scales of ``d`` taps, N(0, 1).

    Args:
      key: PRNG key.
      d_model: channels ``D``.
      L: the sequence length the filter must cover.
      kernel_dim: taps per scale ``d``.

    Returns:
      :class:`SGConvParams`.

    Raises:
      ValueError: non-positive sizes.

    Example:
      >>> import jax
      >>> from kjax.ssm import sgconv_init
      >>> sgconv_init(jax.random.key(0), 4, 256, kernel_dim=32).kernels.shape
      (4, 32, 4)

    References:
      Li, Cai, Zhang, Chen, Dey, *What Makes Convolutional Models Great on Long Sequence
      Modeling?*, ICLR 2023.
    """
    fn = "kjax.ssm.sgconv_init"
    d_model = check_int(fn, "d_model", d_model, minimum=1)
    L = check_int(fn, "L", L, minimum=1)
    d = check_int(fn, "kernel_dim", kernel_dim, minimum=1)
    s = 1 + max(0, math.ceil(math.log2(L / d)))
    return SGConvParams(jax.random.normal(key, (s, d, d_model), dtypes.default_float()))


@functools.lru_cache(maxsize=64)
def _interp_weights(d: int, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation by ``scale`` with half-pixel centres (``align_corners=False``)."""
    src = np.clip((np.arange(d * scale) + 0.5) / scale - 0.5, 0.0, d - 1)
    i0 = np.floor(src).astype(np.int32)
    i1 = np.minimum(i0 + 1, d - 1)
    return i0, i1, (src - i0)


def sgconv_filter(params: SGConvParams, L: int, *, decay: float = 0.5) -> Float[Array, "L D"]:
    r"""The SGConv multi-scale filter ``[L, D]``.

    .. math:: k = \mathrm{Concat}_{i=0}^{S-1}\Big(\alpha^i\, \mathrm{Up}_{2^{\max(i-1, 0)}}(k_i)\Big),

    where :math:`\mathrm{Up}_r` is linear interpolation by ``r`` with half-pixel centres
    (``align_corners=False``); scale ``i`` spans ``d 2^{max(i-1,0)}`` taps, so the total length is
    ``d 2^{S-1}``, truncated or zero-padded to ``L``. (The official code also normalises the kernel
    by its norm at initialisation; scale the sub-kernels to do the same.)

    Args:
      params: :class:`SGConvParams` with ``kernels: [S, d, D]``.
      L: filter length (static int >= 1).
      decay: :math:`\alpha` in (0, 1].

    Returns:
      ``[L, D]`` filter in the parameters' dtype.

    Raises:
      ValueError: ``L < 1``, non-positive ``decay``.

    Example:
      >>> import jax
      >>> from kjax.ssm import sgconv_init, sgconv_filter
      >>> p = sgconv_init(jax.random.key(0), 4, 100, kernel_dim=8)
      >>> sgconv_filter(p, 100).shape
      (100, 4)

    References:
      Li, Cai, Zhang, Chen, Dey, *What Makes Convolutional Models Great on Long Sequence
      Modeling?*, ICLR 2023.
    """
    fn = "kjax.ssm.sgconv_filter"
    L = check_int(fn, "L", L, minimum=1)
    check_positive(fn, "decay", decay)
    return _sgconv_filter(params, L, decay)


@functools.partial(jax.jit, static_argnums=1)
def _sgconv_filter(params, L, decay):
    s, d, _ = params.kernels.shape
    pieces, total = [], 0
    for i in range(s):
        if total >= L:
            break
        r = 2 ** max(i - 1, 0)
        ki = params.kernels[i]
        if r > 1:
            i0, i1, w = _interp_weights(d, r)
            w = jnp.asarray(w, ki.dtype)[:, None]
            ki = ki[i0] * (1 - w) + ki[i1] * w
        pieces.append(ki * decay**i)
        total += d * r
    k = jnp.concatenate(pieces, axis=0)
    if k.shape[0] >= L:
        return k[:L]
    return jnp.pad(k, ((0, L - k.shape[0]), (0, 0)))


# ------------------------------------------------------------------------------------ regularisers


def squash(k: Float[Array, "L D"], lam: float) -> Float[Array, "L D"]:
    r"""Squash regulariser for long-convolution filters: soft-thresholding towards sparsity.

    .. math:: \mathrm{squash}(k)_\ell = \mathrm{sign}(k_\ell)\, \max(|k_\ell| - \lambda, 0).

    Args:
      k: filter ``[L, D]`` (any shape works elementwise).
      lam: threshold :math:`\lambda \ge 0`.

    Returns:
      Array of the shape and dtype of ``k``.

    Raises:
      ValueError: negative static ``lam``.
      TypeError: complex or integer ``k``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ssm import squash
      >>> squash(jnp.array([[-1.0], [0.05], [0.5]]), 0.1).ravel().tolist()
      [-0.9, 0.0, 0.4]

    References:
      Fu et al., *Simple Hardware-Efficient Long Convolutions for Sequence Modeling*, ICML 2023.
    """
    fn = "kjax.ssm.squash"
    from kjax.ssm._checks import real_float

    k = real_float(fn, "k", k)
    check_positive(fn, "lam", lam, allow_zero=True)
    return jnp.sign(k) * jnp.maximum(jnp.abs(k) - lam, 0.0)


def smooth(k: Float[Array, "L D"], width: int) -> Float[Array, "L D"]:
    r"""Smooth regulariser for long-convolution filters: a centred moving average along ``L``.

    .. math:: \mathrm{smooth}(k)_\ell = \frac{1}{p} \sum_{j=-(p-1)/2}^{(p-1)/2} k_{\ell + j}

    with zeros outside ``[0, L)`` (``AvgPool1d(p, stride=1, padding=p // 2)``), odd width ``p``.

    Args:
      k: filter ``[L, D]``.
      width: odd window ``p >= 1``.

    Returns:
      ``[L, D]``, dtype of ``k``.

    Raises:
      ValueError: rank other than 2, even or non-positive ``width``.
      TypeError: complex or integer ``k``.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ssm import smooth
      >>> smooth(jnp.array([[0.0], [3.0], [0.0]]), 3).ravel().tolist()
      [1.0, 1.0, 1.0]

    References:
      Fu et al., *Simple Hardware-Efficient Long Convolutions for Sequence Modeling*, ICML 2023.
    """
    fn = "kjax.ssm.smooth"
    from kjax.ssm._checks import real_float

    k = real_float(fn, "k", k)
    if k.ndim != 2:
        fail(fn, "k", "have rank 2 [L, D]", f"shape {tuple(k.shape)}")
    p = check_int(fn, "width", width, minimum=1)
    if p % 2 == 0:
        fail(fn, "width", "be odd (a centred window)", repr(p))
    h = p // 2
    total = jax.lax.reduce_window(k, jnp.zeros((), k.dtype), jax.lax.add, (p, 1), (1, 1),
                                  ((h, h), (0, 0)))
    return total / p

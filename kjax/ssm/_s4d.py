"""S4D: the diagonal state-space model as a filter (:func:`s4d_filter`) and as a recurrence
(:func:`s4d_step`), with the S4D-Lin / Inv / LegS initialisations (:func:`init_s4d`)."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from kjax._src import dtypes
from kjax._src.errors import check_in, check_int, check_positive, fail
from kjax.ssm import _checks

DISCRETIZATIONS = ("zoh", "bilinear")


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


#: the axes of each field, for the checks
AXES = {"log_dt": ("D",), **{f: ("D", "M") for f in S4DParams._fields[1:]}}


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


def init_s4d(key: Array, d_model: int, state_size: int = 64, *, init: str = "lin",
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
      d_model: number of channels ``D`` (>= 1).
      state_size: the real state size ``N`` (even, >= 2); ``N / 2`` complex modes are stored.
      init: ``"lin"``, ``"inv"`` or ``"legs"``.
      dt_min: smallest initial step size (> 0).
      dt_max: largest initial step size (>= dt_min).

    Returns:
      :class:`S4DParams` with ``[D]`` and ``[D, N/2]`` float arrays (default float dtype).

    Raises:
      ValueError: odd or non-positive ``state_size``, non-positive ``d_model``, unknown ``init``,
        non-positive or non-finite ``dt_min`` / ``dt_max``, ``dt_min > dt_max``.

    Example:
      >>> import jax
      >>> from kjax.ssm import init_s4d
      >>> p = init_s4d(jax.random.key(0), 4, 16)
      >>> p.a_imag.shape
      (4, 8)

    References:
      Gu, Gupta, Goel & Re, *On the Parameterization and Initialization of Diagonal State Space
      Models*, NeurIPS 2022.
    """
    fn = "kjax.ssm.init_s4d"
    d_model = check_int(fn, "d_model", d_model, minimum=1)
    n = check_int(fn, "state_size", state_size, minimum=2)
    if n % 2:
        fail(fn, "state_size", "be even (N/2 complex-conjugate pairs are stored)", repr(n))
    check_in(fn, "init", init, ("lin", "inv", "legs"))
    check_positive(fn, "dt_min", dt_min)
    check_positive(fn, "dt_max", dt_max)
    if float(dt_min) > float(dt_max):
        fail(fn, "dt_min", f"be <= dt_max={dt_max!r} (log dt is drawn from [log dt_min, log dt_max])",
             repr(dt_min))
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


#: ZOH: ``Re(dt A)`` below this is clamped; ``exp`` of it underflows to 0 in every float dtype, as
#: the exact value does, and no ``-inf`` ever meets a ``0`` (which made heavily damped modes NaN)
_MIN_LOG_DECAY = -1000.0


def _phi1(z):
    """``(e^z - 1) / z`` for complex ``z``, 1 at ``z = 0`` (a series near 0, no 0/0 in value or grad)."""
    small = jnp.abs(z) < 1e-4
    zs = jnp.where(small, jnp.ones_like(z), z)
    return jnp.where(small, 1.0 + z / 2 + z * z / 6, jnp.expm1(zs) / zs)


def _s4d_discrete(params: S4DParams, discretization: str):
    r"""``(log_dA, dB, C)`` complex ``[D, M]`` of the discretised diagonal SSM, in log space.

    ZOH: :math:`\log \bar A = \Delta A` exactly (its real part clamped at ``_MIN_LOG_DECAY``, past
    which :math:`e^{\ell \Delta A}` is 0 for every ``ell >= 1`` anyway) and
    :math:`\bar B = \Delta\, \varphi_1(\Delta A)\, B` with :math:`\varphi_1(z) = (e^z - 1)/z`,
    which is finite for every finite parameter: a mode damped past underflow has
    :math:`\bar A = 0` and :math:`\bar B = -B/A`, and ``A = 0`` gives :math:`\bar B = \Delta B`.
    Bilinear: :math:`\log \bar A = \log(1 + \Delta A/2) - \log(1 - \Delta A/2)` (a pole exactly at
    0 is moved to the smallest normal float, so its log is finite).
    """
    rdt = dtypes.accum_dtype(jnp.result_type(params.log_a_real.dtype, params.log_dt.dtype, float))
    ct = jnp.result_type(rdt, jnp.complex64)
    # |A| stays below sqrt(max float): no overflow in |A|^2 or in dt * A for any sane dt
    log_a_real = jnp.minimum(params.log_a_real.astype(rdt), 0.5 * float(np.log(jnp.finfo(rdt).max)) - 1.0)
    a_re, a_im = -jnp.exp(log_a_real), params.a_imag.astype(rdt)
    b = jax.lax.complex(params.b_re.astype(rdt), params.b_im.astype(rdt)).astype(ct)
    c = jax.lax.complex(params.c_re.astype(rdt), params.c_im.astype(rdt)).astype(ct)
    dt = jnp.exp(params.log_dt.astype(rdt))[:, None]
    if discretization == "zoh":
        re, im = dt * a_re, dt * a_im
        log_da = jax.lax.complex(jnp.maximum(re, _MIN_LOG_DECAY), im).astype(ct)
        z = jax.lax.complex(jnp.maximum(re, -jnp.finfo(rdt).max), im).astype(ct)  # no -inf from overflow
        return log_da, dt * _phi1(z) * b, c
    z = jax.lax.complex(dt * a_re, dt * a_im).astype(ct)
    num, den = 1.0 + z / 2, 1.0 - z / 2
    num = jnp.where(num == 0, jnp.asarray(jnp.finfo(rdt).tiny, ct), num)
    return jnp.log(num) - jnp.log(den), dt * b / den, c


def s4d_filter(params: S4DParams, L: int, *, discretization: str = "zoh") -> Float[Array, "L D"]:
    r"""The S4D convolution filter ``[L, D]`` by a Vandermonde product.

    .. math:: K_\ell = 2\,\mathrm{Re} \sum_{n=1}^{N/2} C_n\, \bar A_n^{\ell}\, \bar B_n, \qquad
        \ell = 0, \dots, L-1,

    with zero-order hold :math:`\bar A = e^{\Delta A}`, :math:`\bar B = A^{-1}(e^{\Delta A} - 1) B`, or
    bilinear :math:`\bar A = (1 + \Delta A/2)/(1 - \Delta A/2)`, :math:`\bar B = \Delta B / (1 - \Delta A/2)`.
    Convolving with it (:func:`fftconv`, causal) equals running :func:`s4d_step` over the sequence.
    Memory is ``O(D N L)`` (the Vandermonde matrix is materialised).

    Numerics: the powers are taken in log space (:math:`\bar A^\ell = e^{\ell \log \bar A}`, with
    :math:`\log \bar A = \Delta A` exactly for ZOH) and :math:`\bar B` through ``expm1``, so heavily
    damped modes (large ``log_a_real``, where :math:`e^{\Delta A}` underflows) contribute their
    finite limit :math:`K_0 = -2\,\mathrm{Re}(C B / A)`, :math:`K_{\ell > 0} = 0`, never NaN.

    Args:
      params: :class:`S4DParams` (from :func:`init_s4d`).
      L: filter length (static int >= 1).
      discretization: ``"zoh"`` or ``"bilinear"``.

    Returns:
      ``[L, D]`` real filter in the parameters' dtype.

    Raises:
      ValueError: ``L < 1``, unknown ``discretization``, parameters of inconsistent shapes.
      TypeError: ``params`` not an :class:`S4DParams`, complex parameters.

    Example:
      >>> import jax
      >>> from kjax.ssm import init_s4d, s4d_filter
      >>> k = s4d_filter(init_s4d(jax.random.key(0), 4, 16), 32)
      >>> k.shape
      (32, 4)

    References:
      Gu, Gupta, Goel & Re, *On the Parameterization and Initialization of Diagonal State Space
      Models*, NeurIPS 2022 (Listing 1).
    """
    fn = "kjax.ssm.s4d_filter"
    _checks.params(fn, params, S4DParams, AXES, "init_s4d")
    L = check_int(fn, "L", L, minimum=1)
    check_in(fn, "discretization", discretization, DISCRETIZATIONS)
    return _s4d_filter(params, L, discretization)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _s4d_filter(params, L, discretization):
    log_da, db, c = _s4d_discrete(params, discretization)
    out = jnp.result_type(params.log_a_real.dtype, float)
    ell = jnp.arange(L, dtype=log_da.real.dtype)
    vander = jnp.exp(log_da[..., None] * ell)  # [D, M, L]; log_da is finite, so ell = 0 gives 1
    k = 2.0 * jnp.einsum("dm,dml->ld", c * db, vander).real
    return k.astype(out)


class S4DState(NamedTuple):
    """Recurrent state of :func:`s4d_step`: ``x: [B, D, N/2]`` complex."""

    x: Array


def s4d_initial_state(params: S4DParams, batch_size: int) -> S4DState:
    """The zero state ``[batch_size, D, N/2]`` for :func:`s4d_step` (complex, at least complex64).

    Raises:
      ValueError: ``batch_size < 1``, parameters of inconsistent shapes.
      TypeError: ``params`` not an :class:`S4DParams`.

    Example:
      >>> import jax
      >>> from kjax.ssm import init_s4d, s4d_initial_state
      >>> s4d_initial_state(init_s4d(jax.random.key(0), 3, 8), 2).x.shape
      (2, 3, 4)
    """
    fn = "kjax.ssm.s4d_initial_state"
    dims = _checks.params(fn, params, S4DParams, AXES, "init_s4d")
    batch_size = check_int(fn, "batch_size", batch_size, minimum=1)
    ct = jnp.result_type(params.log_a_real.dtype, float, jnp.complex64)
    return S4DState(jnp.zeros((batch_size, dims["D"], dims["M"]), ct))


def s4d_step(params: S4DParams, state: S4DState, u_t: Float[ArrayLike, "B D"], *,
             discretization: str = "zoh") -> tuple[Float[Array, "B D"], S4DState]:
    r"""One recurrent step of the discretised S4D SSM (streaming inference).

    .. math:: x_t = \bar A x_{t-1} + \bar B u_t, \qquad y_t = 2\,\mathrm{Re}(C x_t).

    Starting from :func:`s4d_initial_state` and stepping through ``u[:, t]`` gives exactly
    ``fftconv(u, s4d_filter(params, L))`` (up to rounding).

    Args:
      params: :class:`S4DParams`.
      state: :class:`S4DState` with ``x: [B, D, N/2]``.
      u_t: ``[B, D]`` input at one time step (integers are promoted to float).
      discretization: ``"zoh"`` or ``"bilinear"`` (as in :func:`s4d_filter`).

    Returns:
      ``(y_t, new_state)`` with ``y_t: [B, D]`` in the (floating) dtype of ``u_t``.

    Raises:
      ValueError: ``u_t`` not ``[B, D]`` with the parameters' ``D``; a ``state`` whose ``x`` is not
        ``[B, D, N/2]`` for ``u_t``'s batch and the parameters; unknown ``discretization``.
      TypeError: complex ``u_t``; ``state`` not an :class:`S4DState`; ``params`` not an
        :class:`S4DParams`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ssm import init_s4d, s4d_initial_state, s4d_step
      >>> p = init_s4d(jax.random.key(0), 3, 8)
      >>> y, state = s4d_step(p, s4d_initial_state(p, 2), jnp.ones((2, 3)))
      >>> y.shape
      (2, 3)

    References:
      Gu, Gupta, Goel & Re, *On the Parameterization and Initialization of Diagonal State Space
      Models*, NeurIPS 2022.
    """
    fn = "kjax.ssm.s4d_step"
    dims = _checks.params(fn, params, S4DParams, AXES, "init_s4d")
    check_in(fn, "discretization", discretization, DISCRETIZATIONS)
    u_t = _checks.step_input(fn, "u_t", u_t, dims["D"])
    B = u_t.shape[0]
    _checks.state(fn, state, S4DState, {"x": (B, dims["D"], dims["M"])}, "s4d_initial_state",
                  f"[B, D, N/2] for u_t's batch B={B} and the parameters' D={dims['D']}, N/2={dims['M']}",
                  complex_ok=True)
    return _s4d_step(params, state, u_t, discretization)


@functools.partial(jax.jit, static_argnums=3)
def _s4d_step(params, state, u_t, discretization):
    log_da, db, c = _s4d_discrete(params, discretization)
    x = jnp.exp(log_da) * state.x + db * u_t[..., None].astype(state.x.dtype)
    y = 2.0 * jnp.sum(c * x, axis=-1).real
    return y.astype(u_t.dtype), S4DState(x.astype(state.x.dtype))

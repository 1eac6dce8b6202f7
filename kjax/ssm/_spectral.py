"""Fourier-neural-operator spectral convolution in 1D and 2D."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float

from kjax._src import dtypes
from kjax._src.errors import KjaxTypeError, fail
from kjax.ssm import _checks

_FN = "kjax.ssm.spectral_conv"


def spectral_conv(
    u: Float[ArrayLike, "B *spatial Ci"],
    weights: Complex[ArrayLike, "*modes Ci Co"],
    *,
    modes: int | tuple[int, int],
) -> Float[Array, "B *spatial Co"]:
    r"""FNO spectral convolution: keep the lowest Fourier modes and mix channels there.

    1D (``u: [B, L, Ci]``, ``modes = m``, ``weights: [m, Ci, Co]``):

    .. math:: y = \mathrm{irfft}_L\Big(\hat y\Big), \quad
        \hat y_{f,o} = \sum_i \hat u_{f,i} W_{f,i,o} \ (f < m), \quad \hat y_{f} = 0 \ (f \ge m),

    with :math:`\hat u = \mathrm{rfft}_L(u)`. 2D (``u: [B, H, W, Ci]``, ``modes = (m1, m2)``,
    ``weights: [2, m1, m2, Ci, Co]``): the same with ``rfft2`` over ``(H, W)``, where ``weights[0]``
    multiplies the modes ``[:m1, :m2]`` (non-negative frequencies along H) and ``weights[1]`` the
    modes ``[H-m1:, :m2]`` (negative ones), as in the reference FNO code. Transforms run in at
    least float32; the output has the dtype of ``u``.

    Args:
      u: ``[B, L, Ci]`` or ``[B, H, W, Ci]`` real input.
      weights: complex (or real) spectral weights ``[m, Ci, Co]`` or ``[2, m1, m2, Ci, Co]``.
      modes: ``m`` (1D, ``m <= L // 2 + 1``) or ``(m1, m2)`` (2D, ``2 m1 <= H``, ``m2 <= W // 2 + 1``).

    Returns:
      ``[B, L, Co]`` or ``[B, H, W, Co]``.

    Raises:
      ValueError: ranks, an empty grid (``L``, ``H`` or ``W`` = 0), ``modes`` not matching ``weights``
        or too many for the grid, channel mismatch.
      TypeError: complex ``u`` (integer ``u`` is promoted to float, the package dtype policy).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ssm import spectral_conv
      >>> u = jnp.ones((2, 16, 3))
      >>> spectral_conv(u, jnp.ones((4, 3, 5), jnp.complex64), modes=4).shape
      (2, 16, 5)

    References:
      Li et al., *Fourier Neural Operator for Parametric Partial Differential Equations*, ICLR 2021.
    """
    u = _checks.real_float(_FN, "u", u)
    w = jnp.asarray(weights)
    if not (jnp.issubdtype(w.dtype, jnp.complexfloating) or jnp.issubdtype(w.dtype, jnp.floating)):
        fail(_FN, "weights", "be a complex or real floating array", f"dtype {w.dtype}", cls=KjaxTypeError)
    acc = dtypes.accum_dtype(u.dtype)
    ct = jnp.result_type(acc, jnp.complex64)
    w = w.astype(jnp.promote_types(w.dtype, ct))
    if u.ndim == 3:
        m = modes if isinstance(modes, int) else None
        if m is None or isinstance(modes, bool):
            fail(_FN, "modes", "be an int for 1D input [B, L, Ci]", repr(modes))
        B, L, ci = u.shape
        if L < 1:
            fail(_FN, "u", "have L >= 1", f"shape {tuple(u.shape)}")
        if not 1 <= m <= L // 2 + 1:
            fail(_FN, "modes", f"be in [1, L // 2 + 1 = {L // 2 + 1}]", repr(m))
        if w.ndim != 3 or w.shape[:2] != (m, ci):
            fail(_FN, "weights", f"have shape ({m}, {ci}, Co) for modes={m} and Ci={ci}",
                 f"shape {tuple(w.shape)}")
        return _conv_1d(u, w, m)
    if u.ndim == 4:
        if not (isinstance(modes, tuple | list) and len(modes) == 2):
            fail(_FN, "modes", "be a pair (m1, m2) for 2D input [B, H, W, Ci]", repr(modes))
        m1, m2 = (int(x) for x in modes)
        B, H, W, ci = u.shape
        if H < 1 or W < 1:
            fail(_FN, "u", "have H >= 1 and W >= 1 (axes 1 and 2 of [B, H, W, Ci])",
                 f"shape {tuple(u.shape)}")
        if not (1 <= m1 and 2 * m1 <= H and 1 <= m2 <= W // 2 + 1):
            fail(_FN, "modes", f"satisfy 1 <= m1 <= H/2 = {H / 2} and 1 <= m2 <= W // 2 + 1 = "
                 f"{W // 2 + 1}", repr(tuple(modes)))
        if w.ndim != 5 or w.shape[:4] != (2, m1, m2, ci):
            fail(_FN, "weights", f"have shape (2, {m1}, {m2}, {ci}, Co)", f"shape {tuple(w.shape)}")
        return _conv_2d(u, w, m1, m2)
    fail(_FN, "u", "have rank 3 [B, L, Ci] (1D) or 4 [B, H, W, Ci] (2D)",
         f"shape {tuple(u.shape)} (rank {np.ndim(u)})")


@functools.partial(jax.jit, static_argnums=2)
def _conv_1d(u, w, m):
    L = u.shape[1]
    uh = jnp.fft.rfft(u.astype(dtypes.accum_dtype(u.dtype)), axis=1)[:, :m]
    yh = jnp.einsum("bmi,mio->bmo", uh, w)
    yh = jnp.pad(yh, ((0, 0), (0, L // 2 + 1 - m), (0, 0)))
    return jnp.fft.irfft(yh, n=L, axis=1).astype(u.dtype)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _conv_2d(u, w, m1, m2):
    B, H, W, _ = u.shape
    uh = jnp.fft.rfft2(u.astype(dtypes.accum_dtype(u.dtype)), axes=(1, 2))
    lo = jnp.einsum("bxyi,xyio->bxyo", uh[:, :m1, :m2], w[0])
    hi = jnp.einsum("bxyi,xyio->bxyo", uh[:, H - m1:, :m2], w[1])
    yh = jnp.zeros((B, H, W // 2 + 1, w.shape[-1]), lo.dtype)
    yh = yh.at[:, :m1, :m2].set(lo).at[:, H - m1:, :m2].set(hi)
    return jnp.fft.irfft2(yh, s=(H, W), axes=(1, 2)).astype(u.dtype)

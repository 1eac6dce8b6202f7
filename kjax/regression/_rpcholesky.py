"""Randomly pivoted Cholesky: a partial factorisation K ~ F F^T from m kernel columns."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from kjax import kernels
from kjax._src import status as st
from kjax._src.errors import check_int, fail
from kjax._src.status import Status
from kjax.regression import _common as c


class RPCholeskyState(NamedTuple):
    """Randomly pivoted partial Cholesky :math:`K \\approx F F^\\top`.

    Attributes:
      indices: ``[m]`` pivots (distinct rows of ``x``).
      factor: ``[n, m]`` factor ``F``.
      residual_trace: ``[m]`` :math:`\\operatorname{tr}(K - F_{:, :i+1} F_{:, :i+1}^\\top)` after each
        step (non-increasing).
      status: int32 code: 0 ok, 1 non-finite input (under ``jit``), 3 not positive semi-definite (a
        negative diagonal entry or pivot: the factor is not meaningful); see :func:`status_name`.
    """

    indices: Int[Array, " m"]
    factor: Float[Array, "n m"]
    residual_trace: Float[Array, " m"]
    status: Int[Array, ""]


def rpcholesky(
    key: jax.Array,
    kernel: c.Kernel,
    x: Float[ArrayLike, "n d"],
    m: int,
) -> RPCholeskyState:
    r"""Randomly pivoted Cholesky: ``m`` pivots, each drawn with probability proportional to the
    diagonal of the current residual :math:`K - F F^\top`.

    Step ``i``: draw :math:`s \sim d / \sum d`, :math:`g = K_{:, s} - F F_{s,:}^\top`,
    :math:`F_{:, i} = g / \sqrt{g_s}`, :math:`d \leftarrow d - F_{:, i}^2`. Cost :math:`O(n m^2)`
    and ``m`` kernel columns; jittable (``lax.fori_loop``).

    Args:
      key: PRNG key.
      kernel: ``k(x1, x2) -> [n1, n2]``.
      x: ``[n, d]`` points.
      m: number of pivots, a Python int with ``1 <= m <= n``.

    Returns:
      :class:`RPCholeskyState`.

    Raises:
      ValueError: ``m > n`` or ``m < 1``, ``x`` not ``[n, d]`` with ``n, d >= 1`` or with NaN/inf.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.kernels import rbf
      >>> from kjax.regression import rpcholesky
      >>> st = rpcholesky(jax.random.key(0), rbf, jax.random.normal(jax.random.key(1), (100, 2)), 20)
      >>> bool(jnp.all(jnp.diff(st.residual_trace) <= 1e-9))
      True

    References:
      Chen, Epperly, Tropp & Webber, *Randomly pivoted Cholesky: practical approximation of a
      kernel matrix with few entry evaluations*, Comm. Pure Appl. Math. 2024.
    """
    fn = "kjax.regression.rpcholesky"
    kern = c.check_kernel(fn, kernel)
    x = c.check_x(fn, "x", x, kern)
    n = x.shape[0]
    m = check_int(fn, "m", m, minimum=1)
    if m > n:
        fail(fn, "m", f"be at most the number of points n={n}", m)
    return rpcholesky_core(kern, x, key, m)


@c.kernel_jit(static_argnums=(3,))
def rpcholesky_core(kern, x, key, m):
    """:func:`rpcholesky` without the input checks, compiled (one program per ``m`` and shape);
    also the preconditioner of :func:`kjax.regression.krr_fit`'s ``solver="pcg"``."""
    n = x.shape[0]
    d0 = kernels.kernel_diag(kern, x)
    dt = d0.dtype
    keys = jax.random.split(key, m)

    def body(i, carry):
        f, d, idx, tr, low = carry
        logits = jnp.where(d > 0, jnp.log(jnp.maximum(d, jnp.finfo(dt).tiny)), -jnp.inf)
        # every remaining diagonal entry 0: fall back to uniform over unpicked points
        picked = jnp.zeros(n, bool).at[idx].set(jnp.arange(m) < i)
        logits = jnp.where(jnp.all(d <= 0), jnp.where(picked, -jnp.inf, 0.0), logits)
        s = jax.random.categorical(keys[i], logits).astype(jnp.int32)
        col = kern(x, jax.lax.dynamic_slice_in_dim(x, s, 1, axis=0))[:, 0].astype(dt)
        g = col - f @ f[s]
        piv = jnp.maximum(g[s], jnp.finfo(dt).tiny)
        newcol = g / jnp.sqrt(piv)
        f = f.at[:, i].set(newcol)
        d = jnp.maximum(d - newcol * newcol, 0.0).at[s].set(0.0)
        return f, d, idx.at[i].set(s), tr.at[i].set(jnp.sum(d)), jnp.minimum(low, g[s])

    init = (jnp.zeros((n, m), dt), d0, jnp.zeros(m, jnp.int32), jnp.zeros(m, dt), jnp.min(d0))
    f, _, idx, tr, low = jax.lax.fori_loop(0, m, body, init)
    # a negative diagonal entry or pivot (beyond rounding): the kernel is not positive semi-definite
    tol = 100 * n * jnp.finfo(dt).eps * jnp.max(jnp.abs(d0))
    code = st.combine(st.nonfinite_input(x), jnp.where(low < -tol, Status.NOT_PSD, Status.OK))
    return RPCholeskyState(idx, f, tr, code)


#: pivots drawn at once by :func:`block_rpcholesky_core` (per step)
BLOCK = 64


@c.kernel_jit(static_argnums=(3,))
def block_rpcholesky_core(kern, x, key, m):
    """Block randomly pivoted Cholesky (Chen, Epperly, Tropp & Webber 2024, section 4): each step
    draws up to :data:`BLOCK` distinct pivots with probability proportional to the residual
    diagonal (Gumbel top-k), evaluates their ``n x b`` kernel columns in one call and adds the
    block's columns ``G V diag(s)^{-1/2}`` from the eigendecomposition ``G_SS = V diag(s) V^T``
    (directions with ``s`` below ``1e3 eps max(s)`` dropped). A few matrix products per step
    instead of ``m`` sequential columns: the preconditioner of ``krr_fit(solver="pcg")``.

    Returns ``(factor [n, m], status)``; ``status`` is ``NOT_PSD`` when a pivot block has a
    negative eigenvalue beyond rounding, ``NONFINITE_INPUT`` for NaN/inf in ``x``.
    """
    n = x.shape[0]
    nb = -(-m // BLOCK)
    b = -(-m // nb)
    d0 = kernels.kernel_diag(kern, x)
    dt = d0.dtype
    keys = jax.random.split(key, nb)
    scale = jnp.max(jnp.abs(d0))
    tiny = jnp.finfo(dt).tiny

    def body(i, carry):
        f, d, worst = carry
        logits = jnp.where(d > 0, jnp.log(jnp.maximum(d, tiny)), -jnp.inf)
        gumbel = jax.random.gumbel(keys[i], (n,), dt)
        _, sel = jax.lax.top_k(logits + gumbel, b)
        live = jnp.take(d, sel) > 0  # -inf logits (exhausted diagonal) can still be picked
        g = kern(x, x[sel]).astype(dt) - f @ f[sel].T  # [n, b]
        h = g[sel]
        h = 0.5 * (h + h.T) * (live[:, None] & live[None, :])
        s, v = jnp.linalg.eigh(h)
        keep = s > 1e3 * jnp.finfo(dt).eps * jnp.maximum(jnp.max(s), tiny)
        new = (g @ v) * jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, s, 1.0)), 0.0)
        f = jax.lax.dynamic_update_slice_in_dim(f, new, i * b, axis=1)
        d = jnp.maximum(d - jnp.sum(new * new, axis=1), 0.0).at[sel].set(0.0)
        return f, d, jnp.minimum(worst, jnp.min(s))

    f0 = jnp.zeros((n, nb * b), dt)
    f, _, worst = jax.lax.fori_loop(0, nb, body, (f0, d0, jnp.min(d0)))
    tol = 100 * b * jnp.finfo(dt).eps * scale
    code = st.combine(st.nonfinite_input(x), jnp.where(worst < -tol, Status.NOT_PSD, Status.OK))
    return f[:, :m], code

"""Matrix-free eNTK analysis: the eNTK as a linear operator, and stochastic estimators of its trace,
Frobenius norm, effective rank and label alignment that never form the kernel.

The full eNTK of ``f`` on a dataset ``x`` (``n`` examples, ``O`` outputs each) is the operator
:math:`\\Theta = J J^\\top` on :math:`\\mathbb R^{n \\times O}`, with :math:`J` the Jacobian of all
outputs with respect to the parameters. A product :math:`J^\\top z` is one reverse-mode pass over the
dataset and :math:`J w` one forward-mode pass; both run in blocks of ``block_size`` examples
(``jax.lax.scan``), so memory is that of one block and the parameters, whatever ``n``.

Estimators (Hutchinson 1989; Meyer, Musco, Musco & Woodruff, *Hutch++*, SOSA 2021; Hazelden,
*Fast Neural Tangent Kernel Alignment, Norm and Effective Rank via Trace Estimation*, arXiv
2511.10796, 2025):

* ``"reverse"`` (one-sided, reverse mode only): :math:`\\operatorname{tr}\\Theta = \\mathbb E_z
  \\|J^\\top z\\|^2` and :math:`\\|\\Theta\\|_F^2 = \\mathbb E_{z, z'} \\langle J^\\top z, J^\\top z'
  \\rangle^2` for independent Rademacher :math:`z, z'` in output space;
* ``"forward"`` (one-sided, forward mode only): the same with :math:`\\|J w\\|^2` and
  :math:`\\langle J w, J w'\\rangle^2`, :math:`w, w'` Rademacher in parameter space (cheaper when
  the parameters outnumber the outputs by much: no activations stored);
* ``"hutch++"``: Hutch++ on :math:`\\Theta` (trace) or :math:`\\Theta^2` (Frobenius norm), each
  :math:`\\Theta` product one reverse and one forward pass: a low-rank sketch takes the top of the
  spectrum exactly and Hutchinson the rest, so the error falls as ``1/m`` instead of
  ``1/sqrt(m)`` for fast-decaying spectra, which eNTKs have.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float

from kjax._src.blockwise import pad_rows, take_block
from kjax._src.errors import KjaxTypeError, check_in, check_int, fail
from kjax.ntk._model import float_leaves, num_examples

PyTree = Any
METHODS = ("reverse", "forward", "hutch++")
DEFAULT_BLOCK = 256


class Estimate(NamedTuple):
    """A stochastic estimate and its standard error.

    ``value`` is within ``2 * std_error`` of the exact quantity about 95% of the time. The error
    is estimated from the same products: for traces from the variance bound
    ``Var(z^T A z) <= 2 |A|_F^2`` of Hutchinson's estimator with ``|A|_F^2`` estimated alongside
    (a slight overestimate for Rademacher probes), for the Frobenius norm's pair statistic by the
    jackknife widened by the Student t quantile; ratios and square roots carry it by the delta
    method. With few samples the error estimate is itself noisy: use at least 8 probes where it
    matters.
    """

    value: jax.Array  #: the estimate
    std_error: jax.Array  #: its standard error, estimated from the same samples
    num_passes: int  #: forward or reverse passes over the dataset that it took


# ------------------------------------------------------------------------------- the operator


class _Jacobian(NamedTuple):
    """Blocked products with the Jacobian of ``f(params, x)`` (float leaves of params only)."""

    jt: Callable  # z [n, O] -> flat params vector [P]
    j: Callable  # flat params vector [P] -> [n, O]
    n: int
    out: int  # O: outputs per example (flattened)
    size: int  # P
    dtype: Any


def _jacobian(fn: str, f: Callable, params: PyTree, x: PyTree, block_size: int | None) -> _Jacobian:
    if not callable(f):
        fail(fn, "f", "be a callable f(params, x) -> [n, ...]", type(f).__name__, cls=KjaxTypeError)
    n = num_examples(fn, "x", x)
    if block_size is not None:
        check_int(fn, "block_size", block_size, minimum=1)
    b = min(n, DEFAULT_BLOCK if block_size is None else int(block_size))
    nb = -(-n // b)
    xp = pad_rows(x, nb * b)
    leaves, rebuild, _ = float_leaves(params)
    if not leaves:
        fail(fn, "params", "have at least one floating-point leaf", "no float leaves", cls=KjaxTypeError)
    flat0, unravel = ravel_pytree(leaves)

    def g(flat, xb):
        y = f(rebuild(unravel(flat)), xb)
        if not isinstance(y, jax.Array | np.ndarray) or np.ndim(y) < 1:
            fail(fn, "f", "return one array [n, ...] (per-example outputs)", type(y).__name__,
                 cls=KjaxTypeError)
        return y.reshape(y.shape[0], -1)

    out_shape = jax.eval_shape(g, flat0, take_block(xp, 0, b))
    if out_shape.shape[0] != b:
        fail(fn, "f", f"map a block of {b} examples to {b} rows of outputs", f"shape {out_shape.shape}")
    o = out_shape.shape[1]
    dtype = jnp.result_type(flat0.dtype, out_shape.dtype)

    def jt(z):
        zp = jnp.zeros((nb * b, o), dtype).at[:n].set(z.reshape(n, o).astype(dtype))

        def body(acc, i):
            _, pull = jax.vjp(lambda p: g(p, take_block(xp, i, b)), flat0)
            return acc + pull(jax.lax.dynamic_slice_in_dim(zp, i * b, b).astype(out_shape.dtype))[0], None

        return jax.lax.scan(body, jnp.zeros_like(flat0), jnp.arange(nb))[0]

    def j(w):
        def body(_, i):
            return None, jax.jvp(lambda p: g(p, take_block(xp, i, b)), (flat0,), (w.astype(flat0.dtype),))[1]

        return jax.lax.scan(body, None, jnp.arange(nb))[1].reshape(nb * b, o)[:n]

    return _Jacobian(jt, j, n, o, flat0.size, dtype)


def ntk_matvec(f: Callable, params: PyTree, x: PyTree, *, block_size: int | None = None
               ) -> Callable[[Float[ArrayLike, "n O"]], Float[Array, "n O"]]:
    r"""The full eNTK of ``f`` on ``x`` as a matrix-free product :math:`v \mapsto \Theta v = J(J^\top v)`.

    One reverse and one forward pass over the dataset per product, in blocks of ``block_size``
    examples: memory is one block's activations and two copies of the parameters, for any ``n``.
    Feed it to :func:`lanczos_top_k` (flattening ``v``), CG or any other Krylov method.

    Args:
      f: ``f(params, x) -> [n, ...]``, outputs flattened to ``O`` per example.
      params: parameters (a pytree; integer leaves are held fixed).
      x: inputs ``[n, ...]`` (a pytree of arrays with a common leading axis).
      block_size: examples per pass block (default ``min(n, 256)``).

    Returns:
      A jitted function ``v [n, O] -> Θ v [n, O]`` (``O`` = the product of ``f``'s per-example
      output shape).

    Raises:
      ValueError: an empty ``x``, ``block_size < 1``, an ``f`` whose output rows do not match its
        input rows.
      TypeError: ``f`` not callable or not returning one array; ``params`` without float leaves.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk.analysis import ntk_matvec
      >>> f = lambda p, x: x @ p
      >>> mv = ntk_matvec(f, jnp.ones((3, 2)), jnp.eye(3))
      >>> print(mv(jnp.ones((3, 2))))  # Θ = I (x) I here
      [[1. 1.]
       [1. 1.]
       [1. 1.]]
    """
    jac = _jacobian("kjax.ntk.analysis.ntk_matvec", f, params, x, block_size)
    return jax.jit(lambda v: jac.j(jac.jt(v)).astype(jac.dtype))


# ------------------------------------------------------------------------------- estimators


def _check_common(fn, key, num_samples, method, minimum):
    check_in(fn, "method", method, METHODS)
    check_int(fn, "num_samples", num_samples, minimum=minimum)
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        fail(fn, "key", "be a typed PRNG key (jax.random.key(seed))", repr(key), cls=KjaxTypeError)


def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype)


def _sketches(jac: _Jacobian, key, s: int, method: str) -> jax.Array:
    """``s`` one-sided sketch vectors: ``J^T z_i`` ([s, P]) or ``J w_i`` ([s, n*O])."""
    if method == "reverse":
        z = _rademacher(key, (s, jac.n, jac.out), jac.dtype)
        return jax.lax.map(jac.jt, z)
    w = _rademacher(key, (s, jac.size), jac.dtype)
    return jax.lax.map(lambda v: jac.j(v).reshape(-1), w)


def _t_factor(dof: int) -> float:
    """``t_{0.975, dof} / z_{0.975}``: a standard error estimated from ``dof + 1`` samples, scaled
    by this, keeps "within 2 standard errors" at about 95% (Cornish-Fisher expansion of the
    Student t quantile; 2.776 at dof = 4 against the exact 2.776)."""
    z, v = 1.959964, float(dof)
    t = (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
         + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))
    return t / z


def _hutchinson_se(fro2, s: int):
    """Standard error of a mean of ``s`` Hutchinson samples ``z^T A z``: ``Var <= 2 |A|_F^2``
    (equality for Gaussian probes, an upper bound for Rademacher ones), with ``|A|_F^2`` from the
    same sketches' pair statistic."""
    return jnp.sqrt(2 * jnp.maximum(fro2, 0.0) / s)


def _one_sided(u):
    """Trace and squared Frobenius norm from one-sided sketches ``u [s, .]`` of ``J``:
    ``|u_i|^2`` are trace samples, ``<u_i, u_j>^2`` (i != j) Frobenius samples, averaged over all
    pairs (a U-statistic); its standard error is the jackknife's (leave one sketch out)."""
    s = u.shape[0]
    gram = u @ u.T
    tr_samples = jnp.diag(gram)
    sq = jnp.where(~jnp.eye(s, dtype=bool), gram**2, 0.0)
    total, rows = jnp.sum(sq), jnp.sum(sq, axis=1)
    fro2 = total / (s * (s - 1))
    loo = (total - 2 * rows) / ((s - 1) * (s - 2))
    fro2_se = jnp.sqrt((s - 1) / s * jnp.sum((loo - jnp.mean(loo)) ** 2)) * _t_factor(s - 1)
    return tr_samples, fro2, fro2_se


def _hutchpp(key, matvec, dim: int, m: int, dtype):
    """Hutch++ with ``m`` products (``m // 3`` sketch, ``m // 3`` range, the rest Hutchinson on the
    deflated operator ``B = (I - QQ^T) A (I - QQ^T)``). Its standard error uses
    ``Var(g^T B g) <= 2 |B|_F^2`` (equality for Gaussian probes, an upper bound for Rademacher
    ones), with ``|B|_F^2`` estimated by the mean of ``|B g_i|^2`` over the same products: far
    steadier than the sample deviation of a few skewed quadratic forms."""
    k1, k2 = jax.random.split(key)
    r = max(m // 3, 1)
    g_cols = max(m - 2 * r, 1)
    s = _rademacher(k1, (dim, r), dtype)
    g = _rademacher(k2, (dim, g_cols), dtype)
    q, _ = jnp.linalg.qr(jax.lax.map(matvec, s.T).T)
    low = jnp.trace(q.T @ jax.lax.map(matvec, q.T).T)
    g_perp = g - q @ (q.T @ g)
    a_g = jax.lax.map(matvec, g_perp.T).T
    res = jnp.sum(g_perp * a_g, axis=0)
    b_g = a_g - q @ (q.T @ a_g)
    se = jnp.sqrt(2 * jnp.mean(jnp.sum(b_g * b_g, axis=0)) / g_cols)
    return low + jnp.mean(res), se


def _theta(jac: _Jacobian):
    return lambda v: jac.j(jac.jt(v.reshape(jac.n, jac.out))).reshape(-1)


def ntk_trace(f: Callable, params: PyTree, x: PyTree, *, key: jax.Array, num_samples: int = 16,
              method: str = "reverse", block_size: int | None = None) -> Estimate:
    r"""Stochastic estimate of the trace of the full eNTK, :math:`\operatorname{tr}(J J^\top)`,
    without forming it.

    ``"reverse"`` averages :math:`\|J^\top z\|^2` over ``num_samples`` Rademacher :math:`z`
    (reverse passes only), ``"forward"`` :math:`\|J w\|^2` (forward passes only), ``"hutch++"``
    spends ``num_samples`` eNTK products (a forward and a reverse pass each) on Hutch++. The trace
    of the ``mode="trace"`` kernel is this divided by ``O``.

    Args:
      f: ``f(params, x) -> [n, ...]``.
      params: parameters.
      x: inputs ``[n, ...]``.
      key: PRNG key.
      num_samples: probe vectors (>= 2; Hutch++: products, >= 3).
      method: ``"reverse"``, ``"forward"`` or ``"hutch++"``.
      block_size: examples per pass block.

    Returns:
      An :class:`Estimate` ``(value, std_error, num_passes)``. NaN in ``x`` or ``params`` gives a
      NaN estimate (it propagates, as in the dense eNTK).

    Raises:
      ValueError: an unknown ``method``, too few ``num_samples``, and the errors of
        :func:`ntk_matvec`.
      TypeError: ``key`` not a typed PRNG key.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk.analysis import ntk_trace
      >>> f = lambda p, x: x @ p
      >>> est = ntk_trace(f, jnp.ones((3, 2)), 2 * jnp.eye(3), key=jax.random.key(0), num_samples=8)
      >>> float(est.value)  # tr = |x|_F^2 * O = 12 * 2; exact here: |J^T z|^2 is constant
      24.0

    References:
      Hazelden, arXiv 2511.10796 (2025), one-sided estimators; Meyer et al., *Hutch++*, SOSA 2021.
    """
    fn = "kjax.ntk.analysis.ntk_trace"
    _check_common(fn, key, num_samples, method, 3 if method == "hutch++" else 2)
    jac = _jacobian(fn, f, params, x, block_size)
    if method == "hutch++":
        value, se = _hutchpp(key, _theta(jac), jac.n * jac.out, num_samples, jac.dtype)
        return Estimate(value, se, 2 * num_samples)
    u = _sketches(jac, key, num_samples, method)
    tr_samples, fro2, _ = _one_sided(u)
    return Estimate(jnp.mean(tr_samples), _hutchinson_se(fro2, num_samples), num_samples)


def _frobenius_sq(fn, jac, key, num_samples, method):
    if method == "hutch++":
        th = _theta(jac)
        value, se = _hutchpp(key, lambda v: th(th(v)), jac.n * jac.out, num_samples, jac.dtype)
        return value, se, 4 * num_samples, None
    u = _sketches(jac, key, num_samples, method)
    tr_samples, fro2, fro2_se = _one_sided(u)
    return fro2, fro2_se, num_samples, tr_samples


def ntk_frobenius_norm(f: Callable, params: PyTree, x: PyTree, *, key: jax.Array, num_samples: int = 16,
                       method: str = "reverse", block_size: int | None = None) -> Estimate:
    r"""Stochastic estimate of :math:`\|J J^\top\|_F`, the Frobenius norm of the full eNTK.

    One-sided: :math:`\|\Theta\|_F^2 = \mathbb E\,\langle J^\top z, J^\top z'\rangle^2` over
    independent Rademacher pairs (``"reverse"``; ``"forward"`` with :math:`J w`), averaged over all
    ``s(s-1)/2`` pairs of ``num_samples`` sketches. ``"hutch++"``: Hutch++ on :math:`\Theta^2`
    (two eNTK products per probe). The standard error is that of the squared norm carried to the
    norm by the delta method.

    Args and Raises: as :func:`ntk_trace`.

    Returns:
      An :class:`Estimate` of the norm.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk.analysis import ntk_frobenius_norm
      >>> f = lambda p, x: x @ p
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
      >>> est = ntk_frobenius_norm(f, jnp.ones((2, 1)), x, key=jax.random.key(0), num_samples=9,
      ...                          method="hutch++")
      >>> round(float(est.value), 6)  # Θ = x x^T (rank 2): Hutch++ is exact at rank <= m // 3
      6.855655
    """
    fn = "kjax.ntk.analysis.ntk_frobenius_norm"
    _check_common(fn, key, num_samples, method, 3 if method == "hutch++" else 4)
    jac = _jacobian(fn, f, params, x, block_size)
    fro2, se2, passes, _ = _frobenius_sq(fn, jac, key, num_samples, method)
    norm = jnp.sqrt(jnp.maximum(fro2, 0.0))
    return Estimate(norm, se2 / (2 * jnp.maximum(norm, jnp.finfo(jac.dtype).tiny)), passes)


def ntk_effective_rank(f: Callable, params: PyTree, x: PyTree, *, key: jax.Array, num_samples: int = 16,
                       method: str = "reverse", block_size: int | None = None) -> Estimate:
    r"""Stochastic estimate of the eNTK's effective rank
    :math:`(\operatorname{tr}\Theta)^2 / \|\Theta\|_F^2` (the participation ratio of its
    eigenvalues: :func:`effective_rank` with ``kind="participation"`` on the dense kernel).

    One-sided methods take the trace and the Frobenius norm from the same sketches (diagonal and
    off-diagonal products of their Gram matrix); ``"hutch++"`` runs the two Hutch++ estimates. The
    standard error is the delta method's, treating the two estimates as independent (an
    approximation).

    Args and Raises: as :func:`ntk_trace`.

    Returns:
      An :class:`Estimate` of the effective rank, in ``[1, n*O]`` up to sampling error.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk.analysis import ntk_effective_rank
      >>> f = lambda p, x: x @ p
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
      >>> est = ntk_effective_rank(f, jnp.ones((2, 1)), x, key=jax.random.key(0), num_samples=9,
      ...                          method="hutch++")
      >>> round(float(est.value), 6)  # Θ = x x^T: tr(Θ)^2 / |Θ|_F^2, exact at rank 2
      1.723404
    """
    fn = "kjax.ntk.analysis.ntk_effective_rank"
    _check_common(fn, key, num_samples, method, 3 if method == "hutch++" else 4)
    jac = _jacobian(fn, f, params, x, block_size)
    if method == "hutch++":
        k1, k2 = jax.random.split(key)
        tr, tr_se = _hutchpp(k1, _theta(jac), jac.n * jac.out, num_samples, jac.dtype)
        fro2, fro2_se, passes, _ = _frobenius_sq(fn, jac, k2, num_samples, method)
        passes += 2 * num_samples
    else:
        fro2, fro2_se, passes, tr_samples = _frobenius_sq(fn, jac, key, num_samples, method)
        tr, tr_se = jnp.mean(tr_samples), _hutchinson_se(fro2, num_samples)
    rank = tr**2 / fro2
    se = jnp.abs(rank) * jnp.sqrt((2 * tr_se / tr) ** 2 + (fro2_se / fro2) ** 2)
    return Estimate(rank, se, passes)


def ntk_label_alignment(f: Callable, params: PyTree, x: PyTree, y: Float[ArrayLike, "n ..."], *,
                        key: jax.Array, num_samples: int = 16, centered: bool = True,
                        method: str = "reverse", block_size: int | None = None) -> Estimate:
    r"""Stochastic estimate of the alignment of the full eNTK with the labels,
    :math:`\langle \Theta, y y^\top\rangle_F / (\|\Theta\|_F \|y y^\top\|_F) =
    y^\top\Theta y / (\|\Theta\|_F \|y\|^2)` (Cristianini et al. 2002; centered: Cortes et al.
    2012, with :math:`y` and :math:`\Theta` centered over the examples).

    The numerator is exact: :math:`y^\top \Theta y = \|J^\top y\|^2`, one reverse pass. Only the
    Frobenius norm is estimated (as in :func:`ntk_frobenius_norm`, with the probes centered too);
    the standard error is the norm's, carried through.

    Args:
      f, params, x, key, num_samples, method, block_size: as :func:`ntk_trace`.
      y: targets with ``f``'s output shape ``[n, ...]`` (one-hot labels for classification).
      centered: center the targets and the kernel over the examples.

    Returns:
      An :class:`Estimate` of the alignment (in ``[-1, 1]`` up to sampling error).

    Raises:
      ValueError: ``y`` of another shape than ``f``'s output, a zero (or, centered, constant)
        ``y``; the errors of :func:`ntk_trace`.
      TypeError: ``centered`` not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk.analysis import ntk_label_alignment
      >>> f = lambda p, x: x @ p
      >>> y = jnp.array([[1.0], [-1.0], [0.0]])
      >>> est = ntk_label_alignment(f, jnp.ones((3, 1)), jnp.eye(3), y, key=jax.random.key(0),
      ...                           num_samples=9, centered=False, method="hutch++")
      >>> round(float(est.value), 6)  # Θ = I_3: y^T y / (sqrt(3) |y|^2)
      0.57735
    """
    fn = "kjax.ntk.analysis.ntk_label_alignment"
    _check_common(fn, key, num_samples, method, 3 if method == "hutch++" else 4)
    if not isinstance(centered, bool):
        fail(fn, "centered", "be a bool", repr(centered), cls=KjaxTypeError)
    jac = _jacobian(fn, f, params, x, block_size)
    y = jnp.asarray(y)
    if y.size != jac.n * jac.out or y.shape[0] != jac.n:
        fail(fn, "y", f"have f's output shape ({jac.n} examples x {jac.out} outputs)", f"shape {y.shape}")
    if jnp.issubdtype(y.dtype, jnp.complexfloating):
        fail(fn, "y", "be real", f"dtype {y.dtype}", cls=KjaxTypeError)
    y = y.reshape(jac.n, jac.out).astype(jac.dtype)
    center = (lambda v: v - jnp.mean(v, axis=0, keepdims=True)) if centered else (lambda v: v)
    y = center(y)
    y2 = jnp.sum(y * y)
    if not isinstance(y2, jax.core.Tracer) and not bool(y2 > 0):
        fail(fn, "y", "not be zero" + (" after centering (constant targets)" if centered else ""),
             "all-zero targets")
    g = jac.jt(y)
    num = jnp.sum(g * g)
    cjac = jac._replace(jt=lambda z: jac.jt(center(z.reshape(jac.n, jac.out))),
                        j=lambda w: center(jac.j(w)))
    fro2, fro2_se, passes, _ = _frobenius_sq(fn, cjac, key, num_samples, method)
    fro = jnp.sqrt(jnp.maximum(fro2, 0.0))
    value = num / (fro * y2)
    se = jnp.abs(value) * fro2_se / (2 * fro2)
    return Estimate(value, se, passes + 1)

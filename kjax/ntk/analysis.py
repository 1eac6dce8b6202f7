"""Analysis of (empirical) kernels: spectra, effective rank, alignment, distances, kernel velocity.

Kernels may be given as ``[n, n]`` matrices or in the ``[n, n, O, O]`` layout of
:func:`kjax.ntk.empirical_ntk` with ``mode="full"``; the latter are flattened to ``[nO, nO]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kjax._src.errors import KjaxTypeError, check_in, check_int, fail
from kjax._src.solvers import lanczos
from kjax.ntk._dataset import MODES, empirical_ntk
from kjax.ntk._matfree import (
    Estimate,
    ntk_effective_rank,
    ntk_frobenius_norm,
    ntk_label_alignment,
    ntk_matvec,
    ntk_trace,
)
from kjax.ntk._model import num_examples

__all__ = [
    "Estimate",
    "alignment",
    "centered_kernel_alignment",
    "effective_rank",
    "eigenspectrum",
    "kernel_distance",
    "label_alignment",
    "lanczos_top_k",
    "ntk_effective_rank",
    "ntk_frobenius_norm",
    "ntk_label_alignment",
    "ntk_matvec",
    "ntk_trace",
    "record_ntk",
    "NTKRecord",
]


def as_matrix(fn: str, k: jax.Array, arg: str = "k") -> jax.Array:
    """``[n, n]`` or ``[n, n, O, O]`` -> square matrix ``[n O, n O]`` (``n O >= 1``), real and at
    least float32 (integer and bool kernels are promoted)."""
    k = _real_float(fn, arg, k)
    if k.ndim == 2 and k.shape[0] == k.shape[1]:
        m = k
    elif k.ndim == 4 and k.shape[0] == k.shape[1] and k.shape[2] == k.shape[3]:
        n, _, o, _ = k.shape
        m = jnp.transpose(k, (0, 2, 1, 3)).reshape(n * o, n * o)
    else:
        fail(fn, arg, "be a square kernel [n, n] or [n, n, O, O]", f"shape {k.shape}")
    if m.shape[0] == 0:
        fail(fn, arg, "be a kernel on at least one point", f"shape {k.shape}")
    return m


def _real_float(fn: str, arg: str, x) -> jax.Array:
    """``x`` as a real floating array of at least float32; complex input is an error."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        fail(fn, arg, "be real", f"dtype {x.dtype}", cls=KjaxTypeError)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.result_type(float))
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _matrix_pair(fn: str, k1, k2) -> tuple[jax.Array, jax.Array]:
    a, b = as_matrix(fn, k1, "k1"), as_matrix(fn, k2, "k2")
    if a.shape != b.shape:
        fail(fn, "k2", f"have the shape of `k1` {tuple(np.shape(k1))}",
             f"shape {tuple(np.shape(k2))}")
    return a, b


def eigenspectrum(k: jax.Array, *, top_k: int | None = None) -> tuple[jax.Array, jax.Array]:
    r"""Eigenvalues (descending) and eigenvectors of a symmetric kernel matrix, by dense ``eigh``.

    Args:
      k: ``[n, n]`` or ``[n, n, O, O]`` symmetric kernel.
      top_k: keep only the ``top_k`` largest.

    Returns:
      ``(eigenvalues [m], eigenvectors [n, m])`` in descending order of eigenvalue, in at least
      float32 (integer, bool and half-precision kernels are promoted).

    Raises:
      ValueError: a non-square or empty kernel, ``top_k`` larger than the kernel.
      TypeError: a complex kernel.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk.analysis import eigenspectrum
      >>> vals, vecs = eigenspectrum(jnp.diag(jnp.array([1.0, 3.0, 2.0])))
      >>> vals.tolist()
      [3.0, 2.0, 1.0]
    """
    fn = "kjax.ntk.analysis.eigenspectrum"
    m = as_matrix(fn, k)
    if top_k is not None:
        check_int(fn, "top_k", top_k, minimum=1)
        if top_k > m.shape[0]:
            fail(fn, "top_k", f"be at most the kernel's size {m.shape[0]}", top_k)
    vals, vecs = jnp.linalg.eigh((m + m.T) / 2)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    if top_k is not None:
        vals, vecs = vals[:top_k], vecs[:, :top_k]
    return vals, vecs


def lanczos_top_k(key: jax.Array, matvec: Callable[[jax.Array], jax.Array], n: int, k: int, *,
                  num_iters: int | None = None, dtype=None, return_status: bool = False
                  ) -> tuple[jax.Array, jax.Array] | tuple[jax.Array, jax.Array, jax.Array]:
    r"""Top-``k`` eigenpairs of a symmetric PSD operator given only by its matvec (Lanczos).

    Runs ``num_iters`` (default ``min(n, 2k + 20)``) Lanczos steps with full
    reorthogonalisation (restarting from a fresh direction when the Krylov space becomes
    invariant), then diagonalises the tridiagonal matrix: the shared Lanczos of
    ``kjax._src.solvers``. Use it for kernels too large
    to factor: pass ``lambda v: kjax.kernels.kernel_matvec(kern, x, None, v)`` or the product with
    an eNTK streamed to a memmap.

    Args:
      key: PRNG key for the starting vector.
      matvec: ``v [n] -> K v [n]``.
      n: operator size.
      k: number of eigenpairs.
      num_iters: Lanczos steps (``k <= num_iters <= n``).
      dtype: working dtype (default: the default float).
      return_status: also return the status code (``OK``; ``MAX_ITER`` when the Ritz residual
        of the ``k`` pairs is above ``sqrt(eps)``: raise ``num_iters``; ``NONFINITE_VALUES``; see
        :func:`kjax.regression.status_name`).

    Returns:
      ``(eigenvalues [k] descending, eigenvectors [n, k])``, and the status if ``return_status``.

    Raises:
      ValueError: ``k < 1`` or ``num_iters`` outside ``[k, n]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk.analysis import lanczos_top_k
      >>> a = jnp.diag(jnp.arange(1.0, 101.0))
      >>> vals, _ = lanczos_top_k(jax.random.key(0), lambda v: a @ v, 100, 3, num_iters=60)
      >>> [round(float(v), 4) for v in vals]
      [100.0, 99.0, 98.0]

    References:
      Golub & Van Loan, *Matrix Computations*, 4th ed., section 10.1.
    """
    fn = "kjax.ntk.analysis.lanczos_top_k"
    check_int(fn, "n", n, minimum=1)
    check_int(fn, "k", k, minimum=1)
    if k > n:
        fail(fn, "k", f"be at most the operator size n = {n}", k)
    m = min(n, 2 * k + 20) if num_iters is None else num_iters
    if not k <= m <= n:
        fail(fn, "num_iters", f"be in [k, n] = [{k}, {n}]", m)
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    try:
        real = jnp.issubdtype(dtype, jnp.floating)
    except TypeError:
        real = False
    if not real:
        fail(fn, "dtype", "be a real floating dtype (float32 or float64)", repr(dtype),
             cls=KjaxTypeError)
    (vals, vecs), status, _ = lanczos(key, matvec, n, k, num_iters=m, dtype=dtype, fn_name=fn)
    return (vals, vecs, status) if return_status else (vals, vecs)


def effective_rank(k_or_eigenvalues: jax.Array, *, kind: str = "entropy") -> jax.Array:
    r"""Effective rank of a kernel (or of its eigenvalues).

    * ``"entropy"``: :math:`\exp(-\sum_i p_i\log p_i)`, :math:`p = \lambda / \sum\lambda`
      (Roy & Vetterli 2007).
    * ``"participation"``: :math:`(\sum\lambda)^2 / \sum\lambda^2`.

    Args:
      k_or_eigenvalues: a kernel ``[n, n]`` / ``[n, n, O, O]`` or a vector of eigenvalues.
      kind: ``"entropy"`` or ``"participation"``.

    Returns:
      A scalar in ``[1, n]``. Under ``jit`` (traced input) a NaN or Inf entry, or a kernel without
      a positive eigenvalue, gives NaN, never a plausible number.

    Raises:
      ValueError: unknown ``kind``; for concrete input, a NaN or Inf entry, an empty input, or no
        positive eigenvalue.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk.analysis import effective_rank
      >>> round(float(effective_rank(jnp.ones(4))), 6)
      4.0
      >>> float(effective_rank(jnp.eye(3), kind="participation"))
      3.0
    """
    fn = "kjax.ntk.analysis.effective_rank"
    check_in(fn, "kind", kind, ("entropy", "participation"))
    arg = "k_or_eigenvalues"
    lam = _real_float(fn, arg, k_or_eigenvalues)
    concrete = _is_concrete(lam)
    if concrete and not bool(jnp.all(jnp.isfinite(lam))):
        fail(fn, arg, "be finite (NaN or Inf has no effective rank)",
             f"{int(jnp.sum(~jnp.isfinite(lam)))} non-finite entries")
    if lam.ndim != 1:
        lam = jnp.linalg.eigvalsh(as_matrix(fn, lam, arg))
    elif lam.shape[0] == 0:
        fail(fn, arg, "hold at least one eigenvalue", "shape (0,)")
    finite = jnp.all(jnp.isfinite(lam))
    lam = jnp.clip(lam, 0.0, None)
    total = jnp.sum(lam)
    if concrete and not bool(total > 0):
        fail(fn, arg, "have a positive eigenvalue (the effective rank of a zero or negative "
             "semi-definite kernel is undefined)", f"largest eigenvalue {float(jnp.max(lam))}")
    if kind == "participation":
        rank = total ** 2 / jnp.sum(lam**2)
    else:
        p = lam / total
        rank = jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))
    return jnp.where(finite & (total > 0), rank, jnp.nan)


def _center(m):
    return m - m.mean(0, keepdims=True) - m.mean(1, keepdims=True) + m.mean()


def alignment(k1: jax.Array, k2: jax.Array) -> jax.Array:
    r"""Uncentered kernel alignment :math:`\langle K_1, K_2\rangle_F/(\|K_1\|_F\|K_2\|_F)`
    (Cristianini et al. 2002).

    Args:
      k1: ``[n, n]`` (or ``[n, n, O, O]``) kernel.
      k2: kernel of the same shape.

    Returns:
      A scalar in ``[-1, 1]``. Under ``jit`` a zero kernel gives NaN.

    Raises:
      ValueError: a non-square or empty kernel, kernels of different shapes, or (concrete input)
        a zero kernel, whose alignment is undefined.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk.analysis import alignment
      >>> float(alignment(jnp.eye(3), 2 * jnp.eye(3)))
      1.0
    """
    return _alignment("kjax.ntk.analysis.alignment", k1, k2)


def _alignment(fn: str, k1, k2, centered: bool = False, names=("k1", "k2")) -> jax.Array:
    """``<A, B>_F / (|A|_F |B|_F)`` of the (centered) kernels; a zero one is an error (concrete
    input) or gives NaN (traced), never a number."""
    a, b = _matrix_pair(fn, k1, k2)
    if centered:
        a, b = _center(a), _center(b)
    na, nb = jnp.linalg.norm(a), jnp.linalg.norm(b)
    for name, x, nx in zip(names, (a, b), (na, nb), strict=True):
        if _is_concrete(x) and bool(nx == 0):  # NaN propagates
            what = "constant (zero after centering)" if centered else "zero"
            fail(fn, name, f"not be {what}: its alignment with anything is undefined", what)
    return jnp.vdot(a, b) / (na * nb)


def centered_kernel_alignment(k1: jax.Array, k2: jax.Array) -> jax.Array:
    r"""Centered kernel alignment :math:`\mathrm{CKA}(K_1, K_2) = \langle HK_1H, HK_2H\rangle_F /
    (\|HK_1H\|_F \|HK_2H\|_F)` with :math:`H = I - \frac1n 11^\top` (Cortes et al. 2012;
    Kornblith et al. 2019).

    Args:
      k1: ``[n, n]`` (or ``[n, n, O, O]``) kernel.
      k2: kernel of the same shape.

    Returns:
      A scalar in ``[-1, 1]`` (``[0, 1]`` for PSD kernels).

    Raises:
      ValueError: a non-square or empty kernel, kernels of different shapes, or (concrete input)
        a constant kernel, zero after centering (under ``jit`` it gives NaN).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk.analysis import centered_kernel_alignment
      >>> x = jnp.array([[1.0], [2.0], [4.0]])
      >>> round(float(centered_kernel_alignment(x @ x.T, 3.0 * x @ x.T)), 6)
      1.0
    """
    return _alignment("kjax.ntk.analysis.centered_kernel_alignment", k1, k2, centered=True)


def label_alignment(k: jax.Array, y: jax.Array, *, centered: bool = True) -> jax.Array:
    r"""Alignment of a kernel with the labels' kernel :math:`YY^\top` (one-hot for integer labels).

    Args:
      k: ``[n, n]`` kernel.
      y: ``[n]`` integer class labels ``0, 1, ...`` (one-hot encoded; must be concrete), ``[n]``
        real targets or ``[n, O]`` targets.
      centered: centered (CKA, default) or uncentered alignment.

    Returns:
      A scalar.

    Raises:
      ValueError: ``y`` with a number of rows other than n, negative or traced integer labels,
        labels all equal (with ``centered``; there is nothing to align with), an empty kernel.

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk.analysis import label_alignment
      >>> y = jnp.array([0, 0, 1, 1])
      >>> k = jnp.array([[1., 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]])
      >>> round(float(label_alignment(k, y)), 6)
      1.0
    """
    fn = "kjax.ntk.analysis.label_alignment"
    m = as_matrix(fn, k)
    y = jnp.asarray(y)
    if jnp.issubdtype(y.dtype, jnp.complexfloating):
        fail(fn, "y", "be real labels or targets", f"dtype {y.dtype}", cls=KjaxTypeError)
    if y.ndim == 0 or y.shape[0] != m.shape[0]:
        fail(fn, "y", f"have {m.shape[0]} rows (one per example)", f"shape {y.shape}")
    if jnp.issubdtype(y.dtype, jnp.integer) or y.dtype == bool:
        if y.ndim != 1:
            fail(fn, "y", "be a vector [n] of class labels when it has an integer dtype",
                 f"shape {y.shape}")
        if not _is_concrete(y):
            fail(fn, "y", "be concrete when it holds integer class labels (the number of classes "
                 "sets the one-hot width); pass one-hot targets [n, O] under jit", "a traced array")
        labels = np.asarray(y).astype(np.int64)
        if labels.min() < 0:
            fail(fn, "y", "hold non-negative class labels 0, 1, ... (one-hot encoding)",
                 f"minimum {int(labels.min())}")
        y = jax.nn.one_hot(labels, int(labels.max()) + 1, dtype=m.dtype)
    y = y.reshape(y.shape[0], -1).astype(m.dtype)
    ky = y @ y.T
    return _alignment(fn, m, ky, centered=centered, names=("k", "y"))


def kernel_distance(k1: jax.Array, k2: jax.Array) -> jax.Array:
    r"""Kernel distance :math:`1 - \langle K_1, K_2\rangle_F/(\|K_1\|_F\|K_2\|_F)` between two
    kernels on the same points, e.g. eNTKs of two checkpoints (Fort et al., NeurIPS 2020).

    Args:
      k1: ``[n, n]`` (or ``[n, n, O, O]``) kernel.
      k2: kernel of the same shape.

    Returns:
      A scalar in ``[0, 2]``; 0 for kernels that are multiples of each other.

    Raises:
      ValueError: a non-square or empty kernel, kernels of different shapes, or (concrete input)
        a zero kernel (under ``jit`` it gives NaN).

    Example:
      >>> import jax.numpy as jnp
      >>> from kjax.ntk.analysis import kernel_distance
      >>> float(kernel_distance(jnp.eye(2), 5 * jnp.eye(2)))
      0.0
    """
    align = _alignment("kjax.ntk.analysis.kernel_distance", k1, k2)
    return jnp.maximum(1.0 - align, 0.0)  # >= 0, also under roundoff


class NTKRecord(NamedTuple):
    """What :func:`record_ntk` returns."""

    steps: np.ndarray  #: training steps at which the kernel was recorded
    kernels: np.ndarray  #: ``[len(steps), n, n]`` eNTKs on the probe set
    losses: np.ndarray  #: training loss at those steps
    distance_to_init: np.ndarray  #: kernel distance to the kernel at step 0
    velocity: np.ndarray  #: kernel distance between consecutive records / steps between them
    params: Any  #: final parameters


# Module-level jits with the functions static: a second record_ntk call with the same loss,
# optimizer and model reuses the compiled steps (a jit built inside the call would not).
def _hashable(*xs) -> bool:
    try:
        hash(xs)
    except TypeError:
        return False
    return True


@functools.partial(jax.jit, static_argnums=(0, 1))
def _train_step(loss_fn, optimizer, p, s, batch):
    loss, g = jax.value_and_grad(loss_fn)(p, batch)
    updates, s = optimizer.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _probe_ntk(f, mode, implementation, p, *, x_probe):
    return empirical_ntk(f, p, x_probe, mode=mode, implementation=implementation)


def record_ntk(
    f: Callable,
    params: Any,
    loss_fn: Callable,
    optimizer: Any,
    batches: Iterable,
    x_probe: Any,
    *,
    num_steps: int,
    every: int = 10,
    mode: str = "trace",
    implementation: Any = None,
) -> NTKRecord:
    r"""Train with optax and record the eNTK on a probe set along the way (kernel velocity).

    Runs ``num_steps`` of ``optimizer`` on ``loss_fn(params, batch)`` over ``batches`` (an
    iterable, cycled) and every ``every`` steps computes :func:`kjax.ntk.empirical_ntk` of ``f`` on
    ``x_probe``; reports the distance of each kernel to the initial one and the kernel velocity
    :math:`d(K_t, K_{t-\Delta}) / \Delta` (Fort et al. 2020).

    Args:
      f: ``f(params, x) -> [N, O]``.
      params: initial parameters.
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      optimizer: an ``optax.GradientTransformation``.
      batches: iterable of batches (cycled).
      x_probe: probe inputs ``[n, ...]``.
      num_steps: training steps.
      every: record period in steps.
      mode: eNTK mode (``"trace"`` or ``"pntk"`` give ``[n, n]``).
      implementation: eNTK implementation.

    Returns:
      An :class:`NTKRecord`.

    Raises:
      ValueError: ``num_steps < 1`` or ``every < 1``.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from kjax.ntk.analysis import record_ntk
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> p = {"w1": jax.random.normal(jax.random.key(0), (2, 16)), "w2": jnp.zeros((16, 1))}
      >>> x = jax.random.normal(jax.random.key(1), (8, 2)); y = jnp.sin(x[:, :1])
      >>> loss = lambda p, b: jnp.mean((f(p, b[0]) - b[1]) ** 2)
      >>> rec = record_ntk(f, p, loss, optax.sgd(0.1), [(x, y)], x, num_steps=20, every=10)
      >>> rec.kernels.shape, rec.steps.tolist()
      ((3, 8, 8), [0, 10, 20])
    """
    fn = "kjax.ntk.analysis.record_ntk"
    check_in(fn, "mode", mode, MODES)
    check_int(fn, "num_steps", num_steps, minimum=1)
    check_int(fn, "every", every, minimum=1)
    num_examples(fn, "x_probe", x_probe)
    batch_list = list(batches)
    if not batch_list:
        fail(fn, "batches", "yield at least one batch", "an empty iterable")
    opt_state = optimizer.init(params)
    impl = tuple(implementation) if isinstance(implementation, list) else implementation
    if _hashable(loss_fn, optimizer, f, impl):
        train_step = functools.partial(_train_step, loss_fn, optimizer)
        kernel = functools.partial(_probe_ntk, f, mode, impl, x_probe=x_probe)
    else:  # unhashable callables: compile for this call only
        train_step = jax.jit(functools.partial(_train_step.__wrapped__, loss_fn, optimizer))
        kernel = jax.jit(functools.partial(_probe_ntk.__wrapped__, f, mode, impl, x_probe=x_probe))
    steps, kernels, losses = [0], [np.asarray(kernel(params))], [float(loss_fn(params,
                                                                               batch_list[0]))]
    for t in range(1, num_steps + 1):
        params, opt_state, loss = train_step(params, opt_state, batch_list[(t - 1) % len(batch_list)])
        if t % every == 0 or t == num_steps:
            steps.append(t)
            kernels.append(np.asarray(kernel(params)))
            losses.append(float(loss))
    kernels = np.stack(kernels)
    d0 = np.array([float(kernel_distance(kernels[0], k)) for k in kernels])
    vel = np.array([0.0] + [float(kernel_distance(kernels[i - 1], kernels[i])) /
                            (steps[i] - steps[i - 1]) for i in range(1, len(steps))])
    return NTKRecord(np.array(steps), kernels, np.array(losses), d0, vel, params)

"""Status codes of kjax's solvers and fitted states: named results with messages (lineax's ``RESULTS``).

A value-dependent failure (a Cholesky factorisation that meets a matrix which is not positive
definite, conjugate gradients that run out of iterations, NaN in traced inputs) cannot raise at trace
time. It is reported as an int32 ``status`` in the returned state instead, never as a silent NaN.

The codes are plain ints (:class:`Status` is an ``IntEnum``), so they work inside ``jit``
(``jnp.where(state.status == Status.MAX_ITER, ...)``, :func:`combine`); :func:`status_name` and
:func:`status_message` turn a concrete code into words outside ``jit``.

=====  ====================  ===============================================================
code   name                  meaning
=====  ====================  ===============================================================
0      ``OK``                converged / factorised as asked
1      ``NONFINITE_INPUT``   NaN or inf in the inputs (seen from the values, under ``jit``)
2      ``JITTER``            not numerically positive definite: jitter was added to a Cholesky
                             factor or negative eigenvalues were clipped; the result is usable
3      ``NOT_PSD``           not positive definite: the factorisation failed even with the
                             largest jitter, or CG met a direction of non-positive curvature
4      ``MAX_ITER``          an iterative solver stopped at ``maxiter`` before reaching ``tol``
5      ``NONFINITE_VALUES``  the computation produced NaN or inf from finite inputs (diverged)
6      ``SINGULAR``          singular (positive semi-definite) matrix: solved by a
                             pseudo-inverse, the null space left alone
=====  ====================  ===============================================================

Codes 0-3 keep the meanings they had in ``kjax.regression`` (where 3 was "factorisation failed").
"""

from __future__ import annotations

import enum
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from kjax._src.errors import KjaxTypeError, fail


class Status(enum.IntEnum):
    """The status codes (see the module docstring); an ``IntEnum``, so usable inside ``jit``."""

    OK = 0
    NONFINITE_INPUT = 1
    JITTER = 2
    NOT_PSD = 3
    MAX_ITER = 4
    NONFINITE_VALUES = 5
    SINGULAR = 6


#: short descriptions (what :func:`status_name` returns); 0-2 are the strings of earlier releases
NAMES: dict[Status, str] = {
    Status.OK: "ok",
    Status.NONFINITE_INPUT: "non-finite input",
    Status.JITTER: "jitter added (matrix not numerically PSD)",
    Status.NOT_PSD: "factorisation failed: not positive definite even with the largest jitter",
    Status.MAX_ITER: "stopped at maxiter before reaching tol",
    Status.NONFINITE_VALUES: "non-finite values from finite input (the computation diverged)",
    Status.SINGULAR: "singular matrix: solved by a pseudo-inverse",
}

#: what happened and what to do (what :func:`status_message` returns)
MESSAGES: dict[Status, str] = {
    Status.OK: "The computation succeeded.",
    Status.NONFINITE_INPUT: "The inputs contain NaN or inf; the result is not meaningful. Clean the "
                            "inputs (with concrete inputs kjax raises instead).",
    Status.JITTER: "The matrix was not numerically positive definite: jitter was added to its "
                   "diagonal (or negative eigenvalues were clipped to zero). The result is usable; "
                   "a larger ridge avoids this.",
    Status.NOT_PSD: "The matrix is not positive definite: its Cholesky factorisation failed even with "
                    "the largest jitter (or conjugate gradients met non-positive curvature). Check "
                    "that the kernel is positive definite, or increase the ridge.",
    Status.MAX_ITER: "The iterative solver stopped at maxiter before its relative residual reached "
                     "tol; the state carries the residual reached. Increase maxiter (the guide gives "
                     "a rule), a larger ridge or more Nystrom centres.",
    Status.NONFINITE_VALUES: "The computation produced NaN or inf from finite inputs (it diverged). "
                             "Use a smaller step or a larger ridge.",
    Status.SINGULAR: "The matrix is singular: the system was solved by a pseudo-inverse (eigenvalues "
                     "below N * eps * the largest treated as zero), and the null space keeps its "
                     "initial values. Add a ridge for a unique solution.",
}

# which code wins when several are reported at once: a NaN input explains everything downstream,
# a failed factorisation explains non-finite values, which explain a stalled iteration, ...
_PRECEDENCE = (Status.OK, Status.SINGULAR, Status.JITTER, Status.MAX_ITER, Status.NONFINITE_VALUES,
               Status.NOT_PSD, Status.NONFINITE_INPUT)
_RANK = np.zeros(len(Status), np.int32)
for _r, _s in enumerate(_PRECEDENCE):
    _RANK[int(_s)] = _r


def _code(fn: str, status: Any) -> int:
    if isinstance(status, jax.core.Tracer):
        fail(fn, "status", "be concrete (call it outside jit; inside jit compare the code with "
             "kjax._src.status.Status members, e.g. status == Status.MAX_ITER)", "a traced value",
             cls=KjaxTypeError)
    arr = np.asarray(status)
    if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.integer) or isinstance(status, Status)):
        fail(fn, "status", "be an integer scalar (a state's `status`)", repr(status), cls=KjaxTypeError)
    return int(arr)


def status_name(status: Any) -> str:
    """The short description of a ``status`` code.

    Args:
      status: an int, a :class:`Status` or a concrete scalar int array (a state's ``status``).

    Returns:
      e.g. ``"ok"``, ``"stopped at maxiter before reaching tol"``; ``"unknown status N"`` for a code
      kjax does not define.

    Raises:
      TypeError: a traced or non-integer ``status``.

    Example:
      >>> from kjax._src.status import Status, status_name
      >>> status_name(2), status_name(Status.MAX_ITER)
      ('jitter added (matrix not numerically PSD)', 'stopped at maxiter before reaching tol')
    """
    code = _code("kjax.regression.status_name", status)
    return NAMES[Status(code)] if code in Status._value2member_map_ else f"unknown status {code}"


def status_message(status: Any) -> str:
    """What a ``status`` code means and what to do about it (see :func:`status_name`).

    Example:
      >>> from kjax._src.status import status_message
      >>> status_message(0)
      'The computation succeeded.'
    """
    code = _code("kjax.status_message", status)
    return MESSAGES[Status(code)] if code in Status._value2member_map_ else f"Unknown status {code}."


def as_status(code: Any) -> jax.Array:
    """``code`` as an int32 scalar array (traceable)."""
    return jnp.asarray(code, jnp.int32)


def combine(*statuses: Any) -> jax.Array:
    """The most telling of several codes (traceable): NONFINITE_INPUT > NOT_PSD > NONFINITE_VALUES >
    MAX_ITER > JITTER > SINGULAR > OK."""
    s = jnp.stack([as_status(t) for t in statuses])
    return s[jnp.argmax(jnp.asarray(_RANK)[s])]


def where(cond: Any, code: Status, status: Any) -> jax.Array:
    """``code`` combined into ``status`` where ``cond`` holds (traceable)."""
    return combine(status, jnp.where(cond, as_status(code), as_status(Status.OK)))


def nonfinite_input(*arrays: Any) -> jax.Array:
    """``NONFINITE_INPUT`` if any of the arrays has a NaN or inf, else ``OK`` (traceable)."""
    arrays = [a for a in arrays if a is not None]
    if not arrays:
        return as_status(Status.OK)
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))
    return jnp.where(ok, Status.OK, Status.NONFINITE_INPUT).astype(jnp.int32)


def nonfinite_values(*arrays: Any) -> jax.Array:
    """``NONFINITE_VALUES`` if any of the (computed) arrays has a NaN or inf, else ``OK``."""
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))
    return jnp.where(ok, Status.OK, Status.NONFINITE_VALUES).astype(jnp.int32)


__all__ = ["MESSAGES", "NAMES", "Status", "as_status", "combine", "nonfinite_input", "nonfinite_values",
           "status_message", "status_name", "where"]

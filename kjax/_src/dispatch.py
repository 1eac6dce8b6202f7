"""One dispatcher for every function that has several implementations.

A public function with a hot path takes ``implementation=None | "xla" | "pallas" | [names]``:

* ``None``: the first registered implementation that is sure to work on this backend (and is
  marked ``auto``); on CPU that is the pure-jnp reference.
* a string: exactly that implementation, or a clear error saying why it cannot run here.
* a list/tuple: the first listed implementation that can run here.

Functions whose variants are algorithms rather than backends (the eNTK's
``"jacobian_contraction" | "ntk_vector_products" | "structured"``) use the same machinery, with
``auto`` replaced by a cost model passed as ``chooser``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax

from kjax._src.errors import KjaxError


@dataclasses.dataclass(frozen=True)
class Implementation:
    """A named implementation and the predicate that says whether it can run."""

    name: str
    fn: Callable[..., Any]
    #: ``supported(backend) -> None`` if it can run on ``backend``, else the reason it cannot.
    supported: Callable[[str], str | None] = lambda backend: None
    #: eligible for ``implementation=None``.
    auto: bool = True


def default_backend() -> str:
    return jax.default_backend()


def gpu_only(backend: str) -> str | None:
    return None if backend in ("gpu", "cuda", "rocm") else f"it needs a GPU backend, this one is {backend!r}"


def select(
    fn_name: str,
    implementation: None | str | Sequence[str],
    impls: Sequence[Implementation],
    *,
    backend: str | None = None,
    chooser: Callable[[list[Implementation]], Implementation] | None = None,
) -> Implementation:
    """Pick the implementation to run; raises ``KjaxError`` naming ``fn_name`` when none fits."""
    backend = backend or default_backend()
    by_name = {im.name: im for im in impls}
    names = tuple(by_name)

    def reason(im: Implementation) -> str | None:
        return im.supported(backend)

    if implementation is None:
        ok = [im for im in impls if im.auto and reason(im) is None]
        if not ok:
            raise KjaxError(f"{fn_name}: no implementation runs on backend {backend!r}.")
        return chooser(ok) if chooser is not None else ok[0]

    if isinstance(implementation, str):
        if implementation not in by_name:
            raise KjaxError(
                f"{fn_name}: `implementation` must be None, one of {names!r} or a list of them; "
                f"got {implementation!r}."
            )
        im = by_name[implementation]
        why = reason(im)
        if why is not None:
            raise KjaxError(f"{fn_name}: implementation {implementation!r} cannot run here: {why}.")
        return im

    if isinstance(implementation, list | tuple):
        if not implementation:
            raise KjaxError(f"{fn_name}: `implementation` must be a non-empty list; got [].")
        for name in implementation:
            if name not in by_name:
                raise KjaxError(
                    f"{fn_name}: `implementation` entries must be in {names!r}; got {name!r}."
                )
        whys = []
        for name in implementation:
            why = reason(by_name[name])
            if why is None:
                return by_name[name]
            whys.append(f"{name!r}: {why}")
        raise KjaxError(f"{fn_name}: none of the implementations {list(implementation)!r} can run "
                        f"here ({'; '.join(whys)}).")

    raise KjaxError(
        f"{fn_name}: `implementation` must be None, a string or a list of strings; got "
        f"{type(implementation).__name__}."
    )

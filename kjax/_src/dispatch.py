"""One dispatcher for every function that has several implementations.

A public function with a hot path takes ``implementation=None | "xla" | "pallas" | [names]`` and
describes its call by a static configuration (a dict: ``causal``, ``dtype``, shapes, the feature
map, ...). Each :class:`Implementation` declares the platforms it lowers on and a ``supports``
predicate over ``(platform, config)`` that returns ``None`` or the reason it cannot serve.

The choice is made **per platform**, so a function traced once and lowered (jitted or exported)
for ``cuda`` or ``tpu`` runs its Pallas kernel there and XLA on CPU (``jax.lax.platform_dependent``
keeps one branch per platform, and lowering keeps only the branch of the platform it lowers for):

* ``None``: on each platform, the first implementation marked ``auto`` that supports the call;
* a list: on each platform, the first listed implementation that supports the call (tokamax's
  fall-through rule); an implementation passed over is recorded with its reason in
  :attr:`Selection.skipped` and logged on the ``kjax.dispatch`` logger at DEBUG level;
* a string: exactly that implementation on every platform it lowers on. A configuration it does
  not support raises at once, naming the argument; so does a platform it cannot lower on, when
  that platform is the current default backend.

Every implementation of a function has the same call signature; the public function only calls
``selection(*arrays, **static)`` and never branches on a name. Functions whose variants are
algorithms rather than backends (the eNTK's ``"jacobian_contraction" | "ntk_vector_products" |
"structured"``) use :func:`select` with a cost model passed as ``chooser``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from kjax._src.errors import KjaxError

log = logging.getLogger("kjax.dispatch")

#: platforms a choice is made for (``jax.lax.platform_dependent``'s names)
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
#: platforms with a Pallas backend in kjax: Triton on NVIDIA GPUs, Mosaic on TPUs
PALLAS_PLATFORMS = ("cuda", "tpu")

Config = Mapping[str, Any]


def _all_supported(platform: str, config: Config) -> str | None:
    return None


@dataclasses.dataclass(frozen=True)
class Implementation:
    """A named implementation, where it lowers, and what configurations it supports.

    Attributes:
      name: the name users pass as ``implementation``.
      fn: the implementation; all implementations of one function share its signature.
      platforms: the platforms it lowers on (``PLATFORMS`` names).
      supports: ``supports(platform, config) -> None`` when it can serve the call described by
        ``config`` on ``platform``, else the reason it cannot (naming the argument).
      auto: eligible for ``implementation=None``.
    """

    name: str
    fn: Callable[..., Any]
    platforms: tuple[str, ...] = PLATFORMS
    supports: Callable[[str, Config], str | None] = _all_supported
    auto: bool = True

    def why_not(self, platform: str, config: Config) -> str | None:
        if platform not in self.platforms:
            return f"it lowers on {', '.join(self.platforms)}, not on {platform}"
        return self.supports(platform, config)


def current_platform() -> str:
    """The platform name (``PLATFORMS``) of ``jax.default_backend()``."""
    backend = jax.default_backend()
    if backend == "gpu":
        return "rocm" if "rocm" in jax.devices()[0].client.platform_version.lower() else "cuda"
    return backend


def gpu_only(backend: str) -> str | None:
    """Backend predicate of :func:`select`: the reason a non-GPU backend cannot serve, or None."""
    return None if backend in ("gpu", "cuda", "rocm") else f"it needs a GPU backend, this one is {backend!r}"


@dataclasses.dataclass(frozen=True)
class Selection:
    """The implementation chosen on each platform, and those passed over with their reasons."""

    fn_name: str
    per_platform: Mapping[str, Implementation]
    skipped: tuple[tuple[str, str, str], ...]  # (implementation, platform, reason)

    @property
    def current(self) -> Implementation:
        """The implementation that runs on the current default backend."""
        return self.per_platform[current_platform()]

    def names(self) -> dict[str, str]:
        return {p: im.name for p, im in self.per_platform.items()}

    def __call__(self, *args: Any, **static: Any) -> Any:
        """Run the selection: one implementation called directly, several through
        ``jax.lax.platform_dependent`` (``args`` are arrays/pytrees, ``static`` the configuration)."""
        impls = {im.name: im for im in self.per_platform.values()}
        if len(impls) == 1:
            return next(iter(impls.values())).fn(*args, **static)
        branches = {p: functools.partial(im.fn, **static) for p, im in self.per_platform.items()}
        # identical branches are joined by platform_dependent when they compare equal
        by_name: dict[str, Callable] = {}
        for p, im in self.per_platform.items():
            branches[p] = by_name.setdefault(im.name, branches[p])
        return jax.lax.platform_dependent(*args, **branches)


def dispatch(fn_name: str, implementation: None | str | Sequence[str], impls: Sequence[Implementation],
             config: Config, *, platforms: Sequence[str] = PLATFORMS) -> Selection:
    """Choose per platform which implementation serves the call described by ``config``.

    Raises ``KjaxError`` naming ``fn_name`` for an unknown name, a string implementation that does
    not support ``config``, or when nothing can run on the current default backend.
    """
    by_name = {im.name: im for im in impls}
    names = tuple(by_name)
    strict = isinstance(implementation, str)
    if implementation is None:
        candidates = [im for im in impls if im.auto]
    elif strict:
        if implementation not in by_name:
            raise KjaxError(f"{fn_name}: `implementation` must be None, one of {names!r} or a list of them; "
                            f"got {implementation!r}.")
        candidates = [by_name[implementation]]
    elif isinstance(implementation, list | tuple):
        if not implementation:
            raise KjaxError(f"{fn_name}: `implementation` must be a non-empty list; got [].")
        for name in implementation:
            if not isinstance(name, str) or name not in by_name:
                raise KjaxError(f"{fn_name}: `implementation` entries must be in {names!r}; got {name!r}.")
        candidates = [by_name[n] for n in implementation]
    else:
        raise KjaxError(f"{fn_name}: `implementation` must be None, a string or a list of strings; got "
                        f"{type(implementation).__name__}.")

    here = current_platform()
    per_platform: dict[str, Implementation] = {}
    skipped: list[tuple[str, str, str]] = []
    for p in dict.fromkeys([*platforms, here]):
        for im in candidates:
            why = im.why_not(p, config)
            if why is None:
                per_platform[p] = im
                break
            skipped.append((im.name, p, why))
    for name, p, why in skipped:
        log.debug("%s: %s passed over on %s: %s", fn_name, name, p, why)
    if here not in per_platform:
        whys = "; ".join(f"{n!r}: {w}" for n, p, w in skipped if p == here)
        if strict:
            raise KjaxError(f"{fn_name}: implementation {implementation!r} cannot serve this call on {here}: "
                            f"{whys.split(': ', 1)[1]}. Pass implementation=None, or a list such as "
                            f"[{implementation!r}, 'xla'] to fall back.")
        raise KjaxError(f"{fn_name}: none of the implementations {[im.name for im in candidates]!r} can run "
                        f"here ({here}): {whys}.")
    return Selection(fn_name, per_platform, tuple(skipped))


def select(
    fn_name: str,
    implementation: None | str | Sequence[str],
    impls: Sequence[Implementation],
    *,
    backend: str | None = None,
    chooser: Callable[[list[Implementation]], Implementation] | None = None,
) -> Implementation:
    """Pick one implementation for the current backend (algorithm choices such as the eNTK's).

    An implementation can run when ``why_not(backend, {})`` is None. Raises ``KjaxError`` naming
    ``fn_name`` when none fits.
    """
    backend = backend or current_platform()
    by_name = {im.name: im for im in impls}
    names = tuple(by_name)

    def reason(im: Implementation) -> str | None:
        return im.why_not(backend, {})

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

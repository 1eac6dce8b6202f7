"""Split a pytree into its array leaves (traced by ``jit``) and a hashable static rest.

``jax.jit`` needs static arguments to be hashable and dynamic ones to be arrays; a kernel or a model
mixes both (hyperparameters and the function that uses them). :func:`partition` separates them, so
a jitted function can take the static part as a static argument and the leaves as data:
``jit(f, static_argnums=0)(static, leaves)`` with ``static.join(leaves)`` inside.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_array_leaf(value: Any) -> bool:
    """True for numbers and arrays (``bool`` excluded: flags stay static)."""
    numeric = isinstance(value, int | float | np.ndarray | np.generic | jax.Array)
    return numeric and not isinstance(value, bool)


def partition(tree: Any) -> tuple[list, Static]:
    """``(array leaves, static key)`` of ``tree``; ``static.join(leaves)`` rebuilds it."""
    leaves, treedef = jax.tree.flatten(tree)
    is_arr = [is_array_leaf(x) for x in leaves]
    dyn = [x for x, a in zip(leaves, is_arr, strict=True) if a]
    static = tuple(None if a else x for x, a in zip(leaves, is_arr, strict=True))
    return dyn, Static(treedef, static)


def _hashable(x) -> bool:
    try:
        hash(x)
    except TypeError:
        return False
    return True


class Static:
    """The hashable static part of a pytree (see :func:`partition`): its structure and its non-array
    leaves (compared by equality when hashable, else by identity)."""

    def __init__(self, treedef, leaves):
        self.treedef, self.leaves = treedef, leaves

    def __hash__(self):
        return hash((self.treedef, tuple(x if _hashable(x) else id(x) for x in self.leaves)))

    def __eq__(self, other):
        return (isinstance(other, Static) and self.treedef == other.treedef
                and len(self.leaves) == len(other.leaves)
                and all(a is b or (_hashable(a) and _hashable(b) and a == b)
                        for a, b in zip(self.leaves, other.leaves, strict=True)))

    def join(self, dyn):
        it = iter(dyn)
        leaves = [next(it) if s is None else s for s in self.leaves]
        return jax.tree.unflatten(self.treedef, leaves)

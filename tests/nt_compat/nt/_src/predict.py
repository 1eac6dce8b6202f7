"""``neural_tangents._src.predict``: the one helper NT's predict tests import."""

import jax


def _is_on_cpu(x) -> bool:
    """Whether every array leaf of ``x`` lives on a CPU device (NT's helper, for tolerances)."""
    return all(d.platform == "cpu" for a in jax.tree.leaves(x) for d in getattr(a, "devices", lambda: [])())

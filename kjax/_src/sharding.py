"""Mesh helpers shared by every pillar.

``jax.make_mesh`` gives Explicit axes in current JAX; ``shard_map`` over an Explicit mesh then
requires its inputs to be already sharded, and differentiating through it needs a context mesh.
kjax functions take any ``Mesh`` and run ``shard_map`` over an Auto-typed view of the same devices
and axis names, so callers may pass plain arrays, arrays already placed on the mesh, and may ``grad``
and ``vmap`` through the call. Under an active ``jax.set_mesh`` context the context's mesh is used
as given, with inputs resharded explicitly.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from kjax._src.errors import KjaxError, KjaxTypeError, fail


def check_mesh(fn: str, mesh: Any, axis: str | None) -> tuple[Mesh, str]:
    """Validate ``mesh`` and pick the axis to shard over (the only axis, or the one named)."""
    if not isinstance(mesh, Mesh):
        fail(fn, "mesh", "be a jax.sharding.Mesh (e.g. jax.make_mesh((n,), ('data',)))",
             type(mesh).__name__, cls=KjaxTypeError)
    if axis is None:
        if len(mesh.axis_names) != 1:
            fail(fn, "mesh_axis", f"name one of {mesh.axis_names} for a multi-axis mesh", None)
        axis = mesh.axis_names[0]
    if axis not in mesh.axis_names:
        fail(fn, "mesh_axis", f"be one of the mesh's axis names {mesh.axis_names}", repr(axis))
    return mesh, axis


def _context_mesh():
    try:
        m = jax.sharding.get_abstract_mesh()
    except Exception:  # pragma: no cover - very old jax
        return None
    return None if (m is None or m.empty) else m


def auto_view(mesh: Mesh) -> Mesh:
    """The same devices and axis names with every axis typed Auto."""
    if all(t == AxisType.Auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def shard_map_rows(f, mesh: Mesh, axis: str, in_specs, out_specs, args):
    """Run ``shard_map(f)`` on ``args`` over ``mesh``, handling Explicit and Auto axis types."""
    ctx = _context_mesh()
    if ctx is not None:
        if tuple(ctx.axis_names) != tuple(mesh.axis_names) or ctx.shape != mesh.shape:
            raise KjaxError(
                f"kjax: the `mesh` argument {dict(mesh.shape)} differs from the active "
                f"jax.set_mesh context {dict(ctx.shape)}; pass the context's mesh or leave it."
            )
        args = tuple(
            jax.reshard(a, NamedSharding(mesh, s)) if any(
                t == AxisType.Explicit for t in mesh.axis_types) else a
            for a, s in zip(args, in_specs, strict=True)
        )
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs,
                             check_vma=False)(*args)
    m = auto_view(mesh)
    return jax.shard_map(f, mesh=m, in_specs=in_specs, out_specs=out_specs, check_vma=False)(*args)


REPLICATED = P()


def replicate_explicit(tree: Any) -> Any:
    """Reshard leaves whose type carries Explicit mesh axes to replicated.

    An array placed with ``jax.device_put(x, NamedSharding(explicit_mesh, P("data")))`` carries its
    sharding in its type, and ordinary jnp ops on it (padding, scatter) then demand explicit output
    shardings. kjax's blockwise functions re-split the work themselves, so they take a replicated
    view of such inputs first; other leaves are returned as they are.
    """

    def fix(a):
        if not hasattr(a, "dtype"):
            return a
        try:
            sh = jax.typeof(a).sharding
        except Exception:
            return a
        mesh = getattr(sh, "mesh", None)
        if mesh is None or getattr(mesh, "empty", True):
            return a
        spec = getattr(sh, "spec", P())
        used = {n for s in spec if s is not None for n in ((s,) if isinstance(s, str) else s)}
        types = dict(zip(mesh.axis_names, mesh.axis_types, strict=True))
        if any(types.get(n) == AxisType.Explicit for n in used):
            return jax.reshard(a, NamedSharding(mesh, P()))
        return a

    return jax.tree.map(fix, tree)

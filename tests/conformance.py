"""The shared conformance check every public op passes, and the one tolerance table.

``check_op(fn, *args)`` runs ``fn`` plain, under ``jit`` (and checks that a second call does not
retrace), under ``vmap`` over a stacked batch, under ``grad`` (when asked) against central finite
differences, checks the output dtype against the rule given, and runs it inside ``shard_map`` on
the 8-device mesh with replicated inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

#: relative tolerances keyed by dtype (matrices compared by relative Frobenius error)
TOL = {
    np.dtype(np.float64): 1e-10,
    np.dtype(np.float32): 1e-5,
    np.dtype(jnp.bfloat16): 2e-2,
    np.dtype(np.float16): 5e-3,
}


def tol(dtype, scale: float = 1.0) -> float:
    return TOL[np.dtype(dtype)] * scale


def rel_err(a, b) -> float:
    """Relative Frobenius error ``|a - b| / max(|b|, tiny)``, computed in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}"
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def assert_close(a, b, rtol: float, what: str = "") -> None:
    err = rel_err(a, b)
    assert err <= rtol, f"{what} relative error {err:.3e} > {rtol:.1e}"


def check_op(
    fn: Callable,
    *args,
    grad_argnums: Sequence[int] = (),
    vmap_argnums: Sequence[int] = (0,),
    expected_dtype=None,
    rtol: float | None = None,
    mesh=None,
    fd_eps: float = 1e-6,
) -> None:
    """Run ``fn(*args)`` through jit, vmap, grad and shard_map and compare with the plain call."""
    ref = fn(*args)
    leaves = jax.tree.leaves(ref)
    dt = leaves[0].dtype
    if expected_dtype is not None:
        assert all(leaf.dtype == np.dtype(expected_dtype) for leaf in leaves), (
            f"dtype {[leaf.dtype for leaf in leaves]} != {expected_dtype}")
    rtol = tol(dt, 10.0) if rtol is None else rtol

    # jit, and no retrace on a second call with new values of the same shapes
    traces = []

    def counted(*a):
        traces.append(1)
        return fn(*a)

    jitted = jax.jit(counted)
    jax.tree.map(lambda a, b: assert_close(a, b, rtol, "jit"), jitted(*args), ref)
    jitted(*jax.tree.map(lambda a: a * 1 if hasattr(a, "dtype") else a, args))
    assert len(traces) == 1, f"retraced: {len(traces)} traces for two calls"

    # vmap over a batch of 2 along the given arguments
    for i in vmap_argnums:
        batched = list(args)
        batched[i] = jnp.stack([args[i], args[i]])
        in_axes = [0 if j == i else None for j in range(len(args))]
        out = jax.vmap(fn, in_axes=in_axes)(*batched)
        jax.tree.map(lambda o, r: assert_close(o[1], r, rtol, f"vmap(arg {i})"), out, ref)

    # grad vs central finite differences along a random direction (float64 inputs)
    for i in grad_argnums:
        x = args[i]

        def scalar(xi, i=i):
            a = list(args)
            a[i] = xi
            return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(fn(*a)))

        g = jax.grad(scalar)(x)
        d = jax.random.normal(jax.random.key(42), x.shape, x.dtype)
        fd = (scalar(x + fd_eps * d) - scalar(x - fd_eps * d)) / (2 * fd_eps)
        an = jnp.vdot(g, d)
        assert np.isfinite(an), f"grad(arg {i}) is not finite"
        assert abs(float(an - fd)) <= 1e-5 * max(1.0, abs(float(fd))), (
            f"grad(arg {i}): analytic {float(an)} vs finite difference {float(fd)}")

    # inside shard_map on the mesh, replicated inputs and outputs
    if mesh is not None:
        specs = tuple(P() for _ in args)
        sm = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P(),
                                   check_vma=False))
        jax.tree.map(lambda o, r: assert_close(o, r, rtol, "shard_map"), sm(*args), ref)

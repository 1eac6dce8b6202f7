"""The eNTK of a model over a dataset: blockwise, symmetric, sharded, streamed; and its sketches."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from kjax._src import blockwise
from kjax._src.errors import check_in, check_int, fail
from kjax.ntk import _memory
from kjax.ntk._axes import contract_outputs, result_shape
from kjax.ntk._empirical import (
    canonical_implementation,
    choose,
    dataset_block_memory,
    itemsize_of,
    ntk_of,
)
from kjax.ntk._implementations import structured_plan
from kjax.ntk._model import check_x_pair, leaf_paths, make_model, out_shape_full, single_output

PyTree = Any
MODES = ("full", "trace", "diagonal", "pntk")
#: rows per block when ``block_size=None`` and the memory allows it
DEFAULT_BLOCK = 256


def _mode_axes(mode: str, out_ndim: int) -> tuple[tuple, tuple]:
    """(trace, diagonal) over the full output axes (batch axis 0) for each mode."""
    rest = tuple(range(1, out_ndim))
    if mode == "full":
        return (), ()
    if mode == "diagonal":
        return (), rest
    return rest, ()  # trace; pntk applies to the summed model, which has no other axes


def _block_transpose(mode: str, n_out: int):
    """Maps the block fn(xa, xb) to fn(xb, xa) for the mirrored half of a symmetric kernel."""

    def t(block):
        block = jnp.swapaxes(block, 0, 1)
        if mode == "full":
            for i in range(n_out):
                block = jnp.swapaxes(block, 2 + 2 * i, 3 + 2 * i)
        return block

    return t


def _summed(f: Callable, out_size: int) -> Callable:
    def g(params, x, **kw):
        out = f(params, x, **kw)
        out = single_output("kjax.ntk.empirical_ntk", out)
        return jnp.sum(out.reshape(out.shape[0], -1), axis=1, keepdims=True) / np.sqrt(out_size)

    return g


def empirical_ntk(
    f: Callable,
    params: PyTree,
    x1: PyTree,
    x2: PyTree | None = None,
    *,
    mode: str = "trace",
    block_size: int | None = None,
    mesh: Mesh | None = None,
    mesh_axis: str | None = None,
    progress: bool = False,
    out: np.ndarray | None = None,
    implementation: None | str | int = None,
    per_layer: bool = False,
    params_filter: Callable[[str], bool] | None = None,
    apply_kwargs: dict | None = None,
) -> jax.Array | np.ndarray | dict[str, jax.Array]:
    r"""The empirical NTK of ``f`` over a dataset, block by block.

    Examples are processed in row blocks of ``block_size`` (any n: the last block is padded and
    cropped), each block pair with the implementation the cost model picks; with ``x2=None`` only
    the upper block triangle is computed. Blocks can be split over the devices of ``mesh``, and
    streamed into ``out`` (a NumPy array or ``np.memmap``) by a host loop, so a 50k x 50k trace
    kernel is written without ever being held on the device. ``f`` must treat examples
    independently (it is evaluated on ``x[i:i+1]``; neural-tangents' ``vmap_axes=0``).

    Memory guard: before anything runs, the peak memory of one block and of the assembled result
    is estimated from shapes (:mod:`kjax.ntk._memory`); ``block_size=None`` picks the largest
    block that fits, and a call that cannot fit raises at once, naming a ``block_size`` that does
    or ``out=`` for a result too large to hold.

    Modes, for ``f(params, x): [N, O]`` (more output axes are handled the same way):

    * ``"full"``: :math:`\Theta(x_i, x_j) \in \mathbb R^{O\times O}`, shape ``[n1, n2, O, O]``.
    * ``"trace"``: :math:`\frac1O\operatorname{tr}\Theta(x_i, x_j)`, ``[n1, n2]`` (Engel et al.'s
      trace NTK; neural-tangents' default ``trace_axes=(-1,)``).
    * ``"diagonal"``: the per-output kernels :math:`\Theta_{oo}`, ``[n1, n2, O]``.
    * ``"pntk"``: the pseudo-NTK, the eNTK of :math:`\frac{1}{\sqrt O}\sum_o f_o`, ``[n1, n2]``
      (Mohamadi, Bae, Sutherland 2023): one backward pass per example instead of O; it equals
      ``"trace"`` plus the average of the off-diagonal blocks.

    Args:
      f: ``f(params, x, **apply_kwargs) -> [N, ...]``.
      params: pytree of parameters; integer leaves are held fixed.
      x1: inputs ``[n1, ...]`` (a pytree of such arrays is fine).
      x2: inputs ``[n2, ...]`` or None for ``x1`` (symmetric: half the work).
      mode: ``"full"``, ``"trace"``, ``"diagonal"`` or ``"pntk"``.
      block_size: examples per block; None (default) takes the largest block, up to 256, whose
        estimated memory fits with the result.
      mesh: optional ``jax.sharding.Mesh``; block pairs are split over its devices. A mesh
        that spans several processes (``jax.distributed``) works with ``out``: each process
        writes into its own ``out`` the blocks its devices computed (and their mirror images),
        so the union over processes is the kernel. Give every process the same
        ``np.lib.format.open_memmap`` file to assemble it on disk.
      mesh_axis: the mesh axis to split over (None: the mesh's only axis; required on a
        multi-axis mesh).
      progress: show a tqdm bar (host loop).
      out: optional writable NumPy array / ``np.memmap`` of the result's shape (host loop).
      implementation: as in :func:`empirical_ntk_fn` (None: the cost model picks).
      per_layer: return a dict ``{parameter path: kernel}`` of each parameter leaf's contribution
        (they sum to the kernel).
      params_filter: predicate on parameter paths (e.g. ``lambda p: p.startswith("head")``):
        the kernel of that subset only.
      apply_kwargs: keyword arguments for ``f``.

    Returns:
      The kernel (a jax array, or ``out``), or a dict of them with ``per_layer=True``.

    Raises:
      ValueError: unknown mode, mismatched ``x1``/``x2`` example shapes, an empty batch, ``out``
        of the wrong shape or dtype, ``per_layer`` together with ``out``, ``mesh_axis`` missing
        for a multi-axis mesh.
      MemoryError: (``kjax.ntk._memory.KjaxMemoryError``, also a ``ValueError``) one block and
        the assembled result are estimated, from shapes, to exceed the free memory; the message
        names a ``block_size`` that fits, or ``out=`` to stream a result too large to hold.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import empirical_ntk
      >>> f = lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"]
      >>> k1, k2 = jax.random.split(jax.random.key(0))
      >>> p = {"w1": jax.random.normal(k1, (3, 32)), "w2": jax.random.normal(k2, (32, 4))}
      >>> x = jax.random.normal(k1, (10, 3))
      >>> empirical_ntk(f, p, x, block_size=4).shape
      (10, 10)
      >>> empirical_ntk(f, p, x, x[:3], mode="full").shape
      (10, 3, 4, 4)
      >>> sorted(empirical_ntk(f, p, x, per_layer=True))
      ['w1', 'w2']

    References:
      Novak et al., *Fast Finite Width Neural Tangent Kernel*, ICML 2022; Mohamadi, Bae,
      Sutherland, *A Fast, Well-Founded Approximation to the Empirical Neural Tangent Kernel*,
      ICML 2023.
    """
    fn = "kjax.ntk.empirical_ntk"
    check_in(fn, "mode", mode, MODES)
    implementation = canonical_implementation(fn, implementation)
    apply_kwargs = dict(apply_kwargs or {})
    check_x_pair(fn, x1, x2)

    if per_layer:
        if out is not None:
            fail(fn, "per_layer", "be False when `out` is given (one output per layer)", True)
        paths = leaf_paths(params)
        keep = paths if params_filter is None else [p for p in paths if params_filter(p)]
        return {p: empirical_ntk(f, params, x1, x2, mode=mode, block_size=block_size, mesh=mesh,
                                 mesh_axis=mesh_axis, progress=progress,
                                 implementation=implementation, params_filter=_PathIs(p),
                                 apply_kwargs=apply_kwargs)
                for p in keep}

    if out is None and not progress and not apply_kwargs and _hashable(f, params_filter, mesh):
        # the device path: one compiled function per (model, configuration), reused across calls
        run = _compiled(f, mode, block_size, implementation, params_filter, mesh, mesh_axis)
        return run(params, x1, x2)
    return _empirical_ntk(f, params, x1, x2, mode, block_size, mesh, mesh_axis, progress, out,
                          implementation, params_filter, apply_kwargs)


class _PathIs:
    """A hashable parameter-path predicate (so per-layer calls reuse compiled functions)."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, q: str) -> bool:
        return q == self.path

    def __eq__(self, other):
        return isinstance(other, _PathIs) and other.path == self.path

    def __hash__(self):
        return hash(("_PathIs", self.path))


def _hashable(*objs) -> bool:
    try:
        for o in objs:
            hash(o)
    except TypeError:
        return False
    return True


@functools.lru_cache(maxsize=64)
def _compiled(f, mode, block_size, implementation, params_filter, mesh, mesh_axis):
    def run(params, x1, x2):
        return _empirical_ntk(f, params, x1, x2, mode, block_size, mesh, mesh_axis, False, None,
                              implementation, params_filter, {})

    return jax.jit(run)


def _empirical_ntk(f, params, x1, x2, mode, block_size, mesh, mesh_axis, progress, out,
                   implementation, params_filter, apply_kwargs):
    fn = "kjax.ntk.empirical_ntk"
    n1, n2 = check_x_pair(fn, x1, x2)
    probe = make_model(fn, f, params, apply_kwargs, 0, params_filter)
    out_full = out_shape_full(probe, x1)
    g = f
    if mode == "pntk":
        g = _summed(f, int(np.prod(out_full[1:])))
    model = make_model(fn, g, params, apply_kwargs, 0, params_filter)
    out_full = out_shape_full(model, x1)
    example = tuple(out_full[1:])
    trace, diag = _mode_axes(mode, len(out_full))
    (b1, b2), name = _plan_blocks(fn, model, x1, x2, (n1, n2), block_size, example, trace, diag,
                                  implementation, streamed=out is not None or progress)

    def block_fn(xa, xb):
        block_out = (jax.tree.leaves(xa)[0].shape[0], *example)
        choice = choose(model, xa, xb, trace=trace, diag=diag, implementation=name,
                        out_full=block_out, fn=fn)
        return ntk_of(model, xa, xb, trace=trace, diag=diag, out_full=block_out, choice=choice)

    return blockwise.blockwise_gram(block_fn, x1, x2, block_size=(b1, b2), mesh=mesh,
                                    mesh_axis=mesh_axis, out=out, progress=progress,
                                    block_transpose=_block_transpose(mode, len(example)),
                                    fn_name=fn)


def _plan_blocks(fn, model, x1, x2, ns, block_size, example, trace, diag, implementation,
                 streamed):
    """``((b1, b2), implementation name)`` for the blocks, and the memory guard.

    ``block_size=None`` takes the largest block (up to ``DEFAULT_BLOCK``) whose estimated memory
    fits with the result; a given ``block_size`` is checked, and when one block plus the
    assembled result (unless streamed to ``out``) does not fit, the error names what does."""
    n1, n2 = ns
    itemsize = itemsize_of(model, x1)
    free = _memory.available_bytes()
    shape = result_shape((n1, *example), (n2, *example), trace, diag)
    named = isinstance(implementation, str) and implementation != "structured"
    plan = None if named else structured_plan(model, jax.tree.map(lambda a: a[:1], x1))[0]

    def need_of(b):
        return dataset_block_memory(model, implementation, min(b, n1), min(b, n2), example,
                                    trace, diag, itemsize, plan)

    def assembly(b):
        # the device path stacks the blocks, assembles them and mirrors the result: ~3 copies
        if streamed:
            return 2.0 * np.prod(result_shape((min(b, n1), *example), (min(b, n2), *example),
                                              trace, diag)) * itemsize
        return 3.0 * float(np.prod(shape)) * itemsize

    if block_size is None:
        b = DEFAULT_BLOCK
        if free is not None:
            b = max(1, _memory.largest_fitting(lambda b: need_of(b) + assembly(b),
                                               min(DEFAULT_BLOCK, max(n1, n2)),
                                               _memory.HEADROOM * free))
        b1, b2 = min(b, n1), min(b, n2)
    else:
        b1, b2 = blockwise.block_sizes(fn, block_size, n1, n2, None)
    if x2 is None:
        b1 = b2 = min(b1, b2)
    xa = jax.tree.map(lambda a: a[:b1], x1)
    xb = jax.tree.map(lambda a: a[:b2], x1 if x2 is None else x2)
    choice = choose(model, xa, xb, trace=trace, diag=diag, implementation=implementation,
                    out_full=(b1, *example), fn=fn,
                    free=None if free is None else free - assembly(b1))

    def advice(free):
        budget = _memory.HEADROOM * free
        b = _memory.largest_fitting(lambda b: need_of(b) + assembly(b), max(n1, n2), budget)
        if b >= 1:
            return f"use block_size={b}"
        b = max(1, _memory.largest_fitting(need_of, max(n1, n2), budget))
        return (f"pass `out=` (a NumPy array, or np.lib.format.open_memmap(path, mode='w+', "
                f"dtype=..., shape={shape})) to stream the result to host memory or disk, with "
                f"block_size={b}")

    what = (f"one block of block_size={b1} (implementation {choice.impl.name!r})"
            + ("" if streamed else f" and the result {list(shape)}"))
    _memory.check_memory(fn, choice.need + assembly(b1), what, advice)
    return (b1, b2), choice.impl.name


def projected_ntk(
    key: jax.Array,
    f: Callable,
    params: PyTree,
    x1: PyTree,
    x2: PyTree | None = None,
    *,
    num_projections: int,
    mode: str = "trace",
    params_filter: Callable[[str], bool] | None = None,
    apply_kwargs: dict | None = None,
) -> jax.Array:
    r"""A random-projection sketch of the eNTK: :math:`\hat\Theta = (J_1 R)(J_2 R)^\top / k`.

    :math:`R` has ``k = num_projections`` i.i.d. standard Gaussian columns in parameter space, so
    :math:`\mathbb E\hat\Theta = \Theta`; :math:`J R` is computed with ``k`` Jacobian-vector
    products per example and the Jacobian is never formed. Memory is ``O(n O k)`` plus ``k``
    directions the size of the parameters; relative error shrinks like :math:`1/\sqrt k`.

    Args:
      key: PRNG key for the projection.
      f: ``f(params, x, **apply_kwargs) -> [N, ...]``, examples independent.
      params: pytree of parameters (integer leaves fixed).
      x1: inputs ``[n1, ...]``.
      x2: inputs ``[n2, ...]`` or None.
      num_projections: ``k >= 1``.
      mode: ``"full"``, ``"trace"`` or ``"diagonal"`` as in :func:`empirical_ntk`.
      params_filter: predicate on parameter paths selecting the parameters.
      apply_kwargs: keyword arguments for ``f``.

    Returns:
      The sketched kernel with the layout of :func:`empirical_ntk`.

    Raises:
      ValueError: ``num_projections < 1``, unknown mode, an empty batch.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from kjax.ntk import empirical_ntk, projected_ntk
      >>> f = lambda p, x: jnp.tanh(x @ p)
      >>> p = jax.random.normal(jax.random.key(0), (3, 8))
      >>> x = jax.random.normal(jax.random.key(1), (5, 3))
      >>> est = projected_ntk(jax.random.key(2), f, p, x, num_projections=20000)
      >>> exact = empirical_ntk(f, p, x)
      >>> bool(jnp.linalg.norm(est - exact) / jnp.linalg.norm(exact) < 0.05)
      True

    References:
      Park et al., *TRAK: Attributing Model Behavior at Scale*, ICML 2023 (random projections of
      per-example gradients); Mohamadi et al. 2023 (eNTK approximations).
    """
    fn = "kjax.ntk.projected_ntk"
    check_int(fn, "num_projections", num_projections, minimum=1)
    check_in(fn, "mode", mode, ("full", "trace", "diagonal"))
    check_x_pair(fn, x1, x2)
    model = make_model(fn, f, params, dict(apply_kwargs or {}), 0, params_filter)
    sel = model.sel
    keys = jax.random.split(key, len(sel))

    def directions(k):
        return [jax.random.normal(kk, (k,) + model.leaves[i].shape, model.leaves[i].dtype)
                for kk, i in zip(keys, sel, strict=True)]

    dirs = directions(num_projections)

    def sketch(x):
        def one(xi):
            p0 = model.selected_leaves()
            jr = jax.vmap(lambda d: jax.jvp(lambda sub: model.apply_selected(sub, xi), (p0,),
                                            (d,))[1])(dirs)  # [k, *out]
            return jnp.moveaxis(jr, 0, -1)

        return jax.vmap(one)(x)  # [n, *out, k]

    s1 = sketch(x1)
    s2 = s1 if x2 is None else sketch(x2)
    trace, diag = _mode_axes(mode, s1.ndim - 1)
    return contract_outputs(s1, s2, trace, diag, extra=1) / num_projections

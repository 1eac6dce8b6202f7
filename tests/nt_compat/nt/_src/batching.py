"""``neural_tangents._src.batching``: ``batch`` is kjax.ntk.batch; the private helpers are stubs."""

from kjax.ntk import batch  # noqa: F401
from tests.nt_compat.nt._src import internal

_serial = internal("batching", "_serial")
_parallel = internal("batching", "_parallel")
_jit_or_pmap_broadcast = internal("batching", "_jit_or_pmap_broadcast")

"""Bad-input specs for issue #14's ``stax.batch(kernel_fn, ...)(x1, x2, get, pattern=...,
mask_constant=...)``: specs.py's ``kjax.ntk.stax.batch`` spec, with the two keywords passed to the
batched function and their documented errors (``pattern`` not a pair, only one of pattern1 /
pattern2 with ``x2`` given, patterns whose leading axes are not ``n1`` / ``n2``, a non-scalar
``mask_constant``).

(``ConvTranspose(padding="CIRCULAR")`` raises no new error; its spec lives in
specs_stax_structure.py.)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tests.bad_input.specs import NTK_SPECS, STAX_SPECS, Custom, _call_fn_then, normal, replace

_BASE = next(s for s in NTK_SPECS + STAX_SPECS if s.name == "kjax.ntk.stax.batch")


def _values():
    # the base call: x1 [5, 3], x2 [3, 3] (a Dense network ignores graphs it has no Aggregate for)
    return {**_BASE.make(), "pattern": None, "mask_constant": None}


_CUSTOM = (
    Custom("pattern-not-a-pair", lambda v: replace(v, pattern=normal(5, 2, 2)), names=("pattern",)),
    Custom("pattern2-missing", lambda v: replace(v, pattern=(normal(5, 2, 2), None)),
           names=("pattern",)),
    Custom("pattern-rows-not-n1", lambda v: replace(v, pattern=(normal(4, 2, 2), normal(3, 2, 2))),
           names=("pattern",)),
    Custom("pattern-rows-not-n2", lambda v: replace(v, pattern=(normal(5, 2, 2), normal(5, 2, 2))),
           names=("pattern",)),
    Custom("mask_constant-not-scalar", lambda v: replace(v, mask_constant=np.ones(2)),
           names=("mask_constant",)),
    Custom("mask_constant-bool", lambda v: replace(v, mask_constant=True), names=("mask_constant",)),
)

SPECS = [
    dataclasses.replace(
        _BASE,
        make=_values,
        call=_call_fn_then("kernel_fn", "batch_size", "mesh", "mesh_axis", inner=("x1", "x2", "get"),
                           inner_kw=("pattern", "mask_constant")),
        custom=_BASE.custom + _CUSTOM,
    ),
]

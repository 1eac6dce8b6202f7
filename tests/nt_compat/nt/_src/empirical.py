"""``neural_tangents._src.empirical``: the implementation NT's tests default to."""

from kjax.ntk import NtkImplementation

#: NT tests run the STRUCTURED_DERIVATIVES implementation by default (NT's own constant)
_DEFAULT_TESTING_NTK_IMPLEMENTATION = NtkImplementation.STRUCTURED_DERIVATIVES

"""The ``neural_tangents`` of the ported NT tests: NT's public names, taken from kjax.ntk.

The ported files import ``tests.nt_compat.nt`` where NT's import ``neural_tangents``; this module
adds nothing to kjax: every public name below is kjax.ntk's own.
"""

from kjax.ntk import *  # noqa: F403
from kjax.ntk import __all__ as _kjax_all
from kjax.ntk import experimental, predict, stax  # noqa: F401

__version__ = "0.6.5"
__all__ = list(_kjax_all)

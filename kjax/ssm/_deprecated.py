"""Deprecated names of kjax.ssm, kept as aliases that warn (``DeprecationWarning``) and then call the
new function: the ``*_init`` initialisers are now ``init_*``, as in every pillar."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

from kjax.ssm._hyena import init_hyena
from kjax.ssm._rtf import init_rtf
from kjax.ssm._s4d import init_s4d
from kjax.ssm._sgconv import init_sgconv


def alias(new: Callable, old_name: str) -> Callable:
    """``old_name`` as a deprecated alias of ``new``: same signature and result, plus a warning."""
    message = (f"kjax.ssm.{old_name} is deprecated and will be removed; use kjax.ssm.{new.__name__} "
               "(same arguments, same result).")

    @functools.wraps(new)
    def deprecated(*args, **kwargs):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return new(*args, **kwargs)

    deprecated.__name__ = deprecated.__qualname__ = old_name
    deprecated.__doc__ = (f"Deprecated alias of :func:`kjax.ssm.{new.__name__}` "
                          "(warns ``DeprecationWarning``).")
    return deprecated


s4d_init = alias(init_s4d, "s4d_init")
rtf_init = alias(init_rtf, "rtf_init")
hyena_init = alias(init_hyena, "hyena_init")
sgconv_init = alias(init_sgconv, "sgconv_init")


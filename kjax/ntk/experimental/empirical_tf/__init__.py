"""neural-tangents' ``nt.experimental.empirical_tf`` package path (its module ``empirical``)."""

from kjax.ntk.experimental.empirical_tf import empirical

__all__ = ["empirical"]

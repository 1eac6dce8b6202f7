"""neural-tangents' ``nt.experimental``: the empirical NTK of TensorFlow models.

:func:`empirical_ntk_fn_tf` and :func:`get_apply_fn_and_params` live in
:mod:`kjax.ntk.experimental.empirical_tf.empirical`, NT's module path. TensorFlow and tf2jax are
optional (``pip install "kjax[tf]"``) and imported only when these functions are called.
"""

from kjax.ntk.experimental import empirical_tf
from kjax.ntk.experimental.empirical_tf.empirical import empirical_ntk_fn_tf, get_apply_fn_and_params

__all__ = ["empirical_ntk_fn_tf", "empirical_tf", "get_apply_fn_and_params"]

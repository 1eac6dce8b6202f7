"""Root conftest: runs before any test or doctest touches a JAX backend.

Every test run sees 8 CPU devices (so sharding is exercised on every run) and float64 enabled
(tests state their dtypes explicitly; references are checked in float64).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_enable_x64", True)

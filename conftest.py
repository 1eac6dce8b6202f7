"""Root conftest: runs before any test or doctest touches a JAX backend.

Every test run sees 8 CPU devices (so sharding is exercised on every run) and float64 enabled
(tests state their dtypes explicitly; references are checked in float64).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests run thousands of tiny compilations; LLVM's optimisation passes dominate their cost and
# buy nothing at these sizes (about 25% off the suite's time). Benchmarks never load this file.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_enable_x64", True)

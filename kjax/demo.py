"""``make demo`` / ``python -m kjax.demo``: a short tour that prints what it computes and checks it.

Each pillar contributes a section module ``kjax/<pillar>/_demo.py`` with ``TITLE`` and ``run()``;
``run()`` prints its results and returns True when its checks passed.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

SECTIONS = ["kernels", "ntk", "attention", "ssm", "regression"]


def _setup_devices() -> None:
    """On CPU, expose one JAX device per core so the sharded paths run on a laptop too."""
    if os.environ.get("JAX_PLATFORMS", "cpu") in ("", "cpu"):
        import jax

        jax.config.update("jax_num_cpu_devices", max(2, os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _setup_devices()
    import jax

    print(f"kjax demo: jax {jax.__version__}, backend {jax.default_backend()}, "
          f"{len(jax.devices())} device(s)")
    wanted = argv or SECTIONS
    ok = True
    for name in wanted:
        try:
            mod = importlib.import_module(f"kjax.{name}._demo")
        except ModuleNotFoundError:
            continue
        print(f"\n== {mod.TITLE} ==")
        t0 = time.perf_counter()
        passed = bool(mod.run())
        print(f"-- {'PASS' if passed else 'FAIL'} ({time.perf_counter() - t0:.1f} s)")
        ok &= passed
    print("\nall checks passed" if ok else "\nSOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

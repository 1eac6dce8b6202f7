"""Shared benchmark helpers: machine header, median timing of compiled code, peak RSS, tables."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                       text=True, stderr=subprocess.DEVNULL).strip()
    except Exception:
        return "unknown"


def machine() -> dict:
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "nproc": os.cpu_count(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": len(jax.devices()),
            "commit": git_commit(), "load": os.getloadavg()[0],
            "python": platform.python_version()}


def header(title: str) -> dict:
    m = machine()
    print(f"# {title}")
    print(f"# machine: {m['cpu']}, {m['nproc']} cores, backend {m['backend']} "
          f"({m['devices']} device(s)); jax {m['jax']}; commit {m['commit']}; "
          f"load average {m['load']:.2f}")
    return m


def block(x):
    import jax

    return jax.block_until_ready(x)


def time_median(fn: Callable, *args, repeats: int = 5, warmup: int = 1,
                max_seconds: float = 60.0) -> float:
    """Median wall time of ``fn(*args)`` (compiled, after ``warmup`` calls) in seconds."""
    for _ in range(warmup):
        block(fn(*args))
    times = []
    start = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn(*args))
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > max_seconds:
            break
    times.sort()
    return times[len(times) // 2]


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_child(code: str, env: dict | None = None, timeout: float = 1800) -> dict:
    """Run ``code`` in a fresh Python (this interpreter); it prints one JSON line, returned here."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)

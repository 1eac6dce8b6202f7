"""Run every benchmark script in turn (``make bench``); each prints its own table and machine.

    python benchmarks/run_all.py                 # all
    python benchmarks/run_all.py kernels ntk     # some
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ALL = ["kernels", "ntk", "stax", "attention", "ssm", "regression"]
EXTRA_ARGS = {"regression": ["--real"]}  # the flights table (the bench extra, installed by make bench)


def main(argv: list[str]) -> int:
    names = argv or ALL
    failed = []
    for name in names:
        script = os.path.join(HERE, f"bench_{name}.py")
        if not os.path.exists(script):
            print(f"no benchmark named {name!r} ({script})", file=sys.stderr)
            failed.append(name)
            continue
        print(f"\n===== bench_{name}.py =====", flush=True)
        if subprocess.run([sys.executable, script, *EXTRA_ARGS.get(name, [])]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

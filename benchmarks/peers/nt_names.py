"""NT 0.6.5's public names and their status in kjax: the table of docs/migration_nt.md.

Two steps, one per environment:

    JAX_PLATFORMS=cpu benchmarks/.peers/nt/bin/python benchmarks/peers/nt_names.py dump
        -> benchmarks/peers/nt_public_names.txt (``module name`` per line, from dir() of NT)
    .venv/bin/python benchmarks/peers/nt_names.py table
        -> prints the markdown table: each name, whether kjax has it, and where
"""

from __future__ import annotations

import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIST = os.path.join(HERE, "nt_public_names.txt")
MODULES = {"neural_tangents": "kjax.ntk", "neural_tangents.stax": "kjax.ntk.stax",
           "neural_tangents.predict": "kjax.ntk.predict",
           "neural_tangents.experimental": "kjax.ntk.experimental"}
#: NT modules that kjax maps elsewhere or leaves out on purpose
NOTES = {
    "neural_tangents.stax.__version__": "",
}


def dump() -> None:
    rows = []
    for mod in MODULES:
        m = importlib.import_module(mod)
        for name in sorted(dir(m)):
            if name.startswith("_"):
                continue
            obj = getattr(m, name)
            foreign_module = type(obj).__name__ == "module" and not obj.__name__.startswith("neural_tangents")
            if getattr(obj, "__module__", "") in ("typing", "builtins") or foreign_module:
                continue
            rows.append(f"{mod} {name}")
    with open(LIST, "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"wrote {LIST} ({len(rows)} names)")


def table() -> None:
    with open(LIST) as f:
        rows = [line.split() for line in f if line.strip()]
    have = 0
    print("| neural-tangents | kjax | status |")
    print("|---|---|---|")
    for mod, name in rows:
        kmod = importlib.import_module(MODULES[mod])
        ok = hasattr(kmod, name)
        have += ok
        note = NOTES.get(f"{mod}.{name}", "")
        status = "yes" if ok else ("**missing**" + (f": {note}" if note else ""))
        print(f"| `{mod.replace('neural_tangents', 'nt')}.{name}` | `{MODULES[mod]}.{name}` | {status} |")
    print(f"\n{have} of {len(rows)} NT public names exist in kjax.")


if __name__ == "__main__":
    {"dump": dump, "table": table}[sys.argv[1]]()

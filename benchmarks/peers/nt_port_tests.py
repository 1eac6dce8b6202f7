"""Port neural-tangents 0.6.5's own test suite into tests/nt_compat/, switching only the imports.

Reads NT's tests/ and examples/ at the v0.6.5 tag from the mirrored git repository (or a checkout
given by ``--src``) and writes them under tests/nt_compat/ with each import line rewritten by the
table ``RULES`` below (``neural_tangents`` -> the shim package ``tests.nt_compat.nt``, NT's
``tests.test_utils`` and ``examples`` -> their copies, and the jax imports that moved since jax
0.4.23 -> their modern homes). Nothing else in a file changes. Rerun after a change of the rules:

    .venv/bin/python benchmarks/peers/nt_port_tests.py
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIRROR = "/work/.mirror/google+neural-tangents/repo"
TAG = "v0.6.5"
DEST = os.path.join(ROOT, "tests", "nt_compat")

#: NT files ported; imdb_test (downloads IMDB through tensorflow_datasets) is left out (see
#: tests/nt_compat/README.md). The experimental/ ones need TensorFlow (kjax's ``tf`` extra).
TESTS = ["batching_test", "elementwise_numerical_test", "elementwise_test", "empirical_ntk_test",
         "empirical_test", "function_space_test", "infinite_fcn_test", "monte_carlo_test", "predict_test",
         "rules_test", "weight_space_test", "stax/branching_test", "stax/combinators_test",
         "stax/elementwise_test", "stax/linear_test", "stax/requirements_test", "stax/stax_test",
         "experimental/empirical_tf_test", "experimental/empirical_ntk_tf_test"]
EXAMPLES = ["elementwise", "elementwise_numerical", "empirical_ntk", "function_space", "infinite_fcn",
            "util", "weight_space", "experimental/empirical_ntk_tf"]

#: (pattern on an import line, replacement); applied in order, to import lines only
RULES = [
    (r"^import neural_tangents as nt$", "from tests.nt_compat import nt"),
    (r"^from neural_tangents(\._src[\w.]*)? import ", r"from tests.nt_compat.nt\1 import "),
    (r"^from neural_tangents import ", "from tests.nt_compat.nt import "),
    (r"^from tests import test_utils$", "from tests.nt_compat import test_utils"),
    (r"^from examples import ", "from tests.nt_compat.examples import "),
    (r"^from examples\.(\w+) import ", r"from tests.nt_compat.examples.\1 import "),
    (r"^from jax import tree_map$", "from jax.tree_util import tree_map"),
    (r"^from jax.core import Primitive$", "from jax.extend.core import Primitive"),
    (r"^import more_itertools$", "from tests.nt_compat import _more_itertools as more_itertools"),
]


def show(path: str, src: str | None) -> str:
    if src:
        with open(os.path.join(src, path)) as f:
            return f.read()
    return subprocess.run(["git", "-C", MIRROR, "show", f"{TAG}:{path}"], check=True, capture_output=True,
                          text=True).stdout


def switch_imports(text: str) -> tuple[str, int]:
    out, changed = [], 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        if body.startswith(("import ", "from ")):
            new = body
            for pat, rep in RULES:
                new = re.sub(pat, rep, new)
            if new != body:
                changed += 1
                line = new + "\n"
        out.append(line)
    return "".join(out), changed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", help="a neural-tangents checkout at 0.6.5 instead of the mirror")
    args = ap.parse_args()
    for name in TESTS:
        text, n = switch_imports(show(f"tests/{name}.py", args.src))
        path = os.path.join(DEST, f"{name}.py")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        print(f"tests/{name}.py: {n} import lines switched")
    text, n = switch_imports(show("tests/test_utils.py", args.src))
    with open(os.path.join(DEST, "test_utils.py"), "w") as f:
        f.write(text)
    print(f"tests/test_utils.py (shim): {n} import lines switched")
    os.makedirs(os.path.join(DEST, "examples"), exist_ok=True)
    for name in EXAMPLES:
        text, n = switch_imports(show(f"examples/{name}.py", args.src))
        path = os.path.join(DEST, "examples", f"{name}.py")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        print(f"examples/{name}.py: {n} import lines switched")
    for pkg in ("", "stax", "examples", "experimental", os.path.join("examples", "experimental")):
        init = os.path.join(DEST, pkg, "__init__.py")
        if not os.path.exists(init):
            with open(init, "w") as f:
                f.write('"""Ported from neural-tangents 0.6.5 (see tests/nt_compat/README.md)."""\n')


if __name__ == "__main__":
    main()

"""No kjax module uses another module's private names (``_name``), by import or attribute.

Private *modules* (``kjax.attention._xla``) are a package's internals and may be imported inside
kjax; a private *name* inside a module is that module's own. Helpers shared across modules get a
public name in their module (or move to ``kjax/_src``). Ruff's PLC2701 checks imports from other
packages only, so this test covers imports inside kjax.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _is_module(root: pathlib.Path, dotted: str) -> bool:
    p = root.joinpath(*dotted.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses(root: pathlib.Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / "kjax").rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {}  # local alias -> kjax module it names
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kjax"):
                for a in node.names:
                    dotted = f"{node.module}.{a.name}"
                    if a.name != "*" and _is_module(root, dotted):
                        modules[a.asname or a.name] = dotted
                    elif _private(a.name):
                        found.append(f"{path.relative_to(root)}:{node.lineno}: imports {a.name} from {node.module}")
            elif isinstance(node, ast.Import):
                modules.update({a.asname or a.name: a.name for a in node.names if a.name.startswith("kjax")})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and _private(node.attr) and not _is_module(root, f"{modules[node.value.id]}.{node.attr}")):
                found.append(f"{path.relative_to(root)}:{node.lineno}: uses {node.value.id}.{node.attr}")
    return found


def test_no_private_names_across_modules():
    assert private_uses() == []


def test_the_check_sees_a_private_import(tmp_path):
    pkg = tmp_path / "kjax" / "pillar"
    pkg.mkdir(parents=True)
    (tmp_path / "kjax" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "_a.py").write_text("def _helper():\n    return 1\n")
    (pkg / "_b.py").write_text("from kjax.pillar._a import _helper\nfrom kjax.pillar import _a\nx = _a._helper()\n")
    found = private_uses(tmp_path)
    assert len(found) == 2 and "imports _helper" in found[0] and "uses _a._helper" in found[1]

"""kjax.ntk's module structure: no private names across modules, no import cycles, API unchanged."""

from __future__ import annotations

import ast
import pathlib

import kjax.ntk
import kjax.ntk.stax

ROOT = pathlib.Path(kjax.ntk.__file__).parent
PKG = "kjax.ntk"


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        yield ".".join([PKG, *parts]), path, path.name == "__init__.py"


def _is_module(name: str) -> bool:
    rel = pathlib.Path(*name.split(".")[2:]) if name.count(".") >= 2 else pathlib.Path()
    return (ROOT / rel).with_suffix(".py").exists() or (ROOT / rel / "__init__.py").exists()


def _imports(name, path, is_pkg):
    """(imported kjax.ntk module, names imported from it, local aliases of kjax.ntk modules)."""
    tree = ast.parse(path.read_text())
    base = name if is_pkg else name.rsplit(".", 1)[0]
    edges, private, aliases = set(), [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                mod = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1] + ([mod] if mod else []))
            if not mod.startswith(PKG):
                continue
            for a in node.names:
                full = f"{mod}.{a.name}"
                if _is_module(full):
                    edges.add(full)
                    aliases[a.asname or a.name] = full
                else:
                    edges.add(mod)
                    if a.name.startswith("_"):
                        private.append(f"from {mod} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(PKG):
                    edges.add(a.name)
                    if a.asname:
                        aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            private.append(f"{node.value.id}.{node.attr}")
    return edges - {name}, private


def test_no_private_names_across_modules():
    bad = {name: priv for name, path, pkg in _modules() if (priv := _imports(name, path, pkg)[1])}
    assert not bad, bad


def test_no_import_cycles():
    graph = {name: _imports(name, path, pkg)[0] for name, path, pkg in _modules()}
    # a package's __init__ importing its own submodules is not a cycle; submodule -> package is
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join([*stack, node, nxt]))
            if state.get(nxt) is None:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_public_api_keeps_every_earlier_name():
    """The module splits and the NT-parity additions removed no public name."""
    assert set(kjax.ntk.__all__) >= {
        "analysis", "choose_implementation", "empirical_kernel_fn", "empirical_nngp_fn",
        "empirical_ntk", "empirical_ntk_fn", "from_linen", "from_nnx", "monte_carlo_kernel_fn",
        "predict", "projected_ntk", "stax"}
    assert set(kjax.ntk.stax.__all__) >= {
        "ABRelu", "AvgPool", "Conv", "Dense", "Erf", "FanInConcat", "FanInSum", "FanOut", "Flatten",
        "Gelu", "GlobalAvgPool", "Identity", "Kernel", "KernelFn", "LayerNorm", "LeakyRelu", "Relu",
        "batch", "parallel", "serial"}
    for mod in (kjax.ntk, kjax.ntk.stax):
        for name in mod.__all__:
            assert getattr(mod, name) is not None

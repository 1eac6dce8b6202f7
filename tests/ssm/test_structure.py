"""The layout of kjax.ssm: one module per filter family, no private names imported across modules,
no import cycles, the FFT convolution implemented once (in kjax/_src/fft.py)."""

import ast
import importlib.util
import pathlib

import kjax.ssm

SSM = pathlib.Path(kjax.ssm.__file__).parent
ROOT = SSM.parent
OWN = [*sorted(SSM.glob("*.py")), ROOT / "nn" / "_ssm.py", ROOT / "_src" / "fft.py"]


def _module(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, AttributeError):  # "pkg.mod.func": mod is not a package
        return False


def _imports(path: pathlib.Path):
    """``(module, name)`` for every ``from module import name`` in the file, nested ones included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name


def test_one_module_per_family_and_none_oversized():
    names = {p.stem for p in SSM.glob("*.py")}
    assert {"_s4d", "_rtf", "_stu", "_hyena", "_sgconv", "_regularizers", "_checks"} <= names
    assert "_filters" not in names
    sizes = {p.name: len(p.read_text().splitlines()) for p in SSM.glob("*.py")}
    assert max(sizes.values()) <= 400, sizes


def test_no_private_names_imported_across_modules():
    """``from m import _x`` only for private *modules* (``from kjax.ssm import _checks``), never for
    a private function or constant of another module."""
    bad = []
    for path in OWN:
        for module, name in _imports(path):
            if name.startswith("_") and module.startswith("kjax"):
                if not _is_module(f"{module}.{name}"):
                    bad.append(f"{path.name}: from {module} import {name}")
    assert not bad, bad


def test_no_import_cycles_in_ssm():
    graph = {}
    for path in SSM.glob("*.py"):
        deps = set()
        for module, name in _imports(path):
            for target in (module, f"{module}.{name}"):
                if target.startswith("kjax.ssm.") and _is_module(target):
                    deps.add(target)
        graph[_module(path)] = deps - {_module(path)}

    def visit(node, stack):
        assert node not in stack, f"import cycle: {' -> '.join([*stack, node])}"
        for nxt in graph.get(node, ()):
            visit(nxt, [*stack, node])

    for node in graph:
        if node != "kjax.ssm":  # the package re-exports; nothing in it imports it back
            visit(node, [])
    assert not any("kjax.ssm" == d for deps in graph.values() for d in deps)


def test_one_fft_convolution():
    """The real-FFT convolution is written once, in kjax/_src/fft.py: fftconv's XLA path calls it
    (its reference is a direct time-domain sum, the Pallas kernels are split-DFT matmuls). The only
    inverse FFTs left in kjax.ssm are not convolutions of two signals: the RTF filter's rational
    spectrum and the FNO's truncated, channel-mixed modes."""
    with_ifft = {p.name for p in [*SSM.glob("*.py"), ROOT / "nn" / "_ssm.py"]
                 if "fft.irfft" in p.read_text() or "fft.ifft" in p.read_text()}
    assert with_ifft == {"_rtf.py", "_spectral.py"}, with_ifft
    assert "fft_linear_conv(" in (SSM / "_xla.py").read_text()
    assert "jnp.fft" not in (SSM / "_reference.py").read_text()

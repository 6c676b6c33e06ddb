"""The package's import structure: no cycles, and imports point down only.

The imports are read with ``ast`` (nothing is executed), function-level
imports included: a lazy import is still a dependency. Each module belongs to
a layer (DESIGN.md, "Layout"; ``zskip/host/__init__.py``) and may import only
its own layer and those ``ALLOWED`` lists for it.
"""
import ast
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: folders of the repository that are not part of the installed package
NOT_PACKAGE = {"tests", "bench", "hls", "build", "dist"}

#: layer -> the layers its modules may import (besides their own)
ALLOWED = {
    "zskip": set(),
    "models": {"zskip"},
    "overlay": {"zskip"},
    "notebooks": {"zskip"},
    "host.ip": {"zskip", "models", "overlay"},
    "host.devices": {"zskip", "models", "overlay", "host.ip"},
    "host.runtime": {"zskip", "models", "overlay", "host.ip", "host.devices"},
    "host.backends": {"zskip", "models", "overlay", "host.ip", "host.devices", "host.runtime"},
    "host.bench": {"zskip", "models", "overlay", "host.ip", "host.devices", "host.runtime", "host.backends"},
    "host.cli": {"zskip", "models", "overlay", "host.ip", "host.devices", "host.runtime", "host.backends",
                 "host.bench"},
    # host/__init__ only re-exports the public entry point
    "host": {"host.runtime"},
}


def package_modules(root: Path, package: str = "zskip") -> Dict[str, Path]:
    """Dotted module name -> file, for every .py of the package rooted at ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in NOT_PACKAGE or rel.parts[0].startswith("."):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join([package] + parts)] = path
    return modules


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(root: Path, package: str = "zskip", unresolved: Optional[List[str]] = None) -> Dict[str, Set[str]]:
    """Module -> the package modules it imports (anywhere in its body).

    ``unresolved`` collects "module: target" for imports of the package that
    name no module of it (a moved module's stale path)."""
    modules = package_modules(root, package)
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                # `from pkg import mod` depends on the submodule when it is one
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t in modules and t != name)
            if unresolved is not None:
                unresolved.extend(f"{name}: {t}" for t in targets
                                  if (t == package or t.startswith(package + ".")) and t not in modules)
        graph[name] = deps
    return graph


def layer(module: str, package: str = "zskip") -> str:
    parts = module.split(".")[1:]
    if not parts:
        return package
    # host's sub-packages and its top modules (backends, cli) are layers of their own
    return "host." + parts[1] if parts[0] == "host" and len(parts) > 1 else parts[0]


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every elementary cycle found by a depth-first walk (each reported once, as a path)."""
    found, seen_keys = [], set()
    state: Dict[str, int] = {}

    def visit(node: str, stack: List[str]):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cyc = stack[stack.index(dep):] + [dep]
                key = frozenset(cyc)
                if key not in seen_keys:
                    seen_keys.add(key)
                    found.append(cyc)
            elif dep not in state:
                visit(dep, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def forbidden(graph: Dict[str, Set[str]]) -> List[Tuple[str, str]]:
    """(importer, imported) pairs whose layers ALLOWED does not permit."""
    bad = []
    for mod, deps in graph.items():
        own = layer(mod)
        allowed = ALLOWED.get(own)
        for dep in deps:
            other = layer(dep)
            if other != own and (allowed is None or other not in allowed):
                bad.append((mod, dep))
    return sorted(bad)


def test_every_module_has_a_layer():
    graph = import_graph(ROOT)
    assert "zskip.host.runtime.accelerator" in graph and "zskip.models.step" in graph
    assert sorted({layer(m) for m in graph} - set(ALLOWED)) == []


def test_every_package_import_names_a_module():
    unresolved: List[str] = []
    import_graph(ROOT, unresolved=unresolved)
    assert unresolved == []


def test_no_import_cycles():
    assert cycles(import_graph(ROOT)) == []


def test_imports_point_down():
    assert forbidden(import_graph(ROOT)) == []


def _plant(tmp_path: Path, files: Dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_a_planted_cycle_is_found(tmp_path):
    root = _plant(tmp_path, {
        "__init__.py": "", "host/__init__.py": "", "host/runtime/__init__.py": "",
        "host/runtime/a.py": "from .b import x\n",
        "host/runtime/b.py": "def f():\n    from . import a  # lazy, still a cycle\n",
    })
    found = cycles(import_graph(root))
    assert len(found) == 1 and set(found[0]) == {"zskip.host.runtime.a", "zskip.host.runtime.b"}


@pytest.mark.parametrize("importer, text, target", [
    ("models/train.py", "from ..host.runtime.streaming import Batch\n", "zskip.host.runtime.streaming"),
    ("overlay/zskip_overlay.py", "def f():\n    from ..host.devices import pynq_device\n",
     "zskip.host.devices.pynq_device"),
    ("host/devices/emu.py", "from ..runtime import accelerator\n", "zskip.host.runtime.accelerator"),
])
def test_a_planted_upward_import_is_found(tmp_path, importer, text, target):
    files = {"__init__.py": "", "models/__init__.py": "", "overlay/__init__.py": "", "host/__init__.py": "",
             "host/devices/__init__.py": "", "host/runtime/__init__.py": "",
             "host/runtime/streaming.py": "", "host/runtime/accelerator.py": "",
             "host/devices/pynq_device.py": ""}
    files[importer] = text
    root = _plant(tmp_path, files)
    importer_mod = "zskip." + importer[:-3].replace("/", ".")
    assert forbidden(import_graph(root)) == [(importer_mod, target)]

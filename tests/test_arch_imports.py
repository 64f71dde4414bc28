"""The package has no import cycles: read from the source (ast), every import counts — at module level, inside a
function (a lazy import hides a cycle, it does not remove it) and under `if TYPE_CHECKING:`.

An import names the module that holds the name: `from malsori.lm.ngram import NgramLM` is an edge to
malsori.lm.ngram, `from malsori.decode import DecodeOptions` an edge to the package `malsori.decode` (its
`__init__`). A package's `__init__` may offer its submodules' names (Python sets the package up before any of
its submodules runs); in exchange no module inside a package takes a name from that package's `__init__`, so such
re-exports can never close a cycle. The root `malsori/__init__.py` is the exception both ways: it imports nothing at
module level (its `malsori.load` imports the Recognizer when called), so any module may call `malsori.load`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import malsori

ROOT = Path(malsori.__file__).resolve().parent


def module_files(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package `__init__`) for every .py file under the package folder `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def imports(modules: dict[str, tuple[Path, bool]]) -> dict[str, set[str]]:
    """Module → the modules of the package it imports (anywhere in its source), resolved to the module that
    holds each imported name; relative imports are resolved against the module's package."""
    def holder(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                edges.update(filter(None, (holder(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
                for a in node.names:  # a submodule when there is one of that name, else a name of `base` itself
                    target = f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    edges.update(filter(None, [holder(target)]))
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def imports_from_own_package(modules: dict[str, tuple[Path, bool]], graph: dict[str, set[str]]) -> list[str]:
    """'a.b.c -> a.b' for every module that takes names from the `__init__` of a package it lies in (the root
    package excepted)."""
    return [f"{name} -> {target}" for name, targets in sorted(graph.items()) for target in sorted(targets)
            if modules[target][1] and "." in target and name.startswith(target + ".")]


def test_malsori_has_no_import_cycle():
    modules = module_files(ROOT)
    graph = imports(modules)
    assert len(modules) > 50 and sum(map(len, graph.values())) > 200  # the whole package was read
    assert cycles(graph) == []


def test_no_module_takes_names_from_its_own_package_init():
    modules = module_files(ROOT)
    assert imports_from_own_package(modules, imports(modules)) == []


def test_the_root_package_imports_nothing_when_imported():
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    assert not [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]


def write_package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "pkg"


def test_a_lazy_or_type_only_cycle_is_found(tmp_path):
    root = write_package(tmp_path, {
        "__init__.py": "",
        "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.high import High\n",
        "high.py": "from pkg.low import thing\n",
        "a.py": "def f():\n    from . import b\n",
        "sub/__init__.py": "",
        "b.py": "from .sub import c\n",
        "sub/c.py": "import pkg.a\n",
        "alone.py": "import os\nfrom pkg import low\n",
    })
    assert cycles(imports(module_files(root))) == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.high", "pkg.low"]]


def test_a_name_taken_from_the_own_package_init_is_found(tmp_path):
    root = write_package(tmp_path, {
        "__init__.py": "from pkg.options import Options\n",
        "options.py": "X = 1\n",
        "search.py": "from pkg import Options\nfrom pkg.options import X\n",
        "sub/__init__.py": "",
        "sub/d.py": "from pkg.sub import e\nfrom pkg.sub import f\n",
        "sub/e.py": "",
        "sub/f.py": "from pkg.sub import g\n",
    })
    modules = module_files(root)
    graph = imports(modules)
    assert cycles(graph) == []  # no cycle yet: it closes the day __init__ offers a name of search
    assert imports_from_own_package(modules, graph) == ["pkg.sub.f -> pkg.sub"]  # g is no submodule: a name of sub


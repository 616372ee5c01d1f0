"""No import cycle among upo's modules.

A cycle closed by an import inside a function still runs (the function imports late), but it ties
modules together that should not know each other, and it fails as soon as someone moves that import
to the top of the file. So every import counts here: top level, inside functions and under
TYPE_CHECKING. Relative imports are resolved to module names, and `from package import name` is an
edge to the submodule when `name` is one, else to the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(src: Path, package: str) -> dict[str, Path]:
    """Module name -> file for every module of `package` under `src` (a package is its
    __init__.py)."""
    files = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def absolute(module: str | None, level: int, package: str) -> str:
    """The module a `from` import names: `from ..x import y` in package a.b.c is a.b.x."""
    if level == 0:
        return module or ""
    base = package.split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that module `name` (file `path`) imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node.module, node.level, package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return (found & modules) - {name}


def import_graph(src: Path = SRC, package: str = "upo") -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    files = module_files(src, package)
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None; the same one on every run."""
    on_path: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        on_path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                return on_path[on_path.index(nxt) :] + [nxt]
            if nxt not in done:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        on_path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        if node not in done:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_upo_has_no_import_cycle():
    graph = import_graph()
    # the graph sees imports inside functions: the command groups are imported that way
    assert {"upo.cli.data", "upo.cli.eval", "upo.cli.policy"} <= graph["upo.cli"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}}) == ["y", "z", "y"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_are_resolved_in_a_synthetic_package(tmp_path):
    files = {
        "pkg/__init__.py": "from . import a\n",
        "pkg/a.py": "import os\n\n\ndef late():\n    from .sub import b\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "from typing import TYPE_CHECKING\n\nfrom pkg import sub\n\n"
        "if TYPE_CHECKING:\n    from ..a import late\n",
        "pkg/sub/c.py": "import pkg.sub.b\nfrom . import missing\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},  # from inside a function
        "pkg.sub": set(),
        "pkg.sub.b": {"pkg.sub", "pkg.a"},  # `from pkg import sub`, and TYPE_CHECKING
        "pkg.sub.c": {"pkg.sub.b", "pkg.sub"},  # not a submodule: the package
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def package_graph(graph: dict[str, set[str]], depth: int = 2) -> dict[str, set[str]]:
    """The module graph seen one level down: every module counts as the subpackage or top-level
    module of upo it belongs to (upo.policies.lookahead -> upo.policies). The package itself
    (upo/__init__.py, which re-exports the API lazily) is left out."""

    def unit(name: str) -> str:
        return ".".join(name.split(".")[:depth])

    packages: dict[str, set[str]] = {}
    for name, targets in graph.items():
        if name.count(".") == 0:
            continue
        edges = packages.setdefault(unit(name), set())
        edges.update(unit(t) for t in targets if t.count(".") > 0 and unit(t) != unit(name))
    return packages


def test_upo_packages_have_no_import_cycle():
    """No loop between upo's packages either (decode <-> policies was one: the lookahead search
    imported the decode loop, which imports the policies; the loop now hands itself over in
    StepState.decode)."""
    packages = package_graph(import_graph())
    assert "upo.policies" in packages["upo.decode"]
    cycle = find_cycle(packages)
    assert cycle is None, "package import cycle: " + " -> ".join(cycle)


def test_package_graph_collapses_modules():
    graph = {"p": {"p.a"}, "p.a.x": {"p.b.y", "p.a.z"}, "p.b.y": {"p.a"}, "p.a.z": set()}
    assert package_graph(graph) == {"p.a": {"p.b"}, "p.b": {"p.a"}}
    assert find_cycle(package_graph(graph)) == ["p.a", "p.b", "p.a"]

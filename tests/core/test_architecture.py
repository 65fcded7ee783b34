"""The architecture of docs/architecture.md holds in the code.

- the import-linter contract in pyproject.toml (layers core <- plugins <- runner <- outputs <- cli,
  plugins that do not import each other) is kept; every import counts, lazy ones included;
- the import graph of harness/ has no cycle;
- no private name (``_x``) is imported from another package of the harness;
- no attribute of a library object is assigned from the harness (no monkeypatching);
- docs/architecture.md draws the layers of the contract, and nothing else.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from harness import REPO_ROOT

PACKAGE = REPO_ROOT / "harness"


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")


def harness_imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported from it, line) of every harness import in a file, lazy ones
    inside functions included; relative imports resolved."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target == "harness" or target.startswith("harness."):
                found.append((target, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names
                      if alias.name == "harness" or alias.name.startswith("harness.")]
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def resolve(target: str) -> str | None:
    """The module a dotted import names (``harness.a.b`` may be the attribute ``b`` of ``harness.a``)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges = set()
        for target, names, _ in harness_imports(path):
            for candidate in [f"{target}.{n}" for n in names] or [target]:
                module = resolve(candidate) if candidate in MODULES else resolve(target)
                if module and module != name:
                    edges.add(module)
        graph[name] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components with more than one module (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def top_package(module: str) -> str:
    """``harness.metrics.miou`` -> ``harness.metrics``; a top-level module is its own package."""
    return ".".join(module.split(".")[:2])


def contract_layers() -> list[str]:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers"]
    return contract["layers"]


def test_the_import_linter_contract_is_kept(monkeypatch, capsys):
    importlinter_cli = pytest.importorskip("importlinter.cli", reason="pip install import-linter (the dev extra)")
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    code = importlinter_cli.lint_imports(config_filename=str(REPO_ROOT / "pyproject.toml"), no_cache=True,
                                         no_logo=True)
    assert code == 0, capsys.readouterr().out


def test_the_import_graph_has_no_cycle():
    assert strongly_connected(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    """The check above can fail: a two-module loop and a three-module loop are found, a chain is not."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}, "g": set()}
    assert sorted(strongly_connected(graph)) == [["a", "b"], ["c", "d", "e"]]


def test_no_private_name_is_imported_across_packages():
    crossings = []
    for name, path in MODULES.items():
        for target, names, line in harness_imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and top_package(target) != top_package(name):
                crossings.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {', '.join(private)} from {target}")
    assert crossings == []


def private_definitions() -> dict[str, set[str]]:
    """private name -> the packages of the harness that define it (functions, methods, classes, attributes)."""
    defined: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names = [node.attr]
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names = [node.id]
            for defined_name in names:
                if defined_name.startswith("_") and not defined_name.startswith("__"):
                    defined.setdefault(defined_name, set()).add(top_package(name))
    return defined


def test_no_private_attribute_of_another_package_is_used():
    """``other._helper(...)`` on an object of another package (e.g. a metric calling a private
    method of a toy-world class) is a private name across packages too."""
    defined = private_definitions()
    uses = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr in defined
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and top_package(name) not in defined[node.attr]):
                uses.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} uses .{node.attr} of "
                            f"{', '.join(sorted(defined[node.attr]))}")
    assert uses == []


def test_no_library_object_is_patched():
    """Assignments to a private attribute of something other than ``self``/``cls`` patch a library's
    internals (e.g. ``pipeline._encode_prompt = ...``); use the library's public hooks instead."""
    patches = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AugAssign | ast.AnnAssign) else []
            for target in targets:
                if (isinstance(target, ast.Attribute) and target.attr.startswith("_")
                        and not target.attr.startswith("__")
                        and not (isinstance(target.value, ast.Name) and target.value.id in ("self", "cls"))):
                    patches.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} assigns .{target.attr}")
    assert patches == []


def test_docs_architecture_draws_the_contract():
    """Every layer of the contract appears, in order, in the one picture of docs/architecture.md."""
    document = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    picture = document.split("```")[1]
    positions = []
    for layer in contract_layers():
        line = next((text for text in picture.splitlines() if layer in text), None)
        assert line is not None, f"docs/architecture.md does not show the layer {layer!r} as pyproject.toml writes it"
        positions.append(picture.index(line))
    assert positions == sorted(positions), "docs/architecture.md lists the layers in another order than pyproject.toml"
    named = [module.strip() for layer in contract_layers() for module in layer.replace("|", ":").split(":")]
    required = {name for name in named if not name.startswith("(")}
    optional = {name.strip("()") for name in named if name.startswith("(")}
    present = {top_package(m).removeprefix("harness.") for m in MODULES if m != "harness"}
    assert required <= present, f"the contract names modules that do not exist: {sorted(required - present)}"
    assert present <= required | optional, f"modules without a layer: {sorted(present - required - optional)}"

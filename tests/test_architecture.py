"""The dependency rules of docs/ARCHITECTURE.md, checked on the real import statements of every module.

Every import counts: module level, inside functions (lazy imports still couple the modules), under
TYPE_CHECKING, `from ragsvc import X` and relative imports alike.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ragsvc"

# Each layer lists its parts bottom-up: a part may import any lower layer, and the parts listed before it
# in its own layer; never a later part of its layer or a higher layer.
LAYERS: list[list[str]] = [
    ["errors", "types", "config", "native", "gc_freeze", "cjk", "gemm_rows", "bf16_packing", "cpu_identity",
     "regular_files"],
    ["embed", "index", "store", "cluster"],
    ["serving", "llm", "retrieval"],
    ["answer", "agents", "code", "evals"],
    ["web", "api", "bench", "cli"],
]
RANK = {part: (layer, pos) for layer, parts in enumerate(LAYERS) for pos, part in enumerate(parts)}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """The ragsvc modules `module` imports, resolved to module names (`from pkg import sub` names pkg.sub)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, path.name == "__init__.py")
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES)
    return {name for name in found if name in MODULES and name != module}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_part_has_a_layer():
    parts = {_part(m) for m in MODULES} - {None}
    assert parts <= set(RANK), f"parts without a layer: {sorted(parts - set(RANK))}; add them to LAYERS"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    own = _part(module)
    if own is None:
        return  # the package root holds only the version
    for target in imports_of(module):
        other = _part(target)
        if other is None or other == own:
            continue
        assert RANK[other] < RANK[own], (
            f"{module} ({own}, layer {RANK[own][0]}) imports {target} ({other}, layer {RANK[other][0]}): "
            "imports must point down the layers, or to an earlier part of the same layer")


def test_the_resolver_sees_relative_and_package_imports(tmp_path):
    """The checks above are only as good as the import resolution; pin it on the forms that are easy to miss."""
    code = "from . import b\nfrom ..store import catalog\nfrom ragsvc import types\n"
    node_b, node_store, node_root = ast.parse(code).body
    assert _resolve(node_b, "ragsvc.index.a", False) == "ragsvc.index"
    assert _resolve(node_store, "ragsvc.index.a", False) == "ragsvc.store"
    assert _resolve(node_store, "ragsvc.index", True) == "ragsvc.store"
    assert _resolve(node_root, "ragsvc.index.a", False) == "ragsvc"


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {m: sorted(imports_of(m)) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_module_cycles():
    # A package's __init__ that re-exports its own submodules is not a cycle of design; none does today.
    assert _cycles() == []


def test_nothing_below_api_imports_web_frameworks():
    offenders = defaultdict(list)
    for module, path in MODULES.items():
        own = _part(module)
        if own is None or RANK[own][0] >= 4:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            offenders[module] += [n for n in names if n.split(".")[0] in {"fastapi", "starlette", "uvicorn"}]
    assert {m: names for m, names in offenders.items() if names} == {}


def test_only_store_runs_sql():
    users = sorted(m for m, p in MODULES.items()
                   if _part(m) != "store" and any(n == "duckdb" or n.startswith("duckdb.")
                                                  for n in _raw_imports(p)))
    assert users == []


def _raw_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names

"""The dependency direction of ARCHITECTURE.md, checked on the real import statements of every module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ragsvc"
LAYERS = {
    "types": 0, "errors": 0, "config": 0, "native": 0,
    "store": 1, "embed": 1, "index": 1,
    "retrieval": 2, "serving": 2, "llm": 2,
    "agents": 3, "code": 3, "evals": 3,
    "api": 4, "cli": 4, "bench": 4, "web": 4,
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ragsvc" else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if own not in LAYERS:
        return  # package root (__init__.py) and data folders
    for name in _imports(path):
        target = _part(name)
        if target is None or target not in LAYERS:
            continue
        assert LAYERS[target] <= LAYERS[own], f"{path.name} ({own}) imports {name} from a higher layer"


def test_nothing_below_api_imports_fastapi():
    def layer(p: Path) -> int:
        return LAYERS.get(p.relative_to(PACKAGE).parts[0].removesuffix(".py"), 4)

    offenders = [str(p.relative_to(PACKAGE)) for p in MODULES
                 if layer(p) < 4 and any(n.split(".")[0] in {"fastapi", "starlette", "uvicorn"} for n in _imports(p))]
    assert offenders == []

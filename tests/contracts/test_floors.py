"""The house's floors: every import points down, never back up.

``videojob/`` is the ground every process stands on (the protos' code, limits, flags, errors,
the HTTP API's JSON vocabulary); the services (render_service, export_service, gateway) stand on
it; the clients of the services (videojob_cli, videojob_launcher) stand beside them and talk to
them over gRPC and HTTP, never by importing them. Each module's AST is read, so an import inside
a function or an ``importlib.import_module("...")`` with a literal name counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

SERVICES = frozenset({"render_service", "export_service", "gateway"})
CLIENTS = frozenset({"videojob_cli", "videojob_launcher"})
# Never a dependency of the shipped packages.
DEVELOPMENT = frozenset({"tests", "bench", "scripts"})

# What each package may not import (by the top-level name of the imported module).
FORBIDDEN: dict[str, frozenset[str]] = {
    "videojob": SERVICES | CLIENTS | DEVELOPMENT,
    "render_service": CLIENTS | DEVELOPMENT | {"export_service", "gateway"},
    "export_service": CLIENTS | DEVELOPMENT | {"render_service", "gateway"},
    "gateway": CLIENTS | DEVELOPMENT | {"render_service", "export_service"},
    "videojob_cli": SERVICES | DEVELOPMENT | {"videojob_launcher"},
    "videojob_launcher": SERVICES | DEVELOPMENT | {"videojob_cli"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the text of ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            elif node.module is not None:
                yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args:
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else None
            if isinstance(function, ast.Name):
                name = function.id
            first = node.args[0]
            if (
                name in {"import_module", "__import__"}
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
            ):
                yield node.lineno, first.value


def _modules(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def upward_imports(package: str) -> list[str]:
    """Every import in ``package`` of a package it may not import, as ``file:line: name``."""
    forbidden = FORBIDDEN[package]
    found = []
    for path in _modules(package):
        source = path.read_text(encoding="utf-8")
        for line, name in _imported(source, _module_name(path), path.name == "__init__.py"):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(REPO_ROOT)}:{line}: imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_never_run_back_up(package: str) -> None:
    assert _modules(package), f"{package}/ has no modules: the test would prove nothing"
    assert upward_imports(package) == []


def test_every_package_has_its_floor() -> None:
    """A new top-level package gets its line in FORBIDDEN (or this test says where it stands)."""
    packages = {
        path.parent.name
        for path in REPO_ROOT.glob("*/__init__.py")
        if path.parent.name not in DEVELOPMENT
    }
    assert packages == set(FORBIDDEN)


def test_the_ground_floor_holds_no_clients() -> None:
    """The CLI and the launcher live above the ground floor, under names of their own."""
    for name in ("cli", "launcher"):
        assert not (REPO_ROOT / "videojob" / name).exists(), f"videojob/{name}/"


def test_relative_and_dynamic_imports_are_seen() -> None:
    """The walk names what ``from .. import x`` and ``import_module("...")`` import."""
    source = (
        "from ... import limits\n"
        "from ..export import v1\n"
        "from . import spec_pb2\n"
        "def late():\n"
        "    import importlib\n"
        "    importlib.import_module('gateway.app')\n"
    )
    names = [name for _, name in _imported(source, "videojob.render.v1.spec", is_package=False)]
    assert names == [
        "videojob",
        "videojob.render.export",
        "videojob.render.v1",
        "importlib",
        "gateway.app",
    ]

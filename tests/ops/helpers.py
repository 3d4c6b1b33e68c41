"""Shared by the ops tests: running listenerctl as a process, scraping /metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.grpcurl import binary as grpcurl_binary

REPO = Path(__file__).resolve().parents[2]


def cli(
    *args: str,
    server: str | None = None,
    token: str | None = None,
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m listener_cli ARGS`` as an operator runs it; never raises on failure."""
    env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_SERVER", "LISTENER_TOKEN")}
    if server is not None:
        env["LISTENER_SERVER"] = server
    if token is not None:
        env["LISTENER_TOKEN"] = token
    proc = subprocess.run(
        [sys.executable, "-m", "listener_cli", *args],
        cwd=REPO,
        env=env,
        input=None if stdin is None else stdin.encode(),
        capture_output=True,
        timeout=timeout,
    )
    # Decoded by hand: text mode would turn the progress bar's carriage returns into newlines.
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    )


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """One sample's value, 0 when the series does not exist (yet)."""
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def grpcurl_dir() -> str:
    return str(Path(grpcurl_binary()).parent)

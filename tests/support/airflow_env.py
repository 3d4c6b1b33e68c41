"""A real Apache Airflow in a virtualenv of its own, for the Airflow bridge's tests.

Airflow never enters the servers' environment: the tests build ``.cache/airflow-venv/<key>``
in the checkout (gitignored) from PyPI, pinned by ``tests/airflow/constraints-<version>.txt``
(Airflow's constraints approach, generated as that file's header says), and keep it between
runs; the key changes with the version, the constraints and the interpreter. A first build
takes one to two minutes. This project is installed into it (editable, no dependencies: the
constraints hold what ``listener_client`` needs), which registers the bridge's
``airflow.plugins`` entry point.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import REPO

AIRFLOW_VERSION = "3.3.2"
CONSTRAINTS = REPO / "tests" / "airflow" / f"constraints-{AIRFLOW_VERSION}.txt"
DAGS = REPO / "tests" / "airflow" / "dags"
CACHE = REPO / ".cache" / "airflow-venv"
#: What ``listener_client`` imports, installed beside Airflow at the constraints' pins.
CLIENT_PACKAGES = (
    "grpcio",
    "grpcio-health-checking",
    "protobuf",
    "googleapis-common-protos",
)
BUILD_TIMEOUT = 900.0  # a cold build under load; a warm one takes none of it
AIRFLOW_TIMEOUT = 300.0  # one `airflow ...` command on a loaded 2-core machine


def _key() -> str:
    digest = hashlib.sha256()
    digest.update(CONSTRAINTS.read_bytes())
    digest.update(sys.version.encode())
    return f"{AIRFLOW_VERSION}-{digest.hexdigest()[:12]}"


def _pip(venv: Path, *args: str, log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
    if done.returncode:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"pip {' '.join(args[:3])} … failed ({done.returncode}):\n{tail}")


def airflow_venv() -> Path:
    """The cached virtualenv with Airflow and this project in it; builds it when missing."""
    CACHE.mkdir(parents=True, exist_ok=True)
    venv = CACHE / _key()
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time per checkout
        if not (venv / ".complete").exists():
            _build(venv)
        # Every session: cheap (a few seconds), and keeps the entry points in step with
        # pyproject.toml and the editable path with this checkout.
        _pip(
            venv,
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--editable",
            str(REPO),
            log=venv / "install.log",
        )
    return venv


def _build(venv: Path) -> None:
    """Builds in place (a venv's scripts name its path, so it cannot be renamed after);
    ``.complete`` marks a finished build, so an interrupted one is started over."""
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(
        venv,
        "install",
        "--quiet",
        "--constraint",
        str(CONSTRAINTS),
        f"apache-airflow=={AIRFLOW_VERSION}",
        "setuptools",  # the editable install of this project builds with it
        *CLIENT_PACKAGES,
        log=venv / "install.log",
    )
    (venv / ".complete").write_text(f"built in {time.monotonic() - started:.0f}s\n")


@dataclass
class AirflowHome:
    """One ``AIRFLOW_HOME`` (SQLite metadata database, this repo's test DAGs) and the
    commands run against it with the cached Airflow."""

    venv: Path
    home: Path
    settings: dict[str, str]

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME") and not k.startswith("AIRFLOW")
        }
        env.update(
            {
                "PATH": f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.settings)
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``airflow <args>``; its output is kept under the home as ``<args>.log``."""
        done = subprocess.run(
            [str(self.venv / "bin" / "airflow"), *args],
            cwd=self.home,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=AIRFLOW_TIMEOUT,
            check=False,
        )
        (self.home / f"{'_'.join(args).replace('/', '_')}.log").write_text(
            done.stdout + done.stderr
        )
        return done

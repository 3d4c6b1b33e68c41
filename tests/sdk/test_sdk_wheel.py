"""``make sdk``'s wheel, installed alone in a fresh virtualenv: nothing of gRPC, protobuf,
SQLAlchemy or the servers comes with it, and it scaffolds, builds and tests a plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

from listener_common import __version__
from tests.support.servers import REPO

SERVER_SIDE = (
    "grpc",
    "google.protobuf",
    "sqlalchemy",
    "api_server",
    "alert_server",
    "event_store",
    "listener_core",
    "listener_client",
    "listener_cli",
    "listener",
)

IMPORT_ALL = f"""
import importlib, importlib.util, pkgutil, sys
import listener_common
names = [m.name for m in pkgutil.walk_packages(listener_common.__path__, "listener_common.")]
for name in names:
    importlib.import_module(name)
loaded = sorted(n for n in sys.modules if n.split(".")[0] in {{"grpc", "google", "sqlalchemy"}}
                or n.split(".")[0] in {SERVER_SIDE!r})
installed = [n for n in {SERVER_SIDE!r} if importlib.util.find_spec(n.split(".")[0])]
print(listener_common.__version__, listener_common.__file__, len(names), loaded, installed)
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_sdk_wheel_installs_alone_and_builds_a_plugin(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # -o: never reinstall the development virtualenv from here, only build the wheel.
    run(["make", "-o", ".venv/.installed", "sdk", f"PY={sys.executable}"], REPO, env)
    wheels = list((REPO / "dist" / "sdk").glob("*.whl"))
    assert [w.name for w in wheels] == [f"listener_sdk-{__version__}-py3-none-any.whl"]

    target = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    py = str(target / "bin" / "python")
    run([py, "-m", "pip", "install", "--quiet", str(wheels[0])], tmp_path, env)

    listed = json.loads(run([py, "-m", "pip", "list", "--format", "json"], tmp_path, env))
    names = {item["name"].lower() for item in listed}
    assert names - {"pip", "setuptools", "wheel"} == {"listener-sdk", "packaging"}, names

    out = run([py, "-c", IMPORT_ALL], tmp_path, env)
    version, where, count, loaded, installed = out.split(" ", 4)
    assert version == __version__ and str(target) in where, out
    assert int(count) >= 10
    assert loaded + " " + installed.strip() == "[] []", out

    # An author with nothing but the wheel: scaffold, test, build.
    bin_env = {**env, "PATH": f"{target / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
    wrote = run([py, "-m", "listener_common.scaffold", "wheel-demo"], tmp_path, bin_env)
    # It says what to run next with the SDK alone (the bare path it printed said nothing).
    assert "python -m listener_common.testing wheel-demo --param outFile=" in wrote, wrote
    assert "python -m listener_common.build wheel-demo --out dist" in wrote, wrote
    built = run(
        [py, "-m", "listener_common.build", "wheel-demo", "--out", "dist"], tmp_path, bin_env
    )
    assert built.strip().endswith("wheel-demo-0.1.0.zip")
    report = run(
        [
            py,
            "-m",
            "listener_common.testing",
            "dist/wheel-demo-0.1.0.zip",
            "--event",
            "TASK_FAIL,WORKFLOW_FAIL,TASK_END",
            "--param",
            f"outFile={tmp_path / 'out.jsonl'}",
        ],
        tmp_path,
        bin_env,
    )
    assert report.count(" delivered") == 3, report
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(x)["type"] for x in lines] == ["TASK_FAIL", "WORKFLOW_FAIL"]

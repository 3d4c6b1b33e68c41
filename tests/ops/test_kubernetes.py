"""deploy/kubernetes builds with kubectl kustomize (as an operator builds it, secrets filled
in), and every object validates offline against the Kubernetes schemas
(kubernetes-validate); the settings the docs promise are checked one by one."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from listener_core.config import KEYS
from tests.support.servers import REPO

FIELDS = {"LISTENER_" + key.upper() for key in KEYS}


def build(tmp_path: Path) -> tuple[str, list[dict[str, Any]]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed: apt-get install kubernetes-client (.ci/run does)"
    tree = tmp_path / "kubernetes"
    shutil.copytree(REPO / "deploy" / "kubernetes", tree)
    overlay = tree / "overlays" / "postgresql"
    example = (overlay / "listener-secrets.env.example").read_text()
    filled = example.replace("CHANGE_ME", secrets.token_hex(16))
    (overlay / "listener-secrets.env").write_text(filled)
    proc = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_every_object_validates_against_the_schemas(tmp_path: Path) -> None:
    text, docs = build(tmp_path)
    out = tmp_path / "all.yaml"
    out.write_text(text)
    validate = Path(sys.executable).with_name("kubernetes-validate")
    assert validate.exists(), "kubernetes-validate is not installed (make install)"
    proc = subprocess.run(
        [str(validate), "--strict", "-k", "1.30.0", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kinds = sorted(d["kind"] for d in docs)
    twice = ["Service", "Deployment", "PodDisruptionBudget"]
    assert kinds == sorted(["Namespace", "Secret", "ServiceMonitor", *twice, *twice])
    for doc in docs:
        if doc["kind"] != "ServiceMonitor":  # a CRD: no schema in the Kubernetes set
            assert f"passed for resource {doc['kind'].lower()}/" in proc.stdout + proc.stderr


def test_the_deployment_is_what_the_docs_promise(tmp_path: Path) -> None:
    _, docs = build(tmp_path)
    deployments = by_kind(docs, "Deployment")
    services = by_kind(docs, "Service")
    [secret] = by_kind(docs, "Secret").values()
    assert set(secret["data"]) == {
        "LISTENER_DB_URL",
        "LISTENER_TOKENS",
        "LISTENER_INTERNAL_TOKEN",
        "LISTENER_SECRET_KEY",
    }
    assert all(d["metadata"]["namespace"] == "listener" for d in docs if d["kind"] != "Namespace")
    for name, port in (("listener-api-server", 50051), ("listener-alert-server", 50052)):
        pod = deployments[name]["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        # Every variable is a config field (POD_IP feeds the advertised address).
        assert set(env) - {"POD_IP"} <= FIELDS
        assert "LISTENER_ALERT_TARGETS" not in env  # found through the store
        # Native gRPC probes: readiness is the truthful status, liveness only "alive".
        assert container["readinessProbe"]["grpc"] == {"port": port}
        assert container["livenessProbe"]["grpc"] == {"port": port, "service": "liveness"}
        assert float(env["LISTENER_DRAIN_SECONDS"]["value"]) > 0
        # Secrets from the generated Secret (its hashed name), nothing in clear.
        assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert services[name]["spec"]["selector"].items() <= labels.items()
        pdb = by_kind(docs, "PodDisruptionBudget")[name]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert "metrics" in {p["name"] for p in services[name]["spec"]["ports"]}
    alert_env = {
        e["name"]: e
        for e in deployments["listener-alert-server"]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert alert_env["LISTENER_ALERT_ADVERTISE_ADDR"]["value"] == "$(POD_IP):50052"
    assert alert_env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    [monitor] = by_kind(docs, "ServiceMonitor").values()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "interval": "30s"}]
    [match] = monitor["spec"]["selector"]["matchExpressions"]
    assert set(match["values"]) == set(services)

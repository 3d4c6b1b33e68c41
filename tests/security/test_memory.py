"""Memory before authentication: what a caller without a valid token can make a server hold.

The attack of issue #21, as it was measured: 30 parallel calls of 60 MiB (just under the
64 MiB the servers used to accept) with a wrong token, each on its own connection, against the
API server and the alert server's internal API, both running as subprocesses. Before the fix
gRPC read every message whole before the token was checked, and the servers peaked at 1.6 to
2.2 GB. Now a refused call's request is never read. The second shape, 100 calls of 20 MiB on
one connection, is what gRPC's window tuning (BDP probing) turned into 25-751 MB of unread
requests held by the server (and the first into up to 312 MB now and then) until the stream
window was fixed (``stream_window_bytes``). The peak (VmHWM) stays within
:data:`MAX_GROWTH_KB` of what the server held before the attack.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from listener.alert.v1 import plugin_host_pb2, plugin_host_pb2_grpc
from listener.v1 import plugin_pb2, plugin_pb2_grpc
from tests.support.databases import sqlite_url
from tests.support.servers import REPO, ServerPair

ADMIN = "adm-mem-5e1"
INTERNAL = "int-mem-93c"
#: (calls, bytes each, connections)
SHAPES = {"own_connections": (30, 60 * 2**20, 30), "one_connection": (100, 20 * 2**20, 1)}
#: Allowed growth of a server's peak resident memory during the attack (KiB): 30 buffered
#: 60 MiB requests would be 1.8 GB; refused unread within 1 MiB windows, the servers grew
#: by 3-11 MB.
MAX_GROWTH_KB = 64 * 1024


def peak_kb(pid: int) -> int:
    """VmHWM: the process's peak resident set size so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")


def flood(addr: str, method: str, calls: int, size: int, connections: int) -> dict[str, int]:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "tests.security.flood", addr, method),
            *(str(n) for n in (size, calls, connections)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout)
    return result


def serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.fixture
def servers(tmp_path: Path) -> ServerPair:
    pair = ServerPair(
        sqlite_url(tmp_path),
        tmp_path / "data",
        extra_env={"LISTENER_TOKENS": f"admin:{ADMIN}", "LISTENER_INTERNAL_TOKEN": INTERNAL},
    )
    pair.start_both()
    yield pair  # type: ignore[misc]
    pair.stop()


@pytest.mark.parametrize(
    "which",
    [
        ("api_server", "/listener.v1.PluginService/CreatePlugin"),
        ("alert_server", "/listener.alert.v1.PluginHostService/LoadPlugin"),
    ],
    ids=["api_server", "alert_server"],
)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_unauthenticated_floods_do_not_grow_the_server(
    servers: ServerPair, which: tuple[str, str], shape: str
) -> None:
    name, method = which
    addr = servers.api_addr if name == "api_server" else servers.alert_addr
    pid = servers.procs[name].pid
    before = peak_kb(pid)
    calls, size, connections = SHAPES[shape]

    ends = flood(addr, method, calls, size, connections)

    assert ends == {"UNAUTHENTICATED": calls}
    growth = peak_kb(pid) - before
    assert growth < MAX_GROWTH_KB, f"{name} peaked {growth // 1024} MiB above its start"
    assert servers.procs[name].poll() is None
    assert serving(addr)
    # …and still serves its rightful caller.
    if name == "api_server":
        with grpc.insecure_channel(addr) as channel:
            plugin_pb2_grpc.PluginServiceStub(channel).ListPlugins(
                plugin_pb2.ListPluginsRequest(),
                metadata=[("authorization", f"Bearer {ADMIN}")],
                timeout=30,
            )
    else:
        with grpc.insecure_channel(addr) as channel:
            plugin_host_pb2_grpc.PluginHostServiceStub(channel).GetStatus(
                plugin_host_pb2.GetStatusRequest(),
                metadata=[("authorization", f"Bearer {INTERNAL}")],
                timeout=30,
            )


def test_an_authenticated_request_above_the_unary_limit_is_refused(servers: ServerPair) -> None:
    """The unary limit is 16 MiB by default: a package that big goes by the stream."""
    with (
        grpc.insecure_channel(
            servers.api_addr, options=[("grpc.max_send_message_length", -1)]
        ) as channel,
        pytest.raises(grpc.RpcError) as caught,
    ):
        plugin_pb2_grpc.PluginServiceStub(channel).CreatePlugin(
            plugin_pb2.CreatePluginRequest(package=b"x" * (17 * 2**20)),
            metadata=[("authorization", f"Bearer {ADMIN}")],
            timeout=60,
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert serving(servers.api_addr)

"""The configuration's sections: one small frozen dataclass per concern, taken as it is by the
component it configures (``DeliverySettings`` by the delivery loops, ``ProcessSettings`` by the
plugin child processes, …), so a default is written once, here.

Every field an operator may set names its key (the TOML key; ``LISTENER_<KEY>`` in the
environment) and what it allows; ``listener_core.config`` reads, converts and checks the keys
against these declarations, and each section checks its values again when it is built, so a
section made in code is held to the same rules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Allowed:
    """What a key allows: ``test`` passes the values, ``says`` words them for a message."""

    test: Callable[[Any], bool]
    says: str


def at_least(low: float) -> Allowed:
    return Allowed(lambda v: v >= low, f">= {low:g}")


def above(low: float) -> Allowed:
    return Allowed(lambda v: v > low, f"> {low:g}")


def one_of(*choices: str) -> Allowed:
    return Allowed(lambda v: v in choices, "one of " + ", ".join(choices))


def _is_address(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host) and port.isdigit() and 0 <= int(port) <= 65535


ADDRESS = Allowed(_is_address, "host:port (port 0-65535)")
ADDRESS_OR_EMPTY = Allowed(lambda v: v == "" or _is_address(v), "host:port, or empty for off")
ADDRESS_OR_OFF = Allowed(lambda v: v == "off" or _is_address(v), "host:port, or off")
ADDRESSES = Allowed(lambda v: all(_is_address(a) for a in v), "host:port entries, comma separated")
NOT_EMPTY = Allowed(bool, "a non-empty string")
#: A stream window from HTTP/2's default (65,535, RFC 9113 6.9.2) up, or 0 for gRPC's tuning.
WINDOW = Allowed(lambda v: v == 0 or 65_535 <= v < 2**31, "0, or 65535 to 2147483647")
OTLP_ENDPOINT = Allowed(
    lambda v: v == "" or (v.startswith(("http://", "https://")) and _is_address(v.split("//")[1])),
    "empty for off, http://host:port (plaintext) or https://host:port (TLS)",
)
_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")
DB_URL = Allowed(
    lambda v: v == "" or (v.partition("://")[0].partition("+")[0] in _SCHEMES and "://" in v),
    "empty (SQLite under data_dir) or a URL starting sqlite://, postgresql:// or mysql://",
)


def setting(default: Any, key: str, allowed: Allowed | None = None, *, secret: bool = False) -> Any:
    """A field set by ``key``; ``secret`` keeps its value out of reprs and messages."""
    meta = {"key": key, "allowed": allowed, "secret": secret}
    return field(default=default, metadata=meta, repr=not secret)


class SettingError(ValueError):
    """A value a key does not allow; ``key`` and ``value`` say which."""

    def __init__(self, key: str, value: Any, says: str, secret: bool = False) -> None:
        shown = "(hidden)" if secret else repr(value)
        super().__init__(f"{key} = {shown}: allowed: {says}")
        self.key = key
        self.value = value


class Checked:
    """Checks every keyed field of a section against what its key allows, when built."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            allowed = f.metadata.get("allowed")
            value = getattr(self, f.name)
            if allowed is not None and not allowed.test(value):
                raise SettingError(f.metadata["key"], value, allowed.says, f.metadata["secret"])


@dataclass(frozen=True)
class StoreSettings(Checked):
    # Any SQLAlchemy async URL (postgresql+asyncpg://…, mysql+aiomysql://…); plain
    # postgresql:// and mysql:// pick those drivers. Empty: SQLite under data_dir.
    db_url: str = setting("", "db_url", DB_URL, secret=True)
    # The SQLite file, the alert server's package cache and the generated secret key.
    data_dir: str = setting("./data", "data_dir", NOT_EMPTY)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite+aiosqlite:///{Path(self.data_dir) / 'listener.db'}"


@dataclass(frozen=True)
class ListenSettings(Checked):
    """The addresses the servers listen on."""

    api_addr: str = setting("127.0.0.1:50051", "api_addr", ADDRESS)
    alert_addr: str = setting("127.0.0.1:50052", "alert_addr", ADDRESS)
    # The address API servers should use for this alert server, recorded with its heartbeat
    # in the store; empty: alert_addr, with this host's name in place of 0.0.0.0 / [::].
    alert_advertise_addr: str = setting("", "alert_advertise_addr", ADDRESS_OR_EMPTY)
    # API server processes sharing api_addr (SO_REUSEPORT, Linux): each has its own store
    # connections and group commit; the first also serves http_addr and api_metrics_addr.
    api_workers: int = setting(1, "api_workers", at_least(1))
    # HTTP/JSON for every public RPC and the web console; "off" turns it off.
    http_addr: str = setting("127.0.0.1:8080", "http_addr", ADDRESS_OR_OFF)
    # Prometheus /metrics of each server; empty: off. Two keys, so one file can describe
    # both servers of a host.
    api_metrics_addr: str = setting("", "api_metrics_addr", ADDRESS_OR_EMPTY)
    alert_metrics_addr: str = setting("", "alert_metrics_addr", ADDRESS_OR_EMPTY)
    # Seconds a server keeps accepting calls after SIGTERM while its health says NOT_SERVING,
    # so load balancers and readiness probes move callers away before it stops.
    drain_seconds: float = setting(0.0, "drain_seconds", at_least(0))


@dataclass(frozen=True)
class FleetSettings(Checked):
    """How the API server reaches its alert servers (TLS to them: ``TlsSettings``)."""

    # The alert servers an API server drives; empty: every live alert server found in the
    # store (their advertised addresses), following joins and departures.
    alert_targets: tuple[str, ...] = setting((), "alert_targets", ADDRESSES)
    # Seconds the API server waits for an alert server's answer.
    alert_timeout: float = setting(30.0, "alert_timeout", above(0))


@dataclass(frozen=True)
class LimitSettings(Checked):
    """Sizes and rates the API accepts."""

    # Largest gRPC request the API server accepts (bytes); bigger packages go by the streamed
    # UploadPluginPackage. The alert server accepts max_package_bytes + 1 MiB if that is more.
    max_message_bytes: int = setting(16 * 2**20, "max_message_bytes", at_least(1))
    # Calls either server runs at once (more: RESOURCE_EXHAUSTED), and calls one connection
    # may carry at once (HTTP/2 MAX_CONCURRENT_STREAMS; the client queues the rest). 0: none.
    max_concurrent_rpcs: int = setting(1000, "max_concurrent_rpcs", at_least(0))
    max_streams_per_connection: int = setting(100, "max_streams_per_connection", at_least(0))
    # Bytes one call may send ahead of the server reading them: a fixed HTTP/2 stream window
    # (grpc-java's default size). 0: gRPC's own tuning (BDP probing), which grows the windows
    # of calls waiting for their refusal: 100 unauthenticated calls on one connection left a
    # server holding 25-751 MB of requests it never read (tests/security/test_memory.py).
    stream_window_bytes: int = setting(2**20, "stream_window_bytes", WINDOW)
    # Largest number of events in one PublishEvents call.
    max_batch_events: int = setting(10_000, "max_batch_events", at_least(1))
    # PublishEvent(s) calls one caller may have in flight; beyond it RESOURCE_EXHAUSTED at
    # once. 0 turns the limit off.
    publish_concurrency_per_caller: int = setting(
        256, "publish_concurrency_per_caller", at_least(0)
    )


@dataclass(frozen=True)
class PackageLimits(Checked):
    """A plugin package's limits: its size, and the zip-bomb limits of its contents."""

    max_bytes: int = setting(32 * 2**20, "max_package_bytes", at_least(1))
    max_uncompressed_bytes: int = setting(
        200 * 2**20, "max_package_uncompressed_bytes", at_least(1)
    )
    max_files: int = setting(2000, "max_package_files", at_least(1))


@dataclass(frozen=True)
class DeliverySettings(Checked):
    """How each instance's delivery loop reads, hands over and records its events."""

    # Seconds a plugin handler may run before it is cut off and counted as a failure.
    handler_timeout: float = setting(30.0, "handler_timeout", above(0))
    # Events handed to one instance per store read.
    batch_size: int = setting(500, "delivery_batch", at_least(1))
    # Fallback poll for new events when no wake-up arrives (seconds).
    poll_interval: float = setting(2.0, "poll_interval", above(0))
    # Shortest time between two writes of the delivery cursors (seconds): fewer writes keep
    # the store's write lock free for publishers; a crash redelivers at most this much.
    progress_interval: float = setting(0.05, "progress_interval", at_least(0))
    # Backoff of a failed head event: full jitter under base * 2**(attempt-1), capped.
    retry_base: float = setting(1.0, "retry_base", above(0))
    retry_max: float = setting(300.0, "retry_max", above(0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.retry_max < self.retry_base:
            raise SettingError("retry_max", self.retry_max, f">= retry_base ({self.retry_base:g})")


@dataclass(frozen=True)
class ProcessConfig(Checked):
    """The configured limits and sandbox of process-isolated plugins' children; the alert
    server resolves the user at start into its ``ProcessSettings`` (alert_server.process_plugin).
    """

    # Address-space limit of a child (RLIMIT_AS), MiB; 0 for none.
    memory_mb: int = setting(1024, "process_memory_mb", at_least(0))
    # Open-file limit of a child (RLIMIT_NOFILE); 0 to inherit the alert server's.
    max_files: int = setting(256, "process_max_files", at_least(0))
    # Deadline of one call (open, a handler, close): the delivery's handler_timeout.
    call_timeout: float = setting(30.0, "handler_timeout", above(0))
    # Confine the children's reads with Landlock where the kernel has it (SECURITY.md), paths
    # they may read besides what Python needs, and the user they run as ("": "nobody" when the
    # alert server runs as root and Python is readable by it, else the alert server's own
    # user; "name", "uid" or "uid:gid": that one, or refuse to start).
    sandbox: bool = setting(True, "process_sandbox")
    read_paths: tuple[str, ...] = setting((), "process_read_paths")
    user: str = setting("", "process_user")


@dataclass(frozen=True)
class LeaseSettings(Checked):
    """An alert server's share of the instances when several run."""

    # Seconds a lease lasts without renewal: after a crash, another alert server takes the
    # instances over within about this time.
    ttl: float = setting(15.0, "lease_ttl", above(0))
    # This alert server's name in leases; "<hostname>:<port>" when empty.
    server_id: str = setting("", "server_id")


@dataclass(frozen=True)
class RetentionSettings(Checked):
    # Delivered events stay this long for replay before they are purged (seconds).
    seconds: float = setting(86_400.0, "retention_seconds", at_least(0))
    # How often an alert server purges delivered events (seconds).
    purge_interval: float = setting(60.0, "purge_interval", above(0))


EVENT_LOOPS = ("uvloop", "asyncio")


@dataclass(frozen=True)
class RuntimeSettings(Checked):
    # The servers' event loop: uvloop (libuv, in C) took 16 % less CPU per publish than
    # asyncio's own loop in the same gRPC server (BENCHMARKS.md); "asyncio" is the fallback.
    # Plugin child processes keep asyncio's loop, the one plugin authors test against.
    event_loop: str = setting("uvloop", "event_loop", one_of(*EVENT_LOOPS))


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class LogSettings(Checked):
    level: str = setting("INFO", "log_level", one_of(*LOG_LEVELS))
    # "text" (classic lines) or "json" (one object per line, with fields such as instance,
    # event_id, action and resource).
    format: str = setting("text", "log_format", one_of("text", "json"))


@dataclass(frozen=True)
class SecuritySettings(Checked):
    """Who may call; SECURITY.md says what each protects against."""

    # Bearer tokens of the public API, each "role:token" or "role:sha256:<hex>". None: the
    # API is open, which the server allows only on a loopback address.
    tokens: tuple[str, ...] = setting((), "tokens", secret=True)
    # Serve unauthenticated on a non-loopback address anyway (--insecure).
    insecure: bool = setting(False, "insecure")
    # Shared secret the API server presents to the alert servers, which require it.
    internal_token: str = setting("", "internal_token", secret=True)
    # Fernet key(s) for password params at rest, comma separated: the first encrypts, all
    # decrypt. Unset: generated once into <data_dir>/secret.key.
    secret_key: str = setting("", "secret_key", secret=True)


@dataclass(frozen=True)
class TlsSettings(Checked):
    """TLS on a server's own port (PEM files), and from the API server to the alert servers."""

    cert: str = setting("", "tls_cert")
    key: str = setting("", "tls_key")
    # With it, clients must present a certificate signed by this CA (mTLS).
    client_ca: str = setting("", "tls_client_ca")
    # To the alert servers: the CA that signed their certificates, a client certificate and
    # key for mTLS, and the name to expect when it differs from the host in alert_targets.
    alert_ca: str = setting("", "alert_tls_ca")
    alert_cert: str = setting("", "alert_tls_cert")
    alert_key: str = setting("", "alert_tls_key")
    alert_server_name: str = setting("", "alert_tls_server_name")


@dataclass(frozen=True)
class TraceSettings(Checked):
    """OpenTelemetry traces (docs/operators.md, Tracing); off unless a collector is named."""

    # The OTLP/gRPC collector spans go to (http://collector:4317; https://… for TLS). Empty:
    # the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT
    # variables, and no traces without them. The other OTEL_* variables (service name,
    # sampler, headers, certificates) apply as the OpenTelemetry SDK defines them.
    otel_endpoint: str = setting("", "otel_endpoint", OTLP_ENDPOINT)

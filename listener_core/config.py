"""Configuration: defaults that just work, a TOML file, then ``LISTENER_*`` environment variables.

One ``Config`` serves both servers, so one file can describe a whole deployment. Every field
can be set in the file's top-level table under its own name, or from the environment as
``LISTENER_<FIELD>`` (e.g. ``LISTENER_DB_URL``); the environment wins.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "LISTENER_"


@dataclass(frozen=True)
class Config:
    # Where state lives. SQLite under data_dir by default; any SQLAlchemy async URL otherwise
    # (postgresql+asyncpg://…, mysql+aiomysql://…). Plain postgresql:// and mysql:// work too.
    db_url: str = ""
    data_dir: str = "./data"
    # The public API server's listen address.
    api_addr: str = "127.0.0.1:50051"
    # HTTP/JSON for every public RPC and the web console ("host:port"); "off" turns it off.
    http_addr: str = "127.0.0.1:8080"
    # The alert server's listen address (internal API).
    alert_addr: str = "127.0.0.1:50052"
    # The address API servers should use for this alert server, recorded with its heartbeat
    # in the store; empty: alert_addr, with this host's name in place of 0.0.0.0 / [::].
    alert_advertise_addr: str = ""
    # The alert servers an API server drives, comma separated; empty: every live alert server
    # found in the store (their advertised addresses), following joins and departures.
    alert_targets: tuple[str, ...] = ()
    # Largest gRPC request the API server accepts (bytes); bigger packages go by the streamed
    # UploadPluginPackage. The alert server accepts max_package_bytes + 1 MiB if that is more.
    max_message_bytes: int = 16 * 2**20
    # Calls either server runs at once (more: RESOURCE_EXHAUSTED), and calls one connection may
    # carry at once (HTTP/2 MAX_CONCURRENT_STREAMS; the client queues the rest). 0: no limit.
    max_concurrent_rpcs: int = 1000
    max_streams_per_connection: int = 100
    # Largest plugin package, inline or uploaded (bytes).
    max_package_bytes: int = 32 * 2**20
    # Largest number of events in one PublishEvents call.
    max_batch_events: int = 10_000
    # Seconds a plugin handler may run before it is cut off and counted as a failure.
    handler_timeout: float = 30.0
    # Events handed to one instance per store read.
    delivery_batch: int = 500
    # Fallback poll for new events when no wake-up arrives (seconds).
    poll_interval: float = 2.0
    # Shortest time between two writes of the delivery cursors (seconds). Fewer writes keep
    # the store's write lock free for publishers; a crash redelivers at most this much.
    progress_interval: float = 0.05
    # Retry backoff of a failed head event: base * 2**(attempt-1), capped, with jitter.
    retry_base: float = 1.0
    retry_max: float = 300.0
    # Seconds the API server waits for an alert server's answer.
    alert_timeout: float = 30.0
    # Address-space limit (RLIMIT_AS) of each child process of a process-isolated plugin,
    # MiB; 0 for none. A runaway allocation then fails in the child, not the alert server.
    process_memory_mb: int = 1024
    # Open-file limit (RLIMIT_NOFILE) of each such child; 0 inherits the alert server's.
    process_max_files: int = 256
    # The sandbox of those children (SECURITY.md): confine their reads with Landlock where the
    # kernel has it, paths they may read besides what Python needs, and the user they run as
    # ("" : "nobody" when the alert server runs as root and Python is readable by it, else
    # the alert server's own user; "name", "uid" or "uid:gid": that one, or refuse to start).
    process_sandbox: bool = True
    process_read_paths: tuple[str, ...] = ()
    process_user: str = ""
    # Seconds an alert server's lease on an instance lasts without renewal: after a crash,
    # another alert server takes its instances over within about this time.
    lease_ttl: float = 15.0
    # This alert server's name in leases; "<hostname>:<port>" when empty.
    server_id: str = ""
    # Seconds a server keeps accepting calls after SIGTERM while its health says NOT_SERVING,
    # so load balancers and readiness probes move callers away before it stops.
    drain_seconds: float = 0.0
    # Delivered events stay this long for replay before they are purged (seconds).
    retention_seconds: float = 86_400.0
    # How often an alert server purges delivered events (seconds).
    purge_interval: float = 60.0
    log_level: str = "INFO"
    # "text" (classic lines) or "json" (one object per line, with fields such as instance,
    # event_id, action and resource).
    log_format: str = "text"
    # Prometheus /metrics of the API server and of the alert server, "host:port"; empty: off.
    # Two keys, so one config file can describe both servers of a host.
    api_metrics_addr: str = ""
    alert_metrics_addr: str = ""
    # -- security; SECURITY.md says what each protects against ---------------------------------
    # Bearer tokens of the public API, each "role:token" or "role:sha256:<hex sha256 of token>"
    # (role admin, publisher or viewer); in TOML also a table {admin = ["…"], viewer = "…"}.
    # None at all: the API is open, which the server allows only on a loopback address.
    tokens: tuple[str, ...] = field(default=(), repr=False)
    # Serve unauthenticated on a non-loopback address anyway (--insecure): trusted networks only.
    insecure: bool = False
    # Shared secret the API server presents to the alert servers, which require it. Unset: the
    # alert server is open, allowed only on loopback (or with insecure, or with mTLS below).
    internal_token: str = field(default="", repr=False)
    # TLS on this server's port (PEM files); with tls_client_ca, clients must present a
    # certificate signed by that CA (mTLS).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # TLS from the API server to the alert servers: the CA that signed their certificates, a
    # client certificate and key for mTLS, and the name to expect in their certificates when it
    # differs from the host in alert_targets.
    alert_tls_ca: str = ""
    alert_tls_cert: str = ""
    alert_tls_key: str = ""
    alert_tls_server_name: str = ""
    # Fernet key(s) encrypting password params at rest, comma separated: the first encrypts,
    # all decrypt (rotation). Unset: generated once into <data_dir>/secret.key (mode 0600), which
    # only works when every server reads that same file; several hosts must set one key.
    secret_key: str = field(default="", repr=False)
    # Zip-bomb limits of a plugin package: total unpacked bytes, number of entries.
    max_package_uncompressed_bytes: int = 200 * 2**20
    max_package_files: int = 2000
    # PublishEvent(s) calls one caller (token, or peer host when open) may have in flight;
    # beyond it a call gets RESOURCE_EXHAUSTED at once. 0 turns the limit off.
    publish_concurrency_per_caller: int = 256
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite+aiosqlite:///{Path(self.data_dir) / 'listener.db'}"

    @property
    def alert_message_bytes(self) -> int:
        """Largest message between the API server and an alert server: a package travels
        inline to be checked (LoadPlugin), so at least max_package_bytes and some room."""
        return max(self.max_message_bytes, self.max_package_bytes + 2**20)

    @property
    def discovers_alert_servers(self) -> bool:
        """No static ``alert_targets``: the API server finds the alert servers in the store."""
        return not self.alert_targets


class ConfigError(ValueError):
    pass


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, kind: Any, raw: Any) -> Any:
    try:
        if name == "tokens" and isinstance(raw, Mapping):
            # {role = "token"} or {role = ["token", …]}: the same as "role:token" entries.
            entries = []
            for role, given in raw.items():
                for token in [given] if isinstance(given, str) else list(given):
                    entries.append(f"{role}:{token}")
            raw = entries
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ValueError(f"expected true or false, got {raw!r}")
        if kind == tuple[str, ...]:
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(s.strip() for s in items if str(s).strip())
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            if not isinstance(raw, str):
                raise TypeError(f"expected a string, got {type(raw).__name__}")
            return raw
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {name}: {exc}") from None
    raise ConfigError(f"config {name}: unsupported type")


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Builds the config from defaults, then the file, then the environment, then overrides."""
    env = os.environ if env is None else env
    hints = get_type_hints(Config)
    fields = {f.name for f in dataclasses.fields(Config)} - {"extra"}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        for key, raw in data.items():
            if key in fields:
                values[key] = _convert(key, hints[key], raw)
            else:
                extra[key] = raw
    for name in fields:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and raw != "":
            values[name] = _convert(name, hints[name], raw)
    for name, raw in overrides.items():
        if raw is not None:
            values[name] = _convert(name, hints[name], raw)
    return Config(**values, extra=extra)

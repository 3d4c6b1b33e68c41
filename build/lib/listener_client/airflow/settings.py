"""The bridge's settings: section ``[listener_service]`` of Airflow's configuration.

Airflow's own rules apply, so ``AIRFLOW__LISTENER_SERVICE__TARGETS`` in the environment
overrides ``targets`` in ``airflow.cfg``. Where Airflow's configuration module cannot be
imported (a bare task-SDK worker), the same environment variables are read directly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger("listener_client.airflow")

SECTION = "listener_service"


def _option(key: str) -> str:
    """One option: Airflow's configuration (which reads the environment too), else the
    ``AIRFLOW__LISTENER_SERVICE__<KEY>`` environment variable, else empty."""
    try:
        from airflow.configuration import conf

        return str(conf.get(SECTION, key, fallback="") or "").strip()
    except ImportError:
        return os.environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}", "").strip()


def _number(key: str, default: float) -> float:
    text = _option(key)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        log.warning("listener service: [%s] %s=%r is not a number", SECTION, key, text)
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class Settings:
    """``targets``: the API servers (``host:port``, comma-separated), empty = publish
    nothing. ``token``, ``tls_ca``, ``tls_cert`` and ``tls_key`` (PEM files; the last two
    for mTLS) as for ``SyncPublisher``. ``project_name``
    fills the events' ``project_name`` (Airflow has no projects). ``host`` overrides the
    DAG-run events' host. ``ack_timeout``: seconds a hook waits for the store."""

    targets: tuple[str, ...] = ()
    token: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    project_name: str = ""
    host: str = ""
    ack_timeout: float = 5.0
    buffer_size: int = 10_000

    @classmethod
    def load(cls) -> Settings:
        targets = tuple(t.strip() for t in _option("targets").split(",") if t.strip())
        return cls(
            targets=targets,
            token=_option("token"),
            tls_ca=_option("tls_ca"),
            tls_cert=_option("tls_cert"),
            tls_key=_option("tls_key"),
            project_name=_option("project_name"),
            host=_option("host"),
            ack_timeout=_number("ack_timeout", cls.ack_timeout),
            buffer_size=int(_number("buffer_size", cls.buffer_size)),
        )

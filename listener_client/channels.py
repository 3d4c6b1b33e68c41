"""Opening a gRPC channel to an API server: plaintext, TLS or mTLS, one place for both the
client and the publisher so they agree on what ``tls_ca``/``tls_cert``/``tls_key`` mean."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

PathLike = str | os.PathLike[str]

SERVICES = (
    "listener.v1.PluginService",
    "listener.v1.ListenerInstanceService",
    "listener.v1.EventService",
)
# Retries UNAVAILABLE (no connection, server restarting, store briefly down) with backoff:
# 5 attempts over about 1.5 s, within each call's deadline.
SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": s} for s in SERVICES],
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}


def client_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """The client's channel options: UNAVAILABLE retried (``SERVICE_CONFIG``), messages up to
    ``max_message_bytes`` both ways, and a quick reconnect."""
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # Reconnect quickly: a CLI call should not sit out a 1 s+ reconnect backoff.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def open_channel(
    target: str,
    options: Sequence[tuple[str, Any]],
    *,
    tls: bool = False,
    tls_ca: PathLike | None = None,
    tls_cert: PathLike | None = None,
    tls_key: PathLike | None = None,
    tls_server_name: str = "",
    interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None,
) -> grpc.aio.Channel:
    """A channel to ``target``: TLS when ``tls`` or any PEM file is given (``tls_ca`` the CA
    the server's certificate must chain to, the system's roots without it; ``tls_cert`` with
    ``tls_key`` a client certificate for mTLS), plaintext otherwise."""
    options = list(options)
    if tls_server_name:
        options.append(("grpc.ssl_target_name_override", tls_server_name))
    if not (tls or tls_ca or tls_cert or tls_key):
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("tls_cert and tls_key go together")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=Path(tls_ca).read_bytes() if tls_ca else None,
        private_key=Path(tls_key).read_bytes() if tls_key else None,
        certificate_chain=Path(tls_cert).read_bytes() if tls_cert else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)

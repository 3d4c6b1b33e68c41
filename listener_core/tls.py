"""TLS credentials from PEM files named in the config, for both servers and the internal client.

A server with ``tls_cert`` and ``tls_key`` serves TLS only (no plaintext port next to it); with
``tls_client_ca`` too, a client must present a certificate signed by that CA (mTLS) or the
handshake fails before any RPC. The API server reaches the alert servers over TLS when any
``alert_tls_*`` file is set, presenting ``alert_tls_cert`` when the alert servers ask for one.

Files are read once at start: a missing or unreadable file is a configuration error naming the
key, so a typo never silently falls back to plaintext.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from listener_core.config import ConfigError
from listener_core.settings import TlsSettings


def _read(path: str, key: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"config {key}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN" not in data:
        raise ConfigError(f"config {key}: {path} is not a PEM file")
    return data


def server_credentials(config: TlsSettings) -> grpc.ServerCredentials | None:
    """The server's TLS credentials, or None when ``tls_cert``/``tls_key`` are unset."""
    if not (config.cert or config.key):
        if config.client_ca:
            raise ConfigError("config tls_client_ca needs tls_cert and tls_key as well")
        return None
    if not (config.cert and config.key):
        raise ConfigError("config tls_cert and tls_key go together: set both or neither")
    pair = (_read(config.key, "tls_key"), _read(config.cert, "tls_cert"))
    client_ca = _read(config.client_ca, "tls_client_ca") if config.client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def alert_channel_credentials(config: TlsSettings) -> grpc.ChannelCredentials | None:
    """Credentials for the API server's channels to the alert servers; None means plaintext.

    ``alert_tls_ca`` unset with a client certificate set trusts the system's roots.
    """
    if not (config.alert_ca or config.alert_cert or config.alert_key):
        return None
    if bool(config.alert_cert) != bool(config.alert_key):
        raise ConfigError(
            "config alert_tls_cert and alert_tls_key go together: set both or neither"
        )
    return grpc.ssl_channel_credentials(
        root_certificates=_read(config.alert_ca, "alert_tls_ca") if config.alert_ca else None,
        private_key=_read(config.alert_key, "alert_tls_key") if config.alert_key else None,
        certificate_chain=_read(config.alert_cert, "alert_tls_cert") if config.alert_cert else None,
    )

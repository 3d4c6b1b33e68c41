"""Opening a gRPC channel to an API server: plaintext, TLS or mTLS, one place for both the
client and the publisher so they agree on what ``tls_ca``/``tls_cert``/``tls_key`` mean."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

PathLike = str | os.PathLike[str]


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

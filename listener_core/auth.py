"""Who may call what: bearer tokens mapped to roles, checked by one stage of the pipeline
(``listener_core.pipeline.authentication``).

Callers send ``authorization: Bearer <token>`` metadata. The public API knows three roles:

- ``admin``: everything (plugins, instances, publishing, reading, and any method added later);
- ``publisher``: ``PublishEvent`` and ``PublishEvents`` only, what a scheduler needs;
- ``viewer``: the ``Get``/``List`` methods only.

The alert server's internal API has one role, ``internal``, held by the API server through the
shared ``internal_token``.

Tokens come from the config as ``role:token`` or ``role:sha256:<hex>`` (so a config file need
not hold a usable token). They are hashed as soon as they are parsed: a :class:`TokenTable`
holds sha256 digests only, and a presented token is hashed and compared with every digest in
constant time, so neither timing nor a memory dump of the table reveals a token.

Which roles may call which method is the table :data:`PUBLIC_METHOD_ROLES` (and
:data:`INTERNAL_METHOD_ROLES`): every RPC is listed, a test checks it against the services'
descriptors, and a method missing from it is refused to everybody but ``admin``. Health and
reflection stay open so probes and ``grpcurl list`` need no token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from listener_core.config import ConfigError

log = logging.getLogger(__name__)

ADMIN = "admin"
PUBLISHER = "publisher"
VIEWER = "viewer"
#: Roles a public API token may carry.
PUBLIC_ROLES = frozenset({ADMIN, PUBLISHER, VIEWER})
#: The one role of the alert server's internal API: the API server.
INTERNAL = "internal"

#: Services any caller may use without a token.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

_ADMIN_ONLY = frozenset({ADMIN})
_PUBLISH = frozenset({ADMIN, PUBLISHER})
_READ = frozenset({ADMIN, VIEWER})

#: Every public RPC and the roles allowed to call it. Keep it complete: a new method that is
#: not listed is admin-only, and ``tests/security`` fails until it is classified here.
PUBLIC_METHOD_ROLES: Mapping[str, frozenset[str]] = {
    "/listener.v1.PluginService/CreatePlugin": _ADMIN_ONLY,
    "/listener.v1.PluginService/UploadPluginPackage": _ADMIN_ONLY,
    "/listener.v1.PluginService/GetPlugin": _READ,
    "/listener.v1.PluginService/ListPlugins": _READ,
    "/listener.v1.PluginService/UpdatePlugin": _ADMIN_ONLY,
    "/listener.v1.PluginService/DeletePlugin": _ADMIN_ONLY,
    "/listener.v1.ListenerInstanceService/CreateListenerInstance": _ADMIN_ONLY,
    "/listener.v1.ListenerInstanceService/GetListenerInstance": _READ,
    "/listener.v1.ListenerInstanceService/ListListenerInstances": _READ,
    "/listener.v1.ListenerInstanceService/UpdateListenerInstance": _ADMIN_ONLY,
    "/listener.v1.ListenerInstanceService/DeleteListenerInstance": _ADMIN_ONLY,
    # Operator actions change delivery (skip, replay, redeliver, send a test event): admins.
    "/listener.v1.ListenerInstanceService/RetryListenerInstance": _ADMIN_ONLY,
    "/listener.v1.ListenerInstanceService/SkipListenerInstanceEvent": _ADMIN_ONLY,
    "/listener.v1.ListenerInstanceService/PauseListenerInstance": _ADMIN_ONLY,
    "/listener.v1.ListenerInstanceService/ResumeListenerInstance": _ADMIN_ONLY,
    "/listener.v1.ListenerInstanceService/ReplayListenerInstance": _ADMIN_ONLY,
    "/listener.v1.ListenerInstanceService/ListParkedEvents": _READ,
    "/listener.v1.ListenerInstanceService/RedeliverParkedEvents": _ADMIN_ONLY,
    "/listener.v1.ListenerInstanceService/SendTestEvent": _ADMIN_ONLY,
    "/listener.v1.EventService/PublishEvent": _PUBLISH,
    "/listener.v1.EventService/PublishEvents": _PUBLISH,
    "/listener.v1.EventService/ListEvents": _READ,
    # Only says which role the caller's own token has.
    "/listener.v1.CallerService/GetCaller": PUBLIC_ROLES,
}

#: Every method of the alert server's internal API: the API server's alone.
INTERNAL_METHOD_ROLES: Mapping[str, frozenset[str]] = {
    f"/listener.alert.v1.PluginHostService/{name}": frozenset({INTERNAL})
    for name in (
        "LoadPlugin",
        "UnloadPlugin",
        "ApplyInstance",
        "RemoveInstance",
        "Notify",
        "NotifyStream",
        "GetStatus",
        "KickInstance",
        "SendTestEvent",
    )
}

_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its role, and a short non-secret id for logs and limits."""

    role: str
    key: str


class TokenTable:
    """Token digests and their roles; empty means authentication is off."""

    def __init__(self, entries: Iterable[tuple[str, bytes]] = ()) -> None:
        self._entries = [(role, bytes(digest)) for role, digest in entries]

    @classmethod
    def parse(cls, specs: Iterable[str], roles: frozenset[str] = PUBLIC_ROLES) -> TokenTable:
        """Reads ``role:token`` / ``role:sha256:<hex>`` entries; raises ConfigError naming the
        entry's position (never its token)."""
        entries: list[tuple[str, bytes]] = []
        for index, spec in enumerate(specs):
            role, sep, rest = spec.partition(":")
            role = role.strip()
            if not sep or not rest:
                raise ConfigError(f"config tokens[{index}]: expected 'role:token'")
            if role not in roles:
                known = ", ".join(sorted(roles))
                raise ConfigError(f"config tokens[{index}]: unknown role {role!r}; roles: {known}")
            kind, sep, hexdigest = rest.partition(":")
            if kind == "sha256" and sep:
                if not _HEX_DIGEST.match(hexdigest):
                    raise ConfigError(
                        f"config tokens[{index}]: 'sha256:' must be followed by 64 hex digits"
                    )
                entries.append((role, bytes.fromhex(hexdigest)))
            else:
                entries.append((role, token_digest(rest)))
        return cls(entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, token: str) -> Caller | None:
        """The caller holding ``token``, or None.

        Compares the token's digest with every entry, without stopping at a match, so the time
        taken says nothing about which (or whether any) token matched.
        """
        digest = token_digest(token)
        found: str | None = None
        for role, known in self._entries:
            if hmac.compare_digest(digest, known) and found is None:
                found = role
        return None if found is None else Caller(found, "token:" + digest.hex()[:12])

    def redacted(self) -> tuple[str, ...]:
        """The table as config entries that hold digests only (``role:sha256:<hex>``)."""
        return tuple(f"{role}:sha256:{digest.hex()}" for role, digest in self._entries)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the first ``authorization: Bearer …`` entry, if any."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


def caller_key(metadata: Sequence[tuple[str, str | bytes]] | None, peer: str) -> str:
    """Who a call comes from, for per-caller limits: its token's digest, else its peer host.

    The port is left out of the peer, so one producer cannot get more slots by opening more
    connections.
    """
    token = bearer_token(metadata)
    if token is not None:
        return "token:" + token_digest(token).hex()[:12]
    host = peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
    return "peer:" + host


class BearerToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Client side: adds ``authorization: Bearer <token>`` to every unary call of a channel.

    Used by the API server on its channels to the alert servers (``internal_token``); an
    interceptor rather than call credentials, because those are refused on plaintext channels
    and the internal channel may be plaintext on loopback.
    """

    def __init__(self, token: str) -> None:
        self._entry = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), self._entry)
        return await continuation(client_call_details._replace(metadata=metadata), request)

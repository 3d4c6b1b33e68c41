"""The Redis listener: appends each event to a stream with ``XADD … MAXLEN ~ N``.

Each entry has the fields ``id`` (event id: consumers de-duplicate redeliveries on it),
``type``, ``sequence``, ``data`` (the event's ``to_dict()`` as JSON) and, when the servers
trace, ``traceparent`` (streams have no headers: a field is where consumers look). A batch
goes in one ``MULTI``/``EXEC`` pipeline: one round trip, and the entries land together or not
at all, so a failed batch never leaves half of itself behind to be written again before the
rest.

redis-py's connection pool reconnects on its own, so a Redis that comes back is used again at
the next attempt without reopening the plugin.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio
import redis.exceptions

from listener_common import DeliveryError, ListenerPlugin, events, params
from listener_common.errors import error_text


def entry_fields(event: events.ListenerEvent) -> dict[str, str]:
    """The stream entry for one event."""
    fields = {
        "id": event.id,
        "type": event.type.value,
        "sequence": str(event.sequence),
        "data": json.dumps(event.to_dict(), separators=(",", ":")),
    }
    if event.traceparent:
        fields["traceparent"] = event.traceparent
    return fields


class RedisListener(ListenerPlugin):
    """XADDs to one stream key over one connection pool per listener instance."""

    @classmethod
    def params(cls) -> list[params.PluginParam]:
        return [
            params.Input(
                "url",
                title="Redis URL",
                required=True,
                value="redis://127.0.0.1:6379/0",
                info="redis://host:port/db, or rediss:// for TLS. Secret, as a password may "
                "be in it (redis://:password@host).",
                secret=True,
            ),
            params.Input("username", title="User", value="", info="For Redis ACL users."),
            params.Password("password", title="Password"),
            params.Input("stream", title="Stream key", required=True),
            params.InputNumber(
                "maxLen",
                title="Keep about (entries)",
                value=100000,
                min=0,
                info="XADD MAXLEN ~ N trims the stream to roughly N entries; 0 never trims.",
            ),
            params.InputNumber("timeout", title="Timeout (s)", value=5, min=0.1, max=120),
        ]

    def __init__(self) -> None:
        self._client: Any = None
        self._where = ""
        self._stream = ""
        self._max_len = 0
        self._timeout = 5.0

    async def open(self, config: dict[str, Any]) -> None:
        url = str(config["url"]).strip()
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("url must look like redis://host:6379/0 (or rediss://, unix://)")
        self._where = f"{parts.netloc.rpartition('@')[2]}{parts.path}" or url
        self._stream = str(config["stream"])
        self._max_len = int(config.get("maxLen") or 0)
        self._timeout = float(config.get("timeout") or 5)
        options: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
        }
        for key, option in (("username", "username"), ("password", "password")):
            if config.get(key):
                options[option] = str(config[key])
        client = redis.asyncio.from_url(url, **options)
        try:
            kind = await client.type(self._stream)
        except Exception as exc:
            await client.aclose()
            raise self._error(exc, "connecting") from exc
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind not in ("none", "stream"):
            await client.aclose()
            raise DeliveryError(
                f"key {self._stream!r} on Redis at {self._where} holds a {kind}, not a stream"
            )
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def on_event(self, event: events.ListenerEvent) -> None:
        await self.on_events([event])

    async def on_events(self, batch: Sequence[events.ListenerEvent]) -> None:
        """XADDs the batch in order inside one MULTI/EXEC."""
        if not batch:
            return
        if self._client is None:
            raise RuntimeError("the Redis client is not open")
        trim: dict[str, Any] = (
            {"maxlen": self._max_len, "approximate": True} if self._max_len > 0 else {}
        )
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                for event in batch:
                    pipe.xadd(self._stream, entry_fields(event), **trim)
                await pipe.execute()
        except Exception as exc:
            raise self._error(exc, f"XADD of events {batch[0].id}…{batch[-1].id}") from exc

    def _error(self, exc: BaseException, doing: str) -> DeliveryError:
        where = f"Redis at {self._where}"
        if isinstance(exc, redis.exceptions.AuthenticationError) or "NOAUTH" in str(exc):
            return DeliveryError(f"{where} refused the login (check user and password): {exc}")
        if isinstance(exc, redis.exceptions.TimeoutError):
            return DeliveryError(f"{where} did not answer within {self._timeout:g}s ({doing})")
        if isinstance(exc, redis.exceptions.ConnectionError):
            return DeliveryError(f"cannot reach {where} ({doing}): {exc}")
        if "WRONGTYPE" in str(exc):
            return DeliveryError(
                f"key {self._stream!r} on {where} is not a stream ({doing}): {exc}"
            )
        return DeliveryError(f"{doing} on {where} failed: {error_text(exc)}")

"""Shared pieces of the HTTP/JSON tests: a server pair with HTTP on, and a small client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.databases import sqlite_url
from tests.support.servers import Pair, running_pair


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def reason(self) -> str:
        """The ErrorInfo reason of an error body."""
        for detail in self.json.get("details", []):
            if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
                return str(detail.get("reason", ""))
        return ""

    def violations(self) -> dict[str, str]:
        for detail in self.json.get("details", []):
            if detail.get("@type", "").endswith("google.rpc.BadRequest"):
                return {v["field"]: v["description"] for v in detail.get("fieldViolations", [])}
        return {}


@dataclass
class Http:
    base: str
    session: aiohttp.ClientSession
    token: str | None = None

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        token = token if token is not None else self.token
        if token:
            sent["Authorization"] = f"Bearer {token}"
        data: bytes | None = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        if content_type is not None:
            sent["Content-Type"] = content_type
        async with self.session.request(
            method, self.base + path, data=data, headers=sent, allow_redirects=False
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    def as_(self, token: str | None) -> Http:
        return Http(self.base, self.session, token)


@asynccontextmanager
async def http_pair(
    tmp_path: Path, db_url: str | None = None, **settings: Any
) -> AsyncIterator[tuple[Pair, Http]]:
    """Both servers (SQLite unless ``db_url``) with HTTP on a free port, and a client."""
    url = db_url or sqlite_url(tmp_path)
    async with running_pair(url, tmp_path, **settings) as pair:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield pair, Http(f"http://127.0.0.1:{pair.api.http_port}", session)

"""GetCaller (GET /v1/caller): the role the console shapes its pages by, over gRPC and HTTP."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from listener.v1 import caller_pb2, caller_pb2_grpc
from tests.http.support import http_pair

TOKENS = {"admin": "caller-admin-0123456789", "viewer": "caller-viewer-0123456789"}
TOKENS["publisher"] = "caller-publisher-0123456789"


async def test_each_role_learns_its_own_role(tmp_path: Path) -> None:
    config = tuple(f"{role}:{token}" for role, token in TOKENS.items())
    async with http_pair(tmp_path, tokens=config) as (pair, http):
        stub = caller_pb2_grpc.CallerServiceStub(pair.clients.channel)
        for role, token in TOKENS.items():
            reply = await stub.GetCaller(
                caller_pb2.GetCallerRequest(),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=30,  # a hang names this call instead of the suite's 300 s timeout
            )
            assert (reply.role, reply.authenticated) == (role, True)
            got = await http.as_(token).call("GET", "/v1/caller")
            assert got.status == 200
            assert got.json == {"role": role, "authenticated": True}
        for token in (None, "not-a-token"):
            got = await http.as_(token).call("GET", "/v1/caller")
            assert got.status == 401, got.body
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                metadata = [("authorization", f"Bearer {token}")] if token else None
                await stub.GetCaller(caller_pb2.GetCallerRequest(), metadata=metadata, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "not-a-token" not in (refused.value.details() or "")


async def test_a_server_without_tokens_says_admin_unauthenticated(tmp_path: Path) -> None:
    async with http_pair(tmp_path) as (pair, http):
        got = await http.call("GET", "/v1/caller")
        assert got.status == 200
        assert got.json == {"role": "admin", "authenticated": False}
        stub = caller_pb2_grpc.CallerServiceStub(pair.clients.channel)
        reply = await stub.GetCaller(caller_pb2.GetCallerRequest())
        assert (reply.role, reply.authenticated) == ("admin", False)

"""Authentication, the pipeline's gate: refuses a call by its bearer token and method.

What a token and a role are, and which role may call which method, is ``listener_core.auth``;
this stage applies those tables to every call, from its metadata, before the request is read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import grpc

from listener_core import errors
from listener_core.auth import ADMIN, OPEN_SERVICES, Caller, TokenTable, bearer_token
from listener_core.pipeline.stage import Gate

log = logging.getLogger(__name__)


def _service(method: str) -> str:
    return method.strip("/").partition("/")[0]


class Authentication(Gate):
    """Refuses calls without a known token (UNAUTHENTICATED) or whose role may not call the
    method (PERMISSION_DENIED), before any request is read.

    With an empty table every call passes: the servers allow that only on loopback addresses
    (see ``listener_core.server.check_exposure``). ``superuser`` may call every method, listed
    or not.
    """

    def __init__(
        self,
        tokens: TokenTable,
        method_roles: Mapping[str, frozenset[str]],
        *,
        superuser: str | None = ADMIN,
    ) -> None:
        self.tokens = tokens
        self.method_roles = method_roles
        self.superuser = superuser

    def check(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> Caller | None:
        """The caller, or None when authentication is off; raises the refusal otherwise."""
        if not self.tokens or _service(method) in OPEN_SERVICES:
            return None
        token = bearer_token(metadata)
        if token is None:
            raise errors.Unauthenticated(
                "this server requires a token: send the metadata 'authorization: Bearer <token>'",
                reason="TOKEN_MISSING",
            )
        caller = self.tokens.identify(token)
        if caller is None:
            raise errors.Unauthenticated("the bearer token is not valid", reason="TOKEN_INVALID")
        allowed = self.method_roles.get(method, frozenset())
        if caller.role != self.superuser and caller.role not in allowed:
            needed = ", ".join(sorted(allowed | ({self.superuser} if self.superuser else set())))
            raise errors.PermissionDenied(
                f"role {caller.role!r} may not call {method}; it needs one of: {needed}",
                reason="ROLE_NOT_ALLOWED",
                metadata={"role": caller.role, "method": method},
            )
        return caller

    def refusal(self, details: grpc.HandlerCallDetails) -> BaseException | None:
        if not self.tokens:
            return None
        try:
            self.check(details.method, details.invocation_metadata)
        except errors.ServiceError as exc:
            log.info("refused %s: %s", details.method, exc.reason)
            return exc
        return None

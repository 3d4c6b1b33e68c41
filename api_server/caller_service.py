"""listener.v1.CallerService: the caller's role, so clients offer only what it may do.

The authentication stage has already refused unknown tokens by the time a call gets here; this
only names the role of the token that passed (the web console hides what a viewer may not
use, rather than letting a click fail).
"""

from __future__ import annotations

from listener.v1 import caller_pb2, caller_pb2_grpc
from listener_core import auth, errors
from listener_core.server import Context


class CallerService(caller_pb2_grpc.CallerServiceServicer):
    def __init__(self, tokens: auth.TokenTable) -> None:
        self.tokens = tokens

    async def GetCaller(
        self, request: caller_pb2.GetCallerRequest, context: Context
    ) -> caller_pb2.Caller:
        if not self.tokens:
            return caller_pb2.Caller(role=auth.ADMIN, authenticated=False)
        token = auth.bearer_token(context.invocation_metadata())
        caller = self.tokens.identify(token) if token is not None else None
        if caller is None:  # authentication refuses these first; never trust that alone
            raise errors.Unauthenticated("the bearer token is not valid", reason="TOKEN_INVALID")
        return caller_pb2.Caller(role=caller.role, authenticated=True)

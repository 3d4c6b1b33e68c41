"""The store's refusals as the API answers them: with resource names and a status.

The store raises :mod:`event_store.errors` with plain ids; this is where they get the API's
names (``api_server.names``) and a domain error of ``listener_core.errors``. The error stage
calls :func:`service_error` for every exception a call raised (``build_pipeline``'s
``refusals``), so no servicer translates a store error by hand.
"""

from __future__ import annotations

from collections.abc import Callable

from api_server import names
from event_store import errors as store
from listener_core import errors

#: Each missing row the store names: the message for its key, and the ErrorInfo reason.
_NOT_FOUND: dict[type[store.NotInStore], tuple[Callable[[str], str], str]] = {
    store.PluginNotFound: (
        lambda key: f"plugin {names.plugin_name(key)} not found",
        "PLUGIN_NOT_FOUND",
    ),
    store.InstanceNotFound: (
        lambda key: f"listener instance {names.instance_name(key)} not found",
        "INSTANCE_NOT_FOUND",
    ),
    store.PackageNotFound: (
        lambda key: f"package {key} not found; upload it first",
        "PACKAGE_NOT_FOUND",
    ),
}


def service_error(exc: BaseException) -> errors.ServiceError | None:
    """The service error ``exc`` stands for, or None when it is none of the store's."""
    for kind, (message, reason) in _NOT_FOUND.items():
        if isinstance(exc, kind):
            return errors.NotFound(message(exc.key), reason=reason)
    if isinstance(exc, store.NoPendingEvent):
        return errors.FailedPrecondition(
            f"{names.instance_name(exc.instance_id)} has no pending event to skip",
            reason="NO_HEAD_EVENT",
        )
    if isinstance(exc, store.EventsPurged):
        return errors.FailedPrecondition(
            f"events up to sequence {exc.purged} were purged by retention; replay from "
            f"{exc.purged + 1} or later (parked events stay: redeliver them instead)",
            reason="EVENTS_PURGED",
        )
    return None


def check_etag(kind: str, name: str, revision: int, etag: str) -> None:
    """An etag this server could have issued (a revision number) that is not the current
    one is a lost race (ABORTED); anything else is the caller's mistake."""
    if etag and not (etag.isascii() and etag.isdigit()):
        raise errors.InvalidArgument(
            f"etag {etag[:64]!r} is not one this server issued (etags are revision numbers)",
            reason="INVALID_ETAG",
            field_violations=[("etag", "not an etag this server issued")],
        )
    if etag and etag != str(revision):
        raise errors.Aborted(
            f"{kind} {name} was changed since etag {etag!r} (now {revision}); read it again",
            reason="ETAG_MISMATCH",
        )

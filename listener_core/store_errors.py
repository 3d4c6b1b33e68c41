"""Recognises "the database is not there" in whatever shape a driver reports it.

Each driver has its own: asyncpg's ``CannotConnectNowError`` (PostgreSQL starting or shutting
down) reaches us wrapped in a plain SQLAlchemy ``DBAPIError``; a refused connection comes
as a bare ``ConnectionRefusedError``; aiomysql reports errno 2003/2013 in an
``OperationalError``; SQLite says "unable to open database file". All of them are
UNAVAILABLE (retry later), never INTERNAL: the caller did nothing wrong and neither did we.
"""

from __future__ import annotations

import errno
import socket

from sqlalchemy import exc as sa_exc

#: SQLSTATEs of a PostgreSQL that is gone or going: class 08 (connection exception) and
#: these (admin shutdown, crash shutdown, cannot connect now, too many connections).
_PG_STATES = {"57P01", "57P02", "57P03", "53300"}

#: MySQL/MariaDB client and server errors of the same kind: can't connect (2002, 2003),
#: gone away (2006), lost connection (2013, 2055), too many connections (1040), shutdown
#: in progress (1053), connection killed (1927), server shutdown (ER_SERVER_SHUTDOWN 1053).
_MYSQL_CODES = {1040, 1053, 1927, 2002, 2003, 2005, 2006, 2013, 2055}

_NET_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EPIPE,
}


#: A transaction the store aborted to resolve a conflict with another: PostgreSQL's
#: serialization_failure and deadlock_detected, MySQL's lock wait timeout and deadlock.
_PG_CONFLICTS = {"40001", "40P01"}
_MYSQL_CONFLICTS = {1205, 1213}


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception, what SQLAlchemy wraps, and what it was raised from (bounded)."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(found) < 12:
        current = todo.pop()
        if current is None or any(current is f for f in found):
            continue
        found.append(current)
        todo.extend(
            [
                getattr(current, "orig", None),
                getattr(current, "driver_exception", None),
                current.__cause__,
                current.__context__,
            ]
        )
    return found


def _unreachable_one(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError | sa_exc.InterfaceError):
        return True  # no pooled connection in time; a dropped one
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OSError) and exc.errno in _NET_ERRNOS:
        return True
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(state, str) and (state.startswith("08") or state in _PG_STATES):
        return True
    code = exc.args[0] if exc.args else None
    if isinstance(code, int) and code in _MYSQL_CODES and "mysql" in type(exc).__module__:
        return True
    return "unable to open database file" in str(exc)


def store_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store cannot be reached right now (not a bad statement)."""
    return any(_unreachable_one(e) for e in _causes(exc))


def _conflict_one(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if state in _PG_CONFLICTS:
        return True
    code = exc.args[0] if exc.args else None
    return code in _MYSQL_CONFLICTS and "mysql" in type(exc).__module__


def is_conflict(exc: BaseException) -> bool:
    """Whether the store aborted the transaction for a deadlock or serialization conflict
    (running it again from the start is the cure)."""
    return any(_conflict_one(e) for e in _causes(exc))

"""Page sizes and opaque page tokens (AIP-158).

A token carries the cursor and a fingerprint of the request's other fields (its filters and
parent; not page_size, which may change between pages): a token sent with different filters
would silently continue another listing, so it is INVALID_ARGUMENT instead.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from listener_core import errors

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(value: int) -> int:
    if value < 0:
        raise errors.InvalidArgument(
            "page_size must not be negative", field_violations=[("page_size", "negative")]
        )
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


async def read_page(
    read: Callable[[int], Awaitable[Sequence[T]]], size: int
) -> tuple[list[T], bool]:
    """A page of at most ``size`` rows and whether more follow: ``read(limit)`` is asked for
    one row more than the page, which answers "is there a next page?" without a count."""
    rows = list(await read(size + 1))
    return rows[:size], len(rows) > size


def _fingerprint(bound: tuple[object, ...]) -> str:
    return hashlib.sha256(repr(bound).encode()).hexdigest()[:16]


def encode(cursor: str, *bound: object) -> str:
    """The token of the page after ``cursor`` of a listing with the fields ``bound``."""
    return base64.urlsafe_b64encode(f"{cursor}|{_fingerprint(bound)}".encode()).decode()


#: What a cursor inside a token may be: an id, or an event sequence (which must fit int64).
_CURSOR = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_MAX_INT64 = 2**63 - 1


def decode(token: str, *bound: object) -> str:
    """The cursor of a token this server issued for a listing with the same fields
    ``bound``; anything else is INVALID_ARGUMENT.

    Tokens are not signed, so a client can forge one: the cursor is held to the shapes this
    server writes (ASCII ids, and sequences that fit a BIGINT), so a forged one can at most
    start a listing elsewhere, never reach the store as text it cannot take.
    """
    if not token:
        return ""
    try:
        cursor, _, fingerprint = (
            base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii").rpartition("|")
        )
    except (ValueError, UnicodeError):
        cursor = fingerprint = ""
    if not _CURSOR.fullmatch(cursor) or (cursor.isdigit() and int(cursor) > _MAX_INT64):
        raise errors.InvalidArgument(
            "page_token is not one this server issued", field_violations=[("page_token", "invalid")]
        )
    if fingerprint != _fingerprint(bound):
        raise errors.InvalidArgument(
            "page_token belongs to a listing with other filters; send the same request as "
            "for the first page (page_size may change), or start again without a token",
            field_violations=[("page_token", "issued for other request fields")],
        )
    return cursor

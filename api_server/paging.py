"""Page sizes and opaque page tokens (AIP-158)."""

from __future__ import annotations

import base64

from listener_core import errors

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(value: int) -> int:
    if value < 0:
        raise errors.InvalidArgument(
            "page_size must not be negative", field_violations=[("page_size", "negative")]
        )
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode(cursor: str) -> str:
    return base64.urlsafe_b64encode(cursor.encode()).decode()


def decode(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument(
            "page_token is not one this server issued", field_violations=[("page_token", "invalid")]
        ) from None

"""Reading a List method to the end (AIP-158): the one loop every listing of the client uses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

Page = TypeVar("Page")
Item = TypeVar("Item")

#: Items asked for per page when the caller sets no limit (the server caps it at 1000).
PAGE_SIZE = 500


async def every_page(
    call: Callable[[Any], Awaitable[Page]],
    request: Any,
    items: Callable[[Page], Iterable[Item]],
    limit: int | None = None,
) -> list[Item]:
    """Calls a List method page by page and returns every item, or the first ``limit``;
    ``request`` is the first page's request, its ``page_token`` then moved on."""
    found: list[Item] = []
    while limit is None or len(found) < limit:
        request.page_size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(found))
        page = await call(request)
        found.extend(items(page))
        request.page_token = getattr(page, "next_page_token", "")
        if not request.page_token:
            break
    return found if limit is None else found[:limit]

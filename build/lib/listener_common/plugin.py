"""The base class every listener plugin subclasses, and how servers hand events to it.

A handler that returns delivered the event; one that raises failed it. The alert server marks
an event delivered only after its handler returned, and retries a failed one (the same ``id``),
so delivery is at least once and a plugin de-duplicates on ``event.id`` if it must.

Handlers may be ``async def`` or plain ``def``. A plain one is wrapped when the subclass is
created so that it runs in a worker thread (``asyncio.to_thread``): one plugin's blocking call
must never stall the event loop that serves every other listener instance.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from listener_common import events
from listener_common.events import EventType, ListenerEvent, handler_name
from listener_common.params import PluginParam

__all__ = ["ListenerPlugin", "deliver_batch", "supports_batch"]

_HANDLERS: dict[EventType, str] = {event_type: handler_name(event_type) for event_type in EventType}
# Methods a subclass may write as plain ``def``; they are made awaitable at class creation.
_CALLBACKS = frozenset({"open", "close", "on_event", "on_events", *_HANDLERS.values()})


def _threaded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An ``async`` wrapper running ``fn`` in a worker thread."""

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    return run


class ListenerPlugin:
    """Subclass this and override the handlers for the events you care about.

    The alert server makes one object per listener instance: it calls :meth:`open` with the
    instance's params, then a handler per event, in sequence order, one at a time; then
    :meth:`close` when the instance is stopped, changed or its plugin updated.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _CALLBACKS:
            fn = cls.__dict__.get(name)
            if inspect.isfunction(fn) and not inspect.iscoroutinefunction(fn):
                setattr(cls, name, _threaded(fn))

    @classmethod
    def params(cls) -> list[PluginParam]:
        """The params form admins fill in for each listener instance (none by default)."""
        return []

    async def open(self, config: dict[str, Any]) -> None:
        """Called once per instance, before any event, with its validated, typed params.

        Acquire connections and files here rather than in ``__init__``: an exception here is
        reported as the instance's error and ``open`` is tried again later.
        """

    async def close(self) -> None:
        """Called once when the instance stops; release what :meth:`open` acquired."""

    async def on_event(self, event: ListenerEvent) -> None:
        """Generic entry: dispatches to the ``on_<event type>`` handler.

        Override it to handle every event type the same way.
        """
        await getattr(self, _HANDLERS[event.type])(event)

    async def on_server_down(self, event: events.ServerDown) -> None:
        """A master or worker server went down."""

    async def on_workflow_added(self, event: events.WorkflowAdded) -> None:
        """A workflow definition was created."""

    async def on_workflow_update(self, event: events.WorkflowUpdate) -> None:
        """A workflow definition was changed."""

    async def on_workflow_removed(self, event: events.WorkflowRemoved) -> None:
        """A workflow definition was deleted."""

    async def on_workflow_start(self, event: events.WorkflowStart) -> None:
        """A workflow instance started."""

    async def on_workflow_end(self, event: events.WorkflowEnd) -> None:
        """A workflow instance succeeded."""

    async def on_workflow_fail(self, event: events.WorkflowFail) -> None:
        """A workflow instance failed."""

    async def on_task_added(self, event: events.TaskAdded) -> None:
        """A task definition was created."""

    async def on_task_update(self, event: events.TaskUpdate) -> None:
        """A task definition was changed."""

    async def on_task_removed(self, event: events.TaskRemoved) -> None:
        """A task definition was deleted."""

    async def on_task_start(self, event: events.TaskStart) -> None:
        """A task instance started."""

    async def on_task_end(self, event: events.TaskEnd) -> None:
        """A task instance succeeded."""

    async def on_task_fail(self, event: events.TaskFail) -> None:
        """A task instance failed."""


def supports_batch(plugin: object) -> bool:
    """Whether the plugin takes whole batches through ``on_events(batch)``.

    Batches let a plugin amortize a write or a request over many events; the whole batch is
    delivered or failed together.
    """
    return callable(getattr(plugin, "on_events", None))


async def deliver_batch(plugin: ListenerPlugin, batch: Sequence[ListenerEvent]) -> None:
    """Hands a batch over: to ``on_events`` if defined, else to ``on_event`` one by one.

    Without ``on_events`` the events go in order and the first failure stops the batch (the
    events before it were delivered; they come again on retry, as at-least-once allows).
    """
    if not batch:
        return
    on_events = getattr(plugin, "on_events", None)
    if on_events is None:
        for event in batch:
            await plugin.on_event(event)
        return
    if inspect.iscoroutinefunction(on_events):
        await on_events(batch)
        return
    # Set on the instance rather than the class, so it was not wrapped: keep it off the loop.
    result = await asyncio.to_thread(on_events, batch)
    if inspect.isawaitable(result):
        await result

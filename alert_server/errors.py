"""The alert server's own exceptions, in one place so no module imports another for a type.

None of these reach a caller as they are: the servicer turns what an operator must see into
``listener_core.errors`` (gRPC statuses), and the delivery loop turns plugin failures into
``last_error`` text on the instance. (A package whose code does not load raises the SDK's
``PluginLoadError``, which the plugin test harness raises too.)

    Exception
    ├── PluginCallError      a plugin's open or handler raised or timed out
    ├── Stopped              this server no longer owns the instance
    ├── LeaseExpired         the lease ran out during a plugin call, which was cut off
    ├── ChildDied            the plugin's process ended (exit status or signal)
    ├── PluginProcessError   the plugin's process cannot serve the call now
    ├── ProtocolError        the other end of a plugin pipe sent no frame of the protocol
    └── RemoteError          base of exceptions rebuilt from a plugin process's error
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from event_store.events import StoredEvent


class PluginCallError(Exception):
    """A plugin's open or handler raised or timed out; the message is what operators see."""

    def __init__(
        self,
        message: str,
        *,
        event: StoredEvent | None = None,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        super().__init__(message)
        self.event = event
        self.retry_after = retry_after
        self.permanent = permanent


class Stopped(Exception):
    """This server no longer owns the instance."""


class LeaseExpired(Exception):
    """The lease ran out during a plugin call, which was cut off: no plugin failure."""


class ChildDied(Exception):
    """The plugin's process ended; the message says how (exit status or signal)."""


class PluginProcessError(Exception):
    """The plugin's process cannot serve the call (not started, or waiting to restart)."""


class ProtocolError(Exception):
    """The other side sent something that is not a frame of this protocol."""


class RemoteError(Exception):
    """Base of the exceptions rebuilt from a child's error: ``ValueError`` in the child
    arrives as a ``RemoteError`` subclass named ``ValueError``, so operators read the same
    ``ValueError: …`` as with namespace isolation."""

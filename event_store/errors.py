"""What the store refuses, in the store's own words.

The store knows rows and plain ids, not how a server answers: these errors carry the id at
fault and nothing of gRPC or of the API's resource names. The API server's error stage turns
them into statuses with resource names (``api_server.refusals``).

    StoreError
    ├── NotInStore                a row that is not there
    │   ├── PackageNotFound       (sha256)
    │   ├── PluginNotFound        (plugin id)
    │   └── InstanceNotFound      (listener instance id)
    ├── NoPendingEvent            an instance has no event at its head to skip
    └── EventsPurged              a replay reaches back past what retention kept
"""

from __future__ import annotations


class StoreError(Exception):
    """A refusal of the store: the caller asked about, or for, what the store cannot give."""


class NotInStore(StoreError):
    """No row has ``key``; ``kind`` says what kind of row was looked for."""

    kind = "row"

    def __init__(self, key: str) -> None:
        super().__init__(f"{self.kind} {key} not found")
        self.key = key


class PackageNotFound(NotInStore):
    kind = "package"


class PluginNotFound(NotInStore):
    kind = "plugin"


class InstanceNotFound(NotInStore):
    kind = "listener instance"


class NoPendingEvent(StoreError):
    """The instance's cursor is at the end of its types' events: nothing to skip."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"listener instance {instance_id} has no pending event")
        self.instance_id = instance_id


class EventsPurged(StoreError):
    """Events up to ``purged`` are gone (retention), so a replay cannot start before them."""

    def __init__(self, purged: int) -> None:
        super().__init__(f"events up to sequence {purged} were purged by retention")
        self.purged = purged

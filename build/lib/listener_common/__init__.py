"""listener_common: the SDK listener plugins are written against.

A plugin subclasses :class:`ListenerPlugin`, declares its params with :mod:`params`, receives
typed :mod:`events`, and ships as a zip described by a :class:`Manifest`. This package is all a
plugin author depends on: it uses only the standard library and ``packaging``, never the
servers, protobuf, gRPC or a database, so it is small to install and stable to build against.
"""

from listener_common import events, params
from listener_common._version import __version__
from listener_common.errors import (
    DeliveryError,
    ListenerError,
    ManifestError,
    PackageError,
    ParamValidationError,
)
from listener_common.events import EventType, ListenerEvent
from listener_common.manifest import Manifest
from listener_common.plugin import ListenerPlugin

__all__ = [
    "DeliveryError",
    "EventType",
    "ListenerError",
    "ListenerEvent",
    "ListenerPlugin",
    "Manifest",
    "ManifestError",
    "PackageError",
    "ParamValidationError",
    "__version__",
    "events",
    "params",
]

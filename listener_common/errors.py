"""Every exception the SDK raises on purpose, in one place.

Servers map these to statuses by class, so the hierarchy is part of the contract::

    ListenerError                   anything the SDK rejects
    ├── PackageError                a plugin zip that cannot be installed
    │   ├── ManifestError           its listener-plugin.toml is missing a key or has a bad one
    │   └── PluginLoadError         well formed, but its code does not load
    ├── ParamValidationError        listener instance params that do not fit the plugin's form
    └── DeliveryError               raised by a plugin: how a failed delivery should be retried
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ListenerError(Exception):
    """Base class: catch this to handle any rejection by the SDK."""


class PackageError(ListenerError):
    """The package is not a usable plugin zip; the message says what is wrong with it."""


class ManifestError(PackageError):
    """The package's manifest is invalid; the message names the key at fault."""


class PluginLoadError(PackageError):
    """The package is well formed but its code does not load (the message says why)."""


class ParamValidationError(ListenerError):
    """Params failed validation; ``violations`` lists every one, not just the first.

    Reporting all of them at once lets an admin fix a form in one round trip, and lets the API
    server turn them into per-field ``BadRequest`` violations.
    """

    violations: list[tuple[str, str]]

    def __init__(self, violations: Sequence[tuple[str, str]]) -> None:
        self.violations = [(str(field), str(text)) for field, text in violations]
        super().__init__(
            "invalid params: " + "; ".join(f"{field}: {text}" for field, text in self.violations)
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the violations, not the message, so the error survives pickling
        # (a plugin may hand it to multiprocessing or copy it); the alert server's plugin
        # processes send errors as JSON, not pickles.
        return (type(self), (self.violations,))


class DeliveryError(ListenerError):
    """A handler's way to say more than "it failed": any other exception also fails the
    event and is retried with the instance's backoff.

    ``retry_after`` (seconds) asks for the next attempt no sooner than that, as a
    destination's ``Retry-After`` says; ``permanent`` says a retry cannot help (a 400 from a
    webhook), so the instance's failure policy may park the event at once instead.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, permanent: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_delivery_error, (str(self), self.retry_after, self.permanent))


def _rebuild_delivery_error(
    message: str, retry_after: float | None, permanent: bool
) -> DeliveryError:
    return DeliveryError(message, retry_after=retry_after, permanent=permanent)


def error_text(exc: BaseException) -> str:
    """An exception as operators read it in ``last_error`` and logs: ``ValueError: boom``, or
    the bare type name when there is no message. A message that already starts with its
    type's name (as aiokafka's do) is not prefixed again."""
    text, name = str(exc), type(exc).__name__
    if text.startswith(name):
        return text
    return f"{name}: {text}" if text else name

"""Runs a plugin the way the alert server will, without a server.

:class:`PluginHarness` takes a plugin class, a built package zip or a plugin folder (built
first, like ``listenerctl plugin build``), and params. It

* validates the params against the plugin's form with ``listener_common.params``, the code the
  API server runs on ``CreateListenerInstance``, and converts them as the alert server does;
* loads a zip or folder through ``listener_common._namespace``, the import namespaces the alert
  server's loader uses (``isolation = "process"`` packages are loaded the same way here: the
  alert server's child process loads them with that same code);
* drives ``open`` / ``on_event`` / ``on_events`` / ``close`` through ``listener_common._dispatch``,
  the alert server's own dispatch: sync handlers off the loop, the handler timeout, batches,
  ``DeliveryError`` with ``retry_after`` and ``permanent``, the backoff schedule and the
  failure policy (``block`` or ``park`` after N attempts).

The :class:`Report` says what became of each event: ``delivered`` (first try), ``retried``
(delivered after failures), ``parked`` (dead-lettered under the park policy), ``blocked`` (still
failing after ``max_attempts``: the alert server would keep retrying it) or ``pending`` (never
reached, behind a blocked one). Backoff waits are computed and reported but not slept unless
``wait=True``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from listener_common import _dispatch, params
from listener_common._namespace import Namespaces
from listener_common.errors import PackageError
from listener_common.events import ListenerEvent
from listener_common.manifest import MANIFEST_NAME
from listener_common.package import build_package, inspect_package
from listener_common.plugin import ListenerPlugin
from listener_common.testing.samples import sample_events

__all__ = ["Attempt", "EventResult", "Outcome", "PluginHarness", "Report", "run_plugin"]

Outcome = Literal["delivered", "retried", "parked", "blocked", "pending"]
PluginSource = type[ListenerPlugin] | str | Path

_namespaces: Namespaces | None = None
_counter = itertools.count(1)


@dataclass(frozen=True)
class Attempt:
    """One failed attempt, as the alert server records it in ``recent_attempts``."""

    error: str
    #: The event that failed (None: ``open`` failed before any event).
    event: ListenerEvent | None
    #: The wait before the next attempt (0 when the event was parked).
    delay: float
    retry_after: float | None = None
    permanent: bool = False
    #: The failure parked the event (the park policy), so there is no next attempt.
    parked: bool = False


@dataclass
class EventResult:
    event: ListenerEvent
    outcome: Outcome = "pending"
    #: Failed attempts on this event.
    failures: int = 0
    #: The last error recorded for it ('' if it never failed).
    error: str = ""

    @property
    def id(self) -> str:
        return self.event.id

    @property
    def sequence(self) -> int:
        return self.event.sequence


@dataclass
class Report:
    """What the plugin did with the events, in sequence order."""

    plugin: str
    config: dict[str, Any]
    results: list[EventResult]
    attempts: list[Attempt] = field(default_factory=list)
    close_error: str = ""

    def outcomes(self) -> list[Outcome]:
        return [r.outcome for r in self.results]

    def with_outcome(self, *outcomes: Outcome) -> list[ListenerEvent]:
        return [r.event for r in self.results if r.outcome in outcomes]

    @property
    def delivered(self) -> list[ListenerEvent]:
        """Events the plugin accepted, at the first try or after retries."""
        return self.with_outcome("delivered", "retried")

    @property
    def parked(self) -> list[ListenerEvent]:
        return self.with_outcome("parked")

    @property
    def ok(self) -> bool:
        """Every event delivered, and ``close`` did not fail."""
        return len(self.delivered) == len(self.results) and not self.close_error

    def lines(self) -> list[str]:
        """The report as text, one line per event and per failed attempt."""
        out = [f"plugin {self.plugin}"]
        for r in self.results:
            extra = f" after {r.failures} failed attempt(s)" if r.failures else ""
            out.append(f"  {r.event.type.value:<16} {r.event.id}  {r.outcome}{extra}")
            if r.error and r.outcome != "delivered":
                out.append(f"      last error: {r.error}")
        for a in self.attempts:
            hint = f" (retry_after {a.retry_after:g}s)" if a.retry_after is not None else ""
            hint += " (permanent)" if a.permanent else ""
            then = "parked" if a.parked else f"next attempt in {a.delay:.2f}s"
            out.append(f"  attempt failed: {a.error}{hint}; {then}")
        if self.close_error:
            out.append(f"  close failed: {self.close_error}")
        return out


def _loader() -> Namespaces:
    global _namespaces
    if _namespaces is None:
        _namespaces = Namespaces()
    return _namespaces


class PluginHarness:
    """One listener instance of a plugin, run in this process (see the module docstring).

    ``policy``/``park_after`` are the instance's failure policy; ``handler_timeout``,
    ``batch_size``, ``retry_base`` and ``retry_max`` the alert server's settings (defaults are
    its defaults). ``max_attempts`` bounds the failures on one event before the harness stops
    and reports it ``blocked``.
    """

    def __init__(
        self,
        plugin: PluginSource,
        params: Mapping[str, str] | None = None,
        *,
        policy: Literal["block", "park"] = "block",
        park_after: int = 3,
        handler_timeout: float = 30.0,
        batch_size: int = 500,
        retry_base: float = 1.0,
        retry_max: float = 300.0,
        max_attempts: int = 5,
        wait: bool = False,
    ) -> None:
        if policy not in ("block", "park"):
            raise ValueError(f"policy {policy!r}: use 'block' or 'park'")
        self.source = plugin
        self.params = dict(params or {})
        self.policy = _dispatch.FailurePolicy(policy, park_after if policy == "park" else 0)
        self.handler_timeout = handler_timeout
        self.batch_size = max(1, batch_size)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_attempts = max(1, max_attempts)
        self.wait = wait

    async def run(self, events: Sequence[ListenerEvent] | None = None) -> Report:
        """Delivers ``events`` (default: one sample of each of the 13 types) and closes.

        Raises ParamValidationError for params the API server would refuse, PackageError for
        a package it would refuse or the alert server could not load.
        """
        chosen = list(sample_events() if events is None else events)
        with tempfile.TemporaryDirectory(prefix="listener-harness-") as tmp:
            cls, form, label, forget = self._load(Path(tmp))
            try:
                params.validate_params(form, self.params)
                config = params.typed_config(form, self.params)
                return await self._drive(cls, config, label, chosen)
            finally:
                forget()

    def _load(self, tmp: Path) -> tuple[type[ListenerPlugin], list[dict[str, Any]], str, Any]:
        source = self.source
        if isinstance(source, type):
            if not issubclass(source, ListenerPlugin):
                raise TypeError(f"{source!r} is not a ListenerPlugin subclass")
            return source, params.form_json(source), source.__qualname__, lambda: None
        path = Path(source)
        if path.is_dir():
            if not (path / MANIFEST_NAME).is_file():
                raise PackageError(f"{path}: no {MANIFEST_NAME}")
            path = build_package(path, tmp)
        elif not path.is_file():
            raise PackageError(f"{path}: no such package zip or plugin folder")
        data = path.read_bytes()
        info = inspect_package(data)
        # A copy of its own: the caller may rebuild the zip while the classes are loaded.
        zip_path = tmp / f"{hashlib.sha256(data).hexdigest()[:12]}.zip"
        zip_path.write_bytes(data)
        manifest = info.manifest
        namespaces = _loader()
        name = f"{manifest.name}_{manifest.version}_{info.sha256[:12]}_test{next(_counter)}"
        prefix = namespaces.add(name, zip_path, info.top_level_names)
        try:
            cls, form = namespaces.import_entry(prefix, manifest.entry)
        except BaseException:
            namespaces.forget(prefix, zip_path)
            raise
        label = f"{manifest.name} {manifest.version} ({manifest.entry})"
        return cls, form, label, lambda: namespaces.forget(prefix, zip_path)

    async def _pause(self, delay: float) -> None:
        if self.wait:
            await asyncio.sleep(delay)

    async def _drive(
        self,
        cls: type[ListenerPlugin],
        config: dict[str, Any],
        label: str,
        events: list[ListenerEvent],
    ) -> Report:
        results = [EventResult(e) for e in sorted(events, key=lambda e: e.sequence)]
        report = Report(label, config, results)
        plugin: ListenerPlugin | None = None
        attempts = 0  # failures in a row on the head, as the instance's ``attempts``
        head = 0
        while head < len(results):
            if plugin is None:
                try:
                    plugin = await _dispatch.open_plugin(cls, config, self.handler_timeout)
                except _dispatch.OpenFailed as exc:
                    attempts += 1
                    delay = self._delay(attempts, None)
                    report.attempts.append(Attempt(str(exc), None, delay))
                    if attempts >= self.max_attempts:
                        for r in results[head:]:
                            r.outcome, r.error = "blocked", str(exc)
                        return report
                    await self._pause(delay)
                    continue
            batch = results[head : head + self.batch_size]
            count, failure = await _dispatch.deliver(
                plugin, batch, self.handler_timeout, lambda r: r.event
            )
            for r in batch[:count]:
                r.outcome = "retried" if r.failures else "delivered"
            head += count
            if count:
                attempts = 0
            if failure is None:
                continue
            attempts += 1
            verdict = await self._setback(report, batch[failure.index], failure, attempts)
            if verdict == "blocked":
                break
            if verdict == "parked":
                head += 1
                attempts = 0
        if plugin is not None:
            report.close_error = await _dispatch.close_plugin(plugin, self.handler_timeout)
        return report

    async def _setback(
        self, report: Report, failed: EventResult, failure: _dispatch.Failure, attempts: int
    ) -> Literal["parked", "blocked", "retry"]:
        """The head event failed its ``attempts``-th time in a row: parked under the failure
        policy, blocked after ``max_attempts``, or retried after the backoff (waited here)."""
        failed.failures += 1
        failed.error = failure.message
        if self.policy.parks(attempts, failure.permanent):
            report.attempts.append(
                Attempt(
                    failure.message,
                    failed.event,
                    0.0,
                    failure.retry_after,
                    failure.permanent,
                    parked=True,
                )
            )
            failed.outcome = "parked"
            return "parked"
        delay = self._delay(attempts, failure.retry_after)
        report.attempts.append(
            Attempt(failure.message, failed.event, delay, failure.retry_after, failure.permanent)
        )
        if attempts >= self.max_attempts:
            failed.outcome = "blocked"
            return "blocked"
        await self._pause(delay)
        return "retry"

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        return _dispatch.next_delay(attempts, self.retry_base, self.retry_max, retry_after)


def run_plugin(
    plugin: PluginSource,
    events: Sequence[ListenerEvent] | None = None,
    params: Mapping[str, str] | None = None,
    **options: Any,
) -> Report:
    """:meth:`PluginHarness.run` for synchronous tests: ``run_plugin(MyListener, [event],
    {"logFile": path})``. Options are :class:`PluginHarness`'s keyword arguments."""
    return asyncio.run(PluginHarness(plugin, params, **options).run(events))

"""How listenerctl shows things: aligned tables for people, JSON for scripts, a progress bar
on stderr (so stdout stays parseable)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from listener.v1 import event_pb2, listener_instance_pb2, plugin_pb2
from listener_client import type_name

Row = Sequence[object]


def to_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data: proto field names, every field present, enum names,
    64-bit integers as numbers (proto JSON would quote them), so ``jq`` can compare them."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def emit_json(data: Any, out: TextIO = sys.stdout) -> None:
    if isinstance(data, Message):
        data = to_dict(data)
    elif isinstance(data, list):
        data = [to_dict(d) if isinstance(d, Message) else d for d in data]
    out.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def emit_json_line(data: dict[str, Any], out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(data, separators=(",", ":")) + "\n")
    out.flush()


def table(headers: Sequence[str], rows: Iterable[Row], out: TextIO = sys.stdout) -> None:
    """Columns padded to their widest cell; the last column is not padded."""
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        out.write("  ".join([*padded, row[-1]]).rstrip() + "\n")


def fields(pairs: Iterable[tuple[str, object]], out: TextIO = sys.stdout) -> None:
    """``key   value`` lines with the values aligned."""
    items = [(k, str(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        out.write(f"{key.ljust(width)}  {value}\n")


def when(ts: Timestamp) -> str:
    """An RFC 3339 UTC time to the second, or ``-`` when unset."""
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(ts: Timestamp, now: datetime | None = None) -> str:
    """``in 4.1s`` / ``12.0s ago`` relative to now, or empty when unset."""
    if not ts.seconds and not ts.nanos:
        return ""
    delta = (ts.ToDatetime(tzinfo=UTC) - (now or datetime.now(UTC))).total_seconds()
    return f"in {delta:.1f}s" if delta >= 0 else f"{-delta:.1f}s ago"


def size(n: int) -> str:
    if n <= 0:
        return "-"
    if n < 1024:
        return f"{n} B"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"


def state(value: int, enum: Any) -> str:
    return str(enum.Name(value)).removeprefix("STATE_")


def plugins(items: Sequence[plugin_pb2.Plugin], out: TextIO = sys.stdout) -> None:
    table(
        ["ID", "VERSION", "STATE", "ISOLATION", "SIZE", "UPDATED", "NAME"],
        (
            [
                p.name.removeprefix("plugins/"),
                p.version,
                state(p.state, plugin_pb2.Plugin.State),
                plugin_pb2.Isolation.Name(p.isolation).removeprefix("ISOLATION_").lower(),
                size(p.package_size),
                when(p.update_time),
                p.display_name,
            ]
            for p in items
        ),
        out,
    )


def plugin(p: plugin_pb2.Plugin, out: TextIO = sys.stdout) -> None:
    fields(
        [
            ("plugin", p.name),
            ("display name", p.display_name),
            ("version", p.version),
            ("entry", p.entry),
            ("sdk", p.sdk),
            ("state", state(p.state, plugin_pb2.Plugin.State)),
            ("isolation", plugin_pb2.Isolation.Name(p.isolation).removeprefix("ISOLATION_")),
            ("sha256", p.sha256),
            ("size", size(p.package_size)),
            ("created", when(p.create_time)),
            ("updated", when(p.update_time)),
            ("etag", p.etag),
        ],
        out,
    )
    if p.params:
        out.write("params:\n")
        table(
            ["FIELD", "TYPE", "REQUIRED", "DEFAULT", "TITLE"],
            (
                [
                    f.field,
                    f.type,
                    "yes" if f.validate.required else "no",
                    default_text(f.value) if f.HasField("value") else "",
                    f.title,
                ]
                for f in p.params
            ),
            out,
        )


def default_text(value: struct_pb2.Value) -> str:
    """A form default as JSON; a whole number as one (a Value holds every number as a
    double, which JSON would print as 0.0 for an InputNumber defaulting to 0)."""

    def whole(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, list):
            return [whole(i) for i in item]
        if isinstance(item, dict):
            return {k: whole(v) for k, v in item.items()}
        return item

    return json.dumps(whole(json_format.MessageToDict(value)))


def _types(values: Iterable[int]) -> str:
    return ",".join(type_name(v) for v in values)


def _policy(inst: listener_instance_pb2.ListenerInstance) -> str:
    policy = inst.failure_policy
    if policy.mode == listener_instance_pb2.FailurePolicy.MODE_PARK:
        return f"park after {policy.park_after} attempt(s)"
    return "block (retry with backoff)"


def instances(
    items: Sequence[listener_instance_pb2.ListenerInstance], out: TextIO = sys.stdout
) -> None:
    table(
        ["ID", "PLUGIN", "STATE", "PENDING", "LAG", "PARKED", "EVENTS"],
        (
            [
                i.name.removeprefix("listenerInstances/"),
                i.plugin.removeprefix("plugins/"),
                state(i.state, listener_instance_pb2.ListenerInstance.State),
                i.delivery.pending_count,
                f"{i.delivery.lag_seconds:.1f}s",
                i.delivery.parked_count,
                _types(i.event_types),
            ]
            for i in items
        ),
        out,
    )


def instance(inst: listener_instance_pb2.ListenerInstance, out: TextIO = sys.stdout) -> None:
    """The status view: where delivery stands, what failed last, and the recent attempts."""
    d = inst.delivery
    next_attempt = when(d.next_attempt_time)
    if next_attempt != "-":
        next_attempt += f" ({ago(d.next_attempt_time)})"
    fields(
        [
            ("instance", inst.name),
            ("display name", inst.display_name),
            ("plugin", inst.plugin),
            ("state", state(inst.state, listener_instance_pb2.ListenerInstance.State)),
            ("events", _types(inst.event_types)),
            ("failure policy", _policy(inst)),
            ("filter", inst.filter or "-"),
            ("pending", d.pending_count),
            ("lag", f"{d.lag_seconds:.1f}s"),
            ("delivered sequence", d.delivered_sequence),
            ("last delivery", when(d.last_delivery_time)),
            ("attempts", d.attempts),
            ("last error", d.last_error or "-"),
            ("next attempt", next_attempt),
            ("parked", d.parked_count),
            ("filtered", d.filtered_count),
            ("owner", d.owner or "-"),
            ("params", ", ".join(f"{k}={v}" for k, v in sorted(inst.params.items())) or "-"),
            ("etag", inst.etag),
        ],
        out,
    )
    if d.recent_attempts:
        out.write("recent attempts (newest first):\n")
        table(
            ["TIME", "RESULT", "SEQUENCE", "EVENT", "COUNT", "MS", "ERROR"],
            (
                [
                    when(a.time),
                    "failed" if a.error else "ok",
                    a.sequence,
                    a.event_id,
                    a.count,
                    f"{a.duration_ms:.1f}",
                    a.error,
                ]
                for a in d.recent_attempts
            ),
            out,
        )


def payload_summary(event: event_pb2.ListenerEvent) -> str:
    """The payload's identifying fields, e.g. ``project=etl workflow=nightly task=extract``."""
    which = event.WhichOneof("payload")
    if which is None:
        return ""
    body = getattr(event, which)
    parts: list[str] = []
    for label, name in (
        ("project", "project_name"),
        ("workflow", "workflow_name"),
        ("workflow", "name"),
        ("task", "task_name"),
        ("state", "task_state"),
        ("state", "state"),
        ("host", "host"),
    ):
        value = getattr(body, name, "") if name in body.DESCRIPTOR.fields_by_name else ""
        if value and not any(p.startswith(label + "=") for p in parts):
            parts.append(f"{label}={value}")
    return " ".join(parts)


def events(items: Sequence[event_pb2.ListenerEvent], out: TextIO = sys.stdout) -> None:
    table(
        ["SEQUENCE", "PUBLISHED", "TYPE", "ID", "SUMMARY"],
        (
            [e.sequence, when(e.publish_time), type_name(e.type), e.id, payload_summary(e)]
            for e in items
        ),
        out,
    )


def parked(items: Sequence[listener_instance_pb2.ParkedEvent], out: TextIO = sys.stdout) -> None:
    table(
        ["SEQUENCE", "TYPE", "EVENT", "ATTEMPTS", "PARKED", "REDELIVERY", "LAST ERROR"],
        (
            [
                p.event.sequence,
                type_name(p.event.type),
                p.event.id,
                p.attempts,
                when(p.park_time),
                "pending" if p.redelivery_pending else "-",
                p.last_error,
            ]
            for p in items
        ),
        out,
    )


class ProgressBar:
    """``label [#######.............]  35%  1.1 MiB/3.2 MiB`` redrawn in place on stderr.

    Plain text with carriage returns, redrawn only when the percentage changes, and ended
    with a newline, so a log of it stays readable.
    """

    WIDTH = 30

    def __init__(self, label: str, out: TextIO = sys.stderr) -> None:
        self.label = label
        self.out = out
        self._shown = -1

    def __call__(self, sent: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, sent * 100 // total)
        if percent == self._shown:
            return
        self._shown = percent
        filled = self.WIDTH * percent // 100
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.out.write(
            f"\r{self.label} [{bar}] {percent:3d}%  {size(sent)}/{size(total)}"
            + ("\n" if percent == 100 else "")
        )
        self.out.flush()

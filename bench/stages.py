"""Where the latency goes: the servers' per-stage timestamps of a sample of events.

With ``BENCH_STAGE_TRACE_DIR`` set (see :mod:`listener_core.stage_trace`) the API server
notes when each sampled sequence was committed and each Notify it sent, the alert server
each Notify it received and when the shared read returned the event; the bench plugin
notes the handler time and the load generator the ack. All are ``time.time()`` on one
machine, so the intervals between them add up to the publish -> handler latency.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The intervals reported, between stages named in the traces ("ack" is the client's, "handler"
# the plugin's).
INTERVALS = (
    ("commit", "ack"),
    ("commit", "notify_sent"),
    ("notify_sent", "notify_received"),
    ("notify_received", "read"),
    ("read", "handler"),
    ("commit", "handler"),
    ("ack", "handler"),
)


@dataclass
class Trace:
    """What one run's trace files say."""

    points: dict[str, dict[int, float]] = field(default_factory=dict)  # stage -> seq -> time
    upto: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # stage -> lines
    gc: list[tuple[str, int, float, float]] = field(default_factory=list)  # file, gen, t, ms
    _reach: dict[str, list[int]] = field(default_factory=dict)

    def first_upto(self, stage: str, sequence: int) -> float | None:
        """Time of the first ``stage`` line covering ``sequence`` (its number >= it)."""
        lines = self.upto.get(stage, [])
        reach = self._reach.get(stage)
        if reach is None:
            reach = self._reach[stage] = list(itertools.accumulate((s for _, s in lines), max))
        i = bisect.bisect_left(reach, sequence)
        return lines[i][0] if i < len(lines) else None


def read_traces(folder: Path) -> Trace:
    trace = Trace()
    for path in sorted(folder.glob("*.log")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue  # a line cut short by the server's stop
            if parts[0] == "gc" and len(parts) == 4:
                trace.gc.append((path.stem, int(parts[1]), float(parts[2]), float(parts[3])))
            elif parts[0].endswith("^"):
                trace.upto.setdefault(parts[0][:-1], []).append((float(parts[2]), int(parts[1])))
            else:
                trace.points.setdefault(parts[0], {}).setdefault(int(parts[1]), float(parts[2]))
    for lines in trace.upto.values():
        lines.sort()
    return trace


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _stage_times(
    trace: Trace, acks: dict[int, float], handled: dict[int, float]
) -> dict[int, dict[str, float]]:
    """Each acknowledged sampled event's time at every stage the traces saw it pass."""
    events: dict[int, dict[str, float]] = {}
    for seq, committed in trace.points.get("commit", {}).items():
        if seq not in acks:
            continue
        times = {"commit": committed, "ack": acks[seq]}
        for stage in ("notify_sent", "notify_received"):
            t = trace.first_upto(stage, seq)
            if t is not None:
                times[stage] = t
        read = trace.points.get("read", {}).get(seq)
        if read is not None:
            times["read"] = read
        if seq in handled:
            times["handler"] = handled[seq]
        events[seq] = times
    return events


def _intervals(events: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """p50/p99/max (ms) and count of each interval some event has both ends of."""
    intervals: dict[str, dict[str, float]] = {}
    for a, b in INTERVALS:
        values = [(t[b] - t[a]) * 1000 for t in events.values() if a in t and b in t]
        if values:
            intervals[f"{a}->{b}"] = {
                "p50_ms": round(_pct(values, 0.5), 3),
                "p99_ms": round(_pct(values, 0.99), 3),
                "max_ms": round(max(values), 3),
                "n": len(values),
            }
    return intervals


def _slowest(events: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """The interval vector of the five events slowest from ack to handler."""
    complete = [(s, t) for s, t in events.items() if "handler" in t and "ack" in t]
    complete.sort(key=lambda st: st[1]["handler"] - st[1]["ack"], reverse=True)
    return [
        {
            "sequence": seq,
            **{
                f"{a}->{b}_ms": round((t[b] - t[a]) * 1000, 3)
                for a, b in INTERVALS
                if a in t and b in t
            },
        }
        for seq, t in complete[:5]
    ]


def _gc_passes(
    trace: Trace, window: tuple[float, float], names: dict[str, str] | None
) -> dict[str, Any]:
    """The garbage-collector passes during ``window``: counts, longest, total, the ten longest."""
    start, end = window
    passes = [g for g in trace.gc if start <= g[2] <= end]
    return {
        "gc_passes_over_1ms": len(passes),
        "gc_longest_ms": round(max((g[3] for g in passes), default=0.0), 3),
        "gc_total_ms": round(sum(g[3] for g in passes), 3),
        "gc_passes": [
            {
                "process": (names or {}).get(g[0], g[0]),
                "generation": g[1],
                "at_s": round(g[2] - start, 3),
                "ms": g[3],
            }
            for g in sorted(passes, key=lambda g: -g[3])[:10]
        ],
        "gc_by_generation": {
            str(gen): len([g for g in passes if g[1] == gen])
            for gen in sorted({g[1] for g in passes})
        },
    }


def breakdown(
    trace: Trace,
    acks: dict[int, float],
    handled: dict[int, float],
    window: tuple[float, float],
    names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Per-interval p50/p99/max (ms) over the sampled events, the stage vector of the
    slowest ones, and the garbage-collector passes (>= 1 ms) during ``window`` (the ten
    longest, by process: ``names`` maps a trace file's pid to the server's name)."""
    events = _stage_times(trace, acks, handled)
    return {
        "sampled_events": len(events),
        "intervals": _intervals(events),
        "slowest": _slowest(events),
        **_gc_passes(trace, window, names),
    }


def table(stages: dict[str, Any]) -> str:
    """The breakdown as a Markdown table."""
    lines = [
        f"Latency by stage (scenario 5, {stages.get('sampled_events', 0)} sampled events; "
        f"GC passes >= 1 ms: {stages.get('gc_passes_over_1ms', 0)}, longest "
        f"{stages.get('gc_longest_ms', 0)} ms)",
        "",
        "| interval | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|",
    ]
    for name, figures in stages.get("intervals", {}).items():
        lines.append(
            f"| {name} | {figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} "
            f"| {figures['max_ms']:.2f} |"
        )
    return "\n".join(lines)

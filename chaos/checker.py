"""What the witness files say: per instance, lost events, out-of-order first deliveries,
duplicates, and windows in which two servers delivered the same instance.

Two deliverers at once show in an instance's file (whose order is the order of delivery)
as interleaving: server P delivers, Q delivers, P delivers again. A legitimate return to P
(Q lost or gave back the lease) comes only after P stopped for a while: P stops handing
events over before its lease runs out and a taker waits a full lease term more, so P's
silence lasts at least the lease's safety margin (a fifth of ``lease_ttl``). A P-Q-P
pattern in which P was silent for less than ``window`` seconds is therefore counted as an
overlap: two live deliverers. Keep ``window`` below the margin.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any


@dataclass
class InstanceReport:
    instance: str
    delivered: int = 0
    lost: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    overlaps: int = 0
    servers: int = 0
    overlap_examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.instance}: delivered {self.delivered}, lost {self.lost}, "
            f"out of order {self.out_of_order}, duplicates {self.duplicates}, "
            f"overlaps {self.overlaps} ({self.servers} deliverer(s))"
        )


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of a witness file (a writer may be mid-line)."""
    if not path.exists():
        return []
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def check(
    instance: str, lines: Sequence[dict[str, Any]], acked: Sequence[str], window: float = 0.25
) -> InstanceReport:
    """Compares one instance's witness lines with the acknowledged ids it should get, in
    publish order."""
    report = InstanceReport(instance, delivered=len(lines))
    ids = [str(x["id"]) for x in lines]
    first_seen = list(dict.fromkeys(ids))
    report.duplicates = len(ids) - len(first_seen)
    seen = set(first_seen)
    report.lost = sum(1 for i in acked if i not in seen)
    rank = {event_id: n for n, event_id in enumerate(acked)}
    ranks = [rank[i] for i in first_seen if i in rank]
    report.out_of_order = sum(1 for a, b in pairwise(ranks) if b < a)
    runs = _runs(lines)
    report.servers = len({r[0] for r in runs})
    for (p, _s1, end1, _q1), (q, _s2, _e2, _q2), (p2, start3, _e3, seq3) in zip(
        runs, runs[1:], runs[2:], strict=False
    ):
        if p == p2 and p != q and start3 - end1 < window:
            report.overlaps += 1
            if len(report.overlap_examples) < 5:
                report.overlap_examples.append(
                    f"pid {p} resumed at sequence {seq3} {start3 - end1:.3f}s after pid {q} "
                    "started delivering"
                )
    return report


def _runs(lines: Iterable[dict[str, Any]]) -> list[tuple[int, float, float, int]]:
    """Maximal stretches delivered by one process: (pid, first time, last time, first seq)."""
    runs: list[tuple[int, float, float, int]] = []
    for line in lines:
        pid, t = int(line["pid"]), float(line["t"])
        if runs and runs[-1][0] == pid:
            runs[-1] = (pid, runs[-1][1], t, runs[-1][3])
        else:
            runs.append((pid, t, t, int(line.get("seq", 0))))
    return runs

"""``python -m listener_common.testing PATH [--event TASK_FAIL ...] [--param k=v ...]``: runs a
plugin folder or package zip through the harness and prints what it did (the same command as
``listenerctl plugin test``). Exit status 0 when every event was delivered, 1 otherwise, 4 for
params, a package or an argument the servers would refuse."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from listener_common.errors import ListenerError
from listener_common.events import EventType
from listener_common.params import parse_assignments
from listener_common.testing.harness import PluginHarness, Report
from listener_common.testing.samples import sample_event

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``plugin test``, shared with listenerctl."""
    parser.add_argument("path", help="a plugin folder (built first) or a package zip")
    parser.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="TYPE",
        help="an event type to send a sample of (repeat, or comma separate; default: all 13)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an instance param; repeat for several",
    )
    parser.add_argument("--policy", choices=["block", "park"], default="block")
    parser.add_argument("--park-after", type=int, default=3, metavar="N")
    parser.add_argument(
        "--handler-timeout", type=float, default=30.0, metavar="S", help="default 30"
    )
    parser.add_argument(
        "--max-attempts", type=int, default=3, metavar="N", help="failures before 'blocked'"
    )


def _json(report: Report) -> dict[str, Any]:
    return {
        "plugin": report.plugin,
        "ok": report.ok,
        "events": [
            {
                "id": r.event.id,
                "type": r.event.type.value,
                "outcome": r.outcome,
                "failures": r.failures,
                "error": r.error,
            }
            for r in report.results
        ],
        "attempts": [
            {"error": a.error, "delay": round(a.delay, 3), "parked": a.parked}
            for a in report.attempts
        ],
        "close_error": report.close_error,
    }


def run(args: argparse.Namespace, *, as_json: bool = False) -> int:
    """Runs the parsed ``plugin test`` arguments; prints the report."""
    types = [t.strip() for item in args.event for t in item.split(",") if t.strip()]
    try:
        events = [sample_event(t.upper()) for t in (types or [t.value for t in EventType])]
        harness = PluginHarness(
            Path(args.path),
            parse_assignments(args.param),
            policy=args.policy,
            park_after=args.park_after,
            handler_timeout=args.handler_timeout,
            max_attempts=args.max_attempts,
        )
        report = asyncio.run(harness.run(events))
    except (ListenerError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    if as_json:
        print(json.dumps(_json(report), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m listener_common.testing",
        description="Run a listener plugin the way the alert server will, without a server.",
    )
    add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    return run(args, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())

"""Per-stage timestamps of a sample of events, for the bench's latency breakdown.

Off unless ``BENCH_STAGE_TRACE_DIR`` names a directory (only ``make bench`` sets it): then
each server process appends ``stage sequence wall-time`` lines for every sequence divisible
by ``BENCH_STAGE_TRACE_EVERY`` (default 10) to its own ``<pid>.log`` there, and one ``gc`` line per
garbage-collector pass longer than a millisecond. Off, a call costs one global lookup, so
the hooks stay in the publish and delivery paths. Lines are written unbuffered (a server
stopped with SIGTERM must not lose its tail); at the bench's sampled rate that is a few
hundred small writes a second.
"""

from __future__ import annotations

import gc
import os
import time
from typing import IO, Any

_out: IO[str] | None = None
_every = 10
_gc_started = 0.0


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    took = time.perf_counter() - _gc_started
    if took >= 0.001 and _out is not None:
        _out.write(f"gc {info.get('generation', -1)} {time.time():.6f} {took * 1000:.3f}\n")


def _open() -> None:
    global _out, _every
    folder = os.environ.get("BENCH_STAGE_TRACE_DIR", "")
    if not folder:
        return
    _every = max(1, int(os.environ.get("BENCH_STAGE_TRACE_EVERY", "10")))
    _out = open(os.path.join(folder, f"{os.getpid()}.log"), "a", buffering=1)  # noqa: SIM115
    gc.callbacks.append(_gc_callback)


_open()


def enabled() -> bool:
    return _out is not None


def mark(stage: str, sequence: int) -> None:
    """Notes that ``sequence`` reached ``stage`` now, if it is in the sample."""
    if _out is not None and sequence % _every == 0:
        _out.write(f"{stage} {sequence} {time.time():.6f}\n")


def mark_range(stage: str, first: int, last: int) -> None:
    """Notes ``stage`` for every sampled sequence in ``first..last``."""
    if _out is None:
        return
    now = f"{time.time():.6f}"
    start = first + (-first % _every)
    _out.write("".join(f"{stage} {s} {now}\n" for s in range(start, last + 1, _every)))


def mark_upto(stage: str, sequence: int) -> None:
    """Notes a stage that covers every sequence up to ``sequence`` (a Notify): the reader
    matches each sampled event to the first such line at or above it."""
    if _out is not None:
        _out.write(f"{stage}^ {sequence} {time.time():.6f}\n")

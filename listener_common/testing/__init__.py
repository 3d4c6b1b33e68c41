"""Test listener plugins without a server: sample events and a harness that runs a plugin
the way the alert server will (``listener_common.testing.harness``).

::

    from listener_common.testing import run_plugin, sample_event

    def test_task_failures_are_written(tmp_path):
        report = run_plugin(AuditListener, [sample_event("TASK_FAIL")],
                            {"logFile": str(tmp_path / "audit.log")})
        assert report.outcomes() == ["delivered"]

From the shell: ``listenerctl plugin test PATH`` or ``python -m listener_common.testing PATH``.
"""

from listener_common.testing.harness import (
    Attempt,
    EventResult,
    Outcome,
    PluginHarness,
    Report,
    run_plugin,
)
from listener_common.testing.samples import sample_event, sample_events

__all__ = [
    "Attempt",
    "EventResult",
    "Outcome",
    "PluginHarness",
    "Report",
    "run_plugin",
    "sample_event",
    "sample_events",
]

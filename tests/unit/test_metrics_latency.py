"""The delivery-latency histogram observes every event, also when it groups equal times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest

from listener_core.metrics import AlertMetrics


def _latency_lines(metrics: AlertMetrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("listener_delivery_latency_seconds_")
        and not line.startswith("listener_delivery_latency_seconds_created")
    }


def test_grouped_observations_equal_one_observe_per_event() -> None:
    now = datetime.now(UTC)
    a, b = now - timedelta(seconds=0.2), now - timedelta(seconds=3)
    times = [a, a, a, b, b, a]  # runs of 3, 2 and 1

    grouped = AlertMetrics()
    grouped.delivered("i", times)
    single = AlertMetrics()
    for t in times:
        single.delivered("i", [t])

    got, expected = _latency_lines(grouped), _latency_lines(single)
    assert got.keys() == expected.keys()
    assert got["listener_delivery_latency_seconds_count"] == 6
    for key, value in expected.items():
        tolerance = 0.05 if key.endswith("_sum") else 0  # "now" differs by microseconds
        assert abs(got[key] - value) <= tolerance, key
    assert (
        'listener_events_delivered_total{instance="i"}'
        in generate_latest(grouped.registry).decode()
    )

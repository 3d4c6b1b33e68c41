"""deploy/prometheus/rules.yml is valid for Prometheus and fires when it should: checked
with Debian's promtool (package prometheus), against the unit tests in rules_test.yml."""

from __future__ import annotations

import shutil
import subprocess

from tests.support.servers import REPO

RULES = REPO / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found, "promtool is not installed: apt-get install prometheus (.ci/run does)"
    return subprocess.run(
        [found, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid() -> None:
    proc = promtool("check", "rules", "rules.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 5 rules found" in proc.stdout


def test_rules_fire_on_the_conditions_they_name() -> None:
    """A blocked instance after 5 minutes (not before, not a 3-minute blip), lag above the
    threshold, parked events growing, no alert server up, UNAVAILABLE above 5 %."""
    proc = promtool("test", "rules", "rules_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout

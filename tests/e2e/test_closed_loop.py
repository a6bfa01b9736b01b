"""The README's main job, end to end: real processes, the real broker, the real model.

`slmops demo` runs both scenarios (drift -> re-optimization -> canary -> full; a scrambled
candidate -> automatic rollback) and checks its own expectations against what it observed on
the topics. This test runs it as a user would and reads its timeline: the order of events, the
final versions and the "no unverified model" check.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _index(lines: list[str], pattern: str) -> int:
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no line matches {pattern!r}:\n" + "\n".join(lines[-60:]))


def test_demo_runs_the_closed_loop_and_the_rollback(kafka_bootstrap):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")}
    env["SLMOPS_BOOTSTRAP_SERVERS"] = kafka_bootstrap
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "slmops",
            "demo",
            "--devices",
            "12",
            "--web-port",
            str(free_port()),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 0, "\n".join(lines[-80:])
    assert "demo OK" in lines
    failed = [line for line in lines if line.strip().startswith("FAIL")]
    assert failed == []
    # The sequence: v1 serves, drift, alert, one request, accepted candidate, canary, full.
    v1 = _index(lines, r"all \d+ devices serve v1")
    shift = _index(lines, r"the users' language shifts")
    alert = _index(lines, r"alert quality_drop .* v1 ")
    request = _index(lines, r"optimization requested for v1")
    accepted = _index(lines, r"optimizer accepted v1-opt-")
    canary = _index(lines, r"rollout intent-v1-opt-\w+-pilot: PROGRESSING at 50%")
    full = _index(lines, r"rollout intent-v1-opt-\w+-pilot: (BAKING at 100%|SUCCEEDED)")
    succeeded = _index(lines, r"rollout intent-v1-opt-\w+-pilot: SUCCEEDED")
    # Alerts and requests travel on different topics: either may be observed first.
    assert v1 < shift < min(alert, request) <= max(alert, request) < accepted
    assert accepted < canary < full <= succeeded
    # The bad candidate: shipped, judged on the canary, rolled back by itself.
    shipped = _index(lines, r"an operator ships v1-opt-\w+-scrambled")
    failing = _index(lines, r"scrambled-pilot: ROLLING_BACK .*gate failed")
    rolled_back = _index(lines, r"scrambled-pilot: ROLLED_BACK")
    assert succeeded < shipped < failing < rolled_back
    for expectation in (
        "every build a device reported serving is a registered, signed artifact",
        "devices ended on v1-opt-",
        "quality recovered",
    ):
        assert any(line.strip().startswith("ok") and expectation in line for line in lines)

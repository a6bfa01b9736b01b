"""The README's main job, end to end: real processes, the real broker, the real models.

`slmops demo` plays two acts. The classifier act: drift -> re-optimization -> canary -> full,
then a scrambled candidate -> automatic rollback. The assistant act: a generative SLM (SmolLM2,
int4) whose pilot cohort's users change how they speak -> a quality drop -> an adapter trained
for that cohort alone -> canary -> full within the cohort, while the other cohort keeps v1.
Each act checks its own expectations against what it observed on the topics. This test runs
`slmops demo` as a user would and reads its timeline: the order of events per act, the final
versions and the "no unverified model" checks.
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

# Both acts on two cores: the classifier's, then SmolLM2's build (first run) and adaptation.
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(3000)]


def _index(lines: list[str], pattern: str) -> int:
    for i, line in enumerate(lines):
        if re.search(pattern, line):
            return i
    raise AssertionError(f"no line matches {pattern!r}:\n" + "\n".join(lines[-60:]))


def test_demo_runs_both_acts(kafka_bootstrap):
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
        timeout=2900,
        check=False,
    )
    out = done.stderr.splitlines()
    assert done.returncode == 0, "\n".join(out[-80:])
    assert "demo OK" in out
    failed = [line for line in out if line.strip().startswith("FAIL")]
    assert failed == []
    act2 = _index(out, r"^== act 2 of 2: assistant,")
    assert _index(out, r"^== act 1 of 2: classifier,") < act2
    _classifier_act(out[:act2])
    _assistant_act(out[act2:])


def _classifier_act(lines: list[str]) -> None:
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


def _assistant_act(lines: list[str]) -> None:
    v1 = _index(lines, r"all \d+ devices serve v1 \(base \+ adapter\)")
    shift = _index(lines, r"the pilot cohort's users change how they speak")
    request = _index(lines, r"optimization requested for v1")
    accepted = _index(lines, r"optimizer accepted v1-opt-")
    canary = _index(lines, r"rollout assistant-v1-opt-\w+-pilot: PROGRESSING at 50%")
    succeeded = _index(lines, r"rollout assistant-v1-opt-\w+-pilot: SUCCEEDED")
    better = _index(lines, r"pilot cohort on the shifted phrasing, v1 -> v1-opt-")
    assert v1 < shift < request < accepted < canary < succeeded < better
    for expectation in (
        "a quality-drop alert for v1 in the pilot cohort",
        "exactly one adaptation request, for the pilot cohort only",
        "is an adapter for the base the fleet holds",
        "was rolled out within the pilot cohort only, canary first, and succeeded",
        "the general cohort keeps v1",
        "each pilot device downloaded the adapter alone",
        "the pilot cohort answers the shifted phrasing better on v1-opt-",
        "every build a device reported serving is a registered, signed artifact",
    ):
        assert any(line.strip().startswith("ok") and expectation in line for line in lines), (
            expectation
        )

"""deploy/prometheus: promtool validates the configuration and rules and runs their unit tests;
a real Prometheus scrapes a running control worker and its rules evaluate on what it scraped."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # types-PyYAML is not a dev dependency

from tests.deploy.test_metric_conventions import promtool_check
from tests.support.live import close_one_window, control_worker, tool
from tests.support.ports import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool", "prometheus"), *args],
        cwd=PROM,
        capture_output=True,
        text=True,
        timeout=60,
    )


def rules() -> list[dict[str, Any]]:
    found = []
    for path in sorted((PROM / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += group["rules"]
    return found


def test_configuration_and_its_rule_files_are_valid():
    out = promtool("check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    # The glob must find the rule files: a config with no rules is valid but useless.
    assert f"SUCCESS: {len(list((PROM / 'rules').glob('*.yml')))} rule files found" in out.stdout


def test_rules_are_valid():
    out = promtool("check", "rules", *sorted(str(p) for p in (PROM / "rules").glob("*.yml")))
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_unit_tests_pass():
    tests = sorted(str(p) for p in (PROM / "tests").glob("*.yml"))
    assert tests
    out = promtool("test", "rules", *tests)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_unit_tested_and_documented():
    alerts = {r["alert"] for r in rules() if "alert" in r}
    tested = set()
    for path in (PROM / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested |= {t["alertname"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert alerts - tested == set(), "alerts no unit test sees firing"
    guide = (ROOT / "docs" / "operations.md").read_text()
    assert {a for a in alerts if f"`{a}`" not in guide} == set(), "alerts missing from the guide"


def test_scrape_targets_are_the_compose_services_and_ports():
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for job in config["scrape_configs"]:
        for target in (t for sc in job["static_configs"] for t in sc["targets"]):
            host, port = target.rsplit(":", 1)
            assert host in services, f"{job['job_name']}: no compose service {host}"
            # The container's health check asks the same port (its /livez, open without a
            # token) that Prometheus scrapes /metrics on.
            health = " ".join(services[host]["healthcheck"]["test"])
            assert f"127.0.0.1:{port}/livez" in health, target
            assert job["metrics_path"] == "/metrics", target


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = json.load(r)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return []
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.integration
def test_prometheus_scrapes_a_running_control_worker(kafka_conn, tmp_path):
    binary = tool("prometheus", "prometheus")
    with control_worker(kafka_conn, tmp_path) as worker:
        row = close_one_window(kafka_conn, worker, devices=3, requests=17)
        assert (row["requests"], row["devices"]) == (51, 3)
        # The live exposition, with a window's samples in it, follows the naming conventions.
        exposition = worker.get("/metrics")
        assert b"slmops_window_latency_p95_seconds{" in exposition
        assert promtool_check(exposition) == ""

        # The real configuration, pointed at this worker, scraping and evaluating every second.
        config = yaml.safe_load((PROM / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(PROM / "rules" / "*.yml")]
        control = next(j for j in config["scrape_configs"] if j["job_name"] == "control")
        control["static_configs"] = [{"targets": [f"127.0.0.1:{worker.port}"]}]
        config["scrape_configs"] = [control]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            selector = 'slmops_window_requests{job="control",model="intent",cohort="eu"}'
            found = wait_for(
                "Prometheus to scrape the window",
                lambda: _query(base, selector) or proc.poll() is not None,
                timeout=30,
            )
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            assert isinstance(found, list)  # the samples, not the exit that ended the wait
            assert [(s["metric"]["version"], float(s["value"][1])) for s in found] == [("v1", 51)]
            assert found[0]["metric"]["instance"] == f"127.0.0.1:{worker.port}"
            # A recording rule over the same scrape: the rules are loaded and evaluate.
            devices = wait_for(
                "the recording rule",
                lambda: _query(base, 'slmops:window_devices:sum_by_model_cohort{cohort="eu"}'),
                timeout=30,
            )
            assert [float(s["value"][1]) for s in devices] == [3]
            up = _query(base, 'up{job="control"}')
            assert [float(s["value"][1]) for s in up] == [1]
            firing = {a["labels"]["alertname"] for a in _query(base, "ALERTS")}
            assert "SlmopsControlWorkerDown" not in firing
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            log.close()

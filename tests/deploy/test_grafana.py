"""deploy/grafana: provisioning matches compose, every panel's PromQL is valid, and every metric
it (or a rule of deploy/prometheus) names is either a recording rule or a name a running
component serves (control worker, edge runtime, optimizer worker)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # types-PyYAML is not a dev dependency
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.runtime import EdgeRuntime
from edge_runtime.server import serve
from edge_runtime.settings import EdgeSettings
from streams.events.artifact import new_signing_key, public_key_to_text
from tests.support.live import control_worker, optimizer_exposition, tool
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "rules"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"

# Series Prometheus itself writes for every target: not exported by any component.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (recording-rule names included)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings can hold anything
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)  # dashboard variables
    names = set()
    for m in re.finditer(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def test_metric_names_skips_functions_labels_keywords_and_variables():
    expr = (
        'histogram_quantile(0.95, sum by (le, model) (rate(a_seconds_bucket{model=~"$model",'
        ' x="rate(b)"}[$__rate_interval]))) > on (model) group_left () slmops:x:y offset 1h'
        " and c_total unless bool d"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "slmops:x:y", "c_total", "d"}


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard, panel or variable, PromQL) for every query of every dashboard."""
    for name, dash in dashboards().items():
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                yield name, panel["title"], target["expr"]
        for var in dash["templating"]["list"]:
            if var["type"] == "datasource":
                continue  # picks the data source; it queries nothing
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert m, f"{name}: variable {var['name']} is not label_values(...)"
            yield name, f"${var['name']}", m.group(1)


def recording_rules() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in RULES.glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found |= {r["record"]: r["expr"] for r in group["rules"] if "record" in r}
    return found


def rule_expressions() -> list[str]:
    return [
        r["expr"]
        for path in RULES.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for r in group["rules"]
    ]


def test_provisioning_points_at_the_compose_mounts_and_the_dashboards_datasource():
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    mounts = dict(v.split(":")[:2] for v in compose["grafana"]["volumes"])
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/slmops.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert (COMPOSE.parent / next(h for h, c in mounts.items() if c == path)).resolve() == (
        GRAFANA / "dashboards"
    )
    source = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (ds,) = source["datasources"]
    assert ds["url"] == "http://prometheus:9090"
    assert "prometheus" in compose
    assert ds["isDefault"]  # what each dashboard's data source variable picks when provisioned


def _datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]
        for value in node.values():
            yield from _datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_refs(value)


def test_dashboards_import_into_any_grafana_through_a_data_source_variable():
    # A fixed uid would tie them to this stack's provisioning; `__inputs` is resolved only by
    # the import dialog, not by file provisioning (grafana/grafana#10786): a variable is both.
    for name, dash in dashboards().items():
        variables = dash["templating"]["list"]
        (source,) = [v for v in variables if v["type"] == "datasource"]
        assert (source["name"], source["query"]) == ("datasource", "prometheus"), name
        refs = list(_datasource_refs(dash))
        assert refs, name
        assert all(r == {"type": "prometheus", "uid": "${datasource}"} for r in refs), name
        assert "slmops-prometheus" not in json.dumps(dash), name


def test_dashboards_cover_fleet_quality_drift_rollouts_and_pipeline():
    dash = dashboards()
    assert len({d["uid"] for d in dash.values()}) == len(dash)
    assert {d["uid"] for d in dash.values()} >= {
        "slmops-fleet", "slmops-quality", "slmops-drift", "slmops-rollouts", "slmops-pipeline",
    }  # fmt: skip
    for name, d in dash.items():
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids), name
        assert all(p.get("targets") for p in d["panels"] if p["type"] != "row"), name


def test_every_panel_query_is_valid_promql(tmp_path):
    # promtool parses rule expressions: every query becomes one, variables substituted.
    rules = []
    for i, (dash, _title, expr) in enumerate(queries()):
        concrete = expr.replace("$__rate_interval", "5m")
        concrete = re.sub(r"\$\w+", ".*", concrete)
        rules.append({"record": f"panel:q{i}", "expr": concrete, "labels": {"where": dash}})
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    out = subprocess.run(
        [tool("promtool", "prometheus"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


async def _edge_exposition(tmp: Path) -> str:
    key = new_signing_key()
    rt = EdgeRuntime(
        EdgeSettings(
            device_id="dev-1",
            data_dir=tmp / "device",
            artifact_dirs=[tmp],
            trusted_keys=[public_key_to_text(key.public_key())],
            bootstrap_servers="127.0.0.1:1",  # offline: the HTTP API is all this test needs
            shutdown_drain_s=0.1,
        )
    )
    await rt.start_offline()
    port = free_port()
    runner = await serve(rt, "127.0.0.1", port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        response = await reader.read()
        writer.close()
        await writer.wait_closed()
    finally:
        await runner.cleanup()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") or head.startswith(b"HTTP/1.0 200"), head
    return body.decode()


def exported(exposition: str) -> set[str]:
    """Series names a scrape of this exposition can yield, from its families and samples."""
    names = set()
    for family in text_string_to_metric_families(exposition):
        names |= {family.name + s for s in _SUFFIXES.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    return names


@pytest.mark.integration
def test_every_query_names_only_exported_metrics_or_recording_rules(kafka_conn, tmp_path):
    with control_worker(kafka_conn, tmp_path) as worker:
        control = worker.get("/metrics").decode()
    edge = asyncio.run(_edge_exposition(tmp_path))
    optimizer = optimizer_exposition(kafka_conn, tmp_path)
    live = exported(control) | exported(edge) | exported(optimizer)
    assert {
        "slmops_window_requests",
        "slmops_edge_requests_total",
        "slmops_optimizer_requests_total",
    } <= live
    recorded = recording_rules()

    # Rules first: a recording rule may only be built from live names or other rules.
    for expr in rule_expressions():
        unknown = metric_names(expr) - live - set(recorded) - SYNTHETIC
        assert not unknown, f"rule expression {expr!r} names {sorted(unknown)}"

    missing = []
    for dash, title, expr in queries():
        for name in metric_names(expr):
            if name in recorded or name in live or name in SYNTHETIC:
                continue
            missing.append(f"{dash} / {title}: {name}")
    assert not missing, "\n".join(missing)
    used = {n for _, _, e in queries() for n in metric_names(e)}
    assert used & set(recorded), "dashboards use no recording rule: the rules check is moot"

"""deploy/helm/slmops: `helm lint` passes, and what `helm template` renders, with the default
values and with others (no SASL or TLS, an artifact server, a token, a registry), runs real
slmops commands, probes paths the components serve on the ports their settings listen on,
names only SLMOPS_* settings that exist, and references the Secrets the values name.

Not checked here: that a real API server accepts the resources (no cluster and no kubeconform
on this machine; run `helm install --dry-run=server` against one)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # types-PyYAML is not a dev dependency

from tests.deploy.manifests import (
    COMPONENTS,
    DEPLOY,
    Component,
    listen_host,
    listen_port,
    parse_cli,
    reads_env,
    settings_classes,
)
from tests.support.live import tool

CHART = DEPLOY / "helm" / "slmops"
VARIANTS = {
    "defaults": [],
    "plaintext-artifacts-token": [
        "--set", "kafka.securityProtocol=PLAINTEXT",
        "--set", "artifactServer.enabled=true",
        "--set", "httpTokenSecret=slmops-http-token",
        "--set", "control.controlKeySecret=",
        "--set", "control.replicas=1",
    ],
    "registry-tls-only": [
        "--set", "image.registry=registry.example/slmops",
        "--set", "kafka.securityProtocol=SSL",
        "--set", "optimizer.artifactBaseUrl=https://artifacts.example/",
    ],
}  # fmt: skip


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    helm = tool("helm", "helm (`go install helm.sh/helm/v3/cmd/helm@v3.19.0`, see .ci/run)")
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)


def _render(extra: list[str]) -> list[dict[str, Any]]:
    out = _helm(
        "template", "r1", str(CHART), "--namespace", "ml", "--kube-version", "1.30.0", *extra
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _values(extra: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    for flag, setting in zip(extra[::2], extra[1::2], strict=True):
        assert flag == "--set"
        path, _, value = setting.partition("=")
        node = values
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = int(value) if value.isdigit() else {"true": True}.get(value, value)
    return values


@pytest.fixture(scope="module", params=list(VARIANTS), ids=list(VARIANTS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    extra = VARIANTS[request.param]
    return request.param, _render(extra), _values(extra)


def _containers(resources: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (d, c)
        for d in resources
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


def _component(container: dict[str, Any]) -> Component | None:
    """The deployable a container runs, by its command (the artifact server shares an image)."""
    for c in COMPONENTS.values():
        if tuple(container["args"][: len(c.command)]) == c.command:
            return c
    return None


def _env(resources: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    config = {r["metadata"]["name"]: r["data"] for r in resources if r["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        env[item["name"]] = str(item["value"]) if "value" in item else "from-a-reference"
    return env


def test_the_chart_lints():
    out = _helm("lint", "--strict", str(CHART), "--kube-version", "1.30.0")
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_container_runs_a_real_slmops_command(rendered):
    _, resources, _ = rendered
    containers = _containers(resources)
    assert {c["name"] for _, c in containers} >= {"control", "optimizer"}
    for _, container in containers:
        parse_cli(list(container["args"]))


def test_probes_hit_served_paths_on_the_port_the_settings_listen_on(rendered):
    _, resources, _ = rendered
    for _, container in _containers(resources):
        component = _component(container)
        if component is None:  # `slmops artifacts serve`: its port is its --port
            from optimizers.artifact_server import build_app
            from optimizers.store import ArtifactStore

            app = build_app(ArtifactStore(Path("store")))
            served = {r.resource.canonical for r in app.router.routes() if r.resource}
            args = container["args"]
            port = int(args[args.index("--port") + 1])
        else:
            env = _env(resources, container)
            assert listen_host(component, env) in (None, "0.0.0.0")
            listened = listen_port(component, env)
            assert listened is not None
            port = listened
            served = component.served_paths() if component.served_paths else set()
        assert [p["containerPort"] for p in container["ports"]] == [port]
        for kind in ("readinessProbe", "livenessProbe"):
            assert container[kind]["httpGet"]["path"] in served, (container["name"], kind)


def test_every_setting_is_one_a_settings_class_reads(rendered):
    _, resources, _ = rendered
    names = set()
    for r in resources:
        if r["kind"] == "ConfigMap":
            names |= set(r["data"])
    for _, container in _containers(resources):
        names |= {e["name"] for e in container.get("env", [])}
    assert names
    unread = {n for n in names if not any(reads_env(cls, n) for cls in settings_classes())}
    assert unread == set()


def test_kafka_security_follows_the_protocol(rendered):
    name, resources, values = rendered
    protocol = values["kafka"]["securityProtocol"]
    (config,) = [r["data"] for r in resources if r["kind"] == "ConfigMap"]
    assert config["SLMOPS_SECURITY_PROTOCOL"] == protocol
    assert ("SLMOPS_SASL_MECHANISM" in config) == protocol.startswith("SASL")
    assert ("SLMOPS_SSL_CAFILE" in config) == (protocol in ("SSL", "SASL_SSL"))
    for _, container in _containers(resources):
        if container["name"] == "artifacts":
            continue  # it reads no topic
        env = {e["name"] for e in container.get("env", [])}
        assert ("SLMOPS_SASL_PASSWORD" in env) == protocol.startswith("SASL"), name
        mounts = {m["name"] for m in container["volumeMounts"]}
        assert ("kafka-ca" in mounts) == (protocol in ("SSL", "SASL_SSL")), name


def test_only_secrets_the_values_name_are_referenced(rendered):
    _, resources, values = rendered
    named = {
        values["kafka"]["credentialsSecret"],
        values["kafka"]["tls"]["caSecret"],
        values["httpTokenSecret"],
        values["control"]["controlKeySecret"],
        values["optimizer"]["signingKeySecret"],
    } - {""}
    used = set()
    for deployment, container in _containers(resources):
        for e in container.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                used.add(ref["name"])
        for v in deployment["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in v:
                used.add(v["secret"]["secretName"])
    assert used <= named
    assert values["optimizer"]["signingKeySecret"] in used
    control_env = {
        e["name"]
        for _, c in _containers(resources)
        if c["name"] == "control"
        for e in c.get("env", [])
    }
    assert ("SLMOPS_CONTROL_SIGNING_KEY" in control_env) == bool(
        values["control"]["controlKeySecret"]
    )
    assert ("SLMOPS_HTTP_TOKEN" in control_env) == bool(values["httpTokenSecret"])
    assert not [r for r in resources if r["kind"] == "Secret"]  # secrets are never values


def test_images_urls_and_replicas_come_from_the_values(rendered):
    _, resources, values = rendered
    registry = values["image"]["registry"]
    for _, container in _containers(resources):
        image = container["image"]
        assert image.endswith(f":{values['image']['tag']}")
        assert image.startswith(f"{registry}/") == bool(registry)
    deployments = {d["metadata"]["name"]: d for d in resources if d["kind"] == "Deployment"}
    assert deployments["r1-control"]["spec"]["replicas"] == values["control"]["replicas"]
    assert ("r1-artifacts-server" in deployments) == values["artifactServer"]["enabled"]
    optimizer = next(c for _, c in _containers(resources) if c["name"] == "optimizer")
    url = next(e["value"] for e in optimizer["env"] if e["name"] == "SLMOPS_ARTIFACT_BASE_URL")
    assert url == (values["optimizer"]["artifactBaseUrl"] or "http://r1-optimizer.ml.svc:9108/")
    pdbs = [r for r in resources if r["kind"] == "PodDisruptionBudget"]
    assert bool(pdbs) == (values["control"]["replicas"] > 1)

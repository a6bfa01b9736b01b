"""The compose stack: KRaft Kafka of the launcher's release, the catalog created before any
worker starts, ports and health checks that match the components, real commands only."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from streams.events.artifact import new_signing_key, private_key_to_text, public_key_to_text
from tests.deploy.manifests import (
    COMPONENTS,
    COMPOSE,
    DEPLOY,
    ROOT,
    VERSION,
    Component,
    compose,
    dockerfile_env,
    dockerfile_instructions,
    exec_form,
    kafka_version_of_local_launcher,
    listen_host,
    listen_port,
    parse_cli,
    urls_in,
)

STACK = compose()
SERVICES: dict[str, Any] = STACK["services"]
# Provisioning that the Prometheus and Grafana parts of deploy/ own; compose only mounts it.
MOUNTED_FROM_ELSEWHERE = (DEPLOY / "prometheus", DEPLOY / "grafana")


def _component(service: dict[str, Any]) -> Component | None:
    image = str(service.get("image", ""))
    for c in COMPONENTS.values():
        if image.split(":")[0] == c.image:
            return c
    return None


def _slmops_services() -> list[tuple[str, dict[str, Any], Component]]:
    """(name, service, component) of every service that runs an slmops image."""
    found = []
    for name, svc in SERVICES.items():
        component = _component(svc)
        if component is not None:
            found.append((name, svc, component))
    return found


SLMOPS = _slmops_services()
SLMOPS_SERVICES = [pytest.param(name, svc, c, id=name) for name, svc, c in SLMOPS]


def _env(service: dict[str, Any], component: Component) -> dict[str, str]:
    """The container's environment: the image's ENV, then the service's."""
    instructions = dockerfile_instructions(component.dockerfile)
    last = max(i.stage for i in instructions)
    env = dockerfile_env([i for i in instructions if i.stage == last])
    env.update({k: _interpolate(str(v)) for k, v in (service.get("environment") or {}).items()})
    return env


_RELEASE, _CONTROL = new_signing_key(), new_signing_key()
EXPORTED = {
    # What docs/deployment.md has the operator export before `docker compose up`.
    "SLMOPS_TRUSTED_KEYS": json.dumps([public_key_to_text(_RELEASE.public_key())]),
    "SLMOPS_TRUSTED_CONTROL_KEYS": json.dumps([public_key_to_text(_CONTROL.public_key())]),
    "SLMOPS_CONTROL_SIGNING_KEY": private_key_to_text(_CONTROL),
}


def _interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` as it reads with VAR unset (the stack's defaults), and
    ``${VAR:?why}`` with what the deployment guide exports (any other one fails the test)."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}", lambda m: EXPORTED[m[1]], value)


def test_the_variables_the_stack_requires_are_the_ones_the_guide_exports():
    text = (ROOT / "deploy/compose/compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?", text))
    assert required == set(EXPORTED)
    guide = (ROOT / "docs/deployment.md").read_text()
    assert all(f"export {name}=" in guide for name in required)


def test_every_component_runs_in_the_stack():
    running = {c.name for _, _, c in SLMOPS}
    assert running == set(COMPONENTS)
    assert sum(1 for *_, c in SLMOPS if c.name == "edge") >= 2


def test_kafka_is_one_kraft_node_of_the_launchers_release():
    kafka = SERVICES["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert tag == kafka_version_of_local_launcher()
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")[0] == env["KAFKA_NODE_ID"]
    listeners = {item.split("://")[0] for item in env["KAFKA_LISTENERS"].split(",")}
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert not any("ZOOKEEPER" in key for key in env)
    # KRaft formats storage with a cluster id: a base64url UUID of 16 bytes.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


@pytest.mark.parametrize(("name", "service", "component"), SLMOPS_SERVICES)
def test_slmops_services_reach_kafka_on_an_advertised_listener(name, service, component):
    advertised = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    addresses = {item.split("://")[1] for item in advertised.split(",")}
    assert _env(service, component)["SLMOPS_BOOTSTRAP_SERVERS"] in addresses


def test_topics_are_created_once_before_any_worker_starts():
    topics = SERVICES["topics"]
    assert parse_cli(list(topics["command"])).func.__name__ == "cmd_topics_create"
    assert topics["restart"] == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, service, _ in SLMOPS:
        if name != "topics":
            assert service["depends_on"]["topics"]["condition"] == (
                "service_completed_successfully"
            ), name


@pytest.mark.parametrize(("name", "service", "component"), SLMOPS_SERVICES)
def test_service_command_is_a_real_slmops_command(name, service, component):
    if component.name == "edge":
        # The edge image's entrypoint supplies `edge run --device-id`; see test_docker.
        assert "command" not in service
        return
    argv = list(service["command"])
    if name != "topics":
        assert tuple(argv[: len(component.command)]) == component.command
    parse_cli(argv)


@pytest.mark.parametrize(("name", "service", "component"), SLMOPS_SERVICES)
def test_images_are_built_from_their_dockerfile_at_the_project_version(name, service, component):
    assert service["image"] == f"{component.image}:{VERSION}"
    build = service["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build["dockerfile"]).resolve() == component.dockerfile


@pytest.mark.parametrize(("name", "service", "component"), SLMOPS_SERVICES)
def test_ports_and_healthchecks_match_settings_and_routes(name, service, component):
    env = _env(service, component)
    port = listen_port(component, env)
    if port is None or name == "topics":
        assert "ports" not in service
        return
    assert listen_host(component, env) in (None, "0.0.0.0")
    published = [str(p).rsplit(":", 1) for p in service["ports"]]
    assert [int(container) for _, container in published] == [port]
    urls = urls_in(" ".join(exec_form_or_list(service["healthcheck"]["test"])))
    assert component.served_paths is not None
    assert urls == [(port, component.liveness)]
    assert component.liveness in component.served_paths()


def exec_form_or_list(test: object) -> list[str]:
    if isinstance(test, list):
        return [str(t) for t in test]
    return exec_form(str(test))


def test_edge_devices_are_distinct_and_span_cohorts():
    edges = [_env(svc, c) for _, svc, c in SLMOPS if c.name == "edge"]
    ids = [e["SLMOPS_DEVICE_ID"] for e in edges]
    assert len(ids) == len(set(ids))
    assert len({e.get("SLMOPS_COHORT", "default") for e in edges}) >= 2


def test_host_ports_do_not_collide():
    host_ports = [
        str(p).rsplit(":", 1)[0] for svc in SERVICES.values() for p in svc.get("ports", [])
    ]
    assert len(host_ports) == len(set(host_ports))
    # The local launcher owns 9092 on the host.
    assert "9092" not in host_ports


def test_mounts_name_declared_volumes_or_paths_in_the_deploy_tree():
    declared = set(STACK.get("volumes") or {})
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith("."):
                assert source in declared, (name, source)
                continue
            path = (COMPOSE.parent / source).resolve()
            if any(path.is_relative_to(d) for d in MOUNTED_FROM_ELSEWHERE):
                continue  # provided by the Prometheus/Grafana part of deploy/
            assert path.exists(), (name, source)


def test_secret_files_live_in_an_ignored_directory():
    for secret in STACK["secrets"].values():
        path = (COMPOSE.parent / secret["file"]).resolve()
        ignore = path.parent / ".gitignore"
        assert ignore.exists(), f"{path.parent} must ignore the keys put there"
        assert "*" in ignore.read_text().split()
    for name, service in SERVICES.items():
        for secret in service.get("secrets", []):
            assert secret in STACK["secrets"], (name, secret)

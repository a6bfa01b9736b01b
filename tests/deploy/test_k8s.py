"""The Kubernetes manifests: required fields, probes on real endpoints, ports that agree from
the settings to the Service, secrets and config that exist, and topics equal to the catalog."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest

from streams.control.app import SOURCES
from streams.events.topics import SPECS, Catalog
from tests.deploy.manifests import (
    COMPONENTS,
    K8S,
    VERSION,
    Component,
    dockerfile_instructions,
    k8s_files,
    k8s_resources,
    listen_host,
    listen_port,
    load_yaml_docs,
    parse_cli,
)

RESOURCES = k8s_resources()
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [r for r in RESOURCES if r["kind"] == kind]


NAMESPACE = _of_kind("Namespace")[0]["metadata"]["name"]
CONFIG = {r["metadata"]["name"]: r.get("data", {}) for r in _of_kind("ConfigMap")}
SECRETS = {r["metadata"]["name"]: r for r in _of_kind("Secret")}


def _component(container: dict[str, Any]) -> Component:
    image = container["image"].split(":")[0]
    return next(c for c in COMPONENTS.values() if c.image == image)


def _containers() -> list[tuple[dict[str, Any], dict[str, Any], Component]]:
    return [
        (d, c, _component(c))
        for d in _of_kind("Deployment")
        for c in d["spec"]["template"]["spec"]["containers"]
    ]


CONTAINERS = [pytest.param(d, c, comp, id=comp.name) for d, c, comp in _containers()]


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's SLMOPS_* environment with ConfigMap references resolved."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(CONFIG[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        elif "configMapKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["configMapKeyRef"]
            env[item["name"]] = CONFIG[ref["name"]][ref["key"]]
        elif "fieldRef" in item["valueFrom"]:
            env[item["name"]] = "pod-name"
    return env


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return int(next(p["containerPort"] for p in container.get("ports", []) if p["name"] == port))


def test_kustomization_lists_every_manifest():
    kustomization = load_yaml_docs(K8S / "kustomization.yaml")[0]
    files = {p.name for p in k8s_files()} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == NAMESPACE
    assert {i["name"] for i in kustomization["images"]} == {
        _component(c).image for _, c, _ in _containers()
    }
    assert {i["newTag"] for i in kustomization["images"]} == {VERSION}


def test_every_resource_has_the_required_fields():
    assert RESOURCES
    for r in RESOURCES:
        assert r.get("apiVersion"), r
        assert r.get("kind"), r
        name = r["metadata"]["name"]
        assert DNS_1123.match(name), name
        assert len(name) <= 253, name
        if r["kind"] != "Namespace":
            assert r["metadata"]["namespace"] == NAMESPACE, name
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "Secret", "ConfigMap"):
        assert _of_kind(kind), kind


@pytest.mark.parametrize(("deployment", "container", "component"), CONTAINERS)
def test_deployment_selects_its_own_pods_and_runs_as_the_image_user(
    deployment, container, component
):
    spec = deployment["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert container["image"] == f"{component.image}:{VERSION}"
    pod = spec["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    users = [i.args for i in dockerfile_instructions(component.dockerfile) if i.keyword == "USER"]
    assert str(pod["runAsUser"]) == users[-1].split(":")[0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize(("deployment", "container", "component"), CONTAINERS)
def test_containers_request_and_limit_cpu_and_memory(deployment, container, component):
    resources = container["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), bound


@pytest.mark.parametrize(("deployment", "container", "component"), CONTAINERS)
def test_container_args_are_a_real_slmops_command(deployment, container, component):
    args = list(container["args"])
    assert tuple(args[: len(component.command)]) == component.command
    parse_cli(args)


@pytest.mark.parametrize(("deployment", "container", "component"), CONTAINERS)
def test_probes_hit_served_paths_on_the_port_the_settings_listen_on(
    deployment, container, component
):
    env = _env(container)
    port = listen_port(component, env)
    probes = {k: container.get(k) for k in ("readinessProbe", "livenessProbe")}
    if port is None:
        assert container.get("ports") is None
        assert probes == {"readinessProbe": None, "livenessProbe": None}
        return
    assert listen_host(component, env) in (None, "0.0.0.0")
    assert [p["containerPort"] for p in container["ports"]] == [port]
    served = component.served_paths() if component.served_paths else set()
    expected = {"readinessProbe": component.readiness, "livenessProbe": component.liveness}
    for kind, probe in probes.items():
        assert probe is not None, kind
        assert probe["httpGet"]["path"] == expected[kind]
        assert probe["httpGet"]["path"] in served
        assert _port_number(container, probe["httpGet"]["port"]) == port


def test_services_target_a_port_of_the_pods_they_select():
    services = _of_kind("Service")
    assert services
    for service in services:
        selector = service["spec"]["selector"]
        matched = [
            (d, c)
            for d, c, _ in _containers()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            for _, container in matched:
                assert _port_number(container, port["targetPort"]) in {
                    p["containerPort"] for p in container["ports"]
                }


def test_control_workers_are_redundant_but_not_idle_and_guarded_by_a_pdb():
    control = next(d for d, _, c in _containers() if c.name == "control")
    replicas = control["spec"]["replicas"]
    catalog = Catalog()
    # A consumer group gives each partition to one worker: beyond the smallest source topic's
    # partition count, a replica has nothing to read there.
    smallest = min(catalog.resolve(base).partitions for base, _ in SOURCES)
    assert 2 <= replicas <= smallest
    labels = control["spec"]["template"]["metadata"]["labels"]
    pdbs = [
        p
        for p in _of_kind("PodDisruptionBudget")
        if p["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(pdbs) == 1
    assert 1 <= pdbs[0]["spec"]["minAvailable"] < replicas


def test_secret_and_config_references_exist():
    for deployment, container, _ in _containers():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, mount
        for volume in volumes.values():
            if "secret" in volume:
                secret = SECRETS[volume["secret"]["secretName"]]
                for item in volume["secret"].get("items", []):
                    assert item["key"] in secret["stringData"]
            if "persistentVolumeClaim" in volume:
                claims = {r["metadata"]["name"] for r in _of_kind("PersistentVolumeClaim")}
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in CONFIG
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in SECRETS[ref["name"]]["stringData"], ref


def test_secrets_are_templates_without_values():
    assert {"slmops-signing-key", "slmops-kafka-credentials"} <= set(SECRETS)
    for secret in SECRETS.values():
        assert "data" not in secret
        assert all(value == "" for value in secret["stringData"].values()), secret["metadata"]


def test_signing_key_reaches_the_optimizer_as_the_file_it_reads():
    _, container, _ = next(t for t in _containers() if t[2].name == "optimizer")
    args = parse_cli(list(container["args"]))
    mount = next(m for m in container["volumeMounts"] if m["name"] == "signing-key")
    pod_volumes = next(d for d, _, c in _containers() if c.name == "optimizer")["spec"]["template"][
        "spec"
    ]["volumes"]
    volume = next(v for v in pod_volumes if v["name"] == "signing-key")
    keys = SECRETS[volume["secret"]["secretName"]]["stringData"]
    assert args.signing_key in {f"{mount['mountPath']}/{key}" for key in keys}


# --------------------------------------------------------------------------- topics


def _generator():
    spec = importlib.util.spec_from_file_location("generate_topics", K8S / "generate_topics.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kafka_topics_yaml_is_what_the_generator_writes_now():
    generator = _generator()
    expected = generator.render(Catalog(CONFIG["slmops-settings"]["SLMOPS_TOPIC_PREFIX"]))
    assert (K8S / "kafka-topics.yaml").read_text() == expected, (
        "stale: run .venv/bin/python deploy/k8s/generate_topics.py"
    )
    assert generator.main(["--check"]) == 0


def test_kafka_topics_equal_the_catalog():
    catalog = Catalog(CONFIG["slmops-settings"]["SLMOPS_TOPIC_PREFIX"])
    topics = {t["spec"]["topicName"]: t for t in _of_kind("KafkaTopic")}
    assert list(topics) == catalog.names
    assert len(topics) == len(SPECS)
    for spec in catalog:
        topic = topics[catalog.name(spec)]
        assert topic["spec"]["partitions"] == spec.partitions
        assert topic["spec"]["config"] == dict(spec.configs)
        assert topic["metadata"]["labels"]["strimzi.io/cluster"]
        # Strimzi 1.0 serves only the v1 API; v1beta2 resources would be refused there.
        assert topic["apiVersion"] == "kafka.strimzi.io/v1"
    assert len({t["metadata"]["name"] for t in topics.values()}) == len(topics)


def test_generator_follows_a_different_prefix():
    text = _generator().render(Catalog("staging"))
    assert all(f"topicName: staging.{spec.base}\n" in text for spec in SPECS)

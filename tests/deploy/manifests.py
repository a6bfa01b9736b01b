"""What the deploy tests know, derived from the code wherever the code can say it.

One table (:data:`COMPONENTS`) names each deployable's extra, image, Dockerfile, command,
settings class and probe paths; ports come from the settings classes fed the manifests'
environment, served paths from the components' own HTTP apps, topics from the catalog and
extras from ``pyproject.toml``. When a component changes a port, a route or a setting name,
the manifests' tests fail instead of the cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml  # type: ignore[import-untyped]  # types-PyYAML is not a dev dependency
from pydantic import BaseModel
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "k8s"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION: str = PYPROJECT["project"]["version"]
PACKAGES = ("slmops", "streams", "edge_runtime", "optimizers", "workloads")


def _edge_paths() -> set[str]:
    from edge_runtime.server import build_app

    app = build_app(object())  # type: ignore[arg-type]  # routes only; no request is served
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


def _optimizer_paths() -> set[str]:
    from types import SimpleNamespace

    from optimizers.server import build_app
    from optimizers.store import ArtifactStore

    # Routes only; no request is served.
    app = build_app(SimpleNamespace(store=ArtifactStore(Path("store"))))  # type: ignore[arg-type]
    return {r.resource.canonical for r in app.router.routes() if r.resource is not None}


def _control_paths() -> set[str]:
    from streams.control.app import ControlWorker
    from streams.control.settings import ControlSettings

    settings = ControlSettings()
    catalog = settings.connection().catalog()
    worker = ControlWorker(settings, {catalog.name(s): s.partitions for s in catalog})
    return set(worker.app.web.views)


@dataclass(frozen=True)
class Component:
    """One deployable as the manifests must see it."""

    name: str
    extra: str
    image: str
    command: tuple[str, ...]
    settings: str | None  # "module:Class" that configures it; None while it has none
    port_field: str | None  # the settings field naming its HTTP port; None: no HTTP server
    host_field: str | None  # the field naming its bind address; None: binds every interface
    readiness: str | None
    liveness: str | None
    served_paths: Callable[[], set[str]] | None
    # Fields without a default: a placeholder stands in where the manifest leaves them unset.
    required: tuple[str, ...] = ()

    @property
    def dockerfile(self) -> Path:
        return DOCKER / f"{self.name}.Dockerfile"

    def settings_class(self) -> type[BaseSettings]:
        assert self.settings is not None
        module, _, cls = self.settings.partition(":")
        found: type[BaseSettings] = getattr(importlib.import_module(module), cls)
        return found


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component(
            name="control",
            extra="control",
            image="slmops-control",
            command=("control", "worker"),
            settings="streams.control.settings:ControlSettings",
            port_field="web_port",
            host_field="web_host",
            readiness="/healthz",
            liveness="/livez",
            served_paths=_control_paths,
        ),
        Component(
            name="optimizer",
            extra="optimize",
            image="slmops-optimizer",
            command=("optimizer", "worker"),
            settings="optimizers.settings:OptimizerSettings",
            port_field="metrics_port",
            host_field="metrics_host",
            readiness="/healthz",
            liveness="/livez",
            served_paths=_optimizer_paths,
        ),
        Component(
            name="edge",
            extra="edge",
            image="slmops-edge",
            command=("edge", "run"),
            settings="edge_runtime.settings:EdgeSettings",
            port_field="http_port",
            host_field="http_host",
            readiness="/healthz",
            liveness="/livez",
            served_paths=_edge_paths,
            required=("device_id",),
        ),
    )
}

# SLMOPS_* names the manifests may set ahead of the code that will read them, each with the
# unfinished part that owns it; a test fails once a settings class reads one, so the entry is
# removed (and the manifests checked) when that part lands. Empty: every name is read today.
PENDING_ENV: dict[str, str] = {}


# --------------------------------------------------------------------------- YAML


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML file (safe loader: manifests are data)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_files() -> list[Path]:
    return sorted(K8S.glob("*.yaml"))


def k8s_resources() -> list[dict[str, Any]]:
    return [doc for p in k8s_files() if p.name != "kustomization.yaml" for doc in load_yaml_docs(p)]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def kafka_version_of_local_launcher() -> str:
    """The Apache Kafka release the local launcher's pom pins."""
    tree = ElementTree.parse(DEPLOY / "local" / "pom.xml")
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = tree.find("m:properties/m:kafka.version", ns)
    assert node is not None, "deploy/local/pom.xml has no kafka.version"
    assert node.text, "deploy/local/pom.xml has an empty kafka.version"
    return node.text.strip()


# --------------------------------------------------------------------------- Dockerfiles


@dataclass(frozen=True)
class Instruction:
    stage: int
    keyword: str
    args: str


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path} ends in a continuation line"
    out: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(stage, keyword, args.strip()))
    return out


def exec_form(args: str) -> list[str]:
    """A JSON-array instruction argument (CMD, ENTRYPOINT, HEALTHCHECK CMD) as a list."""
    import json

    value = json.loads(args)
    assert isinstance(value, list), args
    return [str(v) for v in value]


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    """ENV of the final stage (``KEY=VALUE`` pairs; ``$PATH`` left unexpanded)."""
    last = max(i.stage for i in instructions)
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.stage == last and ins.keyword == "ENV":
            for token in shlex.split(ins.args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


# --------------------------------------------------------------------------- settings


def settings_classes() -> list[type[BaseSettings]]:
    """Every settings class the packages define, found by walking for ``settings.py``."""
    found: list[type[BaseSettings]] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("settings.py")):
            module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            module = importlib.import_module(module_name)
            found += [
                obj
                for obj in vars(module).values()
                if isinstance(obj, type)
                and issubclass(obj, BaseSettings)
                and obj is not BaseSettings
                and obj.__module__ == module_name
            ]
    return found


def reads_env(cls: type[BaseSettings], name: str) -> bool:
    """Whether ``cls`` reads the environment variable ``name`` (top-level or nested field)."""
    config = cls.model_config
    prefix = str(config.get("env_prefix", ""))
    case_sensitive = bool(config.get("case_sensitive", False))
    if not case_sensitive:
        name, prefix = name.lower(), prefix.lower()
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix) :]
    delimiter = config.get("env_nested_delimiter")
    parts = rest.split(delimiter) if delimiter else [rest]
    model: type[BaseModel] = cls
    for i, part in enumerate(parts):
        fields = {(k if case_sensitive else k.lower()): v for k, v in model.model_fields.items()}
        if part not in fields:
            return False
        annotation = fields[part].annotation
        if i < len(parts) - 1:
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
            else:
                # A dict field takes any key below it; anything else has no nested names.
                return getattr(annotation, "__origin__", None) is dict
    return True


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """Exactly ``env`` as the SLMOPS_* environment while the block runs."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SLMOPS_")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("SLMOPS_")})
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith("SLMOPS_")]:
            del os.environ[key]
        os.environ.update(saved)


def effective_settings(component: Component, env: Mapping[str, str]) -> BaseSettings:
    """The component's settings as its process would build them from ``env``."""
    cls: Any = component.settings_class()  # keyword fields are the subclass's, not BaseSettings'
    placeholders = {
        f: "placeholder" for f in component.required if f"SLMOPS_{f.upper()}" not in env
    }
    with environment(env):
        built: BaseSettings = cls.from_env(**placeholders)
    return built


def listen_port(component: Component, env: Mapping[str, str]) -> int | None:
    if component.port_field is None:
        return None
    port = getattr(effective_settings(component, env), component.port_field)
    assert isinstance(port, int)
    return port


def listen_host(component: Component, env: Mapping[str, str]) -> str | None:
    if component.host_field is None:
        return None
    host = getattr(effective_settings(component, env), component.host_field)
    assert isinstance(host, str)
    return host


# --------------------------------------------------------------------------- the CLI


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with the real ``slmops`` parser; a usage error fails the test."""
    from slmops.cli import build_parser

    parser = build_parser()
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`slmops {' '.join(argv)}` is not a valid command") from exc


URL_RE = re.compile(r"https?://[^/:'\"]+:(\d+)(/[^'\"\s]*)")


def urls_in(text: str) -> list[tuple[int, str]]:
    """(port, path) of every http URL in a healthcheck command."""
    return [(int(port), path) for port, path in URL_RE.findall(text)]

"""The Dockerfiles: multi-stage, non-root, one extra each, ports and health checks that match
the components' settings and routes, commands the real CLI accepts."""

from __future__ import annotations

import re
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.manifests import (
    COMPONENTS,
    DOCKER,
    PACKAGES,
    PYPROJECT,
    ROOT,
    Component,
    dockerfile_env,
    dockerfile_instructions,
    exec_form,
    listen_host,
    listen_port,
    parse_cli,
    urls_in,
)

COMPONENT_PARAMS = [pytest.param(c, id=c.name) for c in COMPONENTS.values()]
# What must never reach a device: the training stack and the control plane.
EDGE_FORBIDDEN = {"torch", "transformers", "faust-streaming", "faust", "mode-streaming"}


def _final_stage(component: Component):
    instructions = dockerfile_instructions(component.dockerfile)
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last], instructions


def test_every_component_has_a_dockerfile_and_nothing_else_does():
    assert {p.name for p in DOCKER.glob("*.Dockerfile")} == {
        c.dockerfile.name for c in COMPONENTS.values()
    }


@pytest.mark.parametrize("component", COMPONENT_PARAMS)
def test_dockerfile_is_multi_stage_and_runtime_copies_only_the_venv(component):
    final, instructions = _final_stage(component)
    stages = [i for i in instructions if i.keyword == "FROM"]
    assert len(stages) >= 2, "build the wheel in one stage, run in another"
    build_stage = stages[0].args.split()
    assert "AS" in [t.upper() for t in build_stage], "the build stage needs a name"
    build_name = build_stage[-1]
    copies = [i.args for i in final if i.keyword == "COPY"]
    assert copies, "the runtime stage copies the venv from the build stage"
    assert all(c.startswith(f"--from={build_name} ") for c in copies), copies


@pytest.mark.parametrize("component", COMPONENT_PARAMS)
def test_runtime_stage_runs_as_a_numeric_non_root_user(component):
    final, _ = _final_stage(component)
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "the runtime stage must switch user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), users[-1]
    assert int(uid) != 0
    # Kubernetes' runAsNonRoot can only verify a numeric user.
    created = " ".join(i.args for i in final if i.keyword == "RUN")
    assert f"--uid {uid}" in created


@pytest.mark.parametrize("component", COMPONENT_PARAMS)
def test_dockerfile_installs_only_its_own_extra(component):
    runs = " ".join(
        i.args for i in dockerfile_instructions(component.dockerfile) if i.keyword == "RUN"
    )
    extras = set(re.findall(r"slmops-\*\.whl\)\[([a-z,]+)\]", runs))
    assert extras == {component.extra}
    assert component.extra in PYPROJECT["project"]["optional-dependencies"]


@pytest.mark.parametrize("component", COMPONENT_PARAMS)
def test_dockerfile_copies_every_package_the_wheel_ships(component):
    sources = {
        source
        for i in dockerfile_instructions(component.dockerfile)
        if i.keyword == "COPY" and not i.args.startswith("--from")
        for source in i.args.split()[:-1]  # the last word is the destination
    }
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    wheel_packages = {pattern.rstrip("*") for pattern in include}
    assert wheel_packages == set(PACKAGES)
    assert wheel_packages <= sources
    assert {"pyproject.toml", "README.md"} <= sources  # the build reads both
    for source in sources:
        assert (ROOT / source).exists(), source


@pytest.mark.parametrize("component", COMPONENT_PARAMS)
def test_dockerignore_keeps_the_venv_and_local_data_out_of_the_context(component):
    ignore = component.dockerfile.with_name(component.dockerfile.name + ".dockerignore")
    patterns = {line.strip() for line in ignore.read_text().splitlines()}
    assert {".venv", ".local", ".git"} <= patterns


@pytest.mark.parametrize("component", COMPONENT_PARAMS)
def test_exposed_port_and_healthcheck_match_settings_and_routes(component):
    final, _ = _final_stage(component)
    env = dockerfile_env(final)
    exposed = {int(p.split("/")[0]) for i in final if i.keyword == "EXPOSE" for p in i.args.split()}
    health = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert len(health) == 1
    port = listen_port(component, env)
    if port is None:
        assert exposed == set()
        assert health[0] == "NONE"
        return
    assert exposed == {port}
    host = listen_host(component, env)
    assert host in (None, "0.0.0.0"), f"listening on {host} is unreachable from outside"
    command = health[0].split(" CMD ", 1)[1]
    urls = urls_in(" ".join(exec_form(command)))
    assert component.served_paths is not None
    assert urls == [(port, component.liveness)]
    assert component.liveness in component.served_paths()


@pytest.mark.parametrize("component", COMPONENT_PARAMS)
def test_image_command_is_a_real_slmops_command(component):
    final, _ = _final_stage(component)
    entrypoint = exec_form(next(i.args for i in final if i.keyword == "ENTRYPOINT"))
    cmd = exec_form(next(i.args for i in final if i.keyword == "CMD"))
    if entrypoint == ["slmops"]:
        argv = cmd
    else:
        # A shell entrypoint that fills in flags from the environment (the edge image).
        script = entrypoint[entrypoint.index("-c") + 1]
        words = script.split()
        start = words.index("slmops") + 1
        argv = [w if not w.startswith('"') else "value" for w in words[start:] if w != '"$@"']
        argv += cmd
    assert tuple(argv[: len(component.command)]) == component.command
    parse_cli(argv)


def _closure(requirements: list[str]) -> set[str]:
    """Names of every distribution these requirements pull in (markers evaluated here)."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # e.g. a platform this image never runs on
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        if name == "slmops":
            for extra in req.extras:
                todo += PYPROJECT["project"]["optional-dependencies"][extra]
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: its name is counted, its requirements cannot be
        for sub in dist.requires or []:
            marker = Requirement(sub).marker
            # A dependency behind an extra counts only when that extra was asked for.
            if marker is None or any(marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(str(Requirement(sub)).split(";")[0])
    return seen


def test_edge_dependency_closure_has_no_torch_transformers_or_faust():
    project = PYPROJECT["project"]
    closure = _closure(project["dependencies"] + project["optional-dependencies"]["edge"])
    assert "onnxruntime" in closure  # the walk does find what the edge extra declares
    assert closure & EDGE_FORBIDDEN == set()


def test_dependency_walk_finds_torch_in_the_optimize_extra():
    # The same walk on the optimizer's extra must see torch, or the edge check proves nothing.
    closure = _closure(PYPROJECT["project"]["optional-dependencies"]["optimize"])
    assert "torch" in closure


def test_edge_dockerfile_never_installs_torch():
    runs = " ".join(
        i.args for i in dockerfile_instructions(COMPONENTS["edge"].dockerfile) if i.keyword == "RUN"
    )
    assert not any(word in runs for word in EDGE_FORBIDDEN)

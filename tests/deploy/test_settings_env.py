"""Every SLMOPS_* name in the deploy tree is one that a settings class reads.

A misspelt or renamed variable is silently ignored by pydantic-settings (``from_env`` reads
only the names of fields), so without this test a manifest could configure nothing and look
fine.
"""

from __future__ import annotations

import re

from tests.deploy.manifests import (
    COMPOSE,
    DEPLOY,
    DOCKER,
    PENDING_ENV,
    k8s_files,
    reads_env,
    settings_classes,
)

NAME = re.compile(r"\bSLMOPS_[A-Z0-9_]*[A-Z0-9]\b")


def _names_in_deploy_tree() -> dict[str, set[str]]:
    helm = [*(DEPLOY / "helm").rglob("*.yaml"), *(DEPLOY / "helm").rglob("*.tpl")]
    files = [COMPOSE, *k8s_files(), *DOCKER.glob("*.Dockerfile"), *helm]
    found: dict[str, set[str]] = {}
    for path in files:
        for name in NAME.findall(path.read_text()):
            found.setdefault(name, set()).add(path.name)
    return found


def _read_by_some_settings_class(name: str) -> bool:
    return any(reads_env(cls, name) for cls in settings_classes())


def test_settings_classes_are_found():
    names = {cls.__name__ for cls in settings_classes()}
    assert {"ControlSettings", "EdgeSettings"} <= names


def test_every_slmops_name_in_the_manifests_is_read_by_a_settings_class():
    unknown = {
        name: sorted(files)
        for name, files in _names_in_deploy_tree().items()
        if name not in PENDING_ENV and not _read_by_some_settings_class(name)
    }
    assert unknown == {}, "no settings class reads these; fix the name or the settings"


def test_pending_names_are_used_and_not_yet_read():
    # When the owning part lands, its settings read the name: drop it from PENDING_ENV then,
    # after checking that the manifests use the name it really has.
    used = _names_in_deploy_tree()
    assert {"SLMOPS_BOOTSTRAP_SERVERS", "SLMOPS_SASL_PASSWORD"} <= set(used)  # the scan sees names
    for name, owner in PENDING_ENV.items():
        assert name in used, f"{name} is pending but no manifest uses it"
        assert not _read_by_some_settings_class(name), f"{name} is now read ({owner})"


def test_the_name_check_rejects_what_no_settings_class_reads():
    assert _read_by_some_settings_class("SLMOPS_BOOTSTRAP_SERVERS")
    assert not _read_by_some_settings_class("SLMOPS_BOOTSTRAP_SERVER")

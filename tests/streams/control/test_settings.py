"""A control worker's settings: nested ``SLMOPS_*`` names are read at the entry point only."""

from __future__ import annotations

import pytest

from streams.control.settings import ControlSettings


def test_settings_built_in_code_ignore_nested_variables(monkeypatch):
    monkeypatch.setenv("SLMOPS_WINDOW_S", "99")
    monkeypatch.setenv("SLMOPS_RULES__MIN_QUALITY", "0.9")
    monkeypatch.setenv("SLMOPS_ROLLOUT__WINDOW_S", "7")
    settings = ControlSettings()
    assert (settings.window_s, settings.rules.min_quality, settings.rollout.window_s) == (
        60.0,
        0.8,
        600.0,
    )


def test_from_env_reads_nested_variables(monkeypatch):
    monkeypatch.setenv("SLMOPS_WINDOW_S", "99")
    monkeypatch.setenv("SLMOPS_RULES__MIN_QUALITY", "0.9")
    monkeypatch.setenv("SLMOPS_ROLLOUT__WINDOW_S", "7")
    monkeypatch.setenv("SLMOPS_MODEL_RULES", '{"intent": {"max_p95_latency_ms": 80}}')
    settings = ControlSettings.from_env()
    assert (settings.window_s, settings.rules.min_quality, settings.rollout.window_s) == (
        99.0,
        0.9,
        7.0,
    )
    assert settings.rules_for("intent").max_p95_latency_ms == 80.0


def test_a_nested_override_keeps_the_rest_of_the_environments_rules(monkeypatch):
    monkeypatch.setenv("SLMOPS_RULES__MIN_QUALITY", "0.9")
    monkeypatch.setenv("SLMOPS_RULES__MIN_FEEDBACK", "7")
    settings = ControlSettings.from_env(rules={"min_feedback": 30})
    assert (settings.rules.min_quality, settings.rules.min_feedback) == (0.9, 30)


def test_help_names_the_nested_variable_and_the_default():
    assert ControlSettings.env_name("rules.min_quality") == "SLMOPS_RULES__MIN_QUALITY"
    assert ControlSettings.field_help("rollout.bake_s") == (
        "seconds 100%% is watched before SUCCEEDED; default 1800 (env SLMOPS_ROLLOUT__BAKE_S)"
    )


def test_help_of_an_unknown_field_is_an_error():
    with pytest.raises(KeyError, match=r"rules\.min_qualty"):
        ControlSettings.field_help("rules.min_qualty")

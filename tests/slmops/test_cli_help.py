"""Every flag's help says what it sets, and the variable it names really sets the same thing.

The help texts are built from the settings fields (description, default, variable name), so
this walks the real parser: for each flag that prints ``(env SLMOPS_X)``, the value that the
flag sets must come out the same when given as ``SLMOPS_X`` to the command's settings instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from edge_runtime.cli import settings_from_args as edge_settings
from edge_runtime.errors import ConfigError
from optimizers.cli import settings_from_args as optimizer_settings
from optimizers.errors import OptimizerError
from slmops.cli import _settings as cli_settings
from slmops.cli import build_parser
from streams.control.cli import settings_from_args as control_settings
from streams.kafka.errors import SettingsError

ENV = re.compile(r"\(env (SLMOPS_[A-Z0-9_]+)(?:=(\w+))?")

# (words of the command, arguments it needs, how it builds its settings from parsed flags)
COMMANDS: list[tuple[str, list[str], Callable[[argparse.Namespace], Any]]] = [
    ("control worker", [], control_settings),
    ("models list", [], control_settings),
    ("optimizer worker", [], optimizer_settings),
    ("edge run", ["--device-id", "d1"], edge_settings),
    ("edge fleet", [], lambda args: edge_settings(args, device_id="template")),
    ("topics create", [], cli_settings),
    ("kafka up", [], cli_settings),
]
IDS = [c[0] for c in COMMANDS]


@pytest.fixture(autouse=True)
def _no_slmops_variables(monkeypatch):
    import os

    for name in [k for k in os.environ if k.startswith("SLMOPS_")]:
        monkeypatch.delenv(name)


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in command.split():
        # argparse keeps subcommands only on this private action; no public way to walk them.
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def _flags(command: str) -> list[argparse.Action]:
    return [
        a
        for a in _subparser(command)._actions
        if a.option_strings and not isinstance(a, argparse._HelpAction)
    ]


def _changes(a: BaseModel, b: BaseModel, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted field, value in b) of every leaf that differs."""
    out: list[tuple[str, Any]] = []
    for name in type(a).model_fields:
        x, y = getattr(a, name), getattr(b, name)
        if x == y:
            continue
        if isinstance(x, BaseModel) and isinstance(y, BaseModel):
            out += _changes(x, y, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", y))
    return out


def _as_variable(value: Any) -> str:
    """A field value as its SLMOPS_* variable carries it (JSON for collections)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        return json.dumps(items, default=str)  # paths as the strings the variable holds
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


@pytest.mark.parametrize(("command", "needed", "settings_of"), COMMANDS, ids=IDS)
def test_every_flag_says_what_it_means(command, needed, settings_of):
    _subparser(command).format_help()  # every %-format in the help texts expands
    for action in _flags(command):
        text = (action.help or "").replace("%%", "%")
        text = re.sub(r"\(env [^)]*\)", "", text)
        text = re.sub(r"(^|; )default [^;]*", "", text).strip(" ;")
        assert len(text.split()) >= 2, f"{command} {action.option_strings[0]}: {action.help!r}"


def test_every_control_worker_flag_names_its_variable():
    missing = [
        a.option_strings[0] for a in _flags("control worker") if not ENV.search(a.help or "")
    ]
    assert missing == []


def test_rule_flags_name_the_nested_variables():
    helps = {a.option_strings[0]: a.help or "" for a in _flags("control worker")}
    assert "(env SLMOPS_RULES__MIN_QUALITY)" in helps["--min-quality"]
    assert "(env SLMOPS_ROLLOUT__MIN_QUALITY)" in helps["--rollout-min-quality"]


def _first_change(set_flag: Callable[[str], Any], candidates: list[str], baseline: Any) -> Any:
    """The settings from the first candidate value the flag accepts and that changes them."""
    for value in candidates:
        try:
            flagged = set_flag(value)
        except (SystemExit, SettingsError, OptimizerError, ConfigError, ValueError, OSError):
            continue  # not a value of this flag's type or range (argparse exits on a bad one)
        if flagged != baseline:
            return flagged
    return None


@pytest.mark.parametrize(("command", "needed", "settings_of"), COMMANDS, ids=IDS)
def test_the_variable_a_flag_names_sets_what_the_flag_sets(
    command, needed, settings_of, monkeypatch, tmp_path
):
    key_file = tmp_path / "key"
    key_file.write_text("c2FtcGxlLWtleQ==\n")
    # Values that some flag takes: a number in (0, 1), a count, a label, a file, a byte size,
    # a log-probability, a maintenance window, a URL.
    candidates = [
        *("0.5", "7", "zone=7", str(key_file), "65536", "-0.5", "eu=daily 01:00-02:00"),
        "http://artifacts.example:9109/",
    ]
    words = command.split()

    def settings(*flags: str) -> Any:
        return settings_of(build_parser().parse_args([*words, *needed, *flags]))

    baseline = settings()
    checked = 0
    for action in _flags(command):
        found = ENV.search(action.help or "")
        if found is None:
            continue
        flag, (name, fixed) = action.option_strings[0], found.groups()
        if action.nargs == 0:  # a switch; its help prints the variable's value too
            flagged = settings(flag)
        else:
            flagged = _first_change(functools.partial(settings, flag), candidates, baseline)
        assert flagged is not None, f"{flag} changes nothing"
        assert flagged != baseline, f"{flag} changes nothing"
        changes = _changes(baseline, flagged)
        assert len(changes) == 1, f"{flag} changes {changes}"
        ((field, value),) = changes
        with monkeypatch.context() as env:
            env.setenv(name, fixed or _as_variable(value))
            assert settings() == flagged, f"{name} does not set what {flag} sets ({field})"
        checked += 1
    assert checked, f"no flag of {command} names a variable"


def test_json_variables_say_so():
    helps = {a.option_strings[0]: a.help or "" for a in _flags("control worker")}
    assert "(env SLMOPS_ROLLOUT__STAGES, as JSON)" in helps["--rollout-stages"]


def _commands(
    parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
) -> list[tuple[str, argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(" ".join(words), parser)]
    return [
        found
        for name, child in subs[0].choices.items()
        for found in _commands(child, (*words, name))
    ]


ALL_COMMANDS = _commands(build_parser())


def test_the_walk_finds_every_command():
    names = {name for name, _ in ALL_COMMANDS}
    assert {"publish", "tail", "kafka down", "rollout promote", "models where"} <= names
    assert {"control worker", "optimize", "optimizer worker", "edge fleet", "demo"} <= names
    assert len(names) >= 25


@pytest.mark.parametrize(("command", "parser"), ALL_COMMANDS, ids=[c for c, _ in ALL_COMMANDS])
def test_every_command_says_what_it_does_and_every_default(command, parser):
    assert len((parser.description or "").split()) >= 3, command
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = (action.option_strings or [action.dest])[0]
        assert action.help, f"{command} {name} has no help"
        default = action.default
        if action.option_strings and default not in (None, False, [], ()):
            assert "default" in action.help, f"{command} {name}: default {default!r} not stated"

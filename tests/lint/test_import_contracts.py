"""The import-linter contracts can fail: each forbidden import, added to a copy of the tree,
breaks the contract meant to catch it, and the untouched copy keeps every contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["importlinter"]["root_packages"]
CONTRACTS = {c["name"]: c for c in PYPROJECT["tool"]["importlinter"]["contracts"]}

INDEPENDENT = "The three deployables are independent: edge runtime, optimizers, control plane"
EVENTS_PURE = next(n for n in CONTRACTS if n.startswith("The event contract (streams.events)"))
KAFKA_NO_FAUST = next(n for n in CONTRACTS if n.startswith("Kafka I/O (streams.kafka) imports"))
ONLY_KAFKA_AIOKAFKA = next(n for n in CONTRACTS if n.startswith("Only Kafka I/O"))
STREAMS_CLEAN = next(n for n in CONTRACTS if n.startswith("Nothing under streams imports"))
FAUST_SHELL = "Inside the control plane only the Faust shell modules import Faust"

# (file to add the import to, the import, the contract that must break). The first five are
# the imports a new contributor could add without any contract noticing, before contracts
# named packages instead of module lists.
PROBES = [
    ("streams/control/app.py", "import torch", STREAMS_CLEAN),
    ("streams/control/app.py", "import optimizers.passes.quantize", INDEPENDENT),
    ("streams/kafka/publish.py", "import faust", KAFKA_NO_FAUST),
    ("streams/control/rollouts/controller.py", "import faust", FAUST_SHELL),
    ("edge_runtime/fetch.py", "import streams.control.rollouts.gates", INDEPENDENT),
    ("edge_runtime/runtime.py", "import aiokafka.errors", ONLY_KAFKA_AIOKAFKA),
    ("streams/events/codec.py", "import streams.kafka.clients", EVENTS_PURE),
    ("streams/events/records.py", "import aiokafka", EVENTS_PURE),
    ("optimizers/worker.py", "import edge_runtime.store", INDEPENDENT),
    # A module nobody listed is checked too.
    ("streams/control/brand_new_module.py", "import faust", FAUST_SHELL),
]


def _copy_tree(dest: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _lint(tree: Path) -> tuple[int, str]:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # Long contract names wrap across lines; compare on single spaces.
    return result.returncode, " ".join((result.stdout + result.stderr).split())


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("pristine")
    _copy_tree(tree)
    return tree


def test_untouched_tree_keeps_every_contract(pristine: Path) -> None:
    code, out = _lint(pristine)
    assert code == 0, out
    for name in CONTRACTS:
        assert f"{name} KEPT" in out, name


@pytest.mark.parametrize(("path", "statement", "contract"), PROBES)
def test_forbidden_import_breaks_its_contract(
    tmp_path: Path, path: str, statement: str, contract: str
) -> None:
    _copy_tree(tmp_path)
    target = tmp_path / path
    before = target.read_text() if target.exists() else '"""A new module."""\n'
    target.write_text(before + f"\n{statement}  # probe\n")
    code, out = _lint(tmp_path)
    assert code != 0, out
    assert f"{contract} BROKEN" in out, out

"""Conformance with Go's ``hamba/avro`` (2.31, from the Go module proxy): its canonical forms and
fingerprints are the ones slmops computes for it, it reads every event type slmops writes, and
slmops reads what it writes back (header with hamba's own fingerprint, hamba's body).

The helper (``tests/conformance/go``) is built once per session with the machine's Go.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from streams.events import EVENT_TYPES, SCHEMA_DIR, default_codec
from streams.events.fingerprints import GO_HAMBA, aliases, canonical_form, fingerprint
from tests.support.sample_events import sample

HELPER = Path(__file__).resolve().parents[2] / "conformance" / "go"
SCHEMAS = sorted([*SCHEMA_DIR.glob("*.avsc"), *SCHEMA_DIR.glob("released/*/*.avsc")])


@pytest.fixture(scope="session")
def hamba(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:  # fails, never skips: the conformance matrix must not shrink silently
        pytest.fail("`go` not found: the conformance test needs Go 1.24 or newer (go.dev/dl)")
    binary = tmp_path_factory.mktemp("go") / "conformance"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
    built = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=HELPER,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    return binary


def _run(binary: Path, lines: list[str], *args: str) -> list[str]:
    out = subprocess.run(
        [str(binary), *args],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_hambas_canonical_forms_and_fingerprints_are_the_ones_computed_for_it(hamba):
    rows = _run(hamba, [str(p) for p in SCHEMAS], "fingerprints")
    assert len(rows) == len(SCHEMAS)
    for row in rows:
        path, fp, form = row.split("\t")
        schema = json.loads(Path(path).read_text())
        assert canonical_form(schema, variant=GO_HAMBA) == form, path
        assert fingerprint(schema, variant=GO_HAMBA).hex() == fp, path
        assert aliases(schema)[GO_HAMBA].hex() == fp, path


def test_hamba_reads_every_event_slmops_writes_and_slmops_reads_what_it_writes(hamba):
    codec = default_codec()
    events = [sample(t) for t in EVENT_TYPES.values()]
    lines = [f"{SCHEMA_DIR / (e.SCHEMA + '.avsc')}\t{codec.encode(e).hex()}" for e in events]
    written = [bytes.fromhex(h) for h in _run(hamba, lines)]
    assert len(written) == len(events)
    for event, data in zip(events, written, strict=True):
        schema = json.loads((SCHEMA_DIR / f"{event.SCHEMA}.avsc").read_text())
        assert data[2:10] == aliases(schema)[GO_HAMBA]  # hamba's own header, not the spec's
        assert codec.decode(data) == event

"""Conformance with the Avro libraries of Java (Apache Avro 1.12, from Maven Central), Go
(``hamba/avro`` 2.31, from the Go module proxy) and Rust (``apache-avro`` 0.22, from
crates.io): their canonical forms and fingerprints are the ones slmops computes for them, each
reads every event type slmops writes, and slmops reads what each writes back (a header with the
library's own fingerprint, then the library's body).

The helpers (``tests/conformance/{java,go,rust}``) are built once per session with the
machine's Maven and javac, Go and Cargo; building the Rust one takes about a minute, hence
``slow``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from streams.events import EVENT_TYPES, SCHEMA_DIR, default_codec
from streams.events.fingerprints import GO_HAMBA, PYTHON_AVRO, SPEC, canonical_form, fingerprint
from tests.support.sample_events import sample

pytestmark = pytest.mark.slow

HELPERS = Path(__file__).resolve().parents[2] / "conformance"
SCHEMAS = sorted([*SCHEMA_DIR.glob("*.avsc"), *SCHEMA_DIR.glob("released/*/*.avsc")])


@dataclasses.dataclass(frozen=True)
class Helper:
    library: str
    variant: str
    """The canonical form variant of :mod:`streams.events.fingerprints` the library uses."""
    command: tuple[str, ...]

    def run(self, lines: list[str], *args: str) -> list[str]:
        out = subprocess.run(
            [*self.command, *args],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()


def _needed(name: str, why: str) -> str:
    found = shutil.which(name)
    if found is None:  # fails, never skips: the conformance matrix must not shrink silently
        pytest.fail(f"`{name}` not found: {why}")
    return found


def _build(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    built = subprocess.run(
        command, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, built.stderr[-4000:]


@pytest.fixture(scope="session", params=["java", "go", "rust"])
def helper(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Helper:
    if request.param == "java":
        mvn = _needed("mvn", "the conformance test needs Maven (Debian's maven)")
        javac = _needed("javac", "the conformance test needs a JDK 17 (openjdk-17-jdk-headless)")
        java = _needed("java", "the conformance test needs Java 17")
        out = tmp_path_factory.mktemp("java")
        classpath = out / "classpath.txt"
        resolve = ["dependency:build-classpath", f"-Dmdep.outputFile={classpath}"]
        _build([mvn, "-q", "-B", *resolve], HELPERS / "java", {})
        jars = classpath.read_text().strip()
        _build([javac, "-d", str(out), "-cp", jars, "Conformance.java"], HELPERS / "java", {})
        return Helper("Apache Avro (Java)", SPEC, (java, "-cp", f"{out}:{jars}", "Conformance"))
    if request.param == "go":
        go = _needed("go", "the conformance test needs Go 1.24 or newer (go.dev/dl)")
        binary = tmp_path_factory.mktemp("go") / "conformance"
        env = {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly"}
        _build([go, "build", "-o", str(binary), "."], HELPERS / "go", env)
        return Helper("hamba/avro (Go)", GO_HAMBA, (str(binary),))
    cargo = _needed("cargo", "the conformance test needs Rust's cargo (rustup.rs)")
    _build([cargo, "build", "--release", "--locked", "--quiet"], HELPERS / "rust", {})
    binary = HELPERS / "rust" / "target" / "release" / "slmops-conformance"
    return Helper("apache-avro (Rust)", PYTHON_AVRO, (str(binary),))


def test_the_librarys_canonical_forms_and_fingerprints_are_the_ones_computed_for_it(helper):
    rows = helper.run([str(p) for p in SCHEMAS], "fingerprints")
    assert len(rows) == len(SCHEMAS)
    for row in rows:
        path, fp, form = row.split("\t")
        schema = json.loads(Path(path).read_text())
        assert canonical_form(schema, variant=helper.variant) == form, path
        assert fingerprint(schema, variant=helper.variant).hex() == fp, path
        assert default_codec().knows(bytes.fromhex(fp)), path  # the spec's, or an alias


def test_the_library_reads_every_event_slmops_writes_and_slmops_reads_what_it_writes(helper):
    codec = default_codec()
    events = [sample(t) for t in EVENT_TYPES.values()]
    lines = [f"{SCHEMA_DIR / (e.SCHEMA + '.avsc')}\t{codec.encode(e).hex()}" for e in events]
    written = [bytes.fromhex(h) for h in helper.run(lines)]
    assert len(written) == len(events)
    for event, data in zip(events, written, strict=True):
        schema = json.loads((SCHEMA_DIR / f"{event.SCHEMA}.avsc").read_text())
        assert data[2:10] == fingerprint(schema, variant=helper.variant)  # its own header
        assert codec.decode(data) == event, helper.library


@pytest.mark.integration
def test_through_the_broker_each_way(helper, kafka_conn):
    # slmops produces every event type; the library reads the bytes a consumer fetched and
    # writes its own records, which slmops produces again and consumes.
    import asyncio

    from streams.kafka.clients import EventConsumer, EventProducer, Received

    catalog = kafka_conn.catalog()
    events = [sample(t) for t in EVENT_TYPES.values()]
    topics = sorted({catalog.topic_for(type(e)) for e in events})

    async def consume() -> list[Received]:
        async with EventConsumer(kafka_conn, topics, name="conformance") as consumer:
            records = await consumer.snapshot()
        assert all(isinstance(r, Received) for r in records), records
        return [r for r in records if isinstance(r, Received)]

    async def produce_raw(values: list[tuple[str, bytes, bytes]]) -> None:
        async with EventProducer(kafka_conn) as producer:
            for topic, value, key in values:
                await producer.send_raw(topic, value, key=key)

    async def scenario() -> list[Received]:
        async with EventProducer(kafka_conn) as producer:
            await producer.send_many(events)
        fetched = await consume()
        lines = [f"{SCHEMA_DIR / (r.event.SCHEMA + '.avsc')}\t{r.value.hex()}" for r in fetched]
        written = [bytes.fromhex(h) for h in helper.run(lines)]
        await produce_raw(
            [
                (r.topic, data, catalog.key_for(r.event))
                for r, data in zip(fetched, written, strict=True)
            ]
        )
        return await consume()

    read = asyncio.run(scenario())
    by_type: dict[str, list[object]] = {}
    for r in read:
        by_type.setdefault(r.event.SCHEMA, []).append(r.event)
    # Each event twice: as slmops sent it, and as the library wrote it again.
    assert {name: len(got) for name, got in by_type.items()} == {t: 2 for t in EVENT_TYPES}
    assert all(got[0] == got[1] for got in by_type.values()), helper.library
    library_headers = {bytes(r.value[2:10]) for r in read} - {
        default_codec().fingerprint(n) for n in EVENT_TYPES
    }
    assert (helper.variant == SPEC) == (not library_headers)

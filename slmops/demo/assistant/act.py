"""The assistant act: a generative SLM adapted to one cohort's drift by a LoRA adapter alone.

SmolLM2-135M-Instruct turns smart-home and assistant requests into JSON commands on a fleet
in two cohorts, every device serving ``v1`` (a LoRA adapter over the int4 ``base``). The
pilot cohort's users start phrasing requests differently; their app's feedback shows answers
going wrong. The control plane, whose rules for this model ask for one candidate per cohort,
requests an adapter for the pilot cohort only; the optimizer worker trains it on that
cohort's consented answers and judges it against v1 on held-out ones; the controller rolls it
out within the pilot cohort, canary first, and promotes it on gate evidence. Each pilot device
downloads the adapter alone and switches without reloading the base; the general cohort
keeps v1. The run checks all of that from the topics and the devices, and prints the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from slmops.demo.assistant import builds
from slmops.demo.assistant.builds import MODEL_ID
from slmops.demo.assistant.users import AssistantUsers
from slmops.demo.config import RunConfig
from slmops.demo.observer import Observer
from slmops.demo.report import Checks, Timeline
from slmops.demo.stage import wait_until
from slmops.demo.supervision import DemoWorkers
from slmops.local_kafka import CHECKOUT
from slmops.processes import WorkerProcess, control_worker_command
from streams.events import (
    Alert,
    DeviceStatus,
    ModelVersion,
    OptimizationRequest,
    OptimizationResult,
    RolloutState,
    RolloutStatus,
)
from streams.events import artifact as art
from streams.kafka.clients import EventProducer
from workloads import commands

if TYPE_CHECKING:
    from edge_runtime.runtime import EdgeRuntime

TERMINAL = {
    RolloutStatus.SUCCEEDED,
    RolloutStatus.ROLLED_BACK,
    RolloutStatus.ABORTED,
    RolloutStatus.INCONCLUSIVE,  # waits for a human: the act cannot go on
}


@dataclasses.dataclass(frozen=True)
class AssistantConfig:
    """Sizes and clocks of the act; the defaults fit a 2-core machine in about ten minutes."""

    devices: int = 6
    """Three per cohort. Rollout membership is a hash of the rollout id and the device id,
    both fixed here, so the pilot's 50% canary is the same two of its three devices each run."""
    cohorts: tuple[str, ...] = ("pilot", "general")
    shifted_cohort: str = "pilot"
    window_s: float = 30.0
    rollout_window_s: float = 30.0
    bake_s: float = 10.0
    stages: tuple[float, ...] = (50.0, 100.0)
    min_quality: float = 0.6
    """The quality SLO (share of exactly right commands): v1 gets about eight in ten clean
    requests right and four in ten of the shifted traffic; below it, on ``min_feedback``
    outcomes in a window, the policy asks for an adapter."""
    min_feedback: int = 30
    rollout_min_quality: float = 0.3
    """The floor a canary must reach on its cohort's traffic (next to the relative gates)."""
    pause_s: float = 1.0
    """Mean pause of one device's user between two requests."""
    examples_per_window: int = 6
    clean_examples: int = 160
    v1_steps: int = 120
    adapt_steps: int = 80
    replay_examples: int = 60
    """Clean requests (of those v1 learned) mixed into the adapter's training data."""
    clean_windows: int = 1
    step_timeout_s: float = 600.0
    seed: int = 7


@dataclasses.dataclass(frozen=True, slots=True)
class Stage:
    run: RunConfig
    config: AssistantConfig
    timeline: Timeline
    checks: Checks
    workers: DemoWorkers
    observer: Observer
    producer: EventProducer
    users: AssistantUsers
    runtimes: list[EdgeRuntime]
    base: ModelVersion
    v1: ModelVersion

    def progress(self) -> str:
        versions = ", ".join(f"{v}={n}" for v, n in sorted(self.observer.versions().items()))
        rows = []
        for (cohort, version, shifted), t in sorted(self.users.by_phase.items()):
            if t.total:
                rows.append(f"{cohort}/{version}{'*' if shifted else ''}={t.correct / t.total:.2f}")
        return f"devices on {versions or 'nothing yet'}; answers right: {', '.join(rows) or '-'}"

    async def wait(self, what: str, ready: Callable[[], bool]) -> None:
        await wait_until(
            what,
            ready,
            timeout_s=self.config.step_timeout_s,
            progress=self.progress,
            say=self.run.say,
            alive=self.workers.problem,
        )

    def cohort_devices(self, cohort: str) -> list[EdgeRuntime]:
        return [r for r in self.runtimes if r.device.cohort == cohort]


def _model_rules(config: AssistantConfig) -> str:
    """This model's SLOs: quality on feedback, one adapter request per cohort, recipe adapt."""
    rules = {
        MODEL_ID: {
            "min_quality": config.min_quality,
            "min_feedback": config.min_feedback,
            "min_requests": config.min_feedback,
            # A small model, a broker, two workers and training share two cores: latency
            # measures the machine here, so only answer quality is judged.
            "max_p95_latency_ms": 600000,
            "cooldown_windows": 1000,
            "per_cohort": True,
            "recipe": "adapt",
        }
    }
    return json.dumps(rules)


def workers(run: RunConfig, config: AssistantConfig, web_port: int) -> list[WorkerProcess]:
    from streams.control.settings import ControlSettings

    optimizer = WorkerProcess(
        "optimizer worker",
        run.optimizer_command(),
        run.logs / "optimizer.log",
    )
    command = control_worker_command(
        run.conn,
        app_id=f"{run.conn.topic_prefix}-control",
        worker_id="control-1",
        web_port=web_port,
        data_dir=run.root / "control",
        extra=[
            "--window-s", str(config.window_s), "--grace-s", str(config.window_s + 2),
            # Three devices per cohort: the privacy floor is lowered to what the fleet has.
            "--privacy-k", "2",
            "--rollout-no-relative-latency",
            "--rollout-cohorts", ",".join(config.cohorts),
            "--rollout-stages", ",".join(f"{s:g}" for s in config.stages),
            "--rollout-window-s", str(config.rollout_window_s),
            "--rollout-bake-s", str(config.bake_s),
            "--rollout-stage-deadline-s", str(config.rollout_window_s * 10),
            "--rollout-rollback-timeout-s", "180",
            "--rollout-min-requests", "15", "--rollout-min-devices", "1",
            "--rollout-min-feedback", "15",
            "--rollout-min-quality", str(config.rollout_min_quality),
            "--rollout-tick-s", "1",
        ],
    )  # fmt: skip
    env = run.control_env() | {ControlSettings.env_name("model_rules"): _model_rules(config)}
    control = WorkerProcess(
        "control worker", command, run.logs / "control.log", port=web_port, env=env
    )
    return [optimizer, control]


def prepare(
    run: RunConfig, config: AssistantConfig, timeline: Timeline
) -> tuple[Ed25519PrivateKey, ModelVersion, ModelVersion]:
    """The run's key, base and v1 (built or taken from the cache), and the worker's files."""
    from transformers.utils import logging as hf_logging

    from optimizers.dataset import Example, write_jsonl
    from optimizers.serving import Serving

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # the act says its own
    key = art.new_signing_key()
    run.signing_key.write_text(art.private_key_to_text(key) + "\n")
    os.chmod(run.signing_key, 0o600)
    run.public_key.write_text(art.public_key_to_text(key.public_key()) + "\n")
    cache = CHECKOUT / ".local" / "models" / "demo-assistant"
    cache.mkdir(parents=True, exist_ok=True)
    timeline(
        f"building base ({builds.SOURCE}, int4, LoRA-ready) and v1 (an adapter for JSON "
        f"commands); kept in {cache} for the next run"
    )
    hf_ref, base_build = builds.base_build(cache, run.say)
    adapter, v1_lora = builds.clean_adapter(
        cache, hf_ref, base_build, config.clean_examples, config.v1_steps, run.say
    )
    store, work = run.root / "store", run.root / "packages"
    base = builds.package(base_build, "base", key, store, work)
    sha = base.artifacts[0].sha256
    v1 = builds.package(adapter, "v1", key, store, work, base_sha256=sha)
    models = run.root / "models" / MODEL_ID
    record = Serving(
        hf=hf_ref.path,
        build=base_build.path,
        sha256=sha,
        output_format="json",
        output_schema=commands.SCHEMA,
    )
    record.save(models / "base")
    dataclasses.replace(record, adapter=adapter.path, lora=v1_lora).save(models / "v1")
    # What v1 learned stays in the mix, so an adapter for the drift does not forget it.
    clean = commands.generate(config.clean_examples, seed=1)[: config.replay_examples]
    write_jsonl(run.root / "data" / f"{MODEL_ID}.jsonl", [Example(c.text, c.answer) for c in clean])
    recipes = run.root / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    (recipes / "adapt.toml").write_text(builds.ADAPT_RECIPE.format(steps=config.adapt_steps))
    return key, base, v1


@contextlib.asynccontextmanager
async def staged(
    run: RunConfig, config: AssistantConfig, timeline: Timeline, checks: Checks, web_port: int
) -> AsyncIterator[Stage]:
    from edge_runtime.runtime import EdgeRuntime
    from edge_runtime.settings import EdgeSettings

    key, base, v1 = await asyncio.to_thread(prepare, run, config, timeline)
    signed = run.signed_fleet(key.public_key())
    procs = DemoWorkers(run, workers(run, config, web_port))
    observer = Observer(run.conn, timeline)
    runtimes: list[EdgeRuntime] = []
    try:
        procs.start()
        # The simulated fleet shares this machine with the workers, which in a deployment run
        # on machines of their own: it yields to them (the workers started before this).
        os.nice(10)
        timeline(
            f"control worker and optimizer worker started; status page: "
            f"http://127.0.0.1:{web_port}/ (logs: {run.logs})"
        )
        await observer.start()
        async with EventProducer(run.conn) as producer:
            await producer.send_and_wait(base, signing_key=key)
            await producer.send_and_wait(v1, signing_key=key)
            template = EdgeSettings(
                device_id="template",
                model_id=MODEL_ID,
                data_dir=run.root / "devices",
                artifact_dirs=[run.root],  # the store and the packages
                window_s=config.window_s,
                **signed,
                **run.conn.cluster_fields(),
            )
            for i in range(config.devices):
                cohort = config.cohorts[i % len(config.cohorts)]
                runtimes.append(
                    EdgeRuntime(
                        template.model_copy(update={"device_id": f"sat-{i:02d}", "cohort": cohort})
                    )
                )
            for runtime in runtimes:
                await runtime.start()
            timeline(
                f"fleet of {config.devices} edge runtimes in cohorts {', '.join(config.cohorts)}; "
                "they obey only records signed by the release and controller keys"
            )
            users = AssistantUsers(
                runtimes,
                window_s=config.window_s,
                pause_s=config.pause_s,
                examples_per_window=config.examples_per_window,
                seed=config.seed,
            )
            try:
                yield Stage(
                    run, config, timeline, checks, procs, observer, producer, users,
                    runtimes, base, v1,
                )  # fmt: skip
            finally:
                await users.stop()
    finally:
        for runtime in runtimes:
            with contextlib.suppress(Exception):
                await runtime.stop()
        await observer.stop()
        procs.stop()


async def play(stage: Stage) -> None:
    """The act; ``checks.completed`` only when it ran to the end."""
    config, observer, users, checks = stage.config, stage.observer, stage.users, stage.checks
    timeline, n = stage.timeline, stage.config.devices
    pilot, others = config.shifted_cohort, [c for c in config.cohorts if c != config.shifted_cohort]
    await stage.wait("every device serving v1", lambda: observer.versions().get("v1") == n)
    # The app's assistant feature needs v1: users ask once a device serves it.
    await users.start(stage.producer)
    fetched_v1 = {r.device.device_id: r.fetcher.transferred_bytes for r in stage.runtimes}
    timeline(f"all {n} devices serve v1 (base + adapter); users ask for JSON commands")
    await asyncio.sleep(config.window_s * config.clean_windows)
    for cohort in config.cohorts:
        q, i = users.quality(cohort, "v1", False), users.intent(cohort, "v1", False)
        timeline(
            f"v1 answers {q or 0:.0%} of the {cohort} cohort's requests with the exact command "
            f"(the right intent: {i or 0:.0%})"
        )

    users.shifted.add(pilot)
    shifted_at = time.monotonic()
    timeline(f"the {pilot} cohort's users change how they speak: colloquial, new names, typos")

    def pilot_request() -> list[OptimizationRequest]:
        return [r for r in observer.of(OptimizationRequest) if r.model_id == MODEL_ID]

    await stage.wait(f"an adaptation request for the {pilot} cohort", lambda: bool(pilot_request()))
    request_at = observer.first_time(lambda e: isinstance(e, OptimizationRequest)) or 0.0
    users.quiet = True
    timeline(
        "users ask at a tenth of their rate while the optimizer trains on this machine's cores"
    )
    await stage.wait("the optimizer's answer", lambda: bool(observer.of(OptimizationResult)))
    users.quiet = False
    result = observer.of(OptimizationResult)[0]
    result_at = observer.first_time(lambda e: isinstance(e, OptimizationResult)) or 0.0
    if not checks.expect(result.accepted, f"the adapter candidate was accepted ({result.reason})"):
        return
    candidate = result.candidate_version
    assert candidate is not None
    registered = next(e for e in observer.of(ModelVersion) if e.version == candidate)
    adapter_bytes = registered.artifacts[0].size_bytes
    base_bytes = stage.base.artifacts[0].size_bytes

    def rollouts() -> list[RolloutState]:
        return [r for r in observer.rollouts.values() if r.to_version == candidate]

    await stage.wait(
        f"the rollout of {candidate} to finish",
        lambda: bool(rollouts()) and all(r.status in TERMINAL for r in rollouts()),
    )
    first_canary = observer.first_time(
        lambda e: isinstance(e, DeviceStatus) and e.model_version == candidate
    )
    pilot_ids = {r.device.device_id for r in stage.cohort_devices(pilot)}
    await stage.wait(
        f"every {pilot} device on {candidate}",
        lambda: sum(
            1 for d in observer.devices.values()
            if d.device_id in pilot_ids and d.model_version == candidate
        ) == len(pilot_ids),
    )  # fmt: skip
    await asyncio.sleep(config.window_s)

    before = users.quality(pilot, "v1", True)
    after = users.quality(pilot, candidate, True)
    valid_before = users.format_valid(pilot, "v1", True)
    valid_after = users.format_valid(pilot, candidate, True)
    intent_before = users.intent(pilot, "v1", True)
    intent_after = users.intent(pilot, candidate, True)
    timeline(
        f"{pilot} cohort on the shifted phrasing, v1 -> {candidate}: exact command "
        f"{before or 0:.0%} -> {after or 0:.0%}, right intent {intent_before or 0:.0%} -> "
        f"{intent_after or 0:.0%}, valid JSON {valid_before or 0:.0%} -> {valid_after or 0:.0%}"
    )
    requests = pilot_request()
    checks.expect(
        any(
            a.kind == "quality_drop" and a.model_version == "v1" and a.cohort == pilot
            for a in observer.of(Alert)
        ),
        f"a quality-drop alert for v1 in the {pilot} cohort",
    )
    checks.expect(
        [r.cohort for r in requests] == [pilot],
        f"exactly one adaptation request, for the {pilot} cohort only",
    )
    checks.expect(
        registered.artifacts[0].base_sha256 == stage.base.artifacts[0].sha256,
        f"{candidate} is an adapter for the base the fleet holds",
    )
    checks.expect(
        [r.selector.cohorts for r in rollouts()] == [(pilot,)]
        and all(r.status is RolloutStatus.SUCCEEDED for r in rollouts()),
        f"{candidate} was rolled out within the {pilot} cohort only, canary first, and succeeded",
    )
    versions = {d.device_id: d.model_version for d in observer.devices.values()}
    checks.expect(
        all(
            versions.get(r.device.device_id) == "v1"
            for c in others
            for r in stage.cohort_devices(c)
        ),
        f"the {', '.join(others)} cohort keeps v1: two cohorts, two adapters, one base",
    )
    per_device = {
        r.device.device_id: r.fetcher.transferred_bytes - fetched_v1[r.device.device_id]
        for r in stage.runtimes
    }
    pilot_fetched = [per_device[d] for d in sorted(pilot_ids)]
    checks.expect(
        all(b == adapter_bytes for b in pilot_fetched),
        f"each {pilot} device downloaded the adapter alone ({adapter_bytes:,} bytes)",
    )
    checks.expect(
        adapter_bytes <= 0.05 * base_bytes,
        f"the adapter is at most 5% of the base ({adapter_bytes / base_bytes:.1%})",
    )
    checks.expect(
        before is not None and after is not None and after > before,
        f"the {pilot} cohort answers the shifted phrasing better on {candidate}",
    )
    registered_builds = {
        (mv.version, a.sha256) for mv in observer.of(ModelVersion) for a in mv.artifacts
    }
    reported = {
        (s.model_version, s.model_sha256)
        for s in observer.of(DeviceStatus)
        if s.model_version is not None
    }
    checks.expect(
        reported <= registered_builds,
        "every build a device reported serving is a registered, signed artifact",
    )
    _figures(stage, result, candidate, adapter_bytes, base_bytes, shifted_at, request_at,
             result_at, first_canary)  # fmt: skip
    checks.completed = True


def _figures(
    stage: Stage,
    result: OptimizationResult,
    candidate: str,
    adapter_bytes: int,
    base_bytes: int,
    shifted_at: float,
    request_at: float,
    result_at: float,
    first_canary: float | None,
) -> None:
    say, m = stage.run.say, result.candidate_metrics
    switches = []
    for r in stage.cohort_devices(stage.config.shifted_cohort):
        registry = r.metrics.registry
        labels = {"device_id": r.device.device_id, "model_id": MODEL_ID}
        total = registry.get_sample_value("slmops_edge_adapter_switch_seconds_sum", labels)
        count = registry.get_sample_value("slmops_edge_adapter_switch_seconds_count", labels)
        if total is not None and count:
            switches.append(total / count)

    def line(what: str, value: str) -> None:
        say(f"  {what:<40} {value}")

    base_exact = result.baseline_metrics.get("answer_exact", 0.0)
    say("")
    say("measured:")
    line("shift -> adaptation request", f"{request_at - shifted_at:6.1f} s")
    line("optimizer: train, export, judge, sign", f"{result.duration_s:6.1f} s")
    if "steps_per_s" in m:
        line("LoRA training speed", f"{m['steps_per_s']:6.2f} steps/s")
    line(
        "held-out answers right (optimizer)",
        f"{base_exact:6.0%} v1 -> {m.get('answer_exact', 0.0):.0%} {candidate}",
    )
    if first_canary is not None:
        line(
            "accepted -> first canary serving",
            f"{first_canary - result_at:6.1f} s",
        )
    line(
        "bytes per device for the update",
        f"{adapter_bytes:,} (adapter) vs {base_bytes:,} (full model), "
        f"{adapter_bytes / base_bytes:.1%}",
    )
    if switches:
        line("adapter switch on a device (mean)", f"{1000 * sum(switches) / len(switches):6.0f} ms")
    line("requests that failed on a device", f"{stage.users.failures:6d}")


async def run_act(
    run: RunConfig, timeline: Timeline, checks: Checks, config: AssistantConfig, web_port: int
) -> None:
    async with staged(run, config, timeline, checks, web_port) as stage:
        await play(stage)
        if run.keep_running:
            timeline(
                f"everything keeps running: status page http://127.0.0.1:{web_port}/; "
                "Ctrl-C stops it"
            )
            await asyncio.Event().wait()

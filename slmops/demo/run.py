"""``slmops demo``: its acts, each on a fresh topic namespace, one broker, one exit code."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

from slmops.demo.assistant.act import AssistantConfig, run_act
from slmops.demo.config import DemoConfig, RunConfig, Say
from slmops.demo.report import Checks, Timeline
from slmops.demo.scenarios import play
from slmops.demo.stage import staged
from slmops.local_kafka import CHECKOUT, LocalKafka
from slmops.settings import CliSettings
from streams.kafka.admin import create_topics, delete_topics, wait_for_broker

SCENARIOS = ("classifier", "assistant")
ALL = "all"
"""Every act in turn, on one broker: what ``make demo`` runs."""


def run_demo(
    settings: CliSettings,
    *,
    keep_running: bool,
    progress: Say,
    config: DemoConfig | None = None,
    scenario: str = ALL,
    assistant: AssistantConfig | None = None,
) -> int:
    """Run one act, or every act in turn, each on a fresh topic namespace; 0 only if every
    expectation of every act held.

    ``classifier``: drift, re-optimization, canary and the automatic rollback of a bad build;
    ``assistant``: a generative SLM adapted to one cohort's drift by a LoRA adapter alone.
    ``keep_running`` keeps the last act's fleet and workers up afterwards.
    """
    if scenario != ALL and scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {ALL}, {', '.join(SCENARIOS)}")
    acts = SCENARIOS if scenario == ALL else (scenario,)
    config = config or DemoConfig()
    local: LocalKafka | None = None
    if settings.bootstrap_servers is None:
        kafka = LocalKafka(home=settings.kafka_home, port=settings.kafka_port, progress=progress)
        status = kafka.status()
        if not (status.running and status.answering):
            kafka.up()
            local = kafka  # started here, so stopped here
        else:
            progress(f"using the local Kafka already running at {status.bootstrap_servers}")
    played: list[tuple[str, Checks]] = []
    try:
        for i, act in enumerate(acts):
            if len(acts) > 1:
                progress(f"== act {i + 1} of {len(acts)}: {act}, {_ABOUT[act]}")
            last = i == len(acts) - 1
            checks, interrupted = _run_act(
                act, settings, config, assistant, progress, keep_running=keep_running and last
            )
            played.append((act, checks))
            checks.report(progress, f"{act} act" if len(acts) > 1 else "demo")
            if interrupted:
                break
    finally:
        if local is not None and not keep_running:
            local.down()
    skipped = [act for act in acts if act not in {a for a, _ in played}]
    if skipped:
        progress(f"not run, as the demo was stopped: {', '.join(skipped)}")
    ok = not skipped and all(checks.all_held for _, checks in played)
    if len(acts) > 1:
        progress("demo OK" if ok else "demo FAILED: an expectation did not hold")
    return 0 if ok else 1


_ABOUT = {
    "classifier": "an intent classifier's drift, re-optimization, canary and rollback",
    "assistant": "SmolLM2 adapted to one cohort's drift by a LoRA adapter alone",
}


def _run_act(
    scenario: str,
    settings: CliSettings,
    config: DemoConfig,
    assistant: AssistantConfig | None,
    progress: Say,
    *,
    keep_running: bool,
) -> tuple[Checks, bool]:
    """The act's checks, and whether it was interrupted (Ctrl-C)."""
    base = settings.connection()
    run_id = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    tag = "demo" if scenario == "classifier" else scenario
    conn = base.model_copy(update={"topic_prefix": f"{base.topic_prefix}-{tag}{run_id}"})
    root = (
        CHECKOUT / ".local" / "demo" / (run_id if scenario == "classifier" else f"{run_id}-{tag}")
    )
    run = RunConfig(demo=config, conn=conn, root=root, keep_running=keep_running, say=progress)
    run.logs.mkdir(parents=True, exist_ok=True)
    timeline = Timeline(progress)
    checks = Checks()
    interrupted = False
    try:
        asyncio.run(wait_for_broker(conn, 30.0))
        asyncio.run(create_topics(conn))
        timeline(f"Kafka at {conn.bootstrap_servers}; topics {conn.topic_prefix}.*; files {root}")
        if scenario == "classifier":
            asyncio.run(_play(run, timeline, checks))
        else:
            act = run_act(run, timeline, checks, assistant or AssistantConfig(), config.web_port)
            asyncio.run(act)
    except (RuntimeError, TimeoutError) as exc:
        checks.expect(False, str(exc))
    except KeyboardInterrupt:
        progress("stopped")
        interrupted = True
        if not checks.completed:
            checks.expect(False, "the scenario was interrupted before it finished")
    finally:
        if not keep_running:
            with contextlib.suppress(Exception):
                asyncio.run(delete_topics(conn))
    return checks, interrupted


async def _play(run: RunConfig, timeline: Timeline, checks: Checks) -> None:
    async with staged(run, timeline, checks) as stage:
        await play(stage)
        if run.keep_running:
            timeline(
                f"everything keeps running: status page http://127.0.0.1:"
                f"{run.demo.web_port}/, metrics /metrics; Ctrl-C stops it"
            )
            await asyncio.Event().wait()

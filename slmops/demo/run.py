"""``slmops demo``: one run on a fresh topic namespace, its broker, its summary, its exit code."""

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


def run_demo(
    settings: CliSettings,
    *,
    keep_running: bool,
    progress: Say,
    config: DemoConfig | None = None,
    scenario: str = "classifier",
    assistant: AssistantConfig | None = None,
) -> int:
    """Run one act on a fresh topic namespace; 0 only if every expectation held.

    ``classifier``: drift, re-optimization, canary and the automatic rollback of a bad build;
    ``assistant``: a generative SLM adapted to one cohort's drift by a LoRA adapter alone.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")
    config = config or DemoConfig()
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
        if scenario == "classifier":
            asyncio.run(_play(run, timeline, checks))
        else:
            act = run_act(run, timeline, checks, assistant or AssistantConfig(), config.web_port)
            asyncio.run(act)
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
    checks.report(progress)
    return 0 if checks.all_held else 1


async def _play(run: RunConfig, timeline: Timeline, checks: Checks) -> None:
    async with staged(run, timeline, checks) as stage:
        await play(stage)
        if run.keep_running:
            timeline(
                f"everything keeps running: status page http://127.0.0.1:"
                f"{run.demo.web_port}/, metrics /metrics; Ctrl-C stops it"
            )
            await asyncio.Event().wait()

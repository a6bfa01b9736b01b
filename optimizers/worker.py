"""The optimizer worker: optimization requests in, results and model versions out.

Workers form a consumer group on ``optimization-requests``, so requests spread over workers
and each is handled by one. A worker takes one request at a time and runs the pipeline in a
thread (``asyncio.to_thread``): torch holds the GIL only in short stretches, so the event loop
keeps the group membership alive (heartbeats) during a long build.

Delivery is at-least-once (the offset is committed after the result is published), so a
request can arrive twice after a crash or a rebalance. The ledger, a JSON-lines file of
handled ``event_id``s, makes the second delivery a no-op instead of a second build.

Where things come from is a seam (:class:`Sources`): the default reads base models from
``<models>/<model_id>/<version>/``, data from ``<data>/<model_id>.jsonl`` and recipes from
``<recipes>/<name>.toml``.

With a :class:`~optimizers.metrics.WorkerMetrics`, every request is counted by outcome and
every build timed; ``optimizers.server`` serves them with the worker's health.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from optimizers.errors import OptimizerError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from optimizers.dataset import Dataset
    from optimizers.metrics import WorkerMetrics
    from optimizers.model import ModelRef
    from optimizers.passes.base import PassContext
    from optimizers.pipeline import Outcome
    from optimizers.recipe import Gates, Recipe
    from optimizers.serving import Serving
    from streams.events import ModelVersion, OptimizationRequest, OptimizationResult
    from streams.kafka.connection import KafkaConnection

log = logging.getLogger(__name__)


class Sources(Protocol):
    def base_model(self, model_id: str, version: str) -> ModelRef: ...
    def data(self, model_id: str, recipe: Recipe, cohort: str | None = None) -> Dataset: ...
    def recipe(self, name: str) -> Recipe: ...
    def keep(self, model_id: str, version: str, trained: ModelRef) -> None:
        """Keep an accepted candidate's trainable model as the base of later requests."""

    def serving(self, model_id: str, version: str) -> Serving:
        """What devices run for a version of a generative model (an adapter recipe's base)."""

    def keep_adapter(self, model_id: str, version: str, serving: Serving) -> None:
        """Keep an accepted adapter version, so that later requests can name it as base."""


@dataclass(frozen=True)
class DirectorySources:
    models: Path
    data_dir: Path
    recipes: Path

    def base_model(self, model_id: str, version: str) -> ModelRef:
        from optimizers.model import ModelRef

        return ModelRef.load(self.models / model_id / version)

    def data(self, model_id: str, recipe: Recipe, cohort: str | None = None) -> Dataset:
        """``<data>/<model_id>.jsonl``, or ``<model_id>.<cohort>.jsonl`` for one cohort."""
        from optimizers import dataset

        name = f"{model_id}.{cohort}.jsonl" if cohort else f"{model_id}.jsonl"
        if recipe.makes_adapter:
            examples = dataset.read_jsonl(self.data_dir / name)
            return dataset.split_answers(examples, eval_fraction=recipe.eval_fraction)
        return dataset.load(self.data_dir / name, eval_fraction=recipe.eval_fraction)

    def recipe(self, name: str) -> Recipe:
        from optimizers import recipe

        return recipe.load(self.recipes / f"{name}.toml")

    def keep(self, model_id: str, version: str, trained: ModelRef) -> None:
        import shutil

        target = self.models / model_id / version
        if target.exists():
            return
        staging = target.with_name(f".{version}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(trained.path, staging)
        staging.rename(target)

    def serving(self, model_id: str, version: str) -> Serving:
        from optimizers.serving import Serving

        return Serving.load(self.models / model_id / version)

    def keep_adapter(self, model_id: str, version: str, serving: Serving) -> None:
        assert serving.adapter is not None
        target = self.models / model_id / version
        target.mkdir(parents=True, exist_ok=True)
        serving.keep_adapter(serving.adapter, target, serving.lora)


class Ledger:
    """Handled request ids, persisted so a restarted worker still knows them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: set[str] = set()
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    self._seen.add(json.loads(line)["event_id"])

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._seen

    def add(self, event_id: str, outcome: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"event_id": event_id, "outcome": outcome}) + "\n")
        self._seen.add(event_id)


def logged_progress(request_id: str) -> Callable[[str, int, int], None]:
    """Progress of a build in the worker's log: each phase at every tenth of its way, so a
    training of minutes says where it is without a line per step."""
    shown: dict[str, int] = {}

    def progress(what: str, done: int, total: int) -> None:
        tenth = 10 * done // total if total else 10
        if tenth > shown.get(what, -1):
            shown[what] = tenth
            log.info("request=%s %s %d/%d", request_id, what, done, total)

    return progress


def _reason(text: str) -> str:
    """``text`` within the result's reason limit: reasons quote exceptions, which have none."""
    from streams.events.limits import LIMITS, clip

    return clip(text, LIMITS["OptimizationResult"]["reason"])


class OptimizerWorker:
    def __init__(
        self,
        conn: KafkaConnection,
        sources: Sources,
        *,
        work_dir: Path,
        store_dir: Path,
        signing_key: Ed25519PrivateKey,
        group_id: str = "slmops-optimizer",
        worker_id: str | None = None,
        metrics: WorkerMetrics | None = None,
        artifact_base_url: str | None = None,
    ) -> None:
        from optimizers.store import ArtifactStore

        self.conn = conn
        self.sources = sources
        self.work_dir = work_dir
        self.store_dir = store_dir
        # With a base URL the registry announces http(s) URIs that devices on other machines
        # reach (the worker's endpoint serves the store); without, file:// paths on this one.
        self.store = ArtifactStore(store_dir, base_url=artifact_base_url)
        self.signing_key = signing_key
        self.group_id = group_id
        self.worker_id = worker_id or f"optimizer-{uuid.uuid4().hex[:8]}"
        self.ledger = Ledger(work_dir / "handled.jsonl")
        self.metrics = metrics
        self.handled = 0
        self.skipped = 0
        # True while the consumer is running: the worker's readiness (``GET /healthz``).
        self.consuming = False

    async def run(
        self, *, idle_timeout_s: float | None = None, max_requests: int | None = None
    ) -> None:
        """Serve until idle for ``idle_timeout_s`` (forever if None) or ``max_requests`` done."""
        from streams.events import OptimizationRequest
        from streams.kafka.clients import EventConsumer, EventProducer

        topic = self.conn.catalog().topic_for(OptimizationRequest)
        async with (
            EventProducer(self.conn) as producer,
            EventConsumer(
                self.conn,
                [topic],
                name="optimizer",
                group_id=self.group_id,
                dead_letters=producer,
            ) as consumer,
        ):
            log.info(
                "optimizer worker=%s consuming topic=%s group=%s",
                self.worker_id,
                topic,
                self.group_id,
            )
            self.consuming = True
            try:
                async for record in consumer.records(idle_timeout_s):
                    event = record.event
                    if not isinstance(event, OptimizationRequest):
                        log.warning("ignoring %s on %s", type(event).__name__, record.topic)
                        continue
                    await self.handle(event, producer)
                    if max_requests is not None and self.handled + self.skipped >= max_requests:
                        return
            finally:
                self.consuming = False

    async def handle(self, request: OptimizationRequest, producer: object) -> None:
        from streams.kafka.clients import EventProducer

        assert isinstance(producer, EventProducer)
        metrics = self.metrics
        if metrics is not None:
            metrics.taken(request.model_id)
        if request.event_id in self.ledger:
            self.skipped += 1
            if metrics is not None:
                metrics.handled(request.model_id, "skipped")
            log.info(
                "skipping re-delivered request event_id=%s model=%s",
                request.event_id,
                request.model_id,
            )
            return
        started = time.monotonic()
        failed = False
        if metrics is not None:
            metrics.building.set(1)
        try:
            result, version = await asyncio.to_thread(self._build, request)
        except OptimizerError as exc:
            result, version = self._failure(request, str(exc), time.monotonic() - started), None
            failed = True
        except Exception as exc:  # the edge of the serving loop: report, keep serving
            log.exception("request failed event_id=%s model=%s", request.event_id, request.model_id)
            result = self._failure(
                request, f"internal error: {type(exc).__name__}: {exc}", time.monotonic() - started
            )
            version = None
            failed = True
        finally:
            if metrics is not None:
                metrics.building.set(0)
                metrics.build_duration.labels(model=request.model_id).observe(
                    time.monotonic() - started
                )
        if version is not None:
            # Signed by the release key, as its artifacts are: devices with signed_records
            # refuse a registry record no trusted key signed.
            await producer.send_and_wait(version, signing_key=self.signing_key)
        await producer.send_and_wait(result)
        self.ledger.add(request.event_id, "accepted" if result.accepted else "refused")
        self.handled += 1
        if metrics is not None:
            outcome = "failed" if failed else "accepted" if result.accepted else "refused"
            metrics.handled(request.model_id, outcome)
        log.info(
            "handled request event_id=%s model=%s accepted=%s reason=%s",
            request.event_id,
            request.model_id,
            result.accepted,
            result.reason,
        )

    def _failure(
        self, request: OptimizationRequest, reason: str, duration: float
    ) -> OptimizationResult:
        from streams.events import OptimizationResult

        return OptimizationResult(
            producer=self.worker_id,
            request_id=request.event_id,
            model_id=request.model_id,
            base_version=request.base_version,
            accepted=False,
            reason=_reason(reason),
            duration_s=duration,
        )

    def candidate_version(self, request: OptimizationRequest) -> str:
        """Deterministic per request, so a rebuilt candidate keeps its name.

        The base version is cut so that the name stays within the contract's identifier limit.
        """
        from streams.events.limits import LIMITS

        suffix = f"-opt-{request.event_id[:8]}"
        most = LIMITS["ModelVersion"]["version"].chars or 128
        return f"{request.base_version[: most - len(suffix)]}{suffix}"

    def _context(self, request: OptimizationRequest, version: str) -> PassContext:
        from optimizers.passes.base import PassContext

        return PassContext(
            model_id=request.model_id,
            version=version,
            parent_version=request.base_version,
            signing_key=self.signing_key,
            store=self.store,
            progress=logged_progress(request.event_id[:8]),
        )

    def _result(
        self, request: OptimizationRequest, version: str, outcome: Outcome
    ) -> OptimizationResult:
        from streams.events import OptimizationResult

        return OptimizationResult(
            producer=self.worker_id,
            request_id=request.event_id,
            model_id=request.model_id,
            base_version=request.base_version,
            candidate_version=version if outcome.accepted else None,
            accepted=outcome.accepted,
            reason=_reason(outcome.reason),
            gates=outcome.measurements,
            baseline_metrics=outcome.baseline,
            candidate_metrics=outcome.candidate,
            duration_s=outcome.duration_s,
            cohort=request.cohort,
        )

    def _build(
        self, request: OptimizationRequest
    ) -> tuple[OptimizationResult, ModelVersion | None]:
        from optimizers import pipeline
        from streams.events import Artifact, ModelVersion, Task

        recipe = self.sources.recipe(request.recipe)
        if recipe.makes_adapter:
            return self._build_adapter(request, recipe)
        if request.cohort is not None:
            raise OptimizerError(
                f"recipe {recipe.name!r} builds a whole model: a candidate for one cohort "
                f"({request.cohort}) needs an adapter recipe (lora, then export_adapter)"
            )
        base = self.sources.base_model(request.model_id, request.base_version)
        data = self.sources.data(request.model_id, recipe)
        version = self.candidate_version(request)
        outcome: Outcome = pipeline.run(
            recipe,
            base,
            data,
            self.work_dir / request.event_id,
            self._context(request, version),
            hardware_profiles=request.hardware_profiles,
            extra_gates=_gates(request),
        )
        result = self._result(request, version, outcome)
        if not outcome.accepted:
            return result, None
        artifacts = []
        for build in outcome.builds:
            assert build.packaged is not None
            p = build.packaged
            artifacts.append(
                Artifact(
                    uri=p.stored.uri,
                    sha256=p.stored.sha256,
                    size_bytes=p.stored.size_bytes,
                    format="onnx",
                    precision=build.precision,
                    hardware_profiles=build.profiles,
                    signature=p.signature,
                    key_id=p.key_id,
                )
            )
        # A recipe without training steps (export and quantize only) keeps its base weights.
        trained = last_trainable(self.work_dir / request.event_id) or base
        self.sources.keep(request.model_id, version, trained)
        headline = outcome.builds[0].model
        registered = ModelVersion(
            producer=self.worker_id,
            model_id=request.model_id,
            version=version,
            task=Task(headline.task.upper()),
            artifacts=tuple(artifacts),
            parent_version=request.base_version,
            lineage=tuple(headline.lineage),
            eval_metrics=outcome.candidate,
            labels={"recipe": recipe.name, "request_id": request.event_id},
        )
        return result, registered

    def _build_adapter(
        self, request: OptimizationRequest, recipe: Recipe
    ) -> tuple[OptimizationResult, ModelVersion | None]:
        """A LoRA adapter for the base the request's version runs on, judged against it."""
        from optimizers import pipeline
        from streams.events import ADAPTER_FORMAT, Artifact, ModelVersion, Task

        serving = self.sources.serving(request.model_id, request.base_version)
        data = self.sources.data(request.model_id, recipe, request.cohort)
        version = self.candidate_version(request)
        work = self.work_dir / request.event_id
        outcome = pipeline.run_adapter(
            recipe,
            serving,
            data,
            work,
            self._context(request, version),
            extra_gates=_gates(request),
        )
        result = self._result(request, version, outcome)
        if not outcome.accepted:
            return result, None
        build = outcome.builds[0]
        assert build.packaged is not None
        p = build.packaged
        step_dir = {s.name: work / f"{s.index:02d}-{s.name}" for s in recipe.steps}
        self.sources.keep_adapter(
            request.model_id,
            version,
            dataclasses.replace(serving, adapter=step_dir["export_adapter"], lora=step_dir["lora"]),
        )
        labels = {"recipe": recipe.name, "request_id": request.event_id}
        if request.cohort:
            labels["cohort"] = request.cohort
        registered = ModelVersion(
            producer=self.worker_id,
            model_id=request.model_id,
            version=version,
            task=Task.GENERATE,
            artifacts=(
                Artifact(
                    uri=p.stored.uri,
                    sha256=p.stored.sha256,
                    size_bytes=p.stored.size_bytes,
                    format=ADAPTER_FORMAT,
                    precision=build.precision,
                    signature=p.signature,
                    key_id=p.key_id,
                    base_sha256=serving.sha256,
                ),
            ),
            parent_version=request.base_version,
            lineage=tuple(p.manifest.lineage),
            eval_metrics=outcome.candidate,
            labels=labels,
        )
        return result, registered


def _gates(request: OptimizationRequest) -> Gates:
    """The request's own constraints, tightening the recipe's gates."""
    from optimizers.recipe import Gates

    return Gates(
        max_quality_drop=request.max_quality_drop,
        max_size_bytes=request.max_size_bytes,
        max_p95_latency_ms=request.max_p95_latency_ms,
    )


def last_trainable(work: Path) -> ModelRef | None:
    """The model the recipe's last training step wrote (``NN-<pass>`` dirs, format ``hf``)."""
    from optimizers.errors import ModelLoadError
    from optimizers.model import ModelRef

    found = None
    for step_dir in sorted(p for p in work.glob("[0-9][0-9]-*") if p.is_dir()):
        try:
            ref = ModelRef.load(step_dir)
        except ModelLoadError:
            continue
        if ref.format == "hf":
            found = ref
    return found

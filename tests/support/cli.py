"""Running ``python -m slmops`` as a user would, against a test's own topics."""

from __future__ import annotations

import os
import subprocess
import sys

from streams.kafka.connection import KafkaConnection


def cli(conn: KafkaConnection, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The finished command: ``conn``'s brokers and prefix, no other ``SLMOPS_`` variable.

    The test's own environment may set any ``SLMOPS_`` setting; the command must not see it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")} | {
        "SLMOPS_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
        "SLMOPS_TOPIC_PREFIX": conn.topic_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "slmops", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

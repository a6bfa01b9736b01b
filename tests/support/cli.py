"""Running ``python -m slmops`` as a user would, against a test's own topics."""

from __future__ import annotations

import os
import subprocess
import sys

from streams.kafka.connection import KafkaConnection


def _env(conn: KafkaConnection) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SLMOPS_")} | {
        "SLMOPS_BOOTSTRAP_SERVERS": conn.bootstrap_servers,
        "SLMOPS_TOPIC_PREFIX": conn.topic_prefix,
    }


def cli_started(conn: KafkaConnection, *args: str) -> subprocess.Popen[str]:
    """The command running in the background (``--watch``), with the same environment as
    :func:`cli`; the caller waits for it with a timeout."""
    return subprocess.Popen(
        [sys.executable, "-m", "slmops", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(conn),
    )


def cli(conn: KafkaConnection, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The finished command: ``conn``'s brokers and prefix, no other ``SLMOPS_`` variable.

    The test's own environment may set any ``SLMOPS_`` setting; the command must not see it.
    """
    env = _env(conn)
    return subprocess.run(
        [sys.executable, "-m", "slmops", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys

import pytest

from slmops.errors import LocalKafkaError
from slmops.local_kafka import LocalKafka, new_cluster_id


def test_port_taken_by_another_process_gets_a_clear_message(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        kafka = LocalKafka(home=tmp_path, port=port, controller_port=port + 1000)
        with pytest.raises(LocalKafkaError, match=f"port {port} on 127.0.0.1 is already in use"):
            kafka.up()


def test_stale_pid_file_is_reported_and_removed(tmp_path):
    # A process that has exited leaves a pid nobody owns.
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(proc.stdout)
    kafka = LocalKafka(home=tmp_path, port=1)
    (tmp_path / "broker.pid").write_text(f"{dead_pid}\n")
    status = kafka.status()
    assert not status.running
    assert "stale pid file" in status.note
    assert kafka.down() is False
    assert not (tmp_path / "broker.pid").exists()


def test_status_names_the_log_file(tmp_path):
    status = LocalKafka(home=tmp_path, port=1).status()
    assert status.log_file == tmp_path / "broker.log"
    assert not status.running
    assert status.pid is None


def test_missing_java_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalKafkaError, match="java not found"):
        LocalKafka(home=tmp_path).check_java()


def test_current_process_counts_as_alive():
    assert LocalKafka._alive(os.getpid())


def test_cluster_id_never_starts_with_a_dash():
    # 0xF8 encodes to "-" as the first URL-safe base64 character: the storage tool would
    # read such an id as an option.
    draws = iter([b"\xf8" + bytes(15), b"\x00" * 16])
    cluster_id = new_cluster_id(lambda: next(draws))
    assert cluster_id == base64.urlsafe_b64encode(b"\x00" * 16).decode().rstrip("=")
    assert not new_cluster_id().startswith("-")

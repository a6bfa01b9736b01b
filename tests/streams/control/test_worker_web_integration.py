"""Where a control worker's web server listens and what it serves there."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _ipv4(hex_addr: str) -> str:
    # /proc/net/tcp writes the address as one little-endian 32-bit number.
    return ".".join(str(int(hex_addr[i : i + 2], 16)) for i in (6, 4, 2, 0))


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (IPv6 ones as raw hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hex_port = local.partition(":")
            if state == _LISTEN and int(hex_port, 16) == port:
                found.add(_ipv4(addr) if len(addr) == 8 else addr)
    return found


def status_code(worker, path: str) -> int:
    try:
        worker.get(path)
    except urllib.error.HTTPError as exc:
        return exc.code
    return 200


def test_worker_listens_on_loopback_only_and_serves_no_faust_debug_pages(kafka_conn, start_worker):
    worker = start_worker(kafka_conn)
    wait_for("the status page", worker.try_status, workers=[worker])
    assert listening_addresses(worker.port) == {"127.0.0.1"}
    assert worker.status()["worker_id"] == worker.name
    # The telemetry feed reports its health: its group, and the partitions it was given.
    feed = wait_for(
        "the telemetry feed to join its group",
        lambda: (f := worker.status()["feeds"]["telemetry"])["partitions"] and f,
        workers=[worker],
    )
    assert feed["running"] is True
    assert feed["group_id"].endswith("-telemetry")
    assert feed["restarts"] == 0
    assert b"slmops_events" in worker.get("/metrics")
    assert b"<html" in worker.get("/").lower()
    for page in ("/router/", "/table/", "/stats/", "/graph/", "/assignment/", "/performance/"):
        assert status_code(worker, page) == 404, page


def test_debug_pages_are_served_when_asked_for(kafka_conn, start_worker):
    worker = start_worker(kafka_conn, extra=["--web-debug-pages"])
    wait_for("the status page", worker.try_status, workers=[worker])
    assert status_code(worker, "/router/") == 200
    assert status_code(worker, "/table/") == 200

"""Shared fixtures: the real local Kafka broker and per-test topic namespaces.

Integration tests get a broker from ``SLMOPS_TEST_BOOTSTRAP_SERVERS`` (or
``SLMOPS_BOOTSTRAP_SERVERS``); without one the session starts the local broker through the
project's own launcher and stops it at the end if it started it. A broker that cannot be
reached fails the tests: they are never skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from slmops.local_kafka import CHECKOUT, LocalKafka
from streams.kafka.admin import create_topics, delete_topics, wait_for_broker
from streams.kafka.connection import KafkaConnection
from tests.support.ports import free_port

# Shared, noisy machines: a per-example deadline would make property tests flaky, not stricter.
settings.register_profile("slmops", deadline=None)
settings.load_profile("slmops")

_BROKER_FIXTURES = {"kafka_bootstrap", "kafka_conn", "make_kafka_conn"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test that talks to the broker must say so, so `-m "not integration"` stays broker-free.
    for item in items:
        uses_broker = _BROKER_FIXTURES & set(getattr(item, "fixturenames", ()))
        marked = item.get_closest_marker("integration") or item.get_closest_marker("e2e")
        if uses_broker and not marked:
            raise pytest.UsageError(f"{item.nodeid} uses the broker but is not marked integration")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("SLMOPS_TEST_BOOTSTRAP_SERVERS") or os.environ.get(
        "SLMOPS_BOOTSTRAP_SERVERS"
    )
    if configured:
        asyncio.run(wait_for_broker(configured, 30.0))
        yield configured
        return
    port = int(os.environ.get("SLMOPS_KAFKA_PORT", "9092"))
    kafka = LocalKafka(home=CHECKOUT / ".local" / "kafka", port=port)
    status = kafka.status()
    started = not (status.running and status.answering)
    if started:
        kafka.up()
    yield kafka.bootstrap_servers
    if started:
        kafka.down()


@pytest.fixture
def make_kafka_conn(kafka_bootstrap: str) -> Iterator[Callable[..., KafkaConnection]]:
    """Factory of connections with a fresh topic prefix and the catalog's topics created."""
    made: list[KafkaConnection] = []

    def make(*, partitions: int | None = 2, create: bool = True) -> KafkaConnection:
        conn = KafkaConnection(
            bootstrap_servers=kafka_bootstrap,
            topic_prefix=f"t{uuid.uuid4().hex[:10]}",
            client_id="slmops-test",
        )
        if create:
            asyncio.run(create_topics(conn, partitions=partitions))
        made.append(conn)
        return conn

    yield make
    for conn in made:
        asyncio.run(delete_topics(conn))


@pytest.fixture
def kafka_conn(make_kafka_conn: Callable[..., KafkaConnection]) -> KafkaConnection:
    return make_kafka_conn()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    """A second local Kafka a test may stop and start (outages): the session's broker is shared.

    It uses the jars of the checkout's broker, fetched once, and free ports of its own.
    """
    shared = LocalKafka(home=CHECKOUT / ".local" / "kafka")
    shared.fetch()
    kafka = LocalKafka(
        home=tmp_path / "kafka",
        port=free_port(),
        controller_port=free_port(),
        libs_dir=shared.libs,
    )
    kafka.up()
    try:
        yield kafka
    finally:
        kafka.down()

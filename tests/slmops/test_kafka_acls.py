"""The roles' Kafka ACLs on a real broker running the StandardAuthorizer.

A second local Apache Kafka with a SASL_SSL (SCRAM-SHA-256) listener and the authorizer on;
one SCRAM user per principal, two of them devices. The ACLs are added by ``slmops acls apply``
over the plaintext listener, the local administrator's. Each role then does its own work and
is refused the rest.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from slmops import cli
from streams.events import (
    Event,
    Feedback,
    ModelVersion,
    OptimizationRequest,
    OptimizationResult,
    RolloutCommand,
    RolloutState,
    Telemetry,
)
from streams.kafka.admin import create_topics, wait_for_broker
from streams.kafka.clients import EventConsumer, EventProducer
from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import NotAuthorizedError
from tests.support.control_workers import Worker, all_live
from tests.support.live import close_one_window
from tests.support.sample_events import sample
from tests.support.tls import secure_kafka
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

USERS = {
    "device-0001": "dev-1-pass",
    "device-0002": "dev-2-pass",
    "crm": "crm-pass",
    "ops": "ops-pass",
    "control": "control-pass",
    "optimizer": "optimizer-pass",
}
PREFIX = f"acl{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("acl-kafka")
    with secure_kafka(home, USERS, authorizer=True) as secure:
        admin = KafkaConnection(bootstrap_servers=f"127.0.0.1:{secure.plain}", topic_prefix=PREFIX)
        asyncio.run(wait_for_broker(admin, 30))
        asyncio.run(create_topics(admin, partitions=1))
        yield {"ca": secure.ca, "sasl": secure.sasl, "admin": admin, "plain": secure.plain}


def as_user(broker: dict[str, Any], user: str) -> KafkaConnection:
    return KafkaConnection(
        bootstrap_servers=f"127.0.0.1:{broker['sasl']}",
        topic_prefix=PREFIX,
        client_id=f"acl-{user}",
        security_protocol="SASL_SSL",
        ssl_cafile=broker["ca"],
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username=user,
        sasl_password=SecretStr(USERS[user]),
    )


@pytest.fixture(scope="module")
def granted(broker: dict[str, Any]) -> dict[str, Any]:
    code = cli.main(
        [
            "acls",
            "apply",
            "--bootstrap-servers",
            broker["admin"].bootstrap_servers,
            "--topic-prefix",
            PREFIX,
            "--principal",
            "device=User:device-0001",
            "--principal",
            "device=device-0002",
            "--principal",
            "publisher=User:crm",
            "--principal",
            "operator=User:ops",
            "--principal",
            "controller=User:control",
            "--principal",
            "optimizer=User:optimizer",
            "--optimizer-group",
            f"{PREFIX}-optimizer",
        ]
    )
    assert code == 0
    return broker


def send(conn: KafkaConnection, event: Event) -> None:
    async def run() -> None:
        async with EventProducer(conn) as producer:
            await producer.send_and_wait(event)

    asyncio.run(run())


def read_all(conn: KafkaConnection, event_type: type[Event]) -> list[Event]:
    async def run() -> list[Event]:
        topic = conn.catalog().topic_for(event_type)
        got: list[Event] = []
        async with EventConsumer(conn, [topic], name="acl") as consumer:
            async for record in consumer.raw_records(idle_timeout_s=3):
                assert not hasattr(record, "error"), record
                got.append(record.event)
        return got

    return asyncio.run(run())


def test_a_device_reads_the_registry_and_writes_its_telemetry(granted: dict[str, Any]) -> None:
    version = sample(ModelVersion)
    send(granted["admin"], version)
    sent = []
    for user in ("device-0001", "device-0002"):  # one SCRAM user per device
        device = as_user(granted, user)
        assert version in read_all(device, ModelVersion)
        sent.append(dataclasses.replace(sample(Telemetry), device_id=user))
        send(device, sent[-1])
    got = read_all(granted["admin"], Telemetry)
    assert all(t in got for t in sent)


@pytest.mark.parametrize("event_type", [RolloutState, ModelVersion, Feedback])
def test_a_device_cannot_steer_the_fleet_or_forge_feedback(
    granted: dict[str, Any], event_type: type[Event]
) -> None:
    device = as_user(granted, "device-0001")
    with pytest.raises(NotAuthorizedError, match="User:device-0001 may not write topic") as e:
        send(device, sample(event_type))
    assert e.value.topic == device.catalog().topic_for(event_type)


@pytest.mark.parametrize("event_type", [Feedback, Telemetry, OptimizationRequest])
def test_a_device_cannot_read_what_is_not_its_own(
    granted: dict[str, Any], event_type: type[Event]
) -> None:
    device = as_user(granted, "device-0002")
    with pytest.raises(NotAuthorizedError, match="User:device-0002 may not read topic"):
        read_all(device, event_type)


def test_a_publisher_writes_feedback_only(granted: dict[str, Any]) -> None:
    crm = as_user(granted, "crm")
    feedback = Feedback(model_id="intent", outcomes={"correct": 7}, producer="crm")
    send(crm, feedback)
    assert feedback in read_all(granted["admin"], Feedback)
    with pytest.raises(NotAuthorizedError, match="may not write"):
        send(crm, sample(Telemetry))
    with pytest.raises(NotAuthorizedError, match="may not read"):
        read_all(crm, Feedback)


def test_the_operator_commands_rollouts_but_cannot_forge_their_state(
    granted: dict[str, Any],
) -> None:
    ops = as_user(granted, "ops")
    command = sample(RolloutCommand)
    send(ops, command)
    assert command in read_all(ops, RolloutCommand)
    reported = dataclasses.replace(sample(Telemetry), device_id="seen-by-ops")
    send(as_user(granted, "device-0002"), reported)
    assert reported in read_all(ops, Telemetry)  # reads every catalog topic
    outcomes = asyncio.run(create_topics(ops, partitions=1))  # exist: allowed to ask
    assert [o.error for o in outcomes if o.error] == []
    with pytest.raises(NotAuthorizedError, match="may not write"):
        send(ops, sample(RolloutState))


def test_an_optimizer_takes_requests_in_its_group_and_answers(
    granted: dict[str, Any], tmp_path: Path
) -> None:
    from optimizers.feedback import feedback_examples
    from optimizers.worker import DirectorySources, OptimizerWorker
    from streams.events.artifact import new_signing_key

    request = dataclasses.replace(sample(OptimizationRequest), model_id="no-such-model")
    send(granted["admin"], request)
    root = tmp_path / "optimizer"
    worker = OptimizerWorker(
        as_user(granted, "optimizer"),
        DirectorySources(models=root / "models", data_dir=root / "data", recipes=root / "recipes"),
        work_dir=root / "work",
        store_dir=root / "store",
        signing_key=new_signing_key(),
        group_id=f"{PREFIX}-optimizer",
    )
    asyncio.run(asyncio.wait_for(worker.run(idle_timeout_s=20, max_requests=1), 60))
    results = [
        r
        for r in read_all(granted["admin"], OptimizationResult)
        if isinstance(r, OptimizationResult) and r.request_id == request.event_id
    ]
    assert len(results) == 1, results
    assert not results[0].accepted
    # What it trains on: the consented examples the publisher sent.
    shared = dataclasses.replace(sample(Feedback), model_id="acl-model")
    send(as_user(granted, "crm"), shared)
    examples = feedback_examples(as_user(granted, "optimizer"), "acl-model")
    assert [e.text for e in examples] == [x.text for x in shared.examples]


def test_a_control_worker_runs_on_the_controller_grants(
    granted: dict[str, Any], tmp_path: Path
) -> None:
    control = as_user(granted, "control")
    env = {
        "SLMOPS_SECURITY_PROTOCOL": "SASL_SSL",
        "SLMOPS_SSL_CAFILE": str(granted["ca"]),
        "SLMOPS_SASL_MECHANISM": "SCRAM-SHA-256",
        "SLMOPS_SASL_USERNAME": "control",
        "SLMOPS_SASL_PASSWORD": USERS["control"],
        # Its status page and /metrics ask for a bearer token too.
        "SLMOPS_HTTP_TOKEN": "ops-page-token",
    }
    bearer = {"Authorization": "Bearer ops-page-token"}
    worker = Worker(control, f"{PREFIX}-control", tmp_path, "acl-w0", [], env=env, headers=bearer)
    worker.start()
    try:
        # telemetry, drift and feedback, one partition each
        wait_for("sources live", lambda: all_live([worker], 3), workers=[worker])
        row = close_one_window(as_user(granted, "device-0001"), worker, devices=3, requests=10)
        assert (row["requests"], row["devices"]) == (30, 3), row
        anonymous = urllib.request.Request(f"http://127.0.0.1:{worker.port}/status")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(anonymous, timeout=5)
        refused.value.close()
        assert refused.value.code == 401
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/healthz", timeout=5) as h:
            assert json.loads(h.read())["ok"] is True
    finally:
        worker.kill(signal.SIGTERM)

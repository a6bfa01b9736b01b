"""Client TLS and SASL/SCRAM settings against a real broker with TLS listeners.

The broker is a second local Apache Kafka started by the project's launcher with an SSL and a
SASL_SSL (SCRAM-SHA-256) listener; its certificate comes from a CA made here.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from streams.events import Feedback
from streams.kafka.admin import create_topics, wait_for_broker
from streams.kafka.clients import EventConsumer, EventProducer
from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import KafkaUnavailableError
from tests.support.tls import make_ca, pem, secure_kafka

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory):
    home = tmp_path_factory.mktemp("secure-kafka")
    with secure_kafka(home, {"edge-fleet": "s3cret-pass"}) as broker:
        yield {"ca": broker.ca, "ssl": broker.ssl, "sasl": broker.sasl}


def _round_trip(conn: KafkaConnection) -> Feedback:
    async def run() -> Feedback:
        await wait_for_broker(conn, 20)
        await create_topics(conn, partitions=1)
        sent = Feedback(model_id="intent", outcomes={"correct": 3})
        async with EventProducer(conn) as producer:
            await producer.send_and_wait(sent)
        async with EventConsumer(conn, [conn.catalog().topic_for(Feedback)], name="sec") as c:
            async for record in c.raw_records(idle_timeout_s=10):
                assert not hasattr(record, "error")
                got = record.event
                assert isinstance(got, Feedback)
                return got
        raise AssertionError("nothing consumed")

    return asyncio.run(run())


def test_tls_listener_with_a_private_ca(secure_broker):
    conn = KafkaConnection(
        bootstrap_servers=f"127.0.0.1:{secure_broker['ssl']}",
        topic_prefix=f"tls{uuid.uuid4().hex[:8]}",
        security_protocol="SSL",
        ssl_cafile=secure_broker["ca"],
    )
    assert _round_trip(conn).outcomes == {"correct": 3}


def test_sasl_scram_over_tls(secure_broker):
    conn = KafkaConnection(
        bootstrap_servers=f"127.0.0.1:{secure_broker['sasl']}",
        topic_prefix=f"sasl{uuid.uuid4().hex[:8]}",
        security_protocol="SASL_SSL",
        ssl_cafile=secure_broker["ca"],
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="edge-fleet",
        sasl_password=SecretStr("s3cret-pass"),
    )
    assert _round_trip(conn).outcomes == {"correct": 3}


def test_wrong_scram_password_is_refused(secure_broker):
    conn = KafkaConnection(
        bootstrap_servers=f"127.0.0.1:{secure_broker['sasl']}",
        security_protocol="SASL_SSL",
        ssl_cafile=secure_broker["ca"],
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="edge-fleet",
        sasl_password=SecretStr("wrong"),
    )
    with pytest.raises(KafkaUnavailableError, match=str(secure_broker["sasl"])):
        asyncio.run(wait_for_broker(conn, 3))


# The Kafka client's connection attempts that fail in the TLS handshake can leave their
# transport to the garbage collector; what is under test is the refusal and its message.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_broker_certificate_from_an_untrusted_ca_is_refused(secure_broker, tmp_path):
    _, other_ca = make_ca("someone else")
    other = tmp_path / "other-ca.pem"
    other.write_bytes(pem(other_ca))
    conn = KafkaConnection(
        bootstrap_servers=f"127.0.0.1:{secure_broker['ssl']}",
        security_protocol="SSL",
        ssl_cafile=other,
    )
    with pytest.raises(KafkaUnavailableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
        asyncio.run(wait_for_broker(conn, 3))


def test_sasl_without_credentials_is_a_config_error():
    with pytest.raises(ValueError, match="needs sasl_mechanism"):
        KafkaConnection(security_protocol="SASL_SSL")
    with pytest.raises(ValueError, match="go together"):
        KafkaConnection(security_protocol="SSL", ssl_certfile=Path("c.pem"))

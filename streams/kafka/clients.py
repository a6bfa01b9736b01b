"""Typed producer and consumer over aiokafka: the one place events meet the Kafka client.

Faust-free, so the edge runtime and the optimizer workers use it too. The consumer decodes
every record; one it cannot decode goes to the dead-letter topic and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from types import TracebackType
from typing import Any, Self

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import TopicAuthorizationFailedError, UnknownTopicOrPartitionError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.events import Codec, Event, default_codec
from streams.events.dead_letter import dead_letter_for
from streams.events.errors import EventError
from streams.events.record_signing import sign_record
from streams.events.topics import Catalog
from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import (
    ConnectionLostError,
    KafkaUnavailableError,
    NotAuthorizedError,
    SendFailedError,
    TopicMissingError,
)
from streams.kafka.internals import (
    abandon_producer,
    force_metadata_update,
    track_topic,
    unauthorized_topics,
)

log = logging.getLogger(__name__)


class EventProducer:
    """Sends typed events to their catalog topic with their catalog key."""

    def __init__(
        self, conn: KafkaConnection, *, codec: Codec | None = None, linger_ms: int = 5
    ) -> None:
        self.conn = conn
        self.catalog: Catalog = conn.catalog()
        self.codec = codec or default_codec()
        self._known_topics: set[str] = set()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=conn.bootstrap_servers,
            client_id=conn.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            **conn.client_kwargs(),
        )

    async def _check_topic(self, topic: str) -> None:
        # Without this, sending to a missing topic blocks for the whole request timeout while
        # the client logs an error every 100 ms; fail at once with the fix instead.
        client = self._producer.client
        if client.cluster.partitions_for_topic(topic) is None:
            try:
                # Asked by name: a topic the ACLs hide is then reported as unauthorized, not
                # left out of the answer as it is from a request for every topic. add_topic
                # refreshes only a topic new to the client: a retry must refresh too.
                await client.add_topic(topic)
                await client.force_metadata_update()
            except (AIOKafkaError, OSError) as exc:
                raise ConnectionLostError(
                    "metadata", self.conn.bootstrap_servers, str(exc)
                ) from exc
        if client.cluster.partitions_for_topic(topic) is None:
            if topic in client.cluster.unauthorized_topics:
                raise self._refused(topic)
            raise TopicMissingError(topic, self.conn.bootstrap_servers)
        self._known_topics.add(topic)

    def _refused(self, topic: str) -> NotAuthorizedError:
        return NotAuthorizedError(
            topic,
            self.conn.bootstrap_servers,
            operation="write",
            principal=self.conn.sasl_username,
        )

    async def start(self) -> None:
        try:
            await self._producer.start()
        except (AIOKafkaError, OSError) as exc:
            await self._producer.stop()
            raise KafkaUnavailableError(self.conn.bootstrap_servers, 0, str(exc)) from exc

    async def stop(self, timeout_s: float | None = None) -> None:
        """Flush and close; with ``timeout_s``, records still unsent by then are dropped.

        A device whose broker is away cannot flush; without a bound its shutdown would hang,
        and with a plain cancellation the client would leak its connections.
        """
        stopping = asyncio.ensure_future(self._producer.stop())
        try:
            await asyncio.wait_for(asyncio.shield(stopping), timeout_s)
        except TimeoutError:
            log.warning(
                "producer could not flush within %.1fs; closing it without the pending records "
                "bootstrap=%s",
                timeout_s,
                self.conn.bootstrap_servers,
            )
            stopping.cancel()
            await asyncio.wait([stopping])
            await abandon_producer(self._producer)
        except (AIOKafkaError, OSError) as exc:
            raise ConnectionLostError(
                "stopping a producer", self.conn.bootstrap_servers, str(exc)
            ) from exc

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def send(
        self, event: Event, *, signing_key: Ed25519PrivateKey | None = None
    ) -> asyncio.Future[object]:
        """Queue one event; await the returned future for the broker's acknowledgement.

        With ``signing_key`` the record carries the signature of its bytes in its headers
        (:mod:`streams.events.record_signing`): devices refuse registry and rollout records
        without one when they are told to.
        """
        value = self.codec.encode(event)
        topic = self.catalog.topic_for(type(event))
        if topic not in self._known_topics:
            await self._check_topic(topic)
        headers = None if signing_key is None else sign_record(value, signing_key)
        return await self._send(topic, value, self.catalog.key_for(event), headers)

    async def _send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[object]:
        try:
            ack: asyncio.Future[object] = await self._producer.send(
                topic, value=value, key=key, headers=headers
            )
        except UnknownTopicOrPartitionError as exc:
            raise TopicMissingError(topic, self.conn.bootstrap_servers) from exc
        except TopicAuthorizationFailedError as exc:
            raise self._refused(topic) from exc
        except (AIOKafkaError, OSError) as exc:
            raise SendFailedError(topic, self.conn.bootstrap_servers, str(exc)) from exc
        return asyncio.ensure_future(self._acknowledged(ack, topic))

    async def _acknowledged(self, ack: asyncio.Future[object], topic: str) -> object:
        try:
            return await ack
        except TopicAuthorizationFailedError as exc:
            raise self._refused(topic) from exc
        except (AIOKafkaError, OSError) as exc:
            raise SendFailedError(topic, self.conn.bootstrap_servers, str(exc)) from exc

    async def send_and_wait(
        self, event: Event, *, signing_key: Ed25519PrivateKey | None = None
    ) -> None:
        await (await self.send(event, signing_key=signing_key))

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Send bytes as they are (the CLI's pre-encoded records, a device's buffered events,
        tests' malformed ones)."""
        if topic not in self._known_topics:
            await self._check_topic(topic)
        await (await self._send(topic, value, key))

    async def send_many(self, events: Iterable[Event]) -> int:
        futures = [await self.send(e) for e in events]
        await asyncio.gather(*futures)
        return len(futures)

    async def flush(self) -> None:
        try:
            await self._producer.flush()
        except (AIOKafkaError, OSError) as exc:
            raise ConnectionLostError("flush", self.conn.bootstrap_servers, str(exc)) from exc


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """A decoded record with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    event: Event
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Undecodable:
    """A record that broke the contract, with its bytes and the reason."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: EventError


class EventConsumer:
    """Decodes records of catalog topics; undecodable ones go to the dead-letter topic.

    With ``group_id`` it joins a consumer group and commits after each record is yielded and
    the caller asks for the next one (at-least-once); without one it assigns every partition
    and starts at the beginning or the end (how devices read the compacted topics).
    """

    def __init__(
        self,
        conn: KafkaConnection,
        topics: list[str],
        *,
        name: str,
        group_id: str | None = None,
        from_beginning: bool = True,
        codec: Codec | None = None,
        dead_letters: EventProducer | None = None,
    ) -> None:
        self.conn = conn
        self.topics = topics
        self.name = name
        self.group_id = group_id
        self.from_beginning = from_beginning
        self.codec = codec or default_codec()
        self.dead_letters = dead_letters
        self.dead_lettered = 0
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=conn.bootstrap_servers,
            client_id=f"{conn.client_id}-{name}",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            **conn.client_kwargs(),
        )

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except (AIOKafkaError, OSError) as exc:
            await self._consumer.stop()
            raise KafkaUnavailableError(self.conn.bootstrap_servers, 0, str(exc)) from exc
        try:
            await self._assign()
        except (TopicMissingError, NotAuthorizedError):
            await self._consumer.stop()  # else asyncio logs an unclosed client after the error
            raise
        except (AIOKafkaError, OSError) as exc:
            await self._consumer.stop()
            raise ConnectionLostError(
                "assigning partitions", self.conn.bootstrap_servers, str(exc)
            ) from exc

    async def _assign(self) -> None:
        if self.group_id:
            self._consumer.subscribe(self.topics)
            return
        partitions = []
        for topic in self.topics:
            for p in sorted(await self._partitions(topic)):
                partitions.append(TopicPartition(topic, p))
        self._consumer.assign(partitions)
        if self.from_beginning:
            await self._consumer.seek_to_beginning(*partitions)
        else:
            await self._consumer.seek_to_end(*partitions)
        for tp in partitions:
            # Resolve the position now, so records sent after start() are never skipped.
            await self._consumer.position(tp)

    async def _partitions(self, topic: str) -> set[int]:
        await track_topic(self._consumer, topic)
        for _ in range(50):
            found = self._consumer.partitions_for_topic(topic)
            if found:
                return set(found)
            if topic in unauthorized_topics(self._consumer):
                raise NotAuthorizedError(
                    topic,
                    self.conn.bootstrap_servers,
                    operation="read",
                    principal=self.conn.sasl_username,
                )
            await force_metadata_update(self._consumer)
            await asyncio.sleep(0.1)
        raise TopicMissingError(topic, self.conn.bootstrap_servers)

    async def stop(self) -> None:
        try:
            await self._consumer.stop()
        except (AIOKafkaError, OSError) as exc:
            raise ConnectionLostError(
                "stopping a consumer", self.conn.bootstrap_servers, str(exc)
            ) from exc

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def snapshot(self, timeout_s: float = 30.0) -> list[Received | Undecodable]:
        """Every record up to the partitions' end offsets as of this call, then return.

        How a reader takes the current state of a compacted topic (rollouts, registry, device
        status) without waiting for the stream to go quiet. Only without a consumer group.
        """
        if self.group_id:
            raise ValueError("snapshot() reads assigned partitions; it takes no consumer group")
        with self._client_call("snapshot"):
            return await self._snapshot(timeout_s)

    async def _snapshot(self, timeout_s: float) -> list[Received | Undecodable]:
        partitions = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if await self._consumer.position(tp) < ends[tp]}
        out: list[Received | Undecodable] = []
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(self.conn.bootstrap_servers, timeout_s, "snapshot")
            batch = await self._consumer.getmany(*remaining, timeout_ms=200)
            for messages in batch.values():
                out.extend(self._decode(msg) for msg in messages)
            for tp in list(remaining):
                if await self._consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out

    @contextlib.contextmanager
    def _client_call(self, operation: str) -> Iterator[None]:
        """Wrap aiokafka's errors of one call; never around a ``yield`` to the caller."""
        try:
            yield
        except TopicAuthorizationFailedError as exc:
            denied = exc.args[0] if exc.args else None
            topics = sorted(denied) if isinstance(denied, set | list | tuple) else [denied]
            raise NotAuthorizedError(
                ", ".join(str(t) for t in topics if t) or ", ".join(self.topics),
                self.conn.bootstrap_servers,
                operation="read",
                principal=self.conn.sasl_username,
            ) from exc
        except (AIOKafkaError, OSError) as exc:
            raise ConnectionLostError(operation, self.conn.bootstrap_servers, str(exc)) from exc

    def _decode(self, msg: Any) -> Received | Undecodable:
        try:
            event = self.codec.decode(msg.value)
        except EventError as exc:
            return Undecodable(msg.topic, msg.partition, msg.offset, msg.key, msg.value, exc)
        headers = tuple((k, v or b"") for k, v in (msg.headers or ()))
        return Received(msg.topic, msg.partition, msg.offset, msg.key, msg.value, event, headers)

    async def raw_records(
        self, idle_timeout_s: float | None = None
    ) -> AsyncIterator[Received | Undecodable]:
        """Yield every record, decoded or not, until ``idle_timeout_s`` passes with nothing new.

        Offsets are committed (with a group) once the caller asks for the next record, so a
        crash re-delivers at most the record in hand.
        """
        idle = 0.0
        while True:
            with self._client_call("fetch"):
                batch = await self._consumer.getmany(timeout_ms=200)
            if not batch:
                idle += 0.2
                if idle_timeout_s is not None and idle >= idle_timeout_s:
                    return
                continue
            idle = 0.0
            for tp, messages in batch.items():
                for msg in messages:
                    yield self._decode(msg)
                    if self.group_id:
                        with self._client_call("commit"):
                            await self._consumer.commit({tp: msg.offset + 1})

    async def records(self, idle_timeout_s: float | None = None) -> AsyncIterator[Received]:
        """Yield decoded events; undecodable ones go to the dead-letter topic on the way."""
        if self.dead_letters is None:
            raise ValueError("records() needs a dead-letter producer; use raw_records() instead")
        async for record in self.raw_records(idle_timeout_s):
            if isinstance(record, Undecodable):
                await self._dead_letter(record)
            else:
                yield record

    async def _dead_letter(self, record: Undecodable) -> None:
        log.warning(
            "dead-lettering record topic=%s partition=%s offset=%s consumer=%s reason=%s",
            record.topic,
            record.partition,
            record.offset,
            self.name,
            record.error,
        )
        self.dead_lettered += 1
        assert self.dead_letters is not None
        dl = dead_letter_for(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            error=record.error,
            consumer=self.name,
        )
        await self.dead_letters.send_and_wait(dl)


async def read_current(
    conn: KafkaConnection, event_types: Iterable[type[Event]], *, name: str
) -> list[Event]:
    """Every decodable event on the topics of ``event_types`` up to their end offsets now.

    The current state of compacted topics (rollouts, registry, device status) or a topic's
    retained history, read without a consumer group; undecodable records are left out.
    """
    catalog = conn.catalog()
    topics = [catalog.topic_for(t) for t in event_types]
    async with EventConsumer(conn, topics, name=name) as consumer:
        records = await consumer.snapshot()
    return [r.event for r in records if isinstance(r, Received)]

"""Cluster administration over aiokafka: wait for a broker, create and inspect catalog topics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError as AIOKafkaError

from streams.kafka.connection import KafkaConnection
from streams.kafka.errors import AdminError, KafkaUnavailableError

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


@contextlib.contextmanager
def _quiet_client() -> Iterator[None]:
    # While polling a broker that is still starting, every refused connection is expected;
    # aiokafka logs each at ERROR, which would bury the one message that matters.
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    client_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_log.setLevel(level)


async def wait_for_broker(target: str | KafkaConnection, timeout_s: float = 30.0) -> dict[str, Any]:
    """Return the cluster metadata once a broker answers a metadata request.

    ``target`` is a bootstrap string (plaintext) or a connection with its security settings.
    """
    conn = (
        target if isinstance(target, KafkaConnection) else KafkaConnection(bootstrap_servers=target)
    )
    with _quiet_client():
        return await _wait_for_broker(conn, timeout_s)


def _admin(conn: KafkaConnection, **extra: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=conn.bootstrap_servers,
        client_id=conn.client_id,
        **conn.client_kwargs(),
        **extra,
    )


async def _wait_for_broker(conn: KafkaConnection, timeout_s: float) -> dict[str, Any]:
    bootstrap_servers = conn.bootstrap_servers
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        admin = _admin(conn, request_timeout_ms=5000)
        try:
            await admin.start()
            cluster: dict[str, Any] = await admin.describe_cluster()
            return cluster
        except (AIOKafkaError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            await admin.close()
        if time.monotonic() >= deadline:
            if conn.uses_tls:
                last = await _tls_problem(conn) or last
            raise KafkaUnavailableError(bootstrap_servers, timeout_s, last)
        await asyncio.sleep(0.5)


async def _tls_problem(conn: KafkaConnection) -> str | None:
    """Why a TLS handshake with the first bootstrap server fails, in the TLS library's words.

    The Kafka client only reports that it could not bootstrap; a certificate problem is the
    usual cause and the one a user can fix, so name it.
    """
    return await asyncio.to_thread(_tls_handshake_problem, conn)


def _tls_handshake_problem(conn: KafkaConnection) -> str | None:
    # A blocking socket closed in ``finally``: asyncio's TLS transports can outlive a failed
    # handshake and warn about it later.
    host, _, port = conn.bootstrap_servers.split(",")[0].strip().rpartition(":")
    context = conn.ssl_context()
    if context is None:
        return None
    try:
        with (
            socket.create_connection((host, int(port)), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLError as exc:
        return f"TLS handshake with {host}:{port} failed: {exc.reason or exc}"
    except (OSError, ValueError):
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class TopicOutcome:
    name: str
    created: bool
    error: str = ""


async def create_topics(
    conn: KafkaConnection, *, replication_factor: int = 1, partitions: int | None = None
) -> list[TopicOutcome]:
    """Create every catalog topic with its configs; existing topics are left as they are."""
    catalog = conn.catalog()
    admin = _admin(conn)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                catalog.name(spec),
                partitions or spec.partitions,
                replication_factor,
                topic_configs=dict(spec.configs),
            )
            for spec in catalog
            if catalog.name(spec) not in existing
        ]
        outcomes = [TopicOutcome(n, created=False) for n in catalog.names if n in existing]
        if wanted:
            response = await admin.create_topics(wanted)
            for name, code, message in _topic_errors(response):
                if code in (0, _TOPIC_ALREADY_EXISTS):
                    outcomes.append(TopicOutcome(name, created=code == 0))
                else:
                    outcomes.append(TopicOutcome(name, created=False, error=f"{code}: {message}"))
            await _wait_for_leaders(admin, [t.name for t in wanted])
    except (AIOKafkaError, OSError) as exc:
        raise AdminError("create topics", conn.bootstrap_servers, str(exc)) from exc
    finally:
        await admin.close()
    order = {n: i for i, n in enumerate(catalog.names)}
    return sorted(outcomes, key=lambda o: order[o.name])


async def _wait_for_leaders(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    # CreateTopics returns before partition leaders are elected; a producer that starts right
    # away would see NotLeaderForPartition retries. Bounded: a slow broker only costs time.
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        meta = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0
            and t["partitions"]
            and all(p["leader"] >= 0 for p in t["partitions"])
            for t in meta
        ):
            return
        await asyncio.sleep(0.1)


def _topic_errors(response: Any) -> list[tuple[str, int, str]]:
    # CreateTopicsResponse v0 has (name, code); later versions add a message.
    rows = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 and isinstance(entry[2], str) else ""
        rows.append((name, code, message or ""))
    return rows


async def describe_topics(conn: KafkaConnection) -> dict[str, dict[str, Any]]:
    """Partitions and the non-default configs of every catalog topic that exists."""
    catalog = conn.catalog()
    admin = _admin(conn)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        names = [n for n in catalog.names if n in existing]
        if not names:
            return {}
        meta = await admin.describe_topics(names)
        partitions = {t["topic"]: len(t["partitions"]) for t in meta}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
    except (AIOKafkaError, OSError) as exc:
        raise AdminError("describe topics", conn.bootstrap_servers, str(exc)) from exc
    finally:
        await admin.close()
    out: dict[str, dict[str, Any]] = {n: {"partitions": partitions.get(n, 0)} for n in names}
    for response in responses:
        for resource in response.resources:
            name, entries = resource[3], resource[4]
            out[name]["configs"] = {e[0]: e[1] for e in entries}
    return out


async def delete_topics(conn: KafkaConnection) -> None:
    """Delete every catalog topic under the connection's prefix (test and demo clean-up)."""
    catalog = conn.catalog()
    admin = _admin(conn)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        names = [n for n in catalog.names if n in existing]
        if names:
            await admin.delete_topics(names)
    except (AIOKafkaError, OSError) as exc:
        raise AdminError("delete topics", conn.bootstrap_servers, str(exc)) from exc
    finally:
        await admin.close()


async def ensure_topics(
    conn: KafkaConnection, partitions: dict[str, int], *, replication_factor: int = 1
) -> None:
    """Create topics outside the catalog (a worker's internal ones) unless they exist."""
    admin = _admin(conn)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, count, replication_factor)
            for name, count in partitions.items()
            if name not in existing
        ]
        if wanted:
            response = await admin.create_topics(wanted)
            for name, code, message in _topic_errors(response):
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    raise AdminError(
                        f"create topic {name}", conn.bootstrap_servers, f"{code} {message}"
                    )
            await _wait_for_leaders(admin, [t.name for t in wanted])
    except (AIOKafkaError, OSError) as exc:
        raise AdminError("create topics", conn.bootstrap_servers, str(exc)) from exc
    finally:
        await admin.close()

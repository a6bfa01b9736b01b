"""``slmops publish``: check a whole input first, then send all of it, or with ``--partial`` its
valid records, and say exactly which lines went out.

Every record is parsed, validated by the event contract and measured against the largest
message Kafka takes (the producer's request limit, and the topic's ``max.message.bytes`` once
the broker is asked) before the first one is sent. Ids derived from the records
(``streams.kafka.publish``) make a re-run of the same input repeat the same ``event_id``\\ s, so
consumers that drop duplicates drop them; that is what makes "run it again" the answer to a
send that failed part way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from slmops.errors import FileAccessError
from streams.kafka.arguments import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

SENT = 0
REFUSED = 3
PARTIAL = 4
SEND_FAILED = 5

EXIT_CODES = """\
exit codes:
  0  every record was sent (with --dry-run: every record is valid)
  1  nothing was sent: unreadable input, bad settings, no broker, missing topic
  2  bad command line
  3  some records were refused, so nothing was sent (with --dry-run: some are invalid)
  4  with --partial: the valid records were sent and the refused ones listed
  5  sending failed part way; the report names the lines the broker acknowledged, and
     running the same command again is safe: repeated event ids are dropped by consumers
"""

EXAMPLES = """\
examples:
  slmops publish feedback events.jsonl --dry-run      check every line, send nothing
  slmops publish feedback events.jsonl                all or nothing
  slmops publish feedback events.jsonl --partial --report sent.json
  echo '{"model_id": "intent", "outcomes": {"correct": 9}}' | slmops publish feedback

A record without event_id gets one derived from the record itself (docs/operations.md), so
publishing the same file twice sends the same ids and consumers drop the repeats.
"""


class Progress:
    """Progress lines on stderr for long inputs: at most one every ``interval_s`` seconds."""

    def __init__(
        self,
        say: Callable[[str], None],
        *,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._interval_s = interval_s
        self._clock = clock
        self._next = clock() + interval_s

    def __call__(self, template: str, *values: object) -> None:
        """Say ``template.format(*values)`` if the last line is old enough (formatted only then)."""
        now = self._clock()
        if now >= self._next:
            self._say(template.format(*values))
            self._next = now + self._interval_s


def line_ranges(lines: Iterable[int], limit: int = 0) -> str:
    """``1-4,7,9-10``: line numbers as ranges, cut after ``limit`` ranges when one is given."""
    ranges: list[tuple[int, int]] = []
    for n in sorted(lines):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], n)
        else:
            ranges.append((n, n))
    shown = ranges if not limit or len(ranges) <= limit else ranges[:limit]
    text = ",".join(str(a) if a == b else f"{a}-{b}" for a, b in shown)
    if len(shown) < len(ranges):
        text += f",... ({len(ranges) - len(shown)} more ranges)"
    return text or "none"


def read_input(path: str | None) -> tuple[str, str]:
    """(name, text) of the input: a file, or stdin for ``-`` or none; UTF-8 (a BOM is allowed)."""
    if path in (None, "-"):
        name = "stdin"
        data = sys.stdin.buffer.read()
    else:
        name = str(path)
        try:
            data = Path(name).read_bytes()
        except FileNotFoundError:
            raise FileAccessError(name, "no such file") from None
        except IsADirectoryError:
            raise FileAccessError(name, "it is a directory, not a file") from None
        except OSError as exc:
            raise FileAccessError(name, exc.strerror or str(exc)) from exc
    try:
        return name, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileAccessError(
            name, f"line {line} is not UTF-8 text (byte {exc.start}); publish reads JSON"
        ) from exc


@dataclasses.dataclass(slots=True)
class Outcome:
    """What happened to every record of one input: the report's content."""

    source: str
    topic: str
    event_type: str
    mode: str
    records: int = 0
    refused: list[Any] = dataclasses.field(default_factory=list)  # Parsed
    valid: list[Any] = dataclasses.field(default_factory=list)  # Parsed
    acknowledged: list[Any] = dataclasses.field(default_factory=list)  # Parsed
    failed: list[tuple[Any, str]] = dataclasses.field(default_factory=list)  # (Parsed, reason)
    error: str | None = None
    seconds: float = 0.0
    exit_code: int = SENT

    def settle(self, records: Sequence[Any], results: Sequence[object]) -> None:
        """Book each sent record by its send's result: acknowledged, or failed and why.

        A record that was never handed to the producer stays in neither list: it is "not
        sent". A result that is not a Kafka error is a bug and is raised as it is.
        """
        from streams.kafka.errors import KafkaError

        for p, result in zip(records, results, strict=True):
            if isinstance(result, KafkaError):
                self.failed.append((p, str(result)))
                self.error = self.error or str(result)
            elif isinstance(result, BaseException):
                raise result
            else:
                self.acknowledged.append(p)

    def unsent_lines(self) -> list[int]:
        sent = {p.line for p in self.acknowledged}
        return [p.line for p in self.valid if p.line not in sent]

    def report(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "topic": self.topic,
            "event_type": self.event_type,
            "mode": self.mode,
            "records": self.records,
            "sent": [{"line": p.line, "event_id": p.event.event_id} for p in self.acknowledged],
            "refused": [
                {"line": p.line, "field": p.field, "reason": p.error} for p in self.refused
            ],
            "not_sent": self.unsent_lines(),
            "failed": [{"line": p.line, "reason": reason} for p, reason in self.failed],
            "error": self.error,
            "exit_code": self.exit_code,
        }


def _refusal_line(p: Any) -> str:
    where = f"{p.field}: " if p.field else ""
    return f"line {p.line}: refused: {where}{p.error}"


def _show_refused(outcome: Outcome, say: Callable[[str], None], cap: int) -> None:
    for p in outcome.refused[:cap] if cap else outcome.refused:
        say(_refusal_line(p))
    hidden = len(outcome.refused) - cap if cap else 0
    if hidden > 0:
        say(f"... and {hidden:,} more refused line(s); --report FILE lists them all")


async def _topic_limit(conn: Any, topic: str, wait_s: float) -> int:
    """The largest record the topic takes: the producer's limit or the topic's, if lower."""
    from streams.kafka.admin import describe_topics, wait_for_broker
    from streams.kafka.errors import TopicMissingError
    from streams.kafka.publish import KAFKA_MAX_MESSAGE_BYTES, PRODUCER_MAX_REQUEST_BYTES

    await wait_for_broker(conn, wait_s)
    live = await describe_topics(conn)
    if topic not in live:
        raise TopicMissingError(topic, conn.bootstrap_servers)
    configured = live[topic].get("configs", {}).get("max.message.bytes")
    topic_max = int(configured) if configured else KAFKA_MAX_MESSAGE_BYTES
    return min(PRODUCER_MAX_REQUEST_BYTES, topic_max)


async def _send(
    conn: Any,
    records: Sequence[Any],
    outcome: Outcome,
    progress: Progress,
    stall_s: float,
    signing_key: Any = None,
) -> None:
    """Send ``records``; each ends up acknowledged, failed, or (never handed over) not sent.

    A broker that goes away mid-send is retried by the client without end; after ``stall_s``
    seconds without one acknowledgement the rest is given up and booked as failed.
    """
    from streams.kafka.clients import EventProducer
    from streams.kafka.errors import KafkaError, SendFailedError

    def stalled() -> SendFailedError:
        return SendFailedError(
            outcome.topic, conn.bootstrap_servers, f"no acknowledgement for {stall_s:g}s"
        )

    queued: list[tuple[Any, asyncio.Future[object]]] = []
    producer = EventProducer(conn)
    await producer.start()
    try:
        for i, p in enumerate(records, start=1):
            try:
                # send() waits while the client's buffer is full, which lasts as long as the
                # broker is away.
                sent = producer.send(p.event, signing_key=signing_key)
                queued.append((p, await asyncio.wait_for(sent, stall_s)))
            except TimeoutError:
                outcome.error = str(stalled())
                break
            except KafkaError as exc:
                if not queued:
                    raise  # nothing went out: a plain error, the input can be sent as it is
                outcome.error = str(exc)
                break
            progress("queued {:,} of {:,} record(s)", i, len(records))
        pending = {f for _, f in queued}
        while pending:
            done, pending = await asyncio.wait(
                pending, timeout=stall_s, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break
            progress("acknowledged {:,} of {:,}", len(queued) - len(pending), len(records))
        for f in pending:
            f.cancel()
        if pending:
            await asyncio.wait(pending)
    finally:
        try:
            await producer.stop(timeout_s=stall_s)
        except KafkaError as exc:
            outcome.error = outcome.error or str(exc)
    results: list[object] = [stalled() if f.cancelled() else f.exception() for _, f in queued]
    outcome.settle([p for p, _ in queued], results)


@contextlib.contextmanager
def _quiet_client() -> Iterator[None]:
    """Silence aiokafka's per-attempt ERROR lines while sending: with the broker away it logs
    each reconnect, thousands a second, burying the summary that says what was sent."""
    client_log = logging.getLogger("aiokafka")
    level = client_log.level
    if not client_log.isEnabledFor(logging.DEBUG):
        client_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client_log.setLevel(level)


def _write_report(path: str | None, outcome: Outcome) -> None:
    if not path:
        return
    try:
        Path(path).write_text(json.dumps(outcome.report()) + "\n")
    except OSError as exc:
        raise FileAccessError(path, exc.strerror or str(exc), action="write") from exc


def _signing_key(path: str | None) -> Any:
    """The key to sign every record with (devices with ``signed_records`` need it)."""
    if path is None:
        return None
    from pathlib import Path

    from slmops.errors import FileAccessError
    from streams.events.artifact import ArtifactError, private_key_from_text

    try:
        return private_key_from_text(Path(path).read_text())
    except OSError as exc:
        raise FileAccessError(path, exc.strerror or str(exc)) from exc
    except (ArtifactError, ValueError) as exc:
        raise FileAccessError(path, f"not a signing key: {exc}") from exc


def run(args: argparse.Namespace, conn: Any, say: Callable[[str], None]) -> int:
    """``slmops publish``; returns the exit code (the module's constants)."""
    from streams.events import event_type_named
    from streams.kafka.errors import KafkaError
    from streams.kafka.publish import PRODUCER_MAX_REQUEST_BYTES, parse_events, refuse_oversized

    event_type = event_type_named(args.event_type)
    signing_key = _signing_key(args.signing_key)
    catalog = conn.catalog()
    topic = catalog.topic_for(event_type)
    source, text = read_input(args.file)
    mode = "dry-run" if args.dry_run else "partial" if args.partial else "all-or-nothing"
    outcome = Outcome(source, topic, event_type.SCHEMA, mode)
    progress = Progress(say)
    limit = min(args.max_record_bytes or PRODUCER_MAX_REQUEST_BYTES, PRODUCER_MAX_REQUEST_BYTES)
    parsed = []
    for p in parse_events(
        text, event_type, producer=args.producer, catalog=catalog, max_record_bytes=limit
    ):
        parsed.append(p)
        progress("checked {:,} record(s)", len(parsed))
    if not args.dry_run and (args.partial or all(p.ok for p in parsed)):
        # Only now is the broker asked: a topic may take less than the producer sends.
        limit = min(limit, asyncio.run(_topic_limit(conn, topic, args.wait)))
        parsed = refuse_oversized(parsed, limit, topic)
    outcome.records = len(parsed)
    outcome.valid = [p for p in parsed if p.ok]
    outcome.refused = [p for p in parsed if not p.ok]
    _show_refused(outcome, say, args.show_refused)
    untimed = sum(not p.timed for p in outcome.valid)
    if untimed:
        say(
            f"note: {untimed:,} record(s) have no occurred_at and carry the time they are "
            "published; the same input sent again later may count them in a later window"
        )
    head = f"{outcome.records:,} {event_type.SCHEMA} record(s) from {source}"
    if args.dry_run or (outcome.refused and not args.partial) or not outcome.valid:
        outcome.exit_code = REFUSED if outcome.refused else SENT
        if args.dry_run:
            say(
                f"dry run: {len(outcome.valid):,} of {head} valid, {len(outcome.refused):,} "
                f"refused; nothing sent to {topic}"
            )
        elif outcome.refused:
            hint = (
                f"; fix them, or send the {len(outcome.valid):,} valid one(s) with --partial"
                if outcome.valid
                else ""
            )
            say(f"sent nothing: {len(outcome.refused):,} of {head} refused{hint}")
        else:
            say(f"sent nothing: {head}")
        _write_report(args.report, outcome)
        return outcome.exit_code

    started = time.perf_counter()
    try:
        with _quiet_client():
            asyncio.run(
                _send(conn, outcome.valid, outcome, progress, args.stall_timeout, signing_key)
            )
    except KafkaError as exc:
        outcome.error = str(exc)
        outcome.exit_code = 1
        _write_report(args.report, outcome)
        raise
    outcome.seconds = time.perf_counter() - started
    sent = len(outcome.acknowledged)
    rate = sent / outcome.seconds if outcome.seconds > 0 else 0.0
    if outcome.error is not None:
        outcome.exit_code = SEND_FAILED
        unsent = outcome.unsent_lines()
        say(f"error: {outcome.error}")
        say(
            f"sending failed part way: {sent:,} of {head} acknowledged "
            f"(lines {line_ranges((p.line for p in outcome.acknowledged), 10)}), "
            f"{len(unsent):,} not sent ({len(outcome.failed):,} of them handed over but "
            "never acknowledged); the same command again is safe: consumers drop the "
            "repeated event ids"
        )
    else:
        outcome.exit_code = PARTIAL if outcome.refused else SENT
        say(
            f"sent {sent:,} of {head} to {topic} in {outcome.seconds:.2f}s ({rate:,.0f}/s); "
            f"refused {len(outcome.refused):,}"
        )
        if outcome.refused:
            say(f"sent lines: {line_ranges((p.line for p in outcome.acknowledged), 10)}")
            say(f"refused lines: {line_ranges((p.line for p in outcome.refused), 10)}")
    _write_report(args.report, outcome)
    return outcome.exit_code


def add_show_refused(p: argparse.ArgumentParser) -> None:
    """``--show-refused N``: how many refused lines a command prints."""
    p.add_argument(
        "--show-refused",
        type=non_negative_int,
        default=20,
        metavar="N",
        help="print at most N refused lines, 0 for all (default 20)",
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``slmops publish`` (connection flags are added by the caller)."""
    p.add_argument(
        "event_type", help="feedback, model-version, telemetry, ... (see `slmops schemas`)"
    )
    p.add_argument(
        "file",
        nargs="?",
        help="a JSON object, a JSON array or JSON lines, UTF-8; - or absent: stdin",
    )
    p.add_argument(
        "--producer",
        default="slmops-cli",
        help="producer id of records that have none (default slmops-cli)",
    )
    p.add_argument("--dry-run", action="store_true", help="check every record, send none")
    p.add_argument(
        "--signing-key",
        metavar="FILE",
        help="sign every record with this private key (base64 raw ed25519, the format of the "
        "optimizer's --signing-key): the release key for model-version, the controller's for "
        "rollout-state, as devices with signed_records require",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="send the valid records even when some are refused (default: send nothing then)",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        help="write a JSON report: every line sent (with its event_id), refused, or not sent",
    )
    p.add_argument(
        "--max-record-bytes",
        type=positive_int,
        default=None,
        metavar="N",
        help="refuse records over N bytes on the wire; default and ceiling: the producer's "
        "1 MiB request limit, or the topic's max.message.bytes when lower",
    )
    add_show_refused(p)
    p.add_argument(
        "--wait",
        type=non_negative_float,
        default=10.0,
        metavar="S",
        help="seconds to wait for the broker to answer (default 10)",
    )
    p.add_argument(
        "--stall-timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="give up sending after S seconds without an acknowledgement (default 30); "
        "the lines given up are reported as failed, exit code 5",
    )

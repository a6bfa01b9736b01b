"""Turning a record a consumer cannot use into a :class:`~streams.events.DeadLetter`.

Pure: every consumer (Faust agents, the edge runtime, optimizer workers) builds the event here
and sends it to the catalog's dead-letter topic with its own producer, then goes on.

A dead letter must always fit on the broker, or the record it describes vanishes: a record
close to the 1 MB ``max.message.bytes`` plus the envelope would not. So the copy of the
original key and value is bounded (whole when small, its first bytes when large) and always
comes with the original's size and sha256; the reason is clipped to the contract's free-text
limit. The encoded dead letter stays below :data:`MAX_ENCODED_BYTES`.

A refused record of a topic in :data:`PRIVATE_TOPICS` keeps no copy of its value, only its size
and sha256: a feedback record is refused for examples without consent, among other reasons,
and the dead-letter topic (read by operators, kept 14 days) must not keep the text its authors
did not agree to share. Its producer still has the record to fix and send again.
"""

from __future__ import annotations

import hashlib

from streams.events import DeadLetter
from streams.events.errors import EventError
from streams.events.limits import LIMITS, clip

# The copy budgets leave room for the envelope, the topic name and a reason of 4,096 characters
# of up to 4 UTF-8 bytes each: 512 KiB + 16 KiB + 16 KiB + ids < 600 KB.
MAX_VALUE_COPY = 512 * 1024
MAX_KEY_COPY = 16 * 1024
MAX_ENCODED_BYTES = 600_000
PRIVATE_TOPICS = frozenset({"feedback"})
"""Base names of the topics whose refused values are not copied into dead letters."""
_MAX_TOPIC = LIMITS["DeadLetter"]["source_topic"].chars or 0
_MAX_ID = LIMITS["DeadLetter"]["producer"].chars or 0


def dead_letter_for(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    error: BaseException,
    consumer: str,
) -> DeadLetter:
    """The dead letter for one record: its bytes (bounded), their size and sha256, and why."""
    reason = clip(str(error).strip() or type(error).__name__, LIMITS["DeadLetter"]["reason"])
    # Base names hold no '.', prefixes may: the base is what follows the last one.
    private = topic.rsplit(".", 1)[-1] in PRIVATE_TOPICS
    return DeadLetter(
        producer=consumer[:_MAX_ID],
        source_topic=topic[:_MAX_TOPIC],
        source_partition=partition,
        source_offset=offset,
        original_key=None if key is None else bytes(key[:MAX_KEY_COPY]),
        original_value=None if value is None or private else bytes(value[:MAX_VALUE_COPY]),
        reason=reason,
        error_type="EventError"
        if isinstance(error, EventError)
        else type(error).__name__[:_MAX_ID],
        original_key_size=None if key is None else len(key),
        original_key_sha256=None if key is None else hashlib.sha256(key).hexdigest(),
        original_value_size=None if value is None else len(value),
        original_value_sha256=None if value is None else hashlib.sha256(value).hexdigest(),
    )

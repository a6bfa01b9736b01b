"""Avro binary, read by hand for the hot readers (``hot``, ``hot_drift``).

fastavro turns every value into a Python object through its generic reader; a reader written
for one schema can skip what it already knows (a histogram's shared bounds are compared as
bytes) and read a block of one-byte counts in one slice. These are the pieces such a reader
is made of. Each reads what every Avro reader reads alike and raises :class:`Odd` for what is
legal but rare (a block with its byte size, a varint past 64 bits): the caller then leaves the
record to a general reader, which decides.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

import fastavro

from streams.events.limits import ID

ID_CHARS = ID.chars or 0
# A string of at most this many characters is at most four bytes a character in UTF-8.
ID_BYTES = 4 * ID_CHARS
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Odd(Exception):
    """The bytes are outside the common shape: a general reader decides."""


def read_long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint of at most 64 bits, and the position after it."""
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    n, shift = b & 0x7F, 7
    while True:
        pos += 1
        b = buf[pos]
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Odd
    if n >> 64:
        raise Odd
    return (n >> 1) ^ -(n & 1), pos + 1


def read_id(buf: bytes, pos: int) -> tuple[str, int]:
    """A string of the identifier limit without control characters; others raise Odd (the
    full path refuses them with the contract's reason)."""
    size = buf[pos]
    if size < 0x80:  # a length below 64: one byte
        if size & 1:
            raise Odd
        size >>= 1
        pos += 1
    else:
        size, pos = read_long(buf, pos)
        if not 0 <= size <= ID_BYTES:
            raise Odd
    end = pos + size
    if end > len(buf):
        raise Odd
    text = buf[pos:end].decode("utf-8")
    # A printable string has no control character; only another one needs the search.
    if len(text) > ID_CHARS or (not text.isprintable() and CONTROL.search(text) is not None):
        raise Odd
    return text, end


def read_envelope(buf: bytes, pos: int) -> tuple[tuple[str, int, str, str, str, str, str], int]:
    """The fields a device's events begin with: event id, occurred at (epoch ms), producer,
    device, model, model version and cohort."""
    event_id, pos = read_id(buf, pos)
    occurred, pos = read_long(buf, pos)
    producer, pos = read_id(buf, pos)
    device, pos = read_id(buf, pos)
    model, pos = read_id(buf, pos)
    version, pos = read_id(buf, pos)
    cohort, pos = read_id(buf, pos)
    return (event_id, occurred, producer, device, model, version, cohort), pos


def read_block(buf: bytes, pos: int) -> tuple[int, int]:
    """An array or map block's item count (a block with its byte size raises Odd)."""
    count, pos = read_long(buf, pos)
    if count < 0:
        raise Odd
    return count, pos


_ONE_BYTE_COUNTS = bytes(range(0, 0x80, 2))
"""The bytes that are a whole non-negative varint: 0..63, zig-zagged."""
_MULTI_BYTE = re.compile(rb"[\x80-\xff]")
_HALVED = bytes(b >> 1 for b in range(0x100))
"""A table for ``bytes.translate``: each one-byte count's value, halved in C."""


def read_counts(buf: bytes, pos: int, most: int) -> tuple[list[int], int]:
    """An array of at most ``most`` non-negative longs (a negative one raises Odd).

    Counts below 64 are one byte each: a run of them is read as one slice, so an array of
    small counts with a few large ones costs a slice per large one, not a step per count."""
    out: list[int] = []
    count, pos = read_block(buf, pos)
    while count:
        if len(out) + count > most:
            raise Odd
        chunk = buf[pos : pos + count]
        if len(chunk) == count and not chunk.translate(None, _ONE_BYTE_COUNTS):
            out += chunk.translate(_HALVED)  # every count one byte: the common case
            pos += count
            count, pos = read_block(buf, pos)
            continue
        left = count
        while left:
            chunk = buf[pos : pos + left]
            found = _MULTI_BYTE.search(chunk)
            run = len(chunk) if found is None else found.start()
            if run:
                head = chunk if run == len(chunk) else chunk[:run]
                if head.translate(None, _ONE_BYTE_COUNTS):  # an odd byte: a negative count
                    raise Odd
                out += head.translate(_HALVED)
                pos += run
                left -= run
            if left:  # a count of several bytes (or the end of the buffer: IndexError)
                value, pos = read_long(buf, pos)
                if value < 0:
                    raise Odd
                out.append(value)
                left -= 1
        count, pos = read_block(buf, pos)
    return out, pos


def doubles_block(values: Sequence[float]) -> bytes:
    """How a writer encodes ``values`` as one block of an array of doubles: a reader that
    expects exactly these values compares bytes instead of reading floats."""
    buf = io.BytesIO()
    schema: Any = {"type": "array", "items": "double"}
    fastavro.schemaless_writer(buf, schema, list(values))
    return buf.getvalue()

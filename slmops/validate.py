"""``slmops validate``: check records against the whole contract, sending nothing.

Each record is checked as ``slmops publish --dry-run`` checks it (it builds, encodes and decodes
as a consumer would, within every limit of the schema), and then as the control worker would
take it into a window (:mod:`streams.control.admission`). A refused record gets the reason a
consumer would dead-letter it with.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from slmops.publish import REFUSED, SENT, add_show_refused, read_input

EXIT_CODES = """\
exit codes:
  0  every record is valid
  1  unreadable input, unknown topic
  2  bad command line
  3  some records are refused (each one's line and reason on stderr)
"""


def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    from streams.control.admission import aggregation_refusal
    from streams.events import event_type_named
    from streams.events.errors import EventError
    from streams.events.topics import Catalog
    from streams.kafka.publish import parse_events

    catalog = Catalog()
    try:
        event_type = event_type_named(args.topic)
    except EventError:
        event_type = catalog.resolve(args.topic).event_type
    source, text = read_input(args.file)
    total = refused = 0
    for p in parse_events(text, event_type, producer="slmops-validate", catalog=catalog):
        total += 1
        where, reason = p.field, p.error
        if reason is None and p.event is not None:
            found = aggregation_refusal(p.event)
            if found is not None:
                where, reason = found.field, found.reason
        if reason is not None:
            refused += 1
            if args.show_refused == 0 or refused <= args.show_refused:
                say(f"line {p.line}: refused: {where + ': ' if where else ''}{reason}")
    if args.show_refused and refused > args.show_refused:
        say(f"... and {refused - args.show_refused:,} more refused line(s)")
    say(
        f"{total - refused:,} of {total:,} {event_type.SCHEMA} record(s) from {source} valid, "
        f"{refused:,} refused"
    )
    return REFUSED if refused else SENT


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "topic",
        help="a topic (feedback, telemetry, drift, model-registry, ...) or an event type",
    )
    p.add_argument(
        "file",
        nargs="?",
        help="a JSON object, a JSON array or JSON lines, UTF-8; - or absent: stdin",
    )
    add_show_refused(p)

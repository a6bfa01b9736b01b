"""``python -m streams.control`` = ``slmops control worker`` (how tests start worker processes)."""

from __future__ import annotations

import argparse
import os
import sys

from streams.control.cli import register
from streams.events.errors import StreamsError


def main() -> int:
    """A mistake in the settings or no broker is one ``error:`` line and exit 1, as in
    ``slmops``; SLMOPS_DEBUG=1 shows the traceback."""
    parser = argparse.ArgumentParser(prog="python -m streams.control")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["control", "worker", *sys.argv[1:]])
    try:
        code: int = args.func(args)
    except StreamsError as exc:
        if os.environ.get("SLMOPS_DEBUG", "").lower() in ("1", "true", "yes"):
            raise
        print(f"python -m streams.control: error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())

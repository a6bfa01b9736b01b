"""``python -m streams.control`` = ``slmops control worker`` (how tests start worker processes)."""

from __future__ import annotations

import argparse
import sys

from streams.control.cli import register


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.control")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["control", "worker", *sys.argv[1:]])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Argument types of every command line: a bad value is argparse's one-line usage error.

Here because every deployable's CLI (``slmops``, the control worker, the optimizer worker, the
edge runtime) already takes its connection flags from ``streams.kafka``, and no deployable may
import another's code.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def non_negative_float(text: str, *, what: str = "a number") -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value


def seconds(text: str) -> float:
    """A duration: zero or more seconds."""
    return non_negative_float(text, what="a number of seconds")

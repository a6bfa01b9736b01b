"""Errors of the command line and the local stack.

::

    SlmopsError              root; the CLI prints its message and exits 1
    └── LocalKafkaError      the embedded broker cannot be fetched, started or stopped
"""

from __future__ import annotations


class SlmopsError(Exception):
    """Root of the command line's own errors."""


class LocalKafkaError(SlmopsError):
    """The local broker could not be fetched, started or stopped; the message says why."""

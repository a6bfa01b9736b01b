"""Where the device writes files: the seam between its state and a disk that can fill up.

Every write the device makes to keep state (outbox entries, downloads, the last-known-good
record) goes through a :class:`Disk`, and so does the free-space check made before a download
or an unpack. :class:`LocalDisk` is the real file system; a test passes a disk that reports no
space and raises ``ENOSPC``, which is how "the disk is full" is exercised without root.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import BinaryIO, Protocol

# Errors that mean "no room now" (space or quota), as opposed to a broken disk.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: OSError) -> bool:
    """True when ``exc`` says the file system (or the quota) has no room."""
    return exc.errno in _FULL


class Disk(Protocol):
    """Writes and free-space queries; implementations raise ``OSError`` as the OS would."""

    def write_bytes(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` (created or truncated)."""
        ...

    def open_write(self, path: Path, *, append: bool = False) -> BinaryIO:
        """Open ``path`` for writing bytes, appending when ``append``."""
        ...

    def free_bytes(self, path: Path) -> int:
        """Bytes an unprivileged writer can still use on the file system holding ``path``."""
        ...


class LocalDisk:
    """The real file system."""

    def write_bytes(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)

    def open_write(self, path: Path, *, append: bool = False) -> BinaryIO:
        return path.open("ab" if append else "wb")

    def free_bytes(self, path: Path) -> int:
        return shutil.disk_usage(path).free


def tree_bytes(path: Path) -> int:
    """Size of the files under ``path`` (or of ``path`` itself), for cleanup logs."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue
    return total

"""A bounded on-disk queue of encoded events waiting for the broker.

Each entry is one file named by a sequence number, written to a temporary name and renamed,
so a crash leaves whole entries or none. Entries are delivered oldest first. When the bound is
hit the *oldest* entry is dropped: for telemetry the newest windows say most about the device
now, and the control plane tolerates gaps (it sees ``window_seq`` jump). Drops are counted in a
small file beside the entries so the count survives restarts.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_SUFFIX = ".evt"


class DiskBuffer:
    """FIFO of byte strings in a directory; thread-safe within one process."""

    def __init__(self, directory: Path, *, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.directory = directory
        self.max_entries = max_entries
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.tmp"):
            stale.unlink()  # an append interrupted before its rename
        self._lock = threading.Lock()
        self._entries = sorted(directory.glob(f"*{_SUFFIX}"))
        self._next = int(self._entries[-1].stem) + 1 if self._entries else 0
        self._dropped_file = directory / "dropped"
        self._dropped = int(self._dropped_file.read_text()) if self._dropped_file.exists() else 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    @property
    def dropped(self) -> int:
        """Entries discarded because the buffer was full, since the buffer was created."""
        return self._dropped

    def append(self, data: bytes) -> None:
        with self._lock:
            path = self.directory / f"{self._next:020d}{_SUFFIX}"
            self._next += 1
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            self._entries.append(path)
            overflow = len(self._entries) - self.max_entries
            if overflow > 0:
                for old in self._entries[:overflow]:
                    old.unlink(missing_ok=True)
                del self._entries[:overflow]
                self._dropped += overflow
                self._dropped_file.write_text(str(self._dropped))
        if overflow > 0:
            log.warning(
                "outgoing buffer full, dropped oldest entries=%d dropped_total=%d dir=%s",
                overflow,
                self._dropped,
                self.directory,
            )

    def oldest(self) -> tuple[Path, bytes] | None:
        """The oldest entry without removing it (removed after delivery by :meth:`remove`)."""
        with self._lock:
            while self._entries:
                path = self._entries[0]
                try:
                    return path, path.read_bytes()
                except FileNotFoundError:
                    self._entries.pop(0)
            return None

    def remove(self, path: Path) -> None:
        with self._lock:
            if path in self._entries:
                self._entries.remove(path)
            path.unlink(missing_ok=True)

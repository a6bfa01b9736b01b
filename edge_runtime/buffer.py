"""A bounded on-disk queue of encoded events waiting for the broker, held in memory when the
disk is full.

Each entry is one file named by a sequence number, written to a temporary name and renamed,
so a crash leaves whole entries or none. Entries are delivered oldest first. When the bound is
hit the *oldest* entry is dropped: for telemetry the newest windows say most about the device
now, and the control plane tolerates gaps (it sees ``window_seq`` jump). Drops are counted in a
small file beside the entries so the count survives restarts.

When a write fails (the disk is full, or refuses writes), the entry is kept in memory instead,
after every entry on disk, in a second bounded queue that also drops its oldest. Each later
append (and :meth:`DiskBuffer.flush`) first tries to move the held entries to disk in order, so
the queue stays in production order and reaches the disk as soon as there is room. Held entries
can be delivered straight from memory; those still held when the process ends are lost, which
is why the device reports itself DEGRADED while :attr:`DiskBuffer.held` is not zero.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import threading
from pathlib import Path

from edge_runtime.disk import Disk, LocalDisk

log = logging.getLogger(__name__)

_SUFFIX = ".evt"


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One queued event: its bytes, and its file unless it is held in memory."""

    seq: int
    data: bytes
    path: Path | None


class DiskBuffer:
    """FIFO of byte strings in a directory; thread-safe within one process."""

    def __init__(
        self,
        directory: Path,
        *,
        max_entries: int = 10_000,
        memory_max_entries: int = 1_000,
        disk: Disk | None = None,
    ) -> None:
        if max_entries < 1 or memory_max_entries < 1:
            raise ValueError("max_entries and memory_max_entries must be at least 1")
        self.directory = directory
        self.max_entries = max_entries
        self.memory_max_entries = memory_max_entries
        self.disk: Disk = disk or LocalDisk()
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.tmp"):
            stale.unlink()  # an append interrupted before its rename
        self._lock = threading.Lock()
        self._entries = sorted(directory.glob(f"*{_SUFFIX}"))
        self._next = int(self._entries[-1].stem) + 1 if self._entries else 0
        self._held: collections.deque[tuple[int, bytes]] = collections.deque()
        self._dropped_file = directory / "dropped"
        self._dropped = int(self._dropped_file.read_text()) if self._dropped_file.exists() else 0
        self.held_dropped = 0
        self.last_write_error: str | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries) + len(self._held)

    @property
    def dropped(self) -> int:
        """Entries discarded because a bound was hit (disk or memory), across restarts."""
        return self._dropped

    @property
    def held(self) -> int:
        """Entries held in memory because the disk refused them."""
        return len(self._held)

    def append(self, data: bytes) -> int:
        """Queue ``data``: on disk if it can be written, else in memory. Never raises OSError.

        Returns the entry's sequence number (its ``Entry.seq`` when it is read back).
        """
        with self._lock:
            seq = self._next
            self._next += 1
            if self._held:
                self._spill()
            if self._held or not self._write(seq, data):
                self._hold(seq, data)
            overflow = len(self._entries) + len(self._held) - self.max_entries
            if overflow > 0:
                self._drop_oldest(overflow)
            return seq

    def flush(self) -> bool:
        """Move held entries to disk, oldest first; True when none is left in memory."""
        with self._lock:
            self._spill()
            return not self._held

    def oldest(self) -> Entry | None:
        """The oldest entry without removing it (removed after delivery by :meth:`remove`)."""
        with self._lock:
            while self._entries:
                path = self._entries[0]
                try:
                    return Entry(int(path.stem), path.read_bytes(), path)
                except FileNotFoundError:
                    self._entries.pop(0)
            if self._held:
                seq, data = self._held[0]
                return Entry(seq, data, None)
            return None

    def remove(self, entry: Entry) -> None:
        with self._lock:
            if entry.path is None:
                # It may have been spilled to disk since it was read: remove it there too.
                if self._held and self._held[0][0] == entry.seq:
                    self._held.popleft()
                    return
                entry = Entry(entry.seq, entry.data, self._path(entry.seq))
            assert entry.path is not None
            if entry.path in self._entries:
                self._entries.remove(entry.path)
            entry.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ under the lock

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:020d}{_SUFFIX}"

    def _write(self, seq: int, data: bytes) -> bool:
        path = self._path(seq)
        tmp = path.with_suffix(".tmp")
        try:
            self.disk.write_bytes(tmp, data)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if self.last_write_error is None:
                log.warning(
                    "cannot write outgoing event, holding entries in memory dir=%s reason=%s",
                    self.directory,
                    exc,
                )
            self.last_write_error = exc.strerror or str(exc)
            return False
        self._entries.append(path)
        return True

    def _spill(self) -> None:
        while self._held:
            seq, data = self._held[0]
            if not self._write(seq, data):
                return
            self._held.popleft()
        if self.last_write_error is not None:
            log.info("outgoing events back on disk dir=%s", self.directory)
            self.last_write_error = None

    def _hold(self, seq: int, data: bytes) -> None:
        self._held.append((seq, data))
        overflow = len(self._held) - self.memory_max_entries
        if overflow > 0:
            for _ in range(overflow):
                self._held.popleft()
            self.held_dropped += overflow
            self._count_drops(overflow, where="memory")

    def _drop_oldest(self, n: int) -> None:
        from_disk = min(n, len(self._entries))
        for old in self._entries[:from_disk]:
            old.unlink(missing_ok=True)
        del self._entries[:from_disk]
        for _ in range(n - from_disk):
            self._held.popleft()
        self._count_drops(n, where="disk")

    def _count_drops(self, n: int, *, where: str) -> None:
        self._dropped += n
        # Best effort: a full disk must not turn a drop into a crash.
        with contextlib.suppress(OSError):
            self.disk.write_bytes(self._dropped_file, str(self._dropped).encode())
        log.warning(
            "outgoing buffer full, dropped oldest entries=%d dropped_total=%d bound=%s dir=%s",
            n,
            self._dropped,
            where,
            self.directory,
        )

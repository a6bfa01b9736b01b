from __future__ import annotations

from edge_runtime.buffer import DiskBuffer
from tests.support.device import FillableDisk


def _drain(buffer):
    out = []
    while (entry := buffer.oldest()) is not None:
        out.append(entry.data)
        buffer.remove(entry)
    return out


def test_entries_come_back_oldest_first_and_survive_reopen(tmp_path):
    buffer = DiskBuffer(tmp_path, max_entries=100)
    for i in range(5):
        buffer.append(f"e{i}".encode())
    reopened = DiskBuffer(tmp_path, max_entries=100)
    assert len(reopened) == 5
    reopened.append(b"e5")
    assert _drain(reopened) == [f"e{i}".encode() for i in range(6)]
    assert len(reopened) == 0


def test_bound_drops_oldest_and_counts_across_restarts(tmp_path):
    buffer = DiskBuffer(tmp_path, max_entries=3)
    for i in range(5):
        buffer.append(f"e{i}".encode())
    assert buffer.dropped == 2
    again = DiskBuffer(tmp_path, max_entries=3)
    again.append(b"e5")
    assert again.dropped == 3
    assert _drain(again) == [b"e3", b"e4", b"e5"]


def test_interrupted_append_leaves_no_entry(tmp_path):
    (tmp_path / "00000000000000000007.tmp").write_bytes(b"half")
    buffer = DiskBuffer(tmp_path)
    assert len(buffer) == 0
    assert not list(tmp_path.glob("*.tmp"))


def test_a_full_disk_holds_entries_in_memory_in_order_until_there_is_room(tmp_path):
    disk = FillableDisk()
    buffer = DiskBuffer(tmp_path, max_entries=100, memory_max_entries=10, disk=disk)
    buffer.append(b"e0")
    disk.full = True
    for i in range(1, 4):
        buffer.append(f"e{i}".encode())  # does not raise
    assert (len(buffer), buffer.held) == (4, 3)
    assert len(list(tmp_path.glob("*.evt"))) == 1
    assert buffer.flush() is False  # still no room
    disk.full = False
    buffer.append(b"e4")  # the held entries go to disk first, then this one
    assert buffer.held == 0
    assert len(list(tmp_path.glob("*.evt"))) == 5
    assert _drain(DiskBuffer(tmp_path)) == [f"e{i}".encode() for i in range(5)]


def test_held_entries_are_bounded_dropping_the_oldest_with_a_count(tmp_path):
    disk = FillableDisk()
    disk.full = True
    buffer = DiskBuffer(tmp_path, max_entries=100, memory_max_entries=3, disk=disk)
    for i in range(5):
        buffer.append(f"e{i}".encode())
    assert (buffer.held, buffer.held_dropped, buffer.dropped) == (3, 2, 2)
    # Held entries can be delivered straight from memory, oldest first.
    assert _drain(buffer) == [b"e2", b"e3", b"e4"]
    disk.full = False
    assert buffer.flush() is True


def test_a_held_entry_read_before_it_was_moved_to_disk_is_removed_there(tmp_path):
    disk = FillableDisk()
    disk.full = True
    buffer = DiskBuffer(tmp_path, disk=disk)
    buffer.append(b"e0")
    entry = buffer.oldest()
    assert entry is not None
    assert entry.path is None
    disk.full = False
    assert buffer.flush() is True  # e0 now has a file
    buffer.remove(entry)  # delivered from memory meanwhile
    assert len(buffer) == 0
    assert not list(tmp_path.glob("*.evt"))

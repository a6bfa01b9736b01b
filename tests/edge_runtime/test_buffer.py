from __future__ import annotations

from edge_runtime.buffer import DiskBuffer


def _drain(buffer):
    out = []
    while (entry := buffer.oldest()) is not None:
        path, data = entry
        out.append(data)
        buffer.remove(path)
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

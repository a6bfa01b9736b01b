"""Free local TCP ports for the servers, brokers and workers a test starts."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports nobody listens on now: all are held open until all are chosen.

    The ports are released before returning, so another process may take one first; tests on
    a shared machine accept that small race rather than pass sockets into every server.
    """
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    """One port nobody listens on now (see :func:`free_ports`)."""
    return free_ports(1)[0]

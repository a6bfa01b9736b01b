"""A TCP link to the broker that a test can cut and restore: a device's network."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.ports import free_port


class Link:
    """A TCP forwarder from a local port to the broker, up only between ``up()`` and ``down()``.

    The broker's metadata names its own address, so the link carries the bootstrap; with the
    link down the device cannot reach the cluster at all.
    """

    def __init__(self, target: str) -> None:
        host, port = target.split(",")[0].rsplit(":", 1)
        self.target = (host, int(port))
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def up(self) -> None:
        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.close()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        self._server = await asyncio.start_server(handle, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

"""A small asyncio TCP proxy for fault injection, run in the test's event loop.

Put it between a client and a server, then ``cut()`` every open connection mid-stream (a TCP
reset on both ends; new connections keep working), ``stall()`` all forwarding until
``resume()``, set ``refuse`` to turn new connections away (``refused`` counts them), or set
``bytes_per_second`` to forward at most that fast in each direction (a slow link). With
``hold_server_close`` set, a connection the server closes stays open towards the client
(everything the server sent last is delivered, its end is not) until the proxy is closed or
cut: the moment between a server's last words and the end of its connection, held open.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

_CHUNK_BYTES = 65536


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.cuts = 0
        self.refuse = False
        self.refused = 0
        # None: as fast as the ends go.
        self.bytes_per_second: float | None = None
        self.hold_server_close = False
        # Connections whose server side ended while ``hold_server_close`` kept the client's open.
        self.held_closes = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._writers) // 2

    async def start(self, port: int = 0) -> TcpProxy:
        """Listens on ``port`` (0 picks one; a fixed port lets a restarted proxy take it back)."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def cut(self) -> int:
        """Resets every open connection (RST, not FIN); returns how many were open."""
        count = self.open_connections
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()
        self.cuts += 1
        return count

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.resume()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._flowing.wait()
        if self.refuse:
            self.refused += 1
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer)),
            asyncio.ensure_future(self._pump(up_reader, writer)),
        ]
        for pump in pumps:
            self._tasks.add(pump)
            pump.add_done_callback(self._tasks.discard)
        done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        if self.hold_server_close and pumps[1] in done and not writer.is_closing():
            writer.transport.set_write_buffer_limits(high=0)
            await writer.drain()  # everything the server sent is on its way to the client
            self.held_closes += 1
            await pumps[0]  # until the client ends, or a cut or close aborts it
        for end in (writer, up_writer):
            self._writers.discard(end)
            _abort(end)
        for pump in pumps:
            pump.cancel()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK_BYTES):
                await self._flowing.wait()
                if writer.is_closing():
                    return
                writer.write(data)
                await writer.drain()
                if self.bytes_per_second:
                    # The link's pace: this chunk takes its share of a second.
                    await asyncio.sleep(len(data) / self.bytes_per_second)


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()

"""Webhook receivers for the benchmarks, real HTTP/1.1 servers on 127.0.0.1.

``VerifyingReceiver`` is a caller's receiver as docs/webhooks.md shows it: each job has its own
endpoint (a path) and secret, and every delivery is checked with ``standardwebhooks`` before it
is answered 200; it notes when each request had been read whole. ``HangingReceiver`` reads each
request and never answers (until it stops)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass(frozen=True)
class Delivery:
    received: float  # time.time() once the request was read whole
    webhook_id: str
    event: dict[str, Any]
    verified: bool


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    request_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return request_line.split()[1], headers, body


class _Server:
    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class VerifyingReceiver(_Server):
    def __init__(self) -> None:
        super().__init__()
        self._secrets: dict[str, str] = {}
        self._secret_known: dict[str, asyncio.Event] = {}
        self._arrived: dict[str, asyncio.Event] = {}
        self.deliveries: dict[str, list[Delivery]] = {}

    def new_endpoint(self) -> tuple[str, str]:
        """A fresh endpoint: its path and URL."""
        path = f"/hook/{uuid.uuid4().hex}"
        self._secret_known[path] = asyncio.Event()
        self._arrived[path] = asyncio.Event()
        self.deliveries[path] = []
        return path, f"http://127.0.0.1:{self.port}{path}"

    def secret_is(self, path: str, secret: str) -> None:
        """The endpoint's secret, as the job's create answered it."""
        self._secrets[path] = secret
        self._secret_known[path].set()

    async def first_delivery(self, path: str) -> Delivery:
        await self._arrived[path].wait()
        return self.deliveries[path][0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            path, headers, body = await _read_request(reader)
            received = time.time()
            known = self._secret_known.get(path)
            if known is None:
                status = 404
            else:
                # The create's answer may still be on its way when an early event comes.
                await asyncio.wait_for(known.wait(), 30)
                try:
                    Webhook(self._secrets[path]).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                event = json.loads(body)
                delivery = Delivery(received, headers.get("webhook-id", ""), event, verified)
                self.deliveries[path].append(delivery)
                self._arrived[path].set()
                status = 200 if verified else 400
            writer.write(
                f"HTTP/1.1 {status} Answer\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .encode("latin-1")
            )  # fmt: skip
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()


class HangingReceiver(_Server):
    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        # Requests held unanswered now (their senders still waiting), and at most at once.
        self.open = 0
        self.peak_open = 0
        self._release = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hang"

    async def stop(self) -> None:
        self._release.set()
        await super().stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _read_request(reader)
            self.requests += 1
            self.open += 1
            self.peak_open = max(self.peak_open, self.open)
            try:
                # Held until the sender gives up the attempt (closes) or the receiver stops.
                released = asyncio.ensure_future(self._release.wait())
                closed = asyncio.ensure_future(reader.read())
                _, pending = await asyncio.wait(
                    (released, closed), return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()
            finally:
                self.open -= 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

"""A webhook receiver on 127.0.0.1: a real HTTP/1.1 server that records every request and
answers as its script says (a status, with headers, or "hang": never answer), then 200; and the
verification a caller's receiver makes, with the specifications' own libraries:
``standardwebhooks`` checks the signature, ``cloudevents`` (2.x, its ``cloudevents.core`` API)
reads the event."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from standardwebhooks import Webhook

HANG = "hang"


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b"ok"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verified(self, secret: str) -> BaseCloudEvent:
        """The CloudEvent, once its Standard Webhooks signature is checked (raises otherwise)."""
        Webhook(secret).verify(self.body, self.headers)
        return from_http(HTTPMessage(self.headers, self.body), JSONFormat(), CloudEvent)

    def event_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)["data"]
        return data


@dataclass
class WebhookReceiver:
    port: int = 0
    # Answered in order to the requests that come; then Answer() (200).
    script: deque[Answer | str] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    # Requests left unanswered ("hang"): all of them, those still open, the most open at once,
    # and those the client gave up on (closed its connection).
    hanging: int = 0
    open_hanging: int = 0
    most_open_hanging: int = 0
    abandoned: int = 0
    # TLS: the server's context (None: plain HTTP), and the names clients asked for (SNI).
    tls: ssl.SSLContext | None = None
    server_names: list[str | None] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> WebhookReceiver:
        self._release = asyncio.Event()
        if self.tls is not None:
            self.tls.sni_callback = self._named
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, reuse_address=True, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    def _named(self, _: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
        self.server_names.append(name)

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if json.loads(r.body).get("type") == event_type]

    async def _hang(self, reader: asyncio.StreamReader) -> None:
        """Answers nothing until the receiver stops or the client closes the connection."""
        self.hanging += 1
        self.open_hanging += 1
        self.most_open_hanging = max(self.most_open_hanging, self.open_hanging)
        released = asyncio.ensure_future(self._release.wait())
        closed = asyncio.ensure_future(reader.read())  # b"" once the client closes
        try:
            await asyncio.wait((released, closed), return_when=asyncio.FIRST_COMPLETED)
            if closed.done():
                closed.exception()  # a reset is a close too
                if not released.done():
                    self.abandoned += 1
        finally:
            released.cancel()
            closed.cancel()
            self.open_hanging -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.received.append(Received(request_line.split()[1], headers, body))
            answer = self.script.popleft() if self.script else Answer()
            if answer == HANG:
                await self._hang(reader)
                return
            assert isinstance(answer, Answer)
            extra = "".join(f"{name}: {value}\r\n" for name, value in answer.headers)
            writer.write(
                f"HTTP/1.1 {answer.status} Answer\r\ncontent-length: {len(answer.body)}\r\n"
                f"{extra}connection: close\r\n\r\n".encode("latin-1")
                + answer.body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

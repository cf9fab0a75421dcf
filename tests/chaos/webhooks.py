"""The run's webhook receiver: a real HTTP/1.1 server on 127.0.0.1 that every export replica
tells of every job's status changes (the operator's endpoint: ``--webhook-url``, events
``all``). Each delivery is verified as a caller's receiver would (``standardwebhooks`` for the
signature, ``cloudevents`` to read the event) and recorded: its webhook-id, type, and the job's
id, status and version as the event carries them.

Some first attempts are answered 503 (a fixed share, chosen by the webhook-id and the seed), so
that retries happen in every run; every other one is answered 200."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

EVENT_TYPE_PREFIX = "dev.videojob.export."
# One first attempt in REFUSE_ONE_IN is answered 503 and must come again.
REFUSE_ONE_IN = 8


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclass(frozen=True)
class WebhookDelivery:
    """One request as received, and what was made of it."""

    webhook_id: str
    type: str
    job_id: str
    status: str
    version: int
    verified: bool
    answer: int
    at: float
    problem: str = ""

    @property
    def event(self) -> tuple[str, str, str, int]:
        return self.type, self.job_id, self.status, self.version


@dataclass
class WebhookReceiver:
    seed: int
    secret: str = field(default_factory=new_secret)
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    port: int = 0  # 0: any free one, known once started
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/chaos-hooks"

    async def start(self) -> WebhookReceiver:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def received(self, job_id: str, status: str, version: int) -> bool:
        """Whether an event telling of the job in that status at that version was answered
        200."""
        return any(
            d.answer == 200 and (d.job_id, d.status, d.version) == (job_id, status, version)
            for d in self.deliveries
        )

    def counts(self) -> dict[str, int]:
        """Requests, distinct events (webhook-ids), those answered 503 on purpose, and events
        received (answered 200) more than once."""
        accepted = Counter(d.webhook_id for d in self.deliveries if d.answer == 200)
        return {
            "requests": len(self.deliveries),
            "events": len({d.webhook_id for d in self.deliveries}),
            "refused_503": sum(1 for d in self.deliveries if d.answer == 503),
            "received_twice": sum(1 for count in accepted.values() if count > 1),
        }

    def _answer_for(self, webhook_id: str) -> int:
        first = all(d.webhook_id != webhook_id for d in self.deliveries)
        chosen = zlib.crc32(f"{self.seed}:{webhook_id}".encode()) % REFUSE_ONE_IN == 0
        return 503 if first and chosen else 200

    def _read(self, headers: dict[str, str], body: bytes) -> WebhookDelivery:
        webhook_id = headers.get("webhook-id", "")
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as error:
            return WebhookDelivery(webhook_id, "", "", "", 0, False, 400, time.time(), str(error))
        try:
            event = from_http(HTTPMessage(headers, body), JSONFormat(), CloudEvent)
            data: Any = event.get_data()
            event_type = event.get_type()
            job_id = str(event.get_subject())
            status = str(data["status"])
            version = int(data["version"])
        except (ValueError, KeyError, TypeError) as error:
            return WebhookDelivery(webhook_id, "", "", "", 0, True, 400, time.time(), repr(error))
        answer = self._answer_for(webhook_id)
        return WebhookDelivery(
            webhook_id, event_type, job_id, status, version, True, answer, time.time()
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            _request_line, *lines = head.decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in lines:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            delivery = self._read(headers, body)
            self.deliveries.append(delivery)
            writer.write(
                f"HTTP/1.1 {delivery.answer} Answer\r\ncontent-length: 0\r\n"
                "connection: close\r\n\r\n".encode("latin-1")
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

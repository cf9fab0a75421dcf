"""The deliverer: sends the webhook deliveries the outbox owes, at least once, from any replica.

Every replica runs one. It claims due deliveries for a while (store.outbox.claim: rows another
deliverer holds are skipped), sends each as a signed CloudEvent, and records how the attempt
ended: delivered (2xx), given up (410 Gone, or the retry period over), or due again after an
exponential backoff with jitter (at least what a Retry-After asks). A replica that dies holding
deliveries holds them only until its claim lapses; another one then sends them again, with the
same ``webhook-id``: a receiver may see an event more than once, and never misses one.

Each attempt resolves the destination's name once, checks every address (destination), and
connects to the checked one, keeping the name for the Host header and TLS's SNI; it follows no
redirect, takes at most ``timeout`` seconds, and keeps at most MAX_RESPONSE_BYTES of the
answer. A hanging receiver holds one of ``concurrency`` slots for that long, no more; and the
claims give one endpoint at most ``per_endpoint`` attempts at once, over all replicas, so a
receiver that hangs with many events owed holds that many slots and the others get the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from export_service.store.base import JobStore, StoreUnavailable
from export_service.store.outbox import AttemptRecord, Delivery, DeliveryState, owed
from export_service.store.records import Job
from export_service.webhooks.destination import (
    BadDestination,
    Resolver,
    SystemResolver,
    connect_url,
    host_header,
    parse_url,
    resolve_checked,
)
from export_service.webhooks.settings import WebhookSettings
from export_service.webhooks.signing import signed_headers
from videojob import metrics

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

# What is kept of an answer's body (the job's deliveries show it).
MAX_RESPONSE_BYTES = 256
MAX_ERROR_LENGTH = 256
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
USER_AGENT = "videojob-webhooks/1"
# A claim outlives the attempt it is for by this much (the attempt's outcome is then written).
CLAIM_MARGIN_SECONDS = 5.0


@dataclass(frozen=True)
class Answer:
    """How one attempt went: the HTTP status (0: no answer), why there was none, the first bytes
    of the body, and how long the receiver asked to wait (Retry-After)."""

    status: int = 0
    error: str = ""
    excerpt: str = ""
    retry_after: float | None = None


class Deliverer:
    def __init__(
        self,
        store: JobStore,
        settings: WebhookSettings,
        owner: str,
        *,
        resolver: Resolver | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._owner = owner
        self._resolver = resolver or SystemResolver()
        self._due = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        # Made for the first attempt: httpx (and click and rich, which it imports) and the
        # system's CAs would add a sixth of a second of CPU to every start, and most replicas
        # never send a webhook. A CA file of the operator's is read now: a bad one stops the
        # start.
        self._tls = None if settings.ca is None else _tls_context(settings.ca)
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                trust_env=False,
                verify=self._tls or _tls_context(None),
                timeout=httpx.Timeout(self._settings.timeout),
                # One connection per attempt: a pooled one to an address may not be reused
                # under another name's SNI.
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._client

    def wake(self) -> None:
        """Looks for due deliveries now (not at the next poll)."""
        self._due.set()

    def observe(self, job: Job) -> None:
        """A store listener: a committed change that owed deliveries wakes the deliverer."""
        if owed(job):
            self.wake()

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="webhook-deliverer")
        self._loop_task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.critical(
                "the webhook deliverer stopped; other replicas (or this one's next start) "
                "send what it owes",
                exc_info=task.exception(),
            )

    async def stop(self) -> None:
        """Stops claiming and sending; deliveries in flight are abandoned (their claims lapse
        and they are sent again, by this replica's successor or another one)."""
        tasks = [*self._in_flight, *([self._loop_task] if self._loop_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            self._due.clear()
            free = self._settings.concurrency - len(self._in_flight)
            claimed: list[Delivery] = []
            if free > 0:
                now = datetime.now(UTC)
                hold = timedelta(seconds=self._settings.timeout + CLAIM_MARGIN_SECONDS)
                try:
                    claimed = await self._store.claim_deliveries(
                        self._owner,
                        at=now,
                        until=now + hold,
                        limit=free,
                        per_endpoint=self._settings.per_endpoint,
                    )
                except StoreUnavailable as error:
                    logger.debug("webhook deliveries cannot be claimed: %s", error)
            for delivery in claimed:
                task = asyncio.create_task(self._deliver(delivery), name=f"webhook {delivery.id}")
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if claimed and len(claimed) == free:
                continue  # more may be due: claim again once a slot frees
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self._settings.poll_interval)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("a webhook delivery crashed", exc_info=task.exception())
        self.wake()

    async def _deliver(self, delivery: Delivery) -> None:
        answer = await self._attempt(delivery)
        record = outcome(self._settings, delivery, answer, datetime.now(UTC))
        try:
            kept = await self._store.record_delivery_attempt(
                delivery.id, owner=self._owner, outcome=record
            )
        except StoreUnavailable as error:
            # The claim lapses and the delivery is sent again: at least once.
            logger.warning("webhook %s: its attempt cannot be recorded: %s", delivery.id, error)
            return
        if not kept:
            logger.info("webhook %s: another deliverer took it over meanwhile", delivery.id)
            return
        self._count(delivery, record, answer)

    def _count(self, delivery: Delivery, record: AttemptRecord, answer: Answer) -> None:
        if record.state is DeliveryState.DELIVERED:
            metrics.WEBHOOK_ATTEMPTS.labels("delivered").inc()
            waited = (record.at - delivery.created_at).total_seconds()
            metrics.WEBHOOK_DELIVERY_SECONDS.observe(max(0.0, waited))
            return
        if record.state is DeliveryState.PENDING:
            metrics.WEBHOOK_ATTEMPTS.labels("retry").inc()
            logger.info(
                "webhook %s (%s) attempt %d: %s; next at %s",
                delivery.id,
                delivery.type,
                delivery.attempts + 1,
                answer.error or f"HTTP {answer.status}",
                record.next_attempt_at,
                extra={"job_id": delivery.job_id},
            )
            return
        metrics.WEBHOOK_ATTEMPTS.labels("gone" if answer.status == 410 else "gave_up").inc()
        metrics.WEBHOOKS_GAVE_UP.inc()
        logger.warning(
            "webhook %s (%s) given up after %d attempts: %s",
            delivery.id,
            delivery.type,
            delivery.attempts + 1,
            answer.error or f"HTTP {answer.status}",
            extra={"job_id": delivery.job_id},
        )

    async def _attempt(self, delivery: Delivery) -> Answer:
        """One attempt, the name's lookup included, within ``timeout`` (so within the claim)."""
        import httpx

        secret = delivery.secret or self._settings.secret
        if not secret:
            return Answer(error="no secret: the operator's endpoint needs --webhook-secret")
        try:
            async with asyncio.timeout(self._settings.timeout):
                return await self._resolve_and_send(delivery, secret)
        except TimeoutError:
            return Answer(error=f"no answer within {self._settings.timeout:g} s")
        except httpx.TimeoutException:
            return Answer(error=f"no answer within {self._settings.timeout:g} s")
        except httpx.HTTPError as error:
            detail = str(error) or type(error).__name__
            return Answer(error=f"{type(error).__name__}: {detail}"[:MAX_ERROR_LENGTH])

    async def _resolve_and_send(self, delivery: Delivery, secret: str) -> Answer:
        try:
            destination = parse_url(delivery.url)
            address = await resolve_checked(
                destination, self._resolver, allow_private=self._settings.allow_private
            )
        except BadDestination as why:
            return Answer(error=f"destination refused: {why}"[:MAX_ERROR_LENGTH])
        body = delivery.payload.encode()
        headers = {
            **signed_headers(secret, delivery.id, int(time.time()), body),
            "content-type": CONTENT_TYPE,
            "host": host_header(destination),
            "user-agent": USER_AGENT,
        }
        extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else {}
        request = self._http().build_request(
            "POST",
            connect_url(destination, address),
            headers=headers,
            content=body,
            extensions=extensions,
        )
        return await self._send(request)

    async def _send(self, request: httpx.Request) -> Answer:
        response = await self._http().send(request, stream=True)
        try:
            excerpt = bytearray()
            async for chunk in response.aiter_raw():
                excerpt += chunk
                if len(excerpt) >= MAX_RESPONSE_BYTES:
                    break
        finally:
            await response.aclose()
        return Answer(
            status=response.status_code,
            excerpt=bytes(excerpt[:MAX_RESPONSE_BYTES]).decode("utf-8", "replace"),
            retry_after=retry_after(response.headers.get("retry-after")),
        )


def _tls_context(ca: Path | None) -> ssl.SSLContext:
    """The system's CAs, and ``ca`` too when given; names checked against the destination's
    name (sent as SNI), not the address connected to."""
    context = ssl.create_default_context()
    if ca is not None:
        context.load_verify_locations(cafile=ca)
    return context


def outcome(
    settings: WebhookSettings, delivery: Delivery, answer: Answer, at: datetime
) -> AttemptRecord:
    """What an attempt's answer means for the delivery: delivered (2xx), given up (410 Gone, or
    a next try past ``retry_for`` after the change), or due again after a backoff (at least
    what Retry-After asked)."""

    def ended(state: DeliveryState) -> AttemptRecord:
        return AttemptRecord(state, answer.status, answer.error, answer.excerpt, at, None)

    if 200 <= answer.status < 300:
        return ended(DeliveryState.DELIVERED)
    if answer.status == 410:
        return ended(DeliveryState.GAVE_UP)
    delay = backoff(settings, delivery.attempts)
    if answer.retry_after is not None:
        delay = max(delay, answer.retry_after)
    next_at = at + timedelta(seconds=delay)
    if next_at > delivery.created_at + timedelta(seconds=settings.retry_for):
        return ended(DeliveryState.GAVE_UP)
    return AttemptRecord(
        DeliveryState.PENDING, answer.status, answer.error, answer.excerpt, at, next_at
    )


def backoff(settings: WebhookSettings, attempts_before: int) -> float:
    """Exponential, capped, with jitter: half of the step fixed and half random, so that many
    receivers' retries do not come back in step."""
    step = min(settings.backoff_max, settings.backoff_first * 2.0 ** min(attempts_before, 60))
    return step / 2 + random.uniform(0, step / 2)


def retry_after(value: str | None) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or an HTTP date); None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())

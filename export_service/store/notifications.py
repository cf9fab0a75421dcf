"""Changes other processes make to a shared PostgreSQL database, as hints for this one's watchers.

Every committed change of a job sends ``NOTIFY videojob_job_changes, '<id>:<version>'`` in its
own transaction (a trigger, migration 11; ``'<id>:'`` for a deleted job). A ``ChangeFeed``
turns them into ``notify`` calls on the process's change hub:

- one dedicated listener connection (``LISTEN``; pooled connections are reset with
  ``UNLISTEN *`` on release, so it is not one of the pool's), named ``LISTENER_APPLICATION_NAME``
  in ``pg_stat_activity``;
- a notification is only a hint: it is delivered after commit, never replayed, and lost while
  the listener is away. So when the connection is lost, and again once it is back, every
  watcher re-reads (``wake_all``); the connection is pinged so that a silently dead one is
  noticed too, and re-opened with backoff;
- a batched safety poll: every ``poll_interval`` ONE query reads the versions of every job
  watched here and wakes the watchers of those that moved (a missed notification costs at most
  one interval), and list watchers re-read every ``list_poll_interval``.

With ``listen`` off (poll-only, e.g. behind PgBouncer's transaction pooling, where LISTEN does
not work) the poll alone carries the changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

import asyncpg

from export_service.store.base import StoreUnavailable
from export_service.store.postgres import (
    CONNECT_TIMEOUT_SECONDS,
    UNAVAILABLE_ERRORS,
    PostgresJobStore,
)
from videojob.backoff import Backoff, Retries

logger = logging.getLogger(__name__)

CHANNEL = "videojob_job_changes"
LISTENER_APPLICATION_NAME = "videojob-change-listener"
# A listener connection that does not answer a ping within this long is replaced.
PING_INTERVAL_SECONDS = 2.0
PING_TIMEOUT_SECONDS = 2.0
RECONNECT_BACKOFF = Backoff(first=0.1, cap=2.0)


class ChangeSink(Protocol):
    """What the feed wakes (export_service.changes.ChangeHub)."""

    def notify(self, job_id: str, version: int | None = None) -> None: ...

    def wake_all(self) -> None: ...

    def wake_list_watchers(self) -> None: ...

    def known_version(self, job_id: str) -> int: ...

    def watched_jobs(self) -> list[str]: ...


def parse_payload(payload: str) -> tuple[str, int | None] | None:
    """``'<id>:<version>'`` as (id, version); ``'<id>:'`` as (id, None); None if malformed."""
    job_id, separator, version = payload.rpartition(":")
    if not separator or not job_id:
        return None
    if not version:
        return job_id, None
    if not version.isdigit():
        return None
    return job_id, int(version)


class ChangeFeed:
    def __init__(
        self,
        store: PostgresJobStore,
        sink: ChangeSink,
        *,
        listen: bool = True,
        poll_interval: float = 0.5,
        list_poll_interval: float = 2.0,
    ) -> None:
        self._store = store
        self._sink = sink
        self._listen = listen
        self._poll_interval = poll_interval
        self._list_poll_interval = list_poll_interval
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._listening = asyncio.Event()
        self._first_attempt = asyncio.Event()
        # How many times the listener connection was (re-)established, and its server process.
        self.connections = 0
        self.listener_pid: int | None = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    async def wait_listening(self) -> None:
        await self._listening.wait()

    async def start(self) -> None:
        """Starts the poll and (with ``listen``) the listener; returns once the listener is
        connected or its first attempt failed (it keeps trying in the background)."""
        self._tasks.append(asyncio.create_task(self._poll_forever(), name="change-poll"))
        if self._listen:
            self._tasks.append(asyncio.create_task(self._listen_forever(), name="change-listener"))
            await self._first_attempt.wait()

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    # -- the listener ------------------------------------------------------------------------

    def _on_notification(self, connection: object, pid: int, channel: str, payload: object) -> None:
        parsed = parse_payload(str(payload))
        if parsed is None:
            logger.warning("ignoring a malformed change notification %r", payload)
            return
        self._sink.notify(*parsed)

    async def _connect(self) -> asyncpg.Connection[Any]:
        connection: asyncpg.Connection[Any] = await asyncpg.connect(
            self._store.url,
            timeout=CONNECT_TIMEOUT_SECONDS,
            server_settings={"application_name": LISTENER_APPLICATION_NAME},
        )
        return connection

    async def _listen_forever(self) -> None:
        retries = Retries(RECONNECT_BACKOFF)
        while not self._closing:
            try:
                connection = await self._connect()
            except (*UNAVAILABLE_ERRORS, asyncpg.PostgresError) as error:
                self._first_attempt.set()
                logger.debug("change listener cannot connect: %s", error)
                await retries.wait()
                continue
            try:
                await self._listen_on(connection)
                retries.reset()
            except (*UNAVAILABLE_ERRORS, asyncpg.PostgresError) as error:
                if not self._closing:
                    logger.warning("change listener connection lost (%s); reconnecting", error)
            finally:
                self._first_attempt.set()
                was_listening = self.listening
                self._listening.clear()
                connection.terminate()
                if was_listening and not self._closing:
                    # Notifications sent while nobody listens are gone: everyone re-reads.
                    self._sink.wake_all()

    async def _listen_on(self, connection: asyncpg.Connection[Any]) -> None:
        """LISTENs until the connection is lost (raises) or found dead by a ping."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        await connection.add_listener(CHANNEL, self._on_notification)
        self.connections += 1
        self.listener_pid = connection.get_server_pid()
        self._listening.set()
        self._first_attempt.set()
        # Whatever changed while the listener was away (or before it first came up).
        self._sink.wake_all()
        logger.info("listening for job changes (connection %d)", self.connections)
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), PING_INTERVAL_SECONDS)
                break
            await connection.fetchval("SELECT 1", timeout=PING_TIMEOUT_SECONDS)
        if not self._closing:
            logger.warning("change listener connection closed; reconnecting")

    # -- the batched safety poll ------------------------------------------------------------

    async def _poll_forever(self) -> None:
        next_list_poll = time.monotonic() + self._list_poll_interval
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                await self.poll_once()
            except StoreUnavailable as error:
                logger.debug("change poll: %s", error)
            except asyncpg.PostgresError as error:
                logger.warning("change poll failed: %s", error)
            if time.monotonic() >= next_list_poll:
                next_list_poll = time.monotonic() + self._list_poll_interval
                self._sink.wake_list_watchers()

    async def poll_once(self) -> None:
        """One query for the versions of every watched job; wakes the watchers of each job
        whose version moved past what this process knows (or that is gone)."""
        watched = self._sink.watched_jobs()
        if not watched:
            return
        versions = await self._store.job_versions(watched)
        for job_id in watched:
            version = versions.get(job_id)
            if version is None:
                self._sink.notify(job_id)
            elif version > self._sink.known_version(job_id):
                self._sink.notify(job_id, version)

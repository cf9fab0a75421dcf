"""One shared WatchExport stream per job id, fanned out to every SSE client of that job.

The first subscriber of a job starts the upstream stream, the last one leaving stops it. Each
VideoJob that arrives is encoded once, as the finished SSE frame, and offered to every
subscription. A subscription buffers one frame: a newer frame replaces an older one the client
has not taken yet (a slow client skips progress, never blocks the others), and the terminal
frame is the last one a watch ever offers, so it is never replaced.

When the upstream stream breaks or ends without a terminal state (an export service restart),
the watch re-opens it with ``after_version`` = the last version it saw, retrying with backoff
for at most ``retry_seconds``; after that, or on an error that retrying cannot fix, every
subscription ends so the client reconnects with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from gateway.input_names import InputNames, named_job_json
from videojob import metrics, stamps
from videojob.backoff import Backoff, Retries, job_watch_resumable
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.job_json import is_terminal, sse_event_name

logger = logging.getLogger(__name__)

_RETRY_BACKOFF = Backoff(first=0.1, cap=1.0)


@dataclass(frozen=True, slots=True)
class Frame:
    """One job version as the bytes of its SSE event."""

    version: int
    data: bytes
    terminal: bool


def job_frame(job: export_pb2.VideoJob, input_names: dict[str, str] | None = None) -> Frame:
    data = json.dumps(named_job_json(job, input_names or {}), separators=(",", ":"))
    text = f"event: {sse_event_name(job)}\nid: {job.version}\ndata: {data}\n\n"
    return Frame(job.version, text.encode(), is_terminal(job))


@dataclass(frozen=True, slots=True)
class Ended:
    """What ``Subscription.next`` returns once the watch ended without a terminal frame:
    the upstream stream could not be kept, or the gateway is shutting down."""

    shutting_down: bool = False


ENDED = Ended()
SHUT_DOWN = Ended(shutting_down=True)


class Subscription:
    """One client's place in a watch: the newest frame it has not taken yet, and when it
    is due a keep-alive (one timer per idle period, not one per frame)."""

    __slots__ = (
        "_ended",
        "_idle_seconds",
        "_keep_alive_due",
        "_last_sent",
        "_pending",
        "_seen",
        "_timer",
        "_waiter",
    )

    def __init__(self, after_version: int, idle_seconds: float) -> None:
        self._seen = after_version
        self._idle_seconds = idle_seconds
        self._pending: Frame | None = None
        self._ended: Ended | None = None
        self._keep_alive_due = False
        self._last_sent = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None

    def offer(self, frame: Frame) -> None:
        if frame.version <= self._seen or self._ended is not None:
            return
        self._seen = frame.version
        if self._pending is not None:
            metrics.SSE_COALESCED.labels("job").inc()
        self._pending = frame
        self._wake()

    def end(self, how: Ended = ENDED) -> None:
        if self._ended is None:
            self._ended = how
        self._wake()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        due = self._last_sent + self._idle_seconds
        if loop.time() >= due:
            self._keep_alive_due = True
            self._wake()
        else:
            self._timer = loop.call_at(due, self._on_timer)

    async def next(self) -> Frame | Ended | None:
        """The next frame; ``None`` when ``idle_seconds`` passed since the last thing it
        returned; an ``Ended`` once the watch has ended and every offered frame was taken."""
        loop = asyncio.get_running_loop()
        if not self._last_sent:
            self._last_sent = loop.time()
        while True:
            frame = self._pending
            if frame is not None:
                self._pending = None
                self._last_sent = loop.time()
                return frame
            if self._ended is not None:
                return self._ended
            if self._keep_alive_due:
                self._keep_alive_due = False
                self._last_sent = loop.time()
                return None
            if self._timer is None:
                self._timer = loop.call_at(self._last_sent + self._idle_seconds, self._on_timer)
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None


class JobWatch:
    """The upstream WatchExport of one job and its subscriptions."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.subscriptions: set[Subscription] = set()
        self.latest: Frame | None = None
        self.task: asyncio.Task[None] | None = None

    def add(self, subscription: Subscription) -> None:
        self.subscriptions.add(subscription)
        if self.latest is not None:
            subscription.offer(self.latest)
            if self.latest.terminal:
                subscription.end()

    def publish(self, frame: Frame) -> None:
        self.latest = frame
        for subscription in self.subscriptions:
            subscription.offer(frame)
            if frame.terminal:
                subscription.end()

    def end_all(self, how: Ended = ENDED) -> None:
        for subscription in self.subscriptions:
            subscription.end(how)


class JobWatchHub:
    """The gateway's shared watches, by job id (one event loop, no locks needed)."""

    def __init__(
        self,
        stub: export_pb2_grpc.ExportServiceAsyncStub,
        *,
        retry_seconds: float,
        input_names: InputNames | None = None,
    ) -> None:
        self._stub = stub
        self._retry_seconds = retry_seconds
        self._input_names = input_names or InputNames(None)
        self._watches: dict[str, JobWatch] = {}
        self._closed = False

    def cached(self, job_id: str) -> Frame | None:
        """The newest frame a running watch of this job has seen, if any."""
        watch = self._watches.get(job_id)
        return watch.latest if watch is not None else None

    def watched_jobs(self) -> int:
        return len(self._watches)

    @contextlib.contextmanager
    def subscribe(
        self, job_id: str, after_version: int, idle_seconds: float
    ) -> Iterator[Subscription]:
        """A subscription to the job's frames newer than ``after_version``: first the newest
        the watch has (or will get from upstream first), then each change; ``None`` from
        ``next`` after ``idle_seconds`` without one."""
        subscription = Subscription(after_version, idle_seconds)
        if self._closed:
            subscription.end(SHUT_DOWN)
            yield subscription
            return
        watch = self._watches.get(job_id)
        if watch is None:
            watch = JobWatch(job_id)
            self._watches[job_id] = watch
            watch.task = asyncio.create_task(self._pump(watch), name=f"watch-{job_id}")
            upstream = metrics.GATEWAY_UPSTREAM_WATCHES.labels("job")
            upstream.inc()
            watch.task.add_done_callback(lambda _: upstream.dec())
        watch.add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()
            watch.subscriptions.discard(subscription)
            if not watch.subscriptions:
                self._forget(watch)
                if watch.task is not None:
                    watch.task.cancel()

    async def close(self) -> None:
        """Ends every subscription at once (as shutting down) and stops every upstream
        stream; later subscriptions end as soon as they start. Safe to call again."""
        self._closed = True
        watches = list(self._watches.values())
        self._watches.clear()
        tasks = [watch.task for watch in watches if watch.task is not None]
        for watch in watches:
            watch.end_all(SHUT_DOWN)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, watch: JobWatch) -> None:
        if self._watches.get(watch.job_id) is watch:
            del self._watches[watch.job_id]

    async def _pump(self, watch: JobWatch) -> None:
        """Reads upstream until the terminal state, re-opening the stream when it breaks."""
        after_version = 0
        retries = Retries(_RETRY_BACKOFF, budget=self._retry_seconds)
        terminal = False
        try:
            while True:
                call = self._stub.WatchExport(
                    export_pb2.WatchExportRequest(id=watch.job_id, after_version=after_version)
                )
                try:
                    async for job in call:
                        retries.reset()
                        if job.version <= after_version:
                            continue
                        after_version = job.version
                        stamps.stamp("gateway.received", watch.job_id, job.version)
                        (names,) = await self._input_names.of_jobs([job])
                        frame = job_frame(job, names)
                        watch.publish(frame)
                        if frame.terminal:
                            terminal = True
                            return
                    reason = "the export service ended the stream"
                except grpc.aio.AioRpcError as error:
                    if not job_watch_resumable(error.code()):
                        logger.info(
                            "watch of %s: %s %s", watch.job_id, error.code().name, error.details()
                        )
                        return
                    reason = f"{error.code().name} {error.details()}"
                finally:
                    call.cancel()
                logger.info("watch of %s broke (%s); re-opening", watch.job_id, reason)
                if not await retries.wait():
                    logger.warning(
                        "watch of %s: giving up after %.1f s (%s); its clients will reconnect",
                        watch.job_id,
                        self._retry_seconds,
                        reason,
                    )
                    return
        finally:
            if not terminal:
                # Subscribers that join from now on start a fresh watch.
                self._forget(watch)
                watch.end_all()

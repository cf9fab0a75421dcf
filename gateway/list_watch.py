"""One shared WatchExports stream per view (status filter, page size, extra job ids), fanned out
to every ``GET /api/events`` client showing that view.

The first subscriber of a view starts the upstream stream, the last one leaving stops it; a
client joining a running watch first gets the newest state the watch holds of each job of the
view, then the changes. Each VideoJob that arrives is encoded once, as the finished SSE frame. A
subscription buffers one frame per job: a newer frame of a job replaces the older one the client
has not taken yet (a slow client skips progress, never a job, never blocks the others), and a
job's terminal frame is the last one the watch offers of it, so it is never replaced. A frame
of the version held replaces it only when what the export service derived on reading the job
changed (``awaitingOwner``: nothing was written, what the job shows did change).

When the upstream stream breaks or ends (an export service restart) the watch re-opens it; the
export service then sends the current state again and only newer versions are passed on. It
retries with backoff for at most ``retry_seconds``; after that, or on an error that retrying
cannot fix, every subscription ends, and the client reconnects (getting the current state
first, so nothing is missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc

from gateway.input_names import InputNames, named_job_json
from gateway.watch_hub import ENDED, SHUT_DOWN, Ended
from videojob import metrics
from videojob.backoff import Backoff, Retries, list_watch_resumable
from videojob.errors import ResourceExhausted
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.job_json import is_terminal

logger = logging.getLogger(__name__)

EVENT_NAME = "job"
_RETRY_BACKOFF = Backoff(first=0.1, cap=1.0)


@dataclass(frozen=True, slots=True)
class View:
    """What a page shows: the newest ``limit`` jobs (of ``status``, 0 for all) and ``ids``."""

    status: int
    limit: int
    ids: tuple[str, ...]

    @classmethod
    def of(cls, status: int, limit: int, ids: Iterable[str]) -> View:
        return cls(status, limit, tuple(sorted(set(ids))))

    def request(self) -> export_pb2.WatchExportsRequest:
        return export_pb2.WatchExportsRequest(
            ids=self.ids,
            page_size=self.limit,
            status=export_pb2.JobStatus.ValueType(self.status),
        )


@dataclass(frozen=True, slots=True)
class JobFrame:
    """One job version as the bytes of its SSE event."""

    job_id: str
    version: int
    created_us: int
    terminal: bool
    data: bytes
    # Derived as the job was read (no replica drives it now): not part of its version.
    awaiting_owner: bool = False

    def replaces(self, held: JobFrame | None) -> bool:
        """Newer than ``held``: a later version, or the same one showing another derived
        state."""
        return (
            held is None
            or self.version > held.version
            or (self.version == held.version and self.awaiting_owner != held.awaiting_owner)
        )


def job_frame(job: export_pb2.VideoJob, input_names: dict[str, str] | None = None) -> JobFrame:
    data = json.dumps(named_job_json(job, input_names or {}), separators=(",", ":"))
    created_us = job.created_at.seconds * 1_000_000 + job.created_at.nanos // 1000
    return JobFrame(
        job.id,
        job.version,
        created_us,
        is_terminal(job),
        f"event: {EVENT_NAME}\ndata: {data}\n\n".encode(),
        job.awaiting_owner,
    )


class ListSubscription:
    """One client's place in a view's watch: the newest untaken frame of each job."""

    __slots__ = ("_ended", "_pending", "_wake")

    def __init__(self) -> None:
        self._pending: dict[str, JobFrame] = {}
        self._ended: Ended | None = None
        self._wake = asyncio.Event()

    def offer(self, frame: JobFrame) -> None:
        if self._ended is not None:
            return
        held = self._pending.get(frame.job_id)
        if held is not None and (held.terminal or not frame.replaces(held)):
            return
        if held is not None:
            metrics.SSE_COALESCED.labels("list").inc()
        self._pending[frame.job_id] = frame
        self._wake.set()

    def end(self, ended: Ended) -> None:
        if self._ended is None:
            self._ended = ended
            self._wake.set()

    async def next(self, idle_seconds: float) -> list[JobFrame] | Ended | None:
        """Every frame waiting (oldest first), else the end, else None after ``idle_seconds``
        without either (time for a keep-alive)."""
        if not self._pending and self._ended is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), idle_seconds)
        self._wake.clear()
        if self._pending:
            frames = list(self._pending.values())
            self._pending.clear()
            return frames
        return self._ended


@dataclass(eq=False)
class ListWatch:
    view: View
    subscriptions: set[ListSubscription] = field(default_factory=set)
    latest: dict[str, JobFrame] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def current(self) -> list[JobFrame]:
        """The newest frame of each job the view shows now: its ids, its newest ``limit``
        jobs, and every job not finished yet (a status change may have moved it out)."""
        newest = sorted(self.latest.values(), key=lambda f: (f.created_us, f.job_id), reverse=True)
        wanted = set(self.view.ids)
        return [
            frame
            for index, frame in enumerate(newest)
            if index < self.view.limit or frame.job_id in wanted or not frame.terminal
        ]

    def publish(self, frame: JobFrame) -> None:
        if not frame.replaces(self.latest.get(frame.job_id)):
            return
        self.latest[frame.job_id] = frame
        for subscription in self.subscriptions:
            subscription.offer(frame)
        if len(self.latest) > 2 * (self.view.limit + len(self.view.ids)) + 100:
            self.latest = {kept.job_id: kept for kept in self.current()}

    def add(self, subscription: ListSubscription) -> None:
        for frame in reversed(self.current()):
            subscription.offer(frame)
        self.subscriptions.add(subscription)

    def end_all(self, ended: Ended = ENDED) -> None:
        for subscription in self.subscriptions:
            subscription.end(ended)


class ListWatchHub:
    """The views watched now, each with its one upstream WatchExports stream; at most
    ``max_views`` at once (a new view beyond that is ResourceExhausted)."""

    def __init__(
        self,
        stub: export_pb2_grpc.ExportServiceAsyncStub,
        *,
        retry_seconds: float,
        max_views: int,
        input_names: InputNames | None = None,
    ) -> None:
        self._stub = stub
        self._input_names = input_names or InputNames(None)
        self._retry_seconds = retry_seconds
        self._max_views = max_views
        self._watches: dict[View, ListWatch] = {}
        self._closed = False

    def watched_views(self) -> int:
        return len(self._watches)

    def check_room(self, view: View) -> None:
        """ResourceExhausted when ``view`` would be one view too many."""
        if view not in self._watches and len(self._watches) >= self._max_views:
            raise ResourceExhausted(
                f"this gateway already follows {self._max_views} different views; try again later"
            )

    @contextlib.contextmanager
    def subscribe(self, view: View) -> Iterator[ListSubscription]:
        subscription = ListSubscription()
        if self._closed:
            subscription.end(SHUT_DOWN)
            yield subscription
            return
        watch = self._watches.get(view)
        if watch is None:
            self.check_room(view)
            watch = ListWatch(view)
            self._watches[view] = watch
            watch.task = asyncio.create_task(self._pump(watch), name="list-watch")
            upstream = metrics.GATEWAY_UPSTREAM_WATCHES.labels("list")
            upstream.inc()
            watch.task.add_done_callback(lambda _: upstream.dec())
        watch.add(subscription)
        try:
            yield subscription
        finally:
            watch.subscriptions.discard(subscription)
            if not watch.subscriptions:
                self._forget(watch)
                if watch.task is not None:
                    watch.task.cancel()

    async def close(self) -> None:
        """Ends every subscription at once (as shutting down) and stops every upstream stream."""
        self._closed = True
        watches = list(self._watches.values())
        self._watches.clear()
        tasks = [watch.task for watch in watches if watch.task is not None]
        for watch in watches:
            watch.end_all(SHUT_DOWN)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget(self, watch: ListWatch) -> None:
        if self._watches.get(watch.view) is watch:
            del self._watches[watch.view]

    async def _pump(self, watch: ListWatch) -> None:
        """Reads upstream for as long as anyone watches, re-opening the stream when it breaks."""
        retries = Retries(_RETRY_BACKOFF, budget=self._retry_seconds)
        try:
            while True:
                call = self._stub.WatchExports(watch.view.request())
                try:
                    async for job in call:
                        retries.reset()
                        (names,) = await self._input_names.of_jobs([job])
                        watch.publish(job_frame(job, names))
                    reason = "the export service ended the stream"
                except grpc.aio.AioRpcError as error:
                    if not list_watch_resumable(error.code()):
                        logger.warning(
                            "list watch %s: %s %s", watch.view, error.code().name, error.details()
                        )
                        return
                    reason = f"{error.code().name} {error.details()}"
                finally:
                    call.cancel()
                logger.info("list watch broke (%s); re-opening", reason)
                if not await retries.wait():
                    logger.warning(
                        "list watch: giving up after %.1f s (%s); its clients will reconnect",
                        self._retry_seconds,
                        reason,
                    )
                    return
        finally:
            self._forget(watch)
            watch.end_all()

"""One render's event log and its watchers: strictly increasing ``seq``, percent that never
decreases, 100 only in ``completed``, nothing after the terminal event, bounded memory."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from google.protobuf.timestamp_pb2 import Timestamp

from videojob import metrics
from videojob.limits import MAX_RUNNING_PROGRESS
from videojob.render.v1 import render_pb2, spec_pb2

TERMINAL_KINDS = frozenset({"completed", "failed", "cancelled"})
MAX_PROGRESS_PERCENT = MAX_RUNNING_PROGRESS
# An ETA is an estimate: sent to a tenth of a second (every view shows what is sent here).
ETA_DECIMALS = 1

_STATE_FOR_TERMINAL = {
    "completed": render_pb2.RENDER_STATE_COMPLETED,
    "failed": render_pb2.RENDER_STATE_FAILED,
    "cancelled": render_pb2.RENDER_STATE_CANCELLED,
}


def is_terminal(event: render_pb2.RenderEvent) -> bool:
    return event.WhichOneof("event") in TERMINAL_KINDS


class WatcherBuffer:
    """Events waiting for one watcher. When the watcher falls behind, older progress events are
    dropped in favour of the newest; a terminal event is never dropped."""

    def __init__(self, limit: int) -> None:
        self._limit = max(limit, 1)
        self._pending: deque[render_pb2.RenderEvent] = deque()
        self._wakeup = asyncio.Event()

    def push(self, event: render_pb2.RenderEvent) -> None:
        if not is_terminal(event) and len(self._pending) >= self._limit:
            kept = deque(e for e in self._pending if is_terminal(e))
            metrics.RENDER_EVENTS_DROPPED.inc(len(self._pending) - len(kept))
            self._pending = kept
        self._pending.append(event)
        self._wakeup.set()

    async def next(self) -> render_pb2.RenderEvent:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._pending.popleft()


class RenderRecord:
    """A render as the service knows it. Every event is written through ``_append``."""

    def __init__(
        self,
        render_id: str,
        spec: spec_pb2.RenderSpec,
        *,
        max_events: int,
        max_pending_per_watcher: int,
        on_finished: Callable[[RenderRecord], None],
    ) -> None:
        self.render_id = render_id
        self.spec = spec
        self.state: render_pb2.RenderState.ValueType = render_pb2.RENDER_STATE_QUEUED
        self.last_event_at = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.stop_task: asyncio.Task[None] | None = None
        self._events: deque[render_pb2.RenderEvent] = deque()
        self._max_events = max(max_events, 2)
        self._max_pending = max_pending_per_watcher
        self._watchers: set[WatcherBuffer] = set()
        self._seq = 0
        self._percent = 0.0
        self._last_progress = render_pb2.Progress(stage="Queued")
        self._on_finished = on_finished
        self._terminal: render_pb2.RenderEvent | None = None

    @property
    def finished(self) -> bool:
        return self._terminal is not None

    @property
    def last_event(self) -> render_pb2.RenderEvent | None:
        return self._events[-1] if self._events else None

    @property
    def stage(self) -> str:
        return self._last_progress.stage

    @property
    def percent(self) -> float:
        return self._percent

    def info(self) -> render_pb2.RenderInfo:
        info = render_pb2.RenderInfo(render_id=self.render_id, state=self.state)
        if self.last_event is not None:
            info.last_event.CopyFrom(self.last_event)
        return info

    def mark_running(self) -> None:
        if not self.finished:
            self.state = render_pb2.RENDER_STATE_RUNNING

    def progress(
        self,
        stage: str,
        percent: float,
        *,
        frame: int = 0,
        fps: float = 0.0,
        speed: float = 0.0,
        out_time_seconds: float = 0.0,
        eta_seconds: float = 0.0,
        stage_progress: float = 0.0,
    ) -> None:
        # The render's own events never go down nor reach 100 before completed; for the job's
        # record this is an early refusal that only saves work, the progress rule's one
        # guarantee being the export service's store (export_service/store/transitions.py).
        self._percent = max(self._percent, min(round(percent, 2), MAX_PROGRESS_PERCENT))
        progress = render_pb2.Progress(
            percent=self._percent,
            stage=stage,
            frame=frame,
            fps=fps,
            speed=speed,
            out_time_seconds=out_time_seconds,
            eta_seconds=round(eta_seconds, ETA_DECIMALS),
            stage_progress=min(max(round(stage_progress, 2), 0.0), 100.0),
        )
        self._last_progress = progress
        self._append(render_pb2.RenderEvent(progress=progress))

    def heartbeat(self) -> None:
        progress = render_pb2.Progress()
        progress.CopyFrom(self._last_progress)
        progress.heartbeat = True
        self._append(render_pb2.RenderEvent(progress=progress))

    def complete(
        self,
        output_path: str,
        size_bytes: int,
        duration_seconds: float,
        *,
        sha256: str = "",
        store_checksum: str = "",
    ) -> None:
        completed = render_pb2.Completed(
            output_path=output_path,
            size_bytes=size_bytes,
            duration_seconds=duration_seconds,
            sha256=sha256,
            store_checksum=store_checksum,
        )
        self._append(render_pb2.RenderEvent(completed=completed))

    def fail(
        self,
        code: str,
        message: str,
        log_tail: str = "",
        *,
        field: str = "",
        never_started: bool = False,
    ) -> None:
        failed = render_pb2.Failed(
            code=code, message=message, log_tail=log_tail, field=field, never_started=never_started
        )
        self._append(render_pb2.RenderEvent(failed=failed))

    def cancel(self, reason: str) -> None:
        self._append(render_pb2.RenderEvent(cancelled=render_pb2.Cancelled(reason=reason)))

    def _append(self, event: render_pb2.RenderEvent) -> None:
        if self._terminal is not None:
            return
        self._seq += 1
        event.render_id = self.render_id
        event.seq = self._seq
        stamp = Timestamp()
        stamp.GetCurrentTime()
        event.time.CopyFrom(stamp)
        self._events.append(event)
        if len(self._events) > self._max_events:
            self._events.popleft()  # the terminal event is always the newest, never this one
        self.last_event_at = time.monotonic()
        kind = event.WhichOneof("event")
        metrics.RENDER_EVENTS.labels(kind or "unknown").inc()
        if kind in TERMINAL_KINDS:
            code = event.failed.code if kind == "failed" else ""
            metrics.RENDERS_FINISHED.labels(kind, metrics.failure_code_label(code)).inc()
            self._terminal = event
            self.state = _STATE_FOR_TERMINAL[kind]
        for watcher in self._watchers:
            watcher.push(event)
        if self._terminal is not None:
            self._on_finished(self)

    async def watch(self, after_seq: int) -> AsyncIterator[render_pb2.RenderEvent]:
        """Retained events after ``after_seq`` (from the oldest retained when older), then live
        events until the terminal one. A finished render always yields its terminal event."""
        replay = [event for event in self._events if event.seq > after_seq]
        if self._terminal is not None:
            for event in replay or [self._terminal]:
                yield event
            return
        watcher = WatcherBuffer(self._max_pending)
        self._watchers.add(watcher)
        try:
            for event in replay:
                yield event
            while True:
                event = await watcher.next()
                yield event
                if is_terminal(event):
                    return
        finally:
            self._watchers.discard(watcher)

"""In-process change notifications: after each committed change the store calls ``publish``,
which wakes the WatchExport streams of that job. Watchers then re-read the store, so every view
reads the same record and a slow watcher merely skips intermediate versions."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Iterator

from export_service.store import Job


class ChangeHub:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        # WatchExports streams: woken by a change of any job.
        self._any_waiters: set[asyncio.Event] = set()
        self.closed = False

    def close(self) -> None:
        """On shutdown: wakes every watcher; they see ``closed`` and end their streams."""
        self.closed = True
        for waiters in (*self._waiters.values(), self._any_waiters):
            for event in waiters:
                event.set()

    def publish(self, job: Job) -> None:
        for event in self._waiters.get(job.id, ()):
            event.set()
        for event in self._any_waiters:
            event.set()

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set after every change of ``job_id``; clear it before re-reading."""
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters[job_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[job_id]

    @contextlib.contextmanager
    def subscribe_all(self) -> Iterator[asyncio.Event]:
        """An event set after every change of any job; clear it before re-reading."""
        event = asyncio.Event()
        self._any_waiters.add(event)
        try:
            yield event
        finally:
            self._any_waiters.discard(event)

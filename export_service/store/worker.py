"""One thread that runs a store's database work in priority order.

The thread owns the connection, so operations never interleave; a queue ordered by priority
(then arrival) lets a terminal state or a read overtake a backlog of progress writes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import itertools
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class Priority(enum.IntEnum):
    TERMINAL = 0  # complete, fail, cancel: what every watcher is waiting for
    NORMAL = 1  # reads, creates, attempts, bookkeeping
    PROGRESS = 2  # latest-wins anyway: may wait
    CLOSE = 3  # after everything already queued


@dataclass(order=True)
class _Item:
    priority: int
    order: int
    fn: Callable[[], Any] | None = field(compare=False)
    future: concurrent.futures.Future[Any] = field(compare=False)


class PriorityWorker:
    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[_Item] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[[], T], priority: Priority = Priority.NORMAL) -> T:
        if self._closed:
            raise RuntimeError("store is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Item(priority, next(self._order), fn, future))
        return await asyncio.wrap_future(future)

    async def close(self) -> None:
        """Runs what is queued, then stops the thread."""
        if self._closed:
            return
        self._closed = True
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.put(_Item(Priority.CLOSE, next(self._order), None, done))
        await asyncio.wrap_future(done)
        await asyncio.to_thread(self._thread.join)

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item.fn is None:
                item.future.set_result(None)
                return
            if not item.future.set_running_or_notify_cancel():
                continue  # the caller gave up before it started
            try:
                result = item.fn()
            except BaseException as error:  # noqa: BLE001 - the caller re-raises it
                item.future.set_exception(error)
            else:
                item.future.set_result(result)

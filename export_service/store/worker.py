"""One thread that runs a store's database work in priority order.

The thread owns the connection, so operations never interleave; a queue ordered by priority
(then arrival) lets a terminal state or a read overtake a backlog of progress writes.

Group commit: work submitted with a ``joins`` tag may share one transaction with the joining
work of the same priority queued behind it (``run_group``, the store's: one commit, so one
fsync, for many writes). The thread takes the first item in priority order, then the joining
items of its priority that follow it, up to MAX_GROUP, and hands them to ``run_group`` together;
the first item that does not join goes back to its place in the queue. Under load the groups
grow by themselves; a lone write waits for nothing, and no write waits for a less urgent one."""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import itertools
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# At most this many operations share one transaction.
MAX_GROUP = 64


class Priority(enum.IntEnum):
    TERMINAL = 0  # complete, fail, cancel: what every watcher is waiting for
    NORMAL = 1  # reads, creates, attempts, bookkeeping
    PROGRESS = 2  # latest-wins anyway: may wait
    CLOSE = 3  # after everything already queued


# What ran: (True, its result) or (False, what it raised).
Outcome = tuple[bool, Any]
# Runs (fn, joins tag) pairs in one transaction: one outcome each, in order, none of them
# answered before that transaction committed.
GroupRunner = Callable[[Sequence[tuple[Callable[[], Any], Any]]], list[Outcome]]


@dataclass(order=True)
class _Item:
    priority: int
    order: int
    fn: Callable[[], Any] | None = field(compare=False)
    future: concurrent.futures.Future[Any] = field(compare=False)
    joins: Any = field(default=None, compare=False)


class PriorityWorker:
    def __init__(self, name: str, run_group: GroupRunner | None = None) -> None:
        self._queue: queue.PriorityQueue[_Item] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = False
        self._run_group = run_group
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def waiting(self) -> int:
        """How many operations wait for the thread (not counting the one it runs)."""
        return self._queue.qsize()

    async def run(
        self, fn: Callable[[], T], priority: Priority = Priority.NORMAL, *, joins: Any = None
    ) -> T:
        """``fn()`` on the thread. ``joins`` (not None): ``fn`` is work that may share a
        transaction with other joining work, run through ``run_group`` with this tag."""
        if self._closed:
            raise RuntimeError("store is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Item(priority, next(self._order), fn, future, joins))
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
            if item.joins is None or self._run_group is None:
                self._run_alone(item)
            else:
                self._run_together(self._group(item))

    def _group(self, first: _Item) -> list[_Item]:
        group = [first]
        while len(group) < MAX_GROUP:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item.fn is None or item.joins is None or item.priority != first.priority:
                self._queue.put(item)  # back to its place: it runs next
                break
            group.append(item)
        return group

    def _run_alone(self, item: _Item) -> None:
        if not item.future.set_running_or_notify_cancel():
            return  # the caller gave up before it started
        assert item.fn is not None
        try:
            result = item.fn()
        except BaseException as error:  # noqa: BLE001 - the caller re-raises it
            item.future.set_exception(error)
        else:
            item.future.set_result(result)

    def _run_together(self, group: list[_Item]) -> None:
        live = [item for item in group if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        assert self._run_group is not None
        try:
            outcomes = self._run_group([(item.fn, item.joins) for item in live if item.fn])
        except BaseException as error:  # noqa: BLE001 - every caller re-raises it
            outcomes = [(False, error)] * len(live)
        for item, (ok, value) in zip(live, outcomes, strict=True):
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)

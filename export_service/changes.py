"""Change notifications: what wakes the WatchExport and WatchExports streams of this process.

Three sources feed the hub, and each wakes watchers, who then take the newest committed row
(so every view shows a record the store holds, and a slow watcher merely skips intermediate
versions):

- ``publish(job)``: a change this process committed (the store calls it once the commit has
  returned the row): its watchers are handed that row (``committed``), with no read again;
- ``notify(job_id, version)``: a hint that another process changed a job (on PostgreSQL, a
  LISTEN/NOTIFY listener and a batched safety poll, export_service.store.notifications): its
  watchers re-read the store, since this process has no row of that version;
- ``wake_all()``: the hints may have been lost (the listener's connection dropped, or came
  back): every watcher re-reads.

The hub remembers the newest version it has heard of per job (bounded), so the echo of a change
this process published, or a poll that finds nothing new, wakes nobody.

List watchers (WatchExports) are told which jobs changed (``ListChanges``), with the row when
this process committed it, so they read only those jobs; ``wake_all`` and the periodic
``wake_list_watchers`` make them read their whole view again.

Without a batched poller (SQLite: one process per database file) each watcher also re-reads on
its own every ``watch_poll_interval``; with one (``polled`` set), watchers wait for the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, defaultdict
from collections.abc import Iterator

from export_service.store import Job

# Versions remembered for jobs nobody watches: enough to swallow the echo of recent changes.
KNOWN_VERSIONS_KEPT = 4096
_UNKNOWN_VERSION = 1 << 62


class ListChanges:
    """What changed since a list watcher last looked: per job, the newest version heard of and
    the newest row this process committed (usable when it is that version), or everything (the
    hints may have been lost, or it is the first look)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.everything = True
        self._heard: dict[str, int] = {}
        self._rows: dict[str, Job] = {}
        self.event.set()

    def note(self, job_id: str, version: int | None, row: Job | None = None) -> None:
        heard = _UNKNOWN_VERSION if version is None else version
        self._heard[job_id] = max(self._heard.get(job_id, 0), heard)
        kept = self._rows.get(job_id)
        if row is not None and (kept is None or kept.version < row.version):
            self._rows[job_id] = row
        self.event.set()

    def note_everything(self) -> None:
        self.everything = True
        self.event.set()

    def take(self) -> tuple[bool, dict[str, Job | None]]:
        """(everything, {changed job: its row, or None when it must be read}); starts afresh."""
        changed = {
            job_id: row if (row := self._rows.get(job_id)) and row.version >= heard else None
            for job_id, heard in self._heard.items()
        }
        everything = self.everything
        self.everything = False
        self._heard, self._rows = {}, {}
        self.event.clear()
        return everything, changed


class ChangeHub:
    def __init__(self) -> None:
        self._waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        # WatchExports streams: told of a change of any job.
        self._list_changes: set[ListChanges] = set()
        self._known: OrderedDict[str, int] = OrderedDict()
        # The newest row this process committed, for each job that has watchers.
        self._committed: dict[str, Job] = {}
        self.closed = False
        # Set when a batched poll covers every watcher (see the module docstring).
        self.polled = False

    def close(self) -> None:
        """On shutdown: wakes every watcher; they see ``closed`` and end their streams."""
        self.closed = True
        self.wake_all()

    def publish(self, job: Job) -> None:
        """A change this process committed: ``job`` is the row its commit returned."""
        if job.id in self._waiters:
            kept = self._committed.get(job.id)
            if kept is None or kept.version < job.version:
                self._committed[job.id] = job
        self._wake(job.id, job.version, job)

    def committed(self, job_id: str, newer_than: int) -> Job | None:
        """The newest row this process committed of a watched job, when it is newer than
        ``newer_than`` and no later version of the job was heard of (from another process);
        else None, and the watcher reads the store."""
        job = self._committed.get(job_id)
        if job is None or job.version <= newer_than or job.version < self._known.get(job_id, 0):
            return None
        return job

    def notify(self, job_id: str, version: int | None = None) -> None:
        """``job_id`` changed (to ``version``, when known): wakes its watchers and the list
        watchers, unless the hub already heard of that version."""
        if version is None:
            self._committed.pop(job_id, None)  # of an unknown version: it may be stale
        self._wake(job_id, version, None)

    def _wake(self, job_id: str, version: int | None, row: Job | None) -> None:
        if version is not None:
            if version <= self._known.get(job_id, 0):
                return
            self.saw(job_id, version)
        for event in self._waiters.get(job_id, ()):
            event.set()
        for changes in self._list_changes:
            changes.note(job_id, version, row)

    def wake_all(self) -> None:
        """Every watcher re-reads (change hints may have been lost)."""
        self._committed.clear()
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()
        self.wake_list_watchers()

    def wake_list_watchers(self) -> None:
        """List watchers read their whole view again."""
        for changes in self._list_changes:
            changes.note_everything()

    def saw(self, job_id: str, version: int) -> None:
        """A watcher read ``version`` of the job (or a change of it was heard)."""
        if version > self._known.get(job_id, 0):
            self._known[job_id] = version
            # A job watcher may read a version before its notification arrives (which is then
            # swallowed as known): list watchers hear of it here.
            for changes in self._list_changes:
                changes.note(job_id, version)
        self._known.move_to_end(job_id)
        # Forgetting a version costs at most one needless wake; watched jobs are read (and so
        # moved to the end) after every change.
        while len(self._known) > KNOWN_VERSIONS_KEPT:
            self._known.popitem(last=False)

    def known_version(self, job_id: str) -> int:
        return self._known.get(job_id, 0)

    def watched_jobs(self) -> list[str]:
        """Jobs with at least one WatchExport stream."""
        return list(self._waiters)

    @property
    def list_watchers(self) -> int:
        return len(self._list_changes)

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
                self._committed.pop(job_id, None)

    @contextlib.contextmanager
    def subscribe_all(self) -> Iterator[ListChanges]:
        """The changes of every job from now on (``event`` set after each); ``take`` them."""
        changes = ListChanges()
        self._list_changes.add(changes)
        try:
            yield changes
        finally:
            self._list_changes.discard(changes)

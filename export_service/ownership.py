"""Which export replica owns which job: a heartbeat per replica, claims, and the lease every
tracker write names.

Every non-terminal job is owned by one replica at a time. The job row names its owner and a lease
epoch; the replica that creates a job owns it from the insert on (epoch 1). Each replica keeps one
heartbeat row, renewed on the database's clock (``now()`` + the lease TTL), so renewing costs one
write per replica, never one per job. A job whose owner's heartbeat expired, or that has no owner
(handed back by a replica that stopped), is claimed by another replica in one short transaction
(``FOR UPDATE SKIP LOCKED``), epoch + 1. Every write a tracker makes names its lease (owner and
epoch) in the same statement, so a replica that lost a job (paused past its lease, cut off) finds
its writes refused (StaleLease) and drops the job without touching its render: the new owner
re-attaches to it. Render is only called after such a fenced write (``confirm_lease``).

The replica also judges its own lease, conservatively, on its monotonic clock: valid until the
time it *sent* its last successful renewal plus the TTL. Past that (the event loop stalled, the
process was paused, the database did not answer) its fenced writes wait for the next renewal
(``ready``) rather than act on a lease that may have expired; the database then decides.

The claim loop runs every ``claim_interval`` (0.5 s): it takes jobs in need of an owner (a
stopped replica's at once, a dead one's after its TTL) and finds the tracked jobs that became
terminal through another replica (a cancel), so their tracker stops and the render is released
within about a second.

On an exclusive database (SQLite: one process) the only replica takes every unfinished job at its
start whoever owned it before, runs no loops and its lease never expires locally: the same
fenced writes, at no extra cost.

What no owner can write is derived when a job is read: each renewal also brings back the other
replicas' heartbeat rows (the same round trip), kept as this replica's ``roster``; an active job
whose owner's lease lapsed, or whose owner missed its renewals (its row is older than a live
replica's can be), or that has no owner, while nobody has taken it over yet, is shown as waiting
for its export replica (``owner_gone``, pure). Nothing is written: the job's record is its
owner's, and reading costs no query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from export_service.config import DEFAULT_LEASE_TTL_SECONDS
from export_service.store.base import Job, JobStore, ReplicaBeat, StoreUnavailable
from videojob import metrics
from videojob.backoff import Backoff, Retries

logger = logging.getLogger(__name__)

# Short enough that a dead replica's jobs move on within seconds (their renders keep running and
# are re-attached, so the user sees a pause of progress, not a failure); long enough that a busy
# event loop or a GC pause never costs a lease: renewals go every TTL/3, so two renewals in a row
# may be late or lost (about 6.7 s of stall) before the lease can expire.
CLAIM_INTERVAL_SECONDS = 0.5
CLAIM_BATCH = 100
# A failed renewal is tried again this soon (bounded by TTL/10).
RENEW_RETRY_SECONDS = 0.5
# A lease is renewed this many times per TTL.
RENEWALS_PER_TTL = 3
# What a replica's heartbeat may be late by (a busy event loop, a slow commit) before a reader
# counts its renewal as missed: at least this, or a tenth of its TTL.
BEAT_SLACK_SECONDS = 1.0


@dataclass(frozen=True)
class SeenBeat:
    """Another replica's heartbeat as this replica last read it, on this replica's monotonic
    clock: when it was renewed and when it expires (both as late as they may have been)."""

    renewed_at: float
    expires_at: float

    @property
    def ttl(self) -> float:
        return self.expires_at - self.renewed_at


@dataclass(frozen=True)
class Roster:
    """What a replica knows of the others' heartbeats, read with its own last renewal."""

    replica_id: str
    # When it was read (monotonic); -inf: not yet.
    read_at: float = -math.inf
    beats: Mapping[str, SeenBeat] = field(default_factory=dict)
    # How often the reader renews (and so reads this again): its TTL / RENEWALS_PER_TTL.
    refresh: float = DEFAULT_LEASE_TTL_SECONDS / RENEWALS_PER_TTL
    # An exclusive database: the one replica owns everything, there is nobody else to know of.
    exclusive: bool = False


def roster_of(
    replica_id: str,
    beats: Collection[ReplicaBeat],
    read_at: float,
    *,
    refresh: float,
    exclusive: bool = False,
) -> Roster:
    """The roster a heartbeat answered at ``read_at`` (monotonic, taken once the answer came:
    every time derived from it is as late as it may be, so a live replica never looks late)."""
    seen = {
        beat.replica_id: SeenBeat(read_at - beat.renewed_ago, read_at + beat.expires_in)
        for beat in beats
    }
    return Roster(replica_id, read_at, seen, refresh, exclusive)


def _slack(ttl: float) -> float:
    return max(BEAT_SLACK_SECONDS, ttl / 10)


def missed_renewal_after(beat: SeenBeat, refresh: float) -> float:
    """Seconds after its last renewal seen past which a replica has missed one: it renews every
    TTL / RENEWALS_PER_TTL, and the reader, reading every ``refresh``, may not have seen the
    latest renewal yet. (Not capped at the TTL: the expiry seen is as old as the roster, and a
    live replica renewed since may be past it; a lapse the database saw is told apart.)"""
    ttl = beat.ttl
    return ttl / RENEWALS_PER_TTL + refresh + _slack(ttl)


def owner_gone(job: Job, roster: Roster, now: float) -> bool:
    """Whether nobody drives ``job`` at monotonic time ``now``, as far as ``roster`` tells: it
    is active, and it has no owner (handed back), or its owner's lease lapsed, or its owner
    missed a renewal, and nobody has taken it over yet (a claim names the new owner). Pure.
    A live owner is never taken for gone, whatever the TTLs of the two replicas, as long as
    their renewals are late by less than the slack.

    Never for this replica's own jobs (it answers, so it is alive), nor on an exclusive
    database, nor from a roster too old to judge by (this replica's own renewals are late), nor
    for an owner the roster does not know (a replica that started since it was read)."""
    if job.terminal or roster.exclusive:
        return False
    if job.owner is None:
        return True
    if job.owner == roster.replica_id:
        return False
    if now - roster.read_at > roster.refresh + _slack(roster.refresh * RENEWALS_PER_TTL):
        return False
    beat = roster.beats.get(job.owner)
    if beat is None:
        return False
    if beat.expires_at <= roster.read_at:
        return True  # its lease had lapsed when the roster was read
    return now - beat.renewed_at > missed_renewal_after(beat, roster.refresh)


AdoptJobs = Callable[[list[Job]], None]
TrackedJobs = Callable[[], Collection[str]]
JobsEnded = Callable[[set[str]], None]


def new_replica_id() -> str:
    """``host:pid:random``: unique even when a pid is reused after a restart."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Ownership:
    """This replica's identity, heartbeat and claims (see the module's docstring)."""

    def __init__(
        self,
        store: JobStore,
        *,
        replica_id: str = "",
        ttl: float = DEFAULT_LEASE_TTL_SECONDS,
        claim_interval: float = CLAIM_INTERVAL_SECONDS,
    ) -> None:
        self.store = store
        self.replica_id = replica_id or new_replica_id()
        self.ttl = ttl
        self.exclusive = store.exclusive
        self._claim_interval = claim_interval
        # Fenced writes of this replica the database refused: it had lost those jobs.
        self.refused_writes = 0
        self._valid_until = -math.inf
        self._renewed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # The other replicas' heartbeats, as the last renewal read them.
        self.roster = Roster(self.replica_id, exclusive=self.exclusive, refresh=self._refresh)

    # The lease, as this replica judges it.

    def lease_valid(self) -> bool:
        return self.exclusive or time.monotonic() < self._valid_until

    async def ready(self) -> None:
        """Returns once this replica's lease is valid by its own clock (at once, normally)."""
        while not self.lease_valid():
            self._renewed.clear()
            await self._renewed.wait()

    @property
    def _refresh(self) -> float:
        return self.ttl / RENEWALS_PER_TTL

    def owner_gone(self, job: Job) -> bool:
        """Whether nobody drives ``job`` now (see ``owner_gone``): what is shown of it, derived
        from this replica's roster at no cost, never written."""
        return owner_gone(job, self.roster, time.monotonic())

    def note_refused(self) -> None:
        """A fenced write was refused: counted, and recorded with the next renewal."""
        self.refused_writes += 1

    # Life cycle.

    async def start(self) -> list[Job]:
        """Registers the heartbeat, then claims what needs an owner (on an exclusive database
        every unfinished job); the jobs claimed. Waits for a database that does not answer."""
        retries = Retries(Backoff(first=RENEW_RETRY_SECONDS, cap=self.ttl))
        while True:
            try:
                await self._renew()
                jobs = await self._claim(take_over=self.exclusive)
            except StoreUnavailable as unavailable:
                logger.warning("claiming jobs waits for the database: %s", unavailable.detail)
                await retries.wait()
                continue
            logger.info(
                "export replica %s (lease TTL %g s) took %d jobs",
                self.replica_id,
                self.ttl,
                len(jobs),
            )
            return jobs

    def run(self, adopt: AdoptJobs, tracked: TrackedJobs, ended: JobsEnded) -> None:
        """Starts renewing and claiming (not on an exclusive database): ``adopt(jobs)`` gets
        every job claimed, ``ended(ids)`` the ids among ``tracked()`` that are no longer active."""
        if self.exclusive or self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="ownership-heartbeat"),
            asyncio.create_task(self._claim_loop(adopt, tracked, ended), name="ownership-claims"),
        ]

    async def stop(self) -> None:
        """Stops the loops and hands every job of this replica back at once (another replica
        claims them within its claim interval); call it once no tracker writes any more."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        try:
            released = await self.store.release_replica(self.replica_id)
        except StoreUnavailable as unavailable:
            # Its jobs move on when the heartbeat expires instead.
            logger.warning("could not hand jobs back: %s", unavailable.detail)
            return
        if released:
            logger.info("handed %d jobs back", released)

    # Loops.

    async def _renew(self) -> None:
        sent = time.monotonic()
        beats = await self.store.heartbeat(
            self.replica_id, ttl_seconds=self.ttl, refused_writes=self.refused_writes
        )
        self._valid_until = sent + self.ttl
        self._renewed.set()
        self.roster = roster_of(
            self.replica_id,
            beats,
            time.monotonic(),
            refresh=self._refresh,
            exclusive=self.exclusive,
        )

    async def _heartbeat_loop(self) -> None:
        retry = min(RENEW_RETRY_SECONDS, self.ttl / 10)
        delay = self._refresh
        failing = False
        while True:
            await asyncio.sleep(delay)
            try:
                await self._renew()
            except StoreUnavailable as unavailable:
                if not failing:
                    logger.warning("the heartbeat could not be renewed: %s", unavailable.detail)
                failing = True
                delay = retry
                continue
            if failing:
                logger.info("the heartbeat is renewed again")
            failing = False
            delay = self._refresh

    async def _claim_loop(self, adopt: AdoptJobs, tracked: TrackedJobs, ended: JobsEnded) -> None:
        while True:
            await asyncio.sleep(self._claim_interval)
            with contextlib.suppress(StoreUnavailable):
                if self.lease_valid():
                    jobs = await self._claim(take_over=False)
                    if jobs:
                        logger.info("claimed %d jobs", len(jobs))
                        adopt(jobs)
                ids = set(tracked())
                if ids:
                    finished = ids - await self.store.active_among(sorted(ids))
                    if finished:
                        ended(finished)

    async def _claim(self, *, take_over: bool) -> list[Job]:
        claimed: list[Job] = []
        while True:
            batch = await self.store.claim_jobs(
                self.replica_id, limit=CLAIM_BATCH, take_over=take_over
            )
            claimed += batch
            for job in batch:
                metrics.LEASE_TAKEOVERS.labels(takeover_reason(job, take_over=take_over)).inc()
            if len(batch) < CLAIM_BATCH:
                return claimed


def takeover_reason(job: Job, *, take_over: bool) -> str:
    """Why ``job`` (just claimed) needed a new owner: a label of LEASE_TAKEOVERS."""
    if job.claimed_from is None:
        return "handed_back"
    return "restart" if take_over else "expired"

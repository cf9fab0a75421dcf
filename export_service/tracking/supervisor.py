"""The supervisor of a replica's trackers: starts a tracker (tracking.runner.JobTracker) per
job this replica drives (on create, on start for every non-terminal job it owns, on a claim),
tracks a crashed one again from the job's record (bounded), stops them on shutdown without
touching renders (the next start re-attaches), and releases renders: a cancelled or failed
job's render is cancelled and its output removed by its owner, and a superseded attempt's
render on the render service it was placed on, for the release budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from export_service.config import TrackerSettings
from export_service.progress_writer import ProgressWriter
from export_service.render_pool import RenderMember, RenderPool
from export_service.split_plan import SplitPolicy
from export_service.store import Job, JobNotFound, JobStore, TransitionRejected
from export_service.store.base import Lease, RenderAttempt, StaleLease, render_id_for
from export_service.stored_outputs import Outputs, remove_output
from export_service.tracking.observations import JobEnded, LeaseLost, Stopping
from export_service.tracking.runner import JobTracker, placed_on
from export_service.tracking.split import renders_to_cancel
from videojob import metrics
from videojob.backoff import Backoff
from videojob.limits import FAILURE_INTERNAL
from videojob.render.v1 import render_pb2

if TYPE_CHECKING:
    from export_service.ownership import Ownership

logger = logging.getLogger(__name__)


def backoff_delay(settings: TrackerSettings, attempt: int) -> float:
    """For the supervisor's own retries (clean-ups, recording a crash)."""
    backoff = Backoff(first=settings.backoff_initial, cap=settings.backoff_max)
    return backoff.delay(attempt, random.random())


class RenderSupervisor:
    """Owns the tracker tasks and the clean-up of cancelled jobs."""

    def __init__(
        self,
        store: JobStore,
        pool: RenderPool,
        settings: TrackerSettings,
        ownership: Ownership | None = None,
        render_output_dir: Path | None = None,
        outputs: Outputs | None = None,
        split_policy: SplitPolicy | None = None,
    ) -> None:
        self._store = store
        # When a job is cut into parts (export_service.split_plan).
        self._split_policy = split_policy or SplitPolicy()
        # Checks and removes renders' outputs, files or objects in a store.
        self.outputs = outputs or Outputs()
        self._pool = pool
        # The render services' shared output directory as this process sees it (None: not
        # shared with it): where a dead render service's partial files are removed.
        self._render_output_dir = render_output_dir
        # Superseded renders being cancelled on their render service, by render id.
        self._releases: dict[str, asyncio.Task[None]] = {}
        self._settings = settings
        # None: no owners (every active job is this process's, writes unfenced).
        self.ownership = ownership
        self._progress = ProgressWriter(
            store,
            settings.progress_interval,
            on_job_ended=self.job_ended,
            on_lease_lost=self._lease_lost,
            before_write=None if ownership is None else ownership.ready,
        )
        # Jobs claimed anew while a tracker of an older lease still stops: tracked after it.
        self._next_leases: dict[str, Lease] = {}
        self._trackers: dict[str, tuple[JobTracker, asyncio.Task[None]]] = {}
        # What every tracker asked and observed, by kind ("WatchRender", "RpcFailed.UNAVAILABLE").
        self.activity: Counter[str] = Counter()
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self._stopped = False

    @property
    def tracked(self) -> set[str]:
        """Jobs whose tracker task is still running (a job leaves this set when its task ends)."""
        return set(self._trackers)

    @property
    def stopping(self) -> bool:
        """The service is stopping: trackers end, jobs stay as recorded for the next start."""
        return self._stopped

    @property
    def owner(self) -> str | None:
        """This replica's id, which owns the jobs it creates (None: no owners)."""
        return None if self.ownership is None else self.ownership.replica_id

    async def start(self) -> None:
        """Re-attaches or resubmits every non-terminal job this replica owns (claimed now, and
        from then on as others stop or die) and finishes pending cancellations."""
        self._progress.start()
        if self.ownership is None:
            active = await self._store.list_active()
            for job in active:
                self.track(job.id)
        else:
            claimed = await self.ownership.start()
            active = [job for job in claimed if not job.terminal]
            self._adopt(claimed)
            self.ownership.run(self._adopt, lambda: self._trackers.keys(), self._jobs_ended)
        for job in await self._store.list_pending_cancellations():
            self._schedule_cleanup(job.id)
        if active:
            logger.info("reconciling %d non-terminal jobs", len(active))

    def first_placement(self, job_id: str) -> RenderAttempt | None:
        """Where a job this replica is creating will render first, for its create to record
        (sparing the tracker the placement write); None when no render service is known to be
        usable now: the tracker then places the job itself, waiting for one as it does."""
        if not self._pool.usable_count():
            return None
        member = self._pool.choose()
        if member is None or not member.usable:
            return None
        return placed_on(member, job_id, 1)

    def track_created(self, job: Job, *, found_again: bool = False) -> None:
        """A job the API created (or found again for a retried create): tracked when it is this
        replica's to drive. The tracker starts from the row the create committed; a job found
        again is read afresh."""
        created = None if found_again else job
        if self.ownership is None:
            self.track(job.id, created=created)
        elif job.owner == self.ownership.replica_id and job.lease_epoch is not None:
            self.track(job.id, Lease(job.owner, job.lease_epoch), created=created)

    def track(self, job_id: str, lease: Lease | None = None, created: Job | None = None) -> None:
        """``created``: the row the job's create committed (spares a read)."""
        if self._stopped:
            return
        entry = self._trackers.get(job_id)
        if entry is not None:
            if lease is not None and entry[0].lease != lease:
                self._next_leases[job_id] = lease
                entry[0].tell(LeaseLost())
            return
        self._progress.start()
        tracker = JobTracker(
            job_id,
            self._store,
            self._pool,
            self._settings,
            self._progress,
            self.activity,
            lease=lease,
            ownership=self.ownership,
            on_release=self.release_attempt,
            created=created,
            outputs=self.outputs,
            split_policy=self._split_policy,
        )
        task = asyncio.create_task(self._run_tracker(tracker), name=f"track-{job_id}")
        self._trackers[job_id] = (tracker, task)
        task.add_done_callback(lambda _: self._forget_tracker(job_id, task))

    async def job_cancelled(self, job: Job) -> None:
        """Called after the store recorded CANCELLED (``job``, as recorded): stops the tracker,
        then the render. A job another replica owns has its render stopped from here at once,
        so that FFmpeg stops within a call's time even when that owner is dead; the owner (or,
        after a dead owner's lease, whoever claims the job) still records the release."""
        job_id = job.id
        entry = self._trackers.get(job_id)
        if entry is not None:
            tracker, task = entry
            tracker.tell(JobEnded())
            # Never let a cancel request wait on the tracker without bound.
            _, pending = await asyncio.wait([task], timeout=self._settings.rpc_timeout)
            if pending:
                logger.warning("job %s: tracker still stopping after the cancel", job_id)
        elif self.ownership is not None and job.owner != self.ownership.replica_id:
            await self._stop_owned_elsewhere(job)
        self._schedule_cleanup(job_id)

    async def _stop_owned_elsewhere(self, job: Job) -> None:
        """One CancelRender for the current attempt of a cancelled job this replica does not
        own. Nothing is written: the release stays the owner's, under its lease."""
        if job.split is not None:
            for render in renders_to_cancel(job.split):
                member = self._pool.member_for(render.instance_id, render.address)
                await self._stop_render_for_owner(job, member, render.render_id)
            return
        attempt = job.current_attempt
        if attempt is None:
            return  # not placed yet: nothing renders
        member = self._pool.member_for(attempt.instance_id, attempt.address)
        await self._stop_render_for_owner(job, member, attempt.render_id)

    async def _stop_render_for_owner(self, job: Job, member: RenderMember, render_id: str) -> None:
        request = render_pb2.CancelRenderRequest(render_id=render_id)
        try:
            info = await member.stub.CancelRender(request, timeout=self._settings.rpc_timeout)
        except grpc.aio.AioRpcError as error:
            logger.info(
                "job %s: render %s not stopped from this replica (%s); its owner releases it",
                job.id,
                render_id,
                error.code().name,
            )
            return
        logger.info("job %s: render %s stopped for its owner %s", job.id, render_id, job.owner)
        # A render (a split job's part) that finished before the cancel reached it, its end not
        # recorded by its dead owner: the cancelled job never uses its file, so it goes now
        # rather than when the owner's lease ends (removing it twice is harmless).
        finished = info.last_event.completed.output_path
        removed = not finished or await self.outputs.remove(finished)
        if not removed:
            logger.warning("job %s: render %s's file %s not removed", job.id, render_id, finished)

    async def stop(self) -> None:
        """Stops every task; renders keep running and jobs stay as stored, to be reconciled
        at the next start. Jobs created from now on wait for that start too."""
        self._stopped = True
        trackers = [task for _, task in self._trackers.values()]
        for tracker, _ in self._trackers.values():
            tracker.tell(Stopping())
        if trackers:
            _, pending = await asyncio.wait(trackers, timeout=self._settings.rpc_timeout)
            for task in pending:  # stuck in a store write: the store is closing anyway
                task.cancel()
        cleanups = [*self._cleanups.values(), *self._releases.values()]
        for task in cleanups:
            task.cancel()
        if trackers or cleanups:
            await asyncio.wait([*trackers, *cleanups])
        await self._progress.stop()
        if self.ownership is not None:
            await self.ownership.stop()

    def _adopt(self, jobs: list[Job]) -> None:
        """Jobs this replica claimed: tracked, or (terminal) their render released."""
        for job in jobs:
            if job.terminal:
                if job.cancel_requested:
                    self._schedule_cleanup(job.id)
            elif job.owner is not None and job.lease_epoch is not None:
                self.track(job.id, Lease(job.owner, job.lease_epoch))

    def job_ended(self, job_id: str) -> None:
        """News that the job became terminal (a write refused for it, a renewal that found
        it so): its tracker stops."""
        entry = self._trackers.get(job_id)
        if entry is not None:
            entry[0].tell(JobEnded())

    def _jobs_ended(self, job_ids: set[str]) -> None:
        """Tracked jobs found terminal (a cancel through another replica): their trackers stop,
        then the clean-up of a cancelled one runs."""
        for job_id in job_ids:
            self.job_ended(job_id)

    def _lease_lost(self, job_id: str) -> None:
        if self.ownership is not None:
            self.ownership.note_refused()
        entry = self._trackers.get(job_id)
        if entry is not None:
            entry[0].tell(LeaseLost())

    async def _run_tracker(self, tracker: JobTracker) -> None:
        job_id = tracker.job_id
        crashes = 0
        while True:
            try:
                await tracker.run()
                break
            except Exception as error:  # a bug must not leave the job running forever
                if self._stopped:
                    metrics.TRACKER_CRASHES.labels("handed_over").inc()
                    logger.warning(
                        "job %s: tracker crashed while the service stops (%s); the job is left "
                        "as recorded, for its next owner",
                        job_id,
                        error,
                        exc_info=True,
                    )
                    return
                crashes += 1
                if crashes > self._settings.max_tracker_restarts:
                    metrics.TRACKER_CRASHES.labels("failed").inc()
                    logger.exception("job %s: tracker crashed %d times", job_id, crashes)
                    await self._fail_after_crash(job_id, error, tracker.lease)
                    break
                metrics.TRACKER_CRASHES.labels("retracked").inc()
                delay = backoff_delay(self._settings, crashes)
                logger.exception(
                    "job %s: tracker crashed (%d of %d restarts); tracked again from its record "
                    "in %.1f s",
                    job_id,
                    crashes,
                    self._settings.max_tracker_restarts,
                    delay,
                )
                successor = await self._after_crash(tracker, delay)
                if successor is None:
                    return
                tracker = successor
        if self._stopped:
            return
        # The row the tracker's terminal write returned, when it wrote one: no read again.
        job = tracker.terminal_row or await self._store.get(job_id)
        if job.terminal and job.cancel_requested:
            self._schedule_cleanup(job.id)

    async def _after_crash(self, crashed: JobTracker, delay: float) -> JobTracker | None:
        """A new tracker of the crashed one's job and lease, which starts from the job's record
        (it re-attaches to the render, which costs no attempt) once ``delay`` has passed or news
        arrived (handed on to it); None when the service stops meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await crashed.news_arrived.wait()
        if self._stopped:
            return None
        entry = self._trackers.get(crashed.job_id)
        successor = JobTracker(
            crashed.job_id,
            self._store,
            self._pool,
            self._settings,
            self._progress,
            self.activity,
            lease=crashed.lease,
            ownership=self.ownership,
            on_release=self.release_attempt,
            news=crashed.take_news(),
            outputs=self.outputs,
            split_policy=self._split_policy,
        )
        if entry is not None and entry[0] is crashed:
            self._trackers[crashed.job_id] = (successor, entry[1])
        return successor

    async def _fail_after_crash(self, job_id: str, error: Exception, lease: Lease | None) -> None:
        """Writes the INTERNAL failure, retrying while the store itself fails (it may be the
        cause); a job left active here would only be resumed at the next start."""
        for attempt in range(1, self._settings.max_attempts + 1):
            try:
                await self._store.fail(
                    job_id,
                    code=FAILURE_INTERNAL,
                    message=f"tracking the render failed: {error}",
                    release_render=True,
                    lease=lease,
                )
                return
            except (TransitionRejected, JobNotFound):
                return
            except Exception:
                logger.exception("job %s: recording the failure failed", job_id)
                await asyncio.sleep(backoff_delay(self._settings, attempt))

    def _schedule_cleanup(self, job_id: str) -> None:
        if self._stopped or job_id in self._cleanups:
            return
        task = asyncio.create_task(self._cleanup(job_id), name=f"cleanup-{job_id}")
        self._cleanups[job_id] = task
        task.add_done_callback(lambda _: self._forget_cleanup(job_id, task))

    async def _cleanup(self, job_id: str) -> None:
        """CancelRender and removal of any output the render left, on the render service of
        each of the job's attempts, retried with backoff for the retry budget (then at the next
        start). Only the job's owner does it, after a fenced write."""
        job = await self._store.get(job_id)
        if not await self._may_release(job):
            return
        for superseded in job.attempts:
            if superseded.attempt != job.attempt:
                self.release_attempt(job_id, superseded, False)
        targets = [
            (self._pool.member_for(a.instance_id, a.address), a.render_id)
            for a in job.attempts
            if a.attempt == job.attempt  # superseded ones are released on their own
        ] or [(self._pool.first(), render_id_for(job_id, job.attempt))]
        if job.split is not None:
            # Every part's render and the join's: running ones stopped, every output removed.
            targets = [
                (self._pool.member_for(render.instance_id, render.address), render.render_id)
                for render in job.split.renders
                if render.render_id
            ]
        deadline = time.monotonic() + self._settings.retry_budget
        # Each render at once (a split job's parts may be on several render services, one of
        # them gone: the others' are released meanwhile).
        released = await asyncio.gather(
            *(self._cancel_render(member, render_id, deadline) for member, render_id in targets)
        )
        if not all(released):
            logger.warning("job %s: render not confirmed released; retried at next start", job_id)
            return
        await self._store.render_released(job_id)

    async def _may_release(self, job: Job) -> bool:
        """Whether this replica releases ``job``'s render now: it owns the job and a fenced
        write says it still does, so a replica that lost the job makes no CancelRender. A cancel
        accepted by another replica is released by the owner, which notices it within its claim
        interval; the job of a dead owner by whoever claims it next."""
        if self.ownership is None:
            return True
        if job.owner != self.ownership.replica_id or job.lease_epoch is None:
            logger.info("job %s: its render is released by its owner (%s)", job.id, job.owner)
            return False
        try:
            await self._store.confirm_release(job.id, lease=Lease(job.owner, job.lease_epoch))
        except StaleLease:
            logger.info("job %s: lost to another owner before its render was released", job.id)
            return False
        except TransitionRejected:
            return False  # released already
        return True

    async def _cancel_render(self, member: RenderMember, render_id: str, deadline: float) -> bool:
        """True once the render is known stopped and its output removed (or unknown to its
        render service); False when ``deadline`` passed first. The first failed call is logged
        as a warning, the tries after it and the backoff between them at debug: the caller
        says how it ends."""
        request = render_pb2.CancelRenderRequest(render_id=render_id)
        not_found = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                info = await member.stub.CancelRender(request, timeout=self._settings.rpc_timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    # A Render call still in flight may create it a moment later: ask twice.
                    not_found += 1
                    if not_found >= 2:
                        # Unknown to a render service that restarted: the file it may have
                        # finished before, or the object it stored or was storing, is
                        # nobody's now.
                        if not await asyncio.to_thread(self._remove_finished_outputs, render_id):
                            failure = "the file it finished was not removed"
                        elif await self.outputs.remove_render_outputs(render_id):
                            return True
                        else:
                            failure = "what it stored was not removed"
                    else:
                        await asyncio.sleep(0.5)
                        continue
                else:
                    failure = error.code().name
            else:
                path = info.last_event.completed.output_path
                if await self.outputs.remove(path):
                    return True
                failure = "its output was not removed"
            if attempt == 1:
                logger.warning(
                    "render %s: CancelRender at %s failed: %s", render_id, member.address, failure
                )
            if time.monotonic() >= deadline:
                return False
            delay = backoff_delay(self._settings, attempt)
            logger.debug(
                "render %s: CancelRender at %s, try %d: %s; asked again in %.1f s",
                render_id,
                member.address,
                attempt,
                failure,
                delay,
            )
            await asyncio.sleep(delay)

    @property
    def releasing(self) -> set[str]:
        """Render ids of the superseded renders whose release is under way."""
        return set(self._releases)

    def release_attempt(self, job_id: str, attempt: RenderAttempt, service_lost: bool) -> None:
        """A superseded attempt: its render is cancelled on the render service it was placed on
        (as soon as that one answers again, for ``release_budget`` seconds) and its output
        removed. Given up after that (that render service may have moved or be gone): noted on
        the job's attempt (``release_given_up_at``, the only write the release makes), so that
        no later start asks again. ``service_lost``: that render service stopped answering, so
        its partial file is removed here at once (it may never come back)."""
        if self._stopped:
            return
        if service_lost:
            # Whether or not a release of this render is under way or was given up: one asked
            # before the service was known lost would only ask that service to remove it.
            self._remove_partial_files(attempt)
        if attempt.render_id in self._releases:
            return
        if attempt.release_given_up_at is not None:
            return  # given up for good: that render service is not asked again
        task = asyncio.create_task(
            self._release(job_id, attempt), name=f"release-{attempt.render_id}"
        )
        self._releases[attempt.render_id] = task
        task.add_done_callback(lambda _: self._releases.pop(attempt.render_id, None))

    def _remove_partial_files(self, attempt: RenderAttempt) -> None:
        directory = self._render_output_dir
        if directory is None or not attempt.instance_id:
            return
        pattern = f".{attempt.instance_id}.{attempt.render_id}.partial.*"
        for partial in directory.glob(pattern):
            remove_output(str(partial))

    def _remove_finished_outputs(self, render_id: str) -> bool:
        """Blocking. The finished file a render left (``<output dir>/<render id>.<container>``),
        when the render service's output directory is known here (--render-output-dir). True
        once none is left (or the directory is not known here); False when the directory could
        not be read (away, or not a directory for a moment: a glob would find nothing there and
        leave the file for good) or a file was not removed: the release is asked again."""
        directory = self._render_output_dir
        if directory is None:
            return True
        prefix = f"{render_id}."
        try:
            with os.scandir(directory) as entries:
                names = [entry.name for entry in entries if entry.name.startswith(prefix)]
        except OSError as error:
            logger.warning(
                "could not look for render %s's file in %s: %s", render_id, directory, error
            )
            return False
        removed = [remove_output(str(directory / name)) for name in names]
        return all(removed)

    async def _release(self, job_id: str, attempt: RenderAttempt) -> None:
        member = self._pool.member_for(attempt.instance_id, attempt.address)
        budget = self._settings.release_budget
        if await self._cancel_render(member, attempt.render_id, time.monotonic() + budget):
            logger.info(
                "job %s: superseded render %s on %s released",
                job_id,
                attempt.render_id,
                member.address,
            )
            return
        metrics.RENDER_RELEASES_GIVEN_UP.inc()
        logger.warning(
            "job %s: gave up releasing superseded render %s on %s: not released within %g s "
            "(--release-budget); noted on the job, not asked again",
            job_id,
            attempt.render_id,
            member.address,
            budget,
        )
        await self._note_release_given_up(job_id, attempt.render_id)

    async def _note_release_given_up(self, job_id: str, render_id: str) -> None:
        """Writes the give-up on the job's attempt, fenced by this replica's lease on the job
        (read now, as for a cancelled job's release): a replica that lost the job leaves it
        to its new owner, which releases the render again from its own start."""
        try:
            job = await self._store.get(job_id)
            lease = None
            if self.ownership is not None:
                if job.owner != self.ownership.replica_id or job.lease_epoch is None:
                    logger.info(
                        "job %s: owned by %s now; the release of %s is left to it",
                        job_id,
                        job.owner,
                        render_id,
                    )
                    return
                lease = Lease(job.owner, job.lease_epoch)
                await self.ownership.ready()
            await self._store.give_up_release(job_id, render_id=render_id, lease=lease)
        except JobNotFound:
            return  # deleted meanwhile: nothing is left to note it on
        except StaleLease:
            if self.ownership is not None:
                self.ownership.note_refused()
            logger.info("job %s: lost before the release of %s was noted", job_id, render_id)
        except TransitionRejected as rejected:
            logger.warning(
                "job %s: the release of %s was not noted: %s", job_id, render_id, rejected.reason
            )

    def _forget_tracker(self, job_id: str, task: asyncio.Task[None]) -> None:
        entry = self._trackers.get(job_id)
        if entry is not None and entry[1] is task:
            del self._trackers[job_id]
            lease = self._next_leases.pop(job_id, None)
            if lease is not None:
                self.track(job_id, lease)

    def _forget_cleanup(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._cleanups.get(job_id) is task:
            del self._cleanups[job_id]

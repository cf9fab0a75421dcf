"""The fault-injection harness: runs the real processes, injects faults while jobs run, then
checks the invariants of design.md over every job.

    python -m tests.chaos.harness --jobs 300 --seed 1234 [--workdir DIR] [--cluster]

``--cluster`` runs 3 export replicas on PostgreSQL and 2 render services (see stack.py) and adds
the replica, render-drain and database faults; without it, one machine's stack on SQLite.
``--storage s3`` (the default with ``--cluster``) keeps the outputs in a SeaweedFS of the run's
own and adds the store's faults (killed and started again, paused, an object deleted behind the
services) and its invariant: every COMPLETED job's object exists with its recorded SHA-256.
Every run also has a webhook receiver (tests.chaos.webhooks) that every job tells of each status
change, and checks that each terminal job's terminal event arrives and none tells of a state the
job never had.

The seed is printed first (``chaos seed: S``); the same seed replays the same job mix and
the same fault schedule (the services' own timing still varies from run to run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tests.chaos.checks import (
    Checker,
    FinalState,
    StoredOutputs,
    Violation,
    faults_that_can_break,
)
from tests.chaos.client import (
    TERMINAL,
    Client,
    JobTrack,
    PlannedJob,
    Rejected,
    plan_job,
    plan_long_job,
)
from tests.chaos.faults import (
    ALL_FAULT_TYPES,
    WORKLOAD_FAULTS,
    FaultScheduler,
    fault_types,
)
from tests.chaos.stack import Stack, StackSettings, make_media
from tests.chaos.webhooks import WebhookReceiver
from videojob.export.v1 import export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2_grpc

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

SECONDS_PER_FAULT_ESTIMATE = 3.5
_NO_FINAL = FinalState("missing", 0.0, 0, "", "", "")
# How long the terminal events may still be on their way once every job has settled: a replica
# killed or paused while holding deliveries loses them to another within the attempt's timeout
# and the claim's margin, and a receiver's 503 costs a second of backoff.
WEBHOOK_WAIT_SECONDS = 60.0


@dataclass
class ChaosSettings:
    jobs: int
    seed: int
    workdir: Path
    stall_timeout: float = 3.0
    max_attempts: int = 8
    max_concurrent: int = 2
    faults: int | None = None  # default: about one fault per three jobs, every type once
    cluster: bool = False
    shared_postgres: bool = False  # cluster: the shared server instead of a throwaway cluster
    s3: bool = False  # the outputs in an object store of the run's own

    @property
    def fault_kinds(self) -> tuple[str, ...]:
        restarts = self.cluster and not self.shared_postgres
        return fault_types(self.cluster, database_restarts=restarts, s3=self.s3)

    @property
    def settle_budget(self) -> float:
        """Stall timeout plus the retry budget: every attempt may be lost to silence."""
        return (self.stall_timeout + 2.0) * self.max_attempts + 20.0


@dataclass
class ChaosReport:
    seed: int
    cluster: bool
    jobs: int
    duration_seconds: float
    final_status: dict[str, int]
    error_codes: dict[str, int]
    by_kind: dict[str, dict[str, int]]
    faults: dict[str, int]
    targeted: int
    targeted_near_end: int
    skipped_faults: list[str]
    supplied_jobs: int
    settle_seconds: float
    watcher_reconnects: int
    corrupt_rejected_at_submit: int = 0
    owner_changes: int = 0
    s3: bool = False
    # The webhook receiver's counts (WebhookReceiver.counts), and how long the harness waited
    # after settling for the terminal events (WEBHOOK_WAIT_SECONDS: some never came).
    webhooks: dict[str, int] = field(default_factory=dict)
    webhook_wait_seconds: float = 0.0
    # Split jobs (output.split.parts N >= 2): how many, their final states, the faults aimed at
    # one (by kind), the faults that could break one during its life (by kind, aimed or not),
    # and how many rendered a part (or their audio or join) more than once.
    split_jobs: int = 0
    split_final_status: dict[str, int] = field(default_factory=dict)
    faults_aimed_at_split_jobs: dict[str, int] = field(default_factory=dict)
    faults_during_split_jobs: dict[str, int] = field(default_factory=dict)
    split_jobs_with_a_part_rendered_again: int = 0
    # Split jobs that rendered whole and said why (splitReason: e.g. a transcode whose source's
    # facts no render service could tell when it started).
    split_rendered_whole: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    workdir: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations and not self.errors

    def summary(self) -> str:
        form = "cluster (3 export replicas on PostgreSQL, 2 render services)"
        form = form if self.cluster else "one machine"
        form += ", outputs in SeaweedFS" if self.s3 else ", outputs in a directory"
        lines = [
            f"chaos seed {self.seed}: {self.jobs} jobs in {self.duration_seconds:.0f}s, "
            f"{sum(self.faults.values())} faults, {form}",
            "  final states: " + _counts(self.final_status),
            "  error codes: " + _counts(self.error_codes),
            "  faults: " + _counts(self.faults),
            f"  aimed near the end: {self.targeted_near_end}/{self.targeted} reached >=90% "
            f"or finalizing before the strike",
            f"  watcher reconnects: {self.watcher_reconnects}; settled in {self.settle_seconds}s; "
            f"{self.supplied_jobs} job(s) added to give a fault a target; "
            f"{self.corrupt_rejected_at_submit} corrupt input(s) refused at submit",
        ]
        if self.cluster:
            lines.append(f"  jobs that changed owner (history): {self.owner_changes}")
        lines.append(
            "  webhooks: " + _counts(self.webhooks) + f"; waited {self.webhook_wait_seconds}s "
            "after settling for the terminal events"
        )
        lines.append(
            f"  split jobs: {self.split_jobs} ({_counts(self.split_final_status)}); faults aimed "
            f"at one: {_counts(self.faults_aimed_at_split_jobs)}; faults that could break one "
            f"during its life: {_counts(self.faults_during_split_jobs)}; "
            f"{self.split_jobs_with_a_part_rendered_again} rendered a part again; "
            f"{sum(self.split_rendered_whole.values())} rendered whole and said why: "
            + _counts(self.split_rendered_whole)
        )
        for kind, counts in sorted(self.by_kind.items()):
            lines.append(f"  {kind:<13} " + _counts(counts))
        if self.skipped_faults:
            lines.append(f"  skipped (no target): {self.skipped_faults}")
        for error in self.errors:
            lines.append(f"  HARNESS ERROR {error}")
        for violation in self.violations:
            lines.append(
                f"  VIOLATION {violation.invariant} job={violation.job_id}: {violation.detail}"
            )
        lines.append(
            f"  {'OK' if self.ok else 'FAILED'}: {len(self.violations)} violation(s); "
            f"workdir {self.workdir}"
        )
        return "\n".join(lines)


def _input_refused(rejected: Rejected) -> bool:
    """A 422 that names the transcode's input: the clear error a corrupt input must get."""
    return rejected.status == 422 and "source.transcode.inputPath" in rejected.body


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"


class ChaosRun:
    def __init__(self, settings: ChaosSettings) -> None:
        self.settings = settings
        root = random.Random(settings.seed)
        self.job_rng = random.Random(root.getrandbits(64))
        self.fault_rng = random.Random(root.getrandbits(64))
        self.pick_rng = random.Random(root.getrandbits(64))
        self.media_rng = random.Random(root.getrandbits(64))
        self.stack = Stack(
            StackSettings(
                workdir=settings.workdir,
                stall_timeout=settings.stall_timeout,
                max_attempts=settings.max_attempts,
                max_concurrent=settings.max_concurrent,
                cluster=settings.cluster,
                shared_postgres=settings.shared_postgres,
                s3=settings.s3,
            )
        )
        self.tracks: dict[str, JobTrack] = {}
        self.submissions: dict[str, list[str]] = {}
        self.rejected_inputs: set[str] = set()  # keys of corrupt inputs refused at submit
        self.errors: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.watchers: set[asyncio.Task[None]] = set()
        self.queue: deque[PlannedJob] = deque()
        self.planned_count = 0
        self.clip_duration = 0.0
        self.started_at = time.monotonic()
        self.settle_seconds = 0.0
        self.receiver = WebhookReceiver(settings.seed)
        self.webhook_wait_seconds = 0.0

    def _plan(self) -> PlannedJob:
        job = plan_job(self.job_rng, self.planned_count, self.settings.seed, self.clip_duration)
        self.planned_count += 1
        return job

    def _spawn(self, coroutine: Awaitable[None], watchers: bool = False) -> None:
        task = asyncio.ensure_future(coroutine)
        bucket = self.watchers if watchers else self.tasks
        bucket.add(task)
        task.add_done_callback(bucket.discard)

    async def _submit_once(self, job: PlannedJob) -> str | None:
        deadline = time.monotonic() + 90.0
        try:
            body = await self.client.submit(job, deadline)
        except Rejected as rejected:
            if job.kind == "corrupt" and _input_refused(rejected):
                # The export service probes a transcode's input at submit: the corrupt file is
                # refused with a clear error before any job exists, which is a correct outcome.
                self.rejected_inputs.add(job.key)
            else:
                self.errors.append(f"submit {job.key}: {rejected}")
            return None
        except (RuntimeError, TimeoutError) as error:
            self.errors.append(f"submit {job.key}: {error}")
            return None
        job_id = str(body["id"])
        self.submissions.setdefault(job.key, []).append(job_id)
        if job_id not in self.tracks:
            track = JobTrack(planned=job, job_id=job_id)
            self.tracks[job_id] = track
            self._spawn(self.client.watch(track, deadline=time.monotonic() + 3600), watchers=True)
        self.tracks[job_id].submit_ids.append(job_id)
        return job_id

    async def _submit(self, job: PlannedJob) -> None:
        if job.copies > 1 and job.concurrent_copies:
            await asyncio.gather(*(self._submit_once(job) for _ in range(job.copies)))
            return
        await self._submit_once(job)
        for _ in range(job.copies - 1):
            await asyncio.sleep(self.job_rng.uniform(0.0, 4.0))
            await self._submit_once(job)

    async def _submitter(self, mean_gap: float) -> None:
        while self.queue:
            await asyncio.sleep(self.job_rng.uniform(0.0, 2 * mean_gap))
            if self.queue:
                self._spawn(self._submit(self.queue.popleft()))

    async def _supply_long(self) -> None:
        job = plan_long_job(self.planned_count, self.settings.seed)
        self.planned_count += 1
        await self._submit(job)

    async def _burst(self, count: int) -> None:
        jobs = [self.queue.popleft() if self.queue else self._plan() for _ in range(count)]
        submits = [asyncio.ensure_future(self._submit(job)) for job in jobs]
        for submit in submits:
            self.tasks.add(submit)
            submit.add_done_callback(self.tasks.discard)
        await asyncio.gather(*submits)

    async def _settle(self) -> dict[str, FinalState]:
        deadline = time.monotonic() + self.settings.settle_budget
        finals: dict[str, FinalState] = {}
        while True:
            pending = [job_id for job_id in self.tracks if job_id not in finals]
            for job_id in pending:
                try:
                    _, body = await self.client.get(job_id)
                except httpx.HTTPError:
                    break
                if body is not None and body["status"] in TERMINAL:
                    finals[job_id] = FinalState.from_json(body)
            watchers_done = not self.watchers
            if (len(finals) == len(self.tracks) and watchers_done) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        for job_id in self.tracks:
            if job_id not in finals:
                _, body = await self.client.get(job_id)
                if body is not None:
                    finals[job_id] = FinalState.from_json(body)
        return finals

    async def _await_terminal_events(self, finals: dict[str, FinalState]) -> None:
        """Until the receiver has got every terminal job's terminal event, or for
        WEBHOOK_WAIT_SECONDS (the check then names what is missing)."""
        owed = [
            (job_id, final.status, final.version)
            for job_id, final in finals.items()
            if final.status in TERMINAL
        ]
        started = time.monotonic()
        while time.monotonic() - started < WEBHOOK_WAIT_SECONDS:
            if all(self.receiver.received(*event) for event in owed):
                break
            await asyncio.sleep(0.5)
        self.webhook_wait_seconds = round(time.monotonic() - started, 1)

    async def run(self) -> ChaosReport:
        await self.receiver.start()
        self.stack.settings.webhook_url = self.receiver.url
        self.stack.settings.webhook_secret = self.receiver.secret
        try:
            return await self._run()
        finally:
            await self.receiver.stop()

    async def _run(self) -> ChaosReport:
        settings = self.settings
        print(f"chaos seed: {settings.seed}", flush=True)
        self.clip_duration = await asyncio.to_thread(
            make_media, self.stack.media_root, self.media_rng
        )
        self.queue.extend(self._plan() for _ in range(settings.jobs))
        kinds = settings.fault_kinds
        fault_count = settings.faults or max(len(kinds), round(settings.jobs / 3))
        await self.stack.start()
        print(f"stack up: gateway {self.stack.gateway_url}, workdir {settings.workdir}", flush=True)
        self.client = Client(self.stack.gateway_url)
        # One channel per export replica: every replica must answer for every job.
        channels = [create_channel(address) for address in self.stack.export_addresses]
        stubs: list[Stub] = [export_pb2_grpc.ExportServiceStub(channel) for channel in channels]
        # Each render service directly (not through its proxy): the split checks ask them.
        render_channels = [create_channel(render.address) for render in self.stack.renders]
        channels += render_channels
        render_stubs = [render_pb2_grpc.RenderServiceStub(channel) for channel in render_channels]
        scheduler = FaultScheduler(
            rng=self.fault_rng,
            stack=self.stack,
            client=self.client,
            tracks=self.tracks,
            burst=self._burst,
            supply_long=self._supply_long,
            started_at=self.started_at,
            pick_rng=self.pick_rng,
            kinds=kinds,
        )
        try:
            mean_gap = fault_count * SECONDS_PER_FAULT_ESTIMATE / max(1, settings.jobs)
            submitter = asyncio.ensure_future(self._submitter(mean_gap))
            await scheduler.run(scheduler.plan(fault_count), gap=(0.2, 1.5))
            await submitter
            died = await self.stack.ensure_up()
            if died:
                self.errors.append(f"died on their own and were restarted: {died}")
            while self.tasks:
                await asyncio.gather(*list(self.tasks))
            print(f"all {len(self.tracks)} jobs accepted; settling", flush=True)
            settle_start = time.monotonic()
            finals = await self._settle()
            self.settle_seconds = round(time.monotonic() - settle_start, 1)
            for watcher in list(self.watchers):
                watcher.cancel()
            await self._await_terminal_events(finals)
            checker = Checker(
                self.client,
                stubs,
                self.stack.output_dir,
                self.tracks,
                self.submissions,
                finals,
                scheduler.records,
                database=self.stack.database or self.stack.processes.database,
                ffmpeg_dir=self.stack.ffmpeg_dir,
                stored=self._stored_outputs(scheduler),
                webhooks=self.receiver.deliveries,
                renders=render_stubs,
            )
            violations = await checker.run()
        finally:
            await self.client.close()
            for channel in channels:
                await channel.close(None)
            await self.stack.stop()
        violations += self._scratch_left()
        return self._report(scheduler, finals, violations, checker.owner_changes)

    def _scratch_left(self) -> list[Violation]:
        """s3 mode, once the stack has stopped: every render service removed its own scratch
        directory at its stop, and one killed had it removed by the next that came up."""
        if not self.stack.s3:
            return []
        return [
            Violation("no_scratch_left", path.name, "a render service's scratch outlived it")
            for path in sorted(self.stack.scratch_root.iterdir())
        ]

    def _stored_outputs(self, scheduler: FaultScheduler) -> StoredOutputs | None:
        store = self.stack.store
        if store is None:
            return None
        scratch = self.settings.workdir / "checked-objects"
        scratch.mkdir(parents=True, exist_ok=True)
        return StoredOutputs(
            store.settings(), self.stack.output_location, scheduler.deleted_objects, scratch
        )

    def _report(
        self,
        scheduler: FaultScheduler,
        finals: dict[str, FinalState],
        violations: list[Violation],
        owner_changes: int,
    ) -> ChaosReport:
        faults = Counter(record.kind for record in scheduler.records)
        faults["duplicate_submit"] = sum(
            1 for track in self.tracks.values() if track.planned.copies > 1
        )
        faults["corrupt_input"] = len(self.rejected_inputs) + sum(
            1 for track in self.tracks.values() if track.planned.kind == "corrupt"
        )
        assert set(faults) <= set(ALL_FAULT_TYPES) | set(WORKLOAD_FAULTS)
        by_kind: dict[str, Counter[str]] = {}
        for track in self.tracks.values():
            final = finals.get(track.job_id)
            status = final.status if final else "missing"
            by_kind.setdefault(track.planned.kind, Counter())[status] += 1
        targeted = [record for record in scheduler.records if record.targeted]
        split = [track for track in self.tracks.values() if track.split]
        split_ids = {track.job_id for track in split}
        during = {
            id(fault): fault
            for track in split
            for fault in faults_that_can_break(track, scheduler.records)
        }
        report = ChaosReport(
            seed=self.settings.seed,
            cluster=self.settings.cluster,
            jobs=len(self.tracks),
            duration_seconds=time.monotonic() - self.started_at,
            final_status=dict(Counter(final.status for final in finals.values())),
            error_codes=dict(
                Counter(final.error_code for final in finals.values() if final.error_code)
            ),
            by_kind={kind: dict(counts) for kind, counts in by_kind.items()},
            faults=dict(faults),
            targeted=len(targeted),
            targeted_near_end=sum(1 for record in targeted if record.target_hit),
            supplied_jobs=scheduler.supplied,
            settle_seconds=self.settle_seconds,
            skipped_faults=scheduler.skipped,
            corrupt_rejected_at_submit=len(self.rejected_inputs),
            watcher_reconnects=sum(track.reconnects for track in self.tracks.values()),
            owner_changes=owner_changes,
            s3=self.settings.s3,
            webhooks=self.receiver.counts(),
            webhook_wait_seconds=self.webhook_wait_seconds,
            split_jobs=len(split),
            split_final_status=dict(
                Counter(finals[t.job_id].status for t in split if t.job_id in finals)
            ),
            faults_aimed_at_split_jobs=dict(
                Counter(r.kind for r in scheduler.records if r.target_job in split_ids)
            ),
            faults_during_split_jobs=dict(Counter(fault.kind for fault in during.values())),
            split_jobs_with_a_part_rendered_again=sum(
                1
                for track in split
                if any(part.attempts > 1 for part in finals.get(track.job_id, _NO_FINAL).parts)
            ),
            split_rendered_whole=dict(
                Counter(
                    finals[t.job_id].split_reason
                    for t in split
                    if t.job_id in finals and finals[t.job_id].split_reason
                )
            ),
            violations=violations,
            errors=self.errors,
            workdir=str(self.settings.workdir),
        )
        record = asdict(report)
        record["fault_log"] = [asdict(fault) for fault in scheduler.records]
        (self.settings.workdir / "report.json").write_text(json.dumps(record, indent=2))
        return report


async def run_chaos(settings: ChaosSettings) -> ChaosReport:
    return await ChaosRun(settings).run()


def main(argv: list[str] | None = None) -> int:
    summary = __doc__.split("\n\n", 1)[0].replace("\n", " ")
    parser = argparse.ArgumentParser(description=summary)
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("CHAOS_JOBS", "300")),
        help="jobs to submit (default: CHAOS_JOBS or 300)",
    )
    parser.add_argument("--seed", type=int, default=None, help="default: CHAOS_SEED or random")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the run keeps its media, outputs, logs and report.json (default: a new "
        "temporary directory)",
    )
    parser.add_argument(
        "--faults",
        type=int,
        default=None,
        help="faults to inject (default: about one per three jobs, every type at least once)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=3.0,
        help="seconds without a render event before the services investigate (default: 3)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=8,
        help="render submissions per job the export services allow (default: 8)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=2,
        help="renders each render service runs at once (default: 2)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="3 export replicas on PostgreSQL and 2 render services, with replica, render-drain "
        "and database faults",
    )
    parser.add_argument(
        "--shared-postgres",
        action="store_true",
        help="with --cluster: a fresh database of the run on the shared server (127.0.0.1:5432 or "
        "VIDEOJOB_TEST_POSTGRES) instead of a throwaway cluster; no database restarts",
    )
    parser.add_argument(
        "--storage",
        choices=("local", "s3"),
        default=None,
        help="where the outputs live: a directory, or a SeaweedFS of the run's own with the "
        "store's faults (default: s3 with --cluster, local without)",
    )
    args = parser.parse_args(argv)
    seed = args.seed
    if seed is None:
        seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 10**9))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"videojob-chaos-{seed}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = ChaosSettings(
        jobs=args.jobs,
        seed=seed,
        workdir=workdir.resolve(),
        stall_timeout=args.stall_timeout,
        max_attempts=args.max_attempts,
        max_concurrent=args.max_concurrent,
        faults=args.faults,
        cluster=args.cluster,
        shared_postgres=args.shared_postgres,
        s3=(args.storage or ("s3" if args.cluster else "local")) == "s3",
    )
    report = asyncio.run(run_chaos(settings))
    print(report.summary(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

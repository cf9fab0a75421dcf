"""Export replicas sharing jobs on PostgreSQL: how fast a backlog is claimed, and how long a
job waits for a new owner when its owner is SIGKILLed or stopped with SIGTERM.

Three export replicas (two in the smoke form) on a database of this run (on
``VIDEOJOB_BENCH_POSTGRES``), renders from bench's synthetic render server (long, 10 progress
events a second: a job always has a change to write).

- Claims: with the replicas running, a backlog of jobs with no owner appears at once (one
  INSERT of copies of a job created through the store). This process polls the jobs table every
  20 ms; claims per second is the backlog over the time from the insert to the last job owned.
  Each replica claims up to 100 jobs a transaction.
- Takeover: each round creates a few jobs through replica A (A owns them from the insert on),
  waits until each has a progress write, then SIGKILLs A (or sends it SIGTERM: a graceful
  stop hands them back). For each job: from the signal to the new owner's claim (its row's lease
  epoch rises; the 20 ms poll) and to its first fenced write (the job history's first entry of
  the new epoch, timed by the database). A SIGKILLed owner's jobs wait for its heartbeat to
  expire (``--lease-ttl``); a stopped one's are free at once. A is started again between
  rounds and the round's jobs cancelled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.postgres import POSTGRES_ADMIN_URL, bench_database
from bench.report import BenchResult
from bench.stack import SYNTHETIC_RENDER_MODULE
from bench.stats import percentile
from export_service.config import DEFAULT_LEASE_TTL_SECONDS
from export_service.store.factory import open_store
from videojob.endpoints import EXPORT_SERVICE
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import spec_pb2
from videojob.spec_validation import normalize_spec
from videojob_launcher import Role, ServiceProcess, Stack, StackConfig
from videojob_launcher.health import grpc_serving
from videojob_launcher.process import ProcessSpec
from videojob_launcher.stack import export_args

NAME = "ownership"
TITLE = "Export replicas on PostgreSQL: claims per second, takeover after SIGKILL and SIGTERM"

POLL_SECONDS = 0.02
RENDER_SECONDS = 600.0
RENDER_EVENTS_PER_SECOND = 10.0
# A backlog's renders stay quiet: the claims, not the progress of hundreds of jobs, are measured.
BACKLOG_EVENTS_PER_SECOND = 0.2
EXPORT_ARGS = ("--progress-interval", "0.1")
TAKEOVER_WITHIN = 60.0


@dataclasses.dataclass(frozen=True)
class Size:
    replicas: int
    backlog: int
    rounds: int  # per signal
    jobs: int  # per round
    lease_ttl: float  # in the takeovers


SIZES = {
    # The default lease TTL (what a deployment sees after a SIGKILL).
    "full": Size(3, 3000, 10, 10, DEFAULT_LEASE_TTL_SECONDS),
    "quick": Size(3, 1000, 2, 5, DEFAULT_LEASE_TTL_SECONDS),
    "smoke": Size(2, 6, 1, 1, 2.0),
}


def _spec() -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    pattern = spec.source.test_pattern
    pattern.duration_seconds, pattern.width, pattern.height, pattern.fps = 2.0, 160, 120, 10.0
    spec.output.container = "mp4"
    return spec


def _stack(workdir: Path, database: str, lease_ttl: float, events_per_second: float) -> Stack:
    """The synthetic render server alone; the export replicas are spawned by the caller."""
    config = StackConfig(
        workdir,
        database=database,
        output_dir=workdir / "output",
        render=Role(
            module=SYNTHETIC_RENDER_MODULE,
            args=("--duration", str(RENDER_SECONDS), "--rate", str(events_per_second)),
        ),
        export=Role(count=0, args=("--lease-ttl", str(lease_ttl), *EXPORT_ARGS)),
        gateway=Role(count=0),
        stop_grace=10.0,
    )
    stack = Stack(config)
    stack.start_renders()
    return stack


async def _spawn_exports(stack: Stack, count: int) -> None:
    """``count`` export replicas spawned at once (the launcher would start them one by one)."""
    probe = grpc_serving(EXPORT_SERVICE)
    for index in range(count):
        args = export_args(
            "127.0.0.1:0",
            stack.render_addr,
            stack.database,
            "--render-output-dir",
            str(stack.output_dir),
            *stack.config.export.args,
        )
        spec = ProcessSpec(f"export-{index + 1}", "export_service", args, {}, probe, 10.0)
        stack.exports.append(ServiceProcess(spec))
    await asyncio.gather(*(process.astart() for process in stack.exports))


async def _template_job(database: str) -> str:
    """One job created through the store with no owner: the row the backlog copies."""
    store = await open_store(database, writer="bench:backlog")
    spec = normalize_spec(_spec()).SerializeToString(deterministic=True)
    try:
        job, _ = await store.create(job_id=uuid.uuid4().hex, request_id="template", spec=spec)
    finally:
        await store.close()
    return job.id


async def _wait_owned(conn: asyncpg.Connection[Any], jobs: int, since: float) -> float:
    """Polls until ``jobs`` jobs have an owner; when that was first seen (monotonic)."""
    while True:
        owned = await conn.fetchval("SELECT count(*) FROM jobs WHERE owner IS NOT NULL")
        now = time.monotonic()
        if owned >= jobs:
            return now
        if now - since > 300:
            raise RuntimeError(f"{owned} of {jobs} jobs claimed after 300 s")
        await asyncio.sleep(POLL_SECONDS)


async def _claims(workdir: Path, replicas: int, backlog: int, result: BenchResult) -> None:
    async with bench_database("claims") as database:
        stack = await asyncio.to_thread(
            _stack, workdir / "claims", database, 10.0, BACKLOG_EVENTS_PER_SECOND
        )
        conn: asyncpg.Connection[Any] = await asyncpg.connect(database)
        try:
            await _spawn_exports(stack, replicas)
            template = await _template_job(database)
            await _wait_owned(conn, 1, time.monotonic())
            # The whole backlog appears at once (one statement; copies of the template, which
            # the replicas already took), while the replicas run.
            await conn.execute(
                "INSERT INTO jobs (id, request_id, status, progress, stage, spec, created_at, "
                "updated_at, last_change, written_by) "
                "SELECT md5(i::text || random()::text), 'backlog-' || i, status, progress, "
                "stage, spec, now(), now(), last_change, written_by "
                "FROM jobs, generate_series(1, $2) AS i WHERE id = $1",
                template,
                backlog,
            )
            inserted = time.monotonic()
            claimed = await _wait_owned(conn, backlog + 1, inserted)
            per_replica = await conn.fetch(
                "SELECT owner, count(*) AS n FROM jobs WHERE id <> $1 GROUP BY owner", template
            )
        finally:
            await conn.close()
            await asyncio.to_thread(stack.stop)
    seconds = max(claimed - inserted, POLL_SECONDS)
    name = f"claims per second ({replicas} replicas, a backlog)"
    result.add(name, backlog / seconds, "jobs/s")
    result.details["claims"] = {
        "backlog": backlog,
        "seconds_insert_to_last_claim": round(seconds, 3),
        "jobs_per_replica": sorted(row["n"] for row in per_replica),
    }


async def _wait_progress(conn: asyncpg.Connection[Any], job_ids: list[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        written = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE id = ANY($1::text[]) AND progress > 0", job_ids
        )
        if written == len(job_ids):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{written} of {len(job_ids)} jobs rendering after 60 s")
        await asyncio.sleep(0.1)


async def _takeover_round(
    conn: asyncpg.Connection[Any],
    victim: ServiceProcess,
    others: list[ServiceProcess],
    jobs: int,
    graceful: bool,
    label: str,
) -> tuple[list[float], list[float]]:
    """Seconds from the signal to each job's claim and to its first fenced write."""
    channel = create_channel(victim.address)
    try:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        created = [
            await stub.CreateExport(
                export_pb2.CreateExportRequest(request_id=f"{label}-{i}", spec=_spec()),
                timeout=30,
            )
            for i in range(jobs)
        ]
    finally:
        await channel.close(None)
    job_ids = [job.id for job in created]
    await _wait_progress(conn, job_ids)
    epochs = {
        row["id"]: row["lease_epoch"]
        for row in await conn.fetch(
            "SELECT id, lease_epoch FROM jobs WHERE id = ANY($1::text[])", job_ids
        )
    }
    signalled_wall = time.time()
    signalled = time.monotonic()
    if graceful:
        victim.request_stop()
    else:
        victim.send_signal(signal.SIGKILL)
    claimed: dict[str, float] = {}
    written: dict[str, float] = {}
    while len(written) < jobs and time.monotonic() - signalled < TAKEOVER_WITHIN:
        rows = await conn.fetch(
            "SELECT id, lease_epoch FROM jobs WHERE id = ANY($1::text[])", job_ids
        )
        now = time.monotonic()
        for row in rows:
            if row["lease_epoch"] > epochs[row["id"]] and row["id"] not in claimed:
                claimed[row["id"]] = now - signalled
        firsts = await conn.fetch(
            "SELECT job_id, min(recorded_at) AS at FROM job_history "
            "WHERE job_id = ANY($1::text[]) AND lease_epoch > 1 GROUP BY job_id",
            job_ids,
        )
        for row in firsts:
            written[row["job_id"]] = row["at"].timestamp() - signalled_wall
        await asyncio.sleep(POLL_SECONDS)
    await asyncio.to_thread(victim.wait_stopped, time.monotonic() + 15)
    # The round's jobs end, through a surviving replica, so that the next round's load is the
    # same; the victim comes back for the next round.
    channel = create_channel(others[0].address)
    try:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        for job_id in job_ids:
            await stub.CancelExport(export_pb2.CancelExportRequest(id=job_id), timeout=30)
    finally:
        await channel.close(None)
    await victim.astart()
    return list(claimed.values()), list(written.values())


async def _takeovers(workdir: Path, size: Size, result: BenchResult) -> None:
    rounds, jobs = size.rounds, size.jobs
    async with bench_database("takeover") as database:
        stack = await asyncio.to_thread(
            _stack, workdir / "takeover", database, size.lease_ttl, RENDER_EVENTS_PER_SECOND
        )
        conn: asyncpg.Connection[Any] = await asyncpg.connect(database)
        try:
            await _spawn_exports(stack, size.replicas)
            victim, *others = stack.exports
            samples: dict[str, tuple[list[float], list[float]]] = {}
            for graceful, label in ((False, "SIGKILL"), (True, "SIGTERM")):
                claims: list[float] = []
                writes: list[float] = []
                for number in range(rounds):
                    claim, write = await _takeover_round(
                        conn, victim, others, jobs, graceful, f"{label}-{number}"
                    )
                    claims += claim
                    writes += write
                samples[label] = (claims, writes)
        finally:
            await conn.close()
            await asyncio.to_thread(stack.stop)
    for label, (claims, writes) in samples.items():
        for what, values in (("claimed", claims), ("first fenced write", writes)):
            for name, fraction in (("p50", 0.5), ("p99", 0.99)):
                value = percentile(values, fraction) if values else None
                result.add(f"takeover after {label}, {what}: {name}", value, "s")
        result.details[f"takeover_{label}"] = {
            "expected": rounds * jobs,
            "claimed": len(claims),
            "first_fenced_writes": len(writes),
            "max_claimed_s": round(max(claims), 3) if claims else None,
        }


async def _run(workdir: Path, size: Size, result: BenchResult) -> None:
    await _claims(workdir, size.replicas, size.backlog, result)
    await _takeovers(workdir, size, result)


def _measure(workdir: Path, size: Size) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    result.details["setup"] = {
        "replicas": size.replicas,
        "lease_ttl_s": size.lease_ttl,
        "rounds_per_signal": size.rounds,
        "jobs_per_round": size.jobs,
        "poll_s": POLL_SECONDS,
        "synthetic_progress_hz": RENDER_EVENTS_PER_SECOND,
    }
    try:
        asyncio.run(_run(workdir, size, result))
    except (OSError, asyncpg.PostgresError) as error:
        result.skipped = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not usable: {error}"
    return result


def run(workdir: Path, quick: bool) -> BenchResult:
    return _measure(workdir, SIZES["quick" if quick else "full"])


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: two replicas, a small backlog, one job a round, a 2 s lease."""
    return _measure(workdir, SIZES["smoke"])

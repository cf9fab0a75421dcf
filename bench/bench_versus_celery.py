"""videojob side by side with Celery 5 + Redis (broker and result backend), the tool a Python
team would reach for instead, on the SAME ffmpeg argv: the one the render service runs, read from
/proc during a warm-up job (bench.procfs), with the job id in its paths replaced by a name of each
run's own. Both systems run it through bench.ffmpeg_wrapper, which stamps each progress block and
ffmpeg's exit; the direct runs use the real binary. The Celery side is bench.celery_peer: one
worker with the solo pool (no fork hop: Celery at its fastest), a task that parses the progress
blocks with the render service's parser and maps them to the same percent, ``update_state`` for
each, and a client that waits with ``AsyncResult.get(on_message=...)`` (Redis pub/sub).

Strictly one job at a time. Each round runs videojob, the bare stack, ffmpeg directly and
Celery, in this order on even rounds and backwards on odd ones, so that drift in the machine's
load hits all alike; every figure is a ratio of the systems measured in the same run:

1. fixed cost over direct ffmpeg, 1 s 320x240: the median over rounds of (submit -> completion
   seen by the client) minus the direct run of the same round. videojob: ``POST /api/jobs`` ->
   the ``completed`` SSE event; Celery: ``apply_async`` -> ``.get()`` returns.
2. ffmpeg's exit -> completion seen by the client, p50/p99, over both render sizes: videojob's
   ``completed`` SSE event, Celery's return from ``.get()``, minus the wrapper's exit stamp.
3. a progress block -> the client sees that percent, p50/p99, over longer 1280x720 renders
   (10 s; 6 s in the quick form; the smoke form's, 2 s of 160x120, are played at real time),
   whose ffmpeg runs long enough for blocks before its last: videojob's Rendering-stage SSE
   progress events matched to blocks as in bench.bench_latency; each Celery Rendering PROGRESS
   message stamped in the ``on_message`` callback and matched, by its frame count, to the
   earliest block with that count.

And the floor of what Celery does not do, which videojob does before it says ``completed``:
verifying the output file (the render service reads the container, the export service checks
the file it is told of: videojob.output_check both) and a durable commit (an UPDATE of one row
in an SQLite database in WAL mode with ``synchronous=FULL`` on this disk, fsync'd). The
completion target is Celery's exit -> completion p99 plus the verify and commit medians (and at
most 5 ms). For the fixed cost, also what its start costs more when FFmpeg is tied to the
service's life (setpriv's parent-death signal: invariant 6), and the create's durable commit.

The embedded form runs a third side in the same rounds: bench.bare_stack, the pinned
three-process shape (gateway, export service, render service on the same protocols and
libraries) doing only the work, which splits each figure into what the shape costs and what
videojob's code adds (``bare stack:`` figures).

The aims are for the embedded default (one export service on SQLite). The full form then runs
every round again with videojob as a cluster (CLUSTER_EXPORTS export replicas on one PostgreSQL
database, the gateway spreading its calls over them) and reports those figures beside, prefixed
``cluster:``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import math
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import ffmpeg_wrapper, procfs
from bench.celery_peer import app as celery_app
from bench.celery_peer import worker as celery_worker
from bench.celery_peer.worker import Peer
from bench.jobs import create_job, follow_job, test_pattern_spec
from bench.postgres import bench_database
from bench.report import BenchResult, Metric
from bench.stack import Stack, running_bare_stack, running_stack
from bench.stats import median, percentile
from render_service.container_probe import probe_container
from render_service.ffmpeg_process import parent_death_prefix
from videojob.output_check import CheckedOutput, check_output
from videojob.sse_client import SseFrame

NAME = "versus_celery"
TITLE = "videojob vs Celery + Redis on the same ffmpeg argv"

ARGV_POLL_SECONDS = 0.002
JOB_TIMEOUT_SECONDS = 120.0
COMPLETION_AIM_MS = 5.0
# Export replicas in the cluster form: the cluster of `make run-cluster`, on one PostgreSQL.
CLUSTER_EXPORTS = 3
SIDES = ("videojob", "celery")
# The embedded form's third side: bench.bare_stack, the pinned topology doing only its work.
BARE = "bare"
# Even rounds; odd rounds run it backwards.
ORDER = ("videojob", BARE, "direct", "celery")
MS = 1000.0
# Percent in the store is rounded to 0.01; a block "matches" an SSE event within this (as in
# bench.bench_latency).
MATCH_TOLERANCE_PERCENT = 0.02
SHORT_SPEC = test_pattern_spec(1.0, 320, 240)
# ffmpeg writes a progress block every 0.5 s of its run (-stats_period 0.5) and the last one at
# its end, which the render service shows as Finalizing: only a render that runs for seconds has
# Rendering blocks to measure. On 2 cores a 3 s 640x360 render runs about 0.3 s (no such block);
# 10 s of 1280x720 about 2 s.
LONG_SIZE = (1280, 720)


@dataclass(frozen=True)
class Plan:
    short_rounds: int  # 1 s 320x240: fixed cost and completion
    long_rounds: int  # the longer render: progress freshness and completion
    long_seconds: float
    verify_repeats: int
    commit_repeats: int
    long_size: tuple[int, int] = LONG_SIZE
    # The longer render's pace in times playback speed (bench.ffmpeg_wrapper), both sides
    # alike; None: as fast as ffmpeg goes.
    long_readrate: float | None = None


PLANS = {
    "full": Plan(40, 30, 10.0, 2000, 500),
    "quick": Plan(4, 3, 6.0, 500, 100),
    # One round of each render; the longer one a small pattern played at real time, which has
    # blocks before its last on any machine, for a tenth of the CPU (an FFmpeg with
    # -readrate_initial_burst reads its first 0.5 s at once: it lasts 1.5 s).
    "smoke": Plan(1, 1, 2.0, 5, 5, long_size=(160, 120), long_readrate=1.0),
}


@dataclass
class SideSamples:
    """One system's samples (seconds), over all rounds of both render sizes."""

    outcomes: list[str] = field(default_factory=list)
    elapsed: dict[str, list[float]] = field(default_factory=dict)  # by render size
    fixed_cost: list[float] = field(default_factory=list)  # paired, 1 s renders only
    completion: list[float] = field(default_factory=list)
    freshness: list[float] = field(default_factory=list)
    unmatched_progress: int = 0


@dataclass
class Run:
    sides: dict[str, SideSamples]
    direct: dict[str, list[float]] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    verify_file: Path | None = None


@dataclass(frozen=True)
class Argv:
    """The render service's ffmpeg arguments (after the binary) and the job id in its paths."""

    args: list[str]
    job_id: str

    def own(self, binary: str, name: str) -> list[str]:
        return [binary, *(arg.replace(self.job_id, name) for arg in self.args)]


@dataclass(frozen=True)
class Outcome:
    """One job: seconds from submit to completion seen, how it ended, its exit -> completion
    lag and its progress lags (s; None and none when it did not complete), and how many of its
    progress messages matched no block."""

    elapsed: float
    outcome: str
    completion: float | None
    freshness: list[float]
    unmatched: int


def _frames(spec: dict[str, Any]) -> int:
    pattern = spec["source"]["testPattern"]
    return round(float(pattern["durationSeconds"]) * float(pattern["fps"]))


def _remove_outputs(argv: list[str], name: str) -> None:
    for arg in argv[1:]:
        if name in arg:
            Path(arg.removeprefix("file:")).unlink(missing_ok=True)


def _recorded(argv: list[str], workdir: Path) -> list[str]:
    """``argv`` as the results show it: the binary's name only, no path of the machine."""
    return [Path(argv[0]).name, *(arg.replace(str(workdir), "<workdir>") for arg in argv[1:])]


# --- videojob -------------------------------------------------------------------------------


async def _capture_args(
    render_pid: int, binaries: tuple[str, ...], stop: asyncio.Event
) -> list[str]:
    """The arguments of the render service's ffmpeg child that writes -progress, after the
    binary (the child may still be the prefix that ties it to the service's life, or bash
    running the wrapper)."""
    while not stop.is_set():
        for child in procfs.children(render_pid):
            argv = procfs.cmdline(child)
            if "-progress" not in argv:
                continue
            for index, arg in enumerate(argv):
                if arg in binaries:
                    return argv[index + 1 :]
        await asyncio.sleep(ARGV_POLL_SECONDS)
    return []


def _lag(received: float, stamps: list[float]) -> float | None:
    """``received`` minus the earliest of a block's ``stamps``; None when no block was stamped
    by then (bench.ffmpeg_wrapper stamps a block before passing it on)."""
    candidates = [stamped for stamped in stamps if stamped <= received]
    return received - min(candidates) if candidates else None


def _freshness(
    events: list[SseFrame], trace: ffmpeg_wrapper.RenderTrace, frames: int
) -> tuple[list[float], int]:
    """As bench.bench_latency: the lag (s) of each Rendering-stage
    SSE progress event behind the earliest block whose frames map to its percent; and how many
    such events found no block (the update sent when ffmpeg starts, at 2 %, finds none)."""
    lags: list[float] = []
    unmatched = 0
    for event in events[1:]:  # the first event is the snapshot at connect time
        job = event.job
        if event.name != "progress" or job.get("stage") != "Rendering":
            continue
        percent = float(job["progress"])
        lag = _lag(
            event.received,
            [
                stamped
                for stamped, written in trace.blocks
                if abs(celery_app.progress_meta(written, frames, ended=False)[1] - percent)
                <= MATCH_TOLERANCE_PERCENT
            ],
        )
        if lag is None:
            unmatched += 1
        else:
            lags.append(lag)
    return lags, unmatched


async def _videojob_job(stack: Stack, log: Path, spec: dict[str, Any]) -> tuple[Outcome, str]:
    """Submits one job and follows it over SSE to its terminal event; its outcome and id."""
    async with httpx.AsyncClient(base_url=stack.url, timeout=JOB_TIMEOUT_SECONDS) as client:
        started = time.perf_counter()
        job = await create_job(client, spec)
        events = await asyncio.wait_for(
            follow_job(stack.gateway.port, job["id"]), JOB_TIMEOUT_SECONDS
        )
        elapsed = time.perf_counter() - started
    outcome = events[-1].name if events else "none"
    trace = ffmpeg_wrapper.trace_for(ffmpeg_wrapper.read_traces(log), job["id"])
    if outcome != "completed" or trace is None:
        return Outcome(elapsed, outcome, None, [], 0), job["id"]
    lags, unmatched = _freshness(events, trace, _frames(spec))
    completion = events[-1].received - trace.exited
    return Outcome(elapsed, outcome, completion, lags, unmatched), job["id"]


async def _warm_up(
    stack: Stack, log: Path, spec: dict[str, Any], binaries: tuple[str, ...]
) -> Argv:
    stop = asyncio.Event()
    capture = asyncio.create_task(_capture_args(stack.render.pid, binaries, stop))
    try:
        result, job_id = await _videojob_job(stack, log, spec)
    finally:
        stop.set()
    args = await capture
    if result.outcome != "completed":
        raise RuntimeError(f"warm-up job {job_id} ended {result.outcome}")
    if not args:
        raise RuntimeError("could not read the render service's ffmpeg argv from /proc")
    if not any(job_id in arg for arg in args):
        raise RuntimeError("the render service's ffmpeg argv does not name the job id")
    return Argv(args, job_id)


# --- Celery ---------------------------------------------------------------------------------


def _celery_job(peer: Peer, log: Path, argv: list[str], name: str, frames: int) -> Outcome:
    """Blocking: ``apply_async`` then ``.get(on_message=...)``; each message stamped on arrival."""
    messages: list[tuple[float, dict[str, Any]]] = []

    def on_message(body: dict[str, Any]) -> None:
        messages.append((time.time(), body))

    try:
        started = time.perf_counter()
        result = peer.render_task.apply_async(args=(argv, frames))
        value = result.get(on_message=on_message, propagate=False, timeout=JOB_TIMEOUT_SECONDS)
        returned = time.time()
        elapsed = time.perf_counter() - started
        state = str(result.state)
        result.forget()
    finally:
        _remove_outputs(argv, name)
    succeeded = state == "SUCCESS" and isinstance(value, dict) and value.get("returncode") == 0
    trace = ffmpeg_wrapper.trace_for(ffmpeg_wrapper.read_traces(log), name)
    if not succeeded or trace is None:
        return Outcome(elapsed, f"failed ({state})", None, [], 0)
    lags: list[float] = []
    unmatched = 0
    for received, body in messages:
        meta = body.get("result")
        if body.get("status") != "PROGRESS" or not isinstance(meta, dict):
            continue
        if meta.get("stage") != "Rendering":
            continue
        frame = meta.get("frame")
        lag = _lag(received, [stamped for stamped, written in trace.blocks if written == frame])
        if lag is None:
            unmatched += 1
        else:
            lags.append(lag)
    return Outcome(elapsed, "completed", returned - trace.exited, lags, unmatched)


# --- ffmpeg directly ------------------------------------------------------------------------


def _direct_job(argv: list[str], name: str, *, keep: bool = False) -> float:
    started = time.perf_counter()
    completed = subprocess.run(argv, capture_output=True, check=False, timeout=600)
    elapsed = time.perf_counter() - started
    if not keep:
        _remove_outputs(argv, name)
    if completed.returncode != 0:
        raise RuntimeError(f"direct ffmpeg failed: {completed.stderr.decode()[-500:]}")
    return elapsed


# --- the rounds -----------------------------------------------------------------------------


async def _phase(
    stack: Stack,
    bare: Stack | None,
    peer: Peer,
    celery_thread: ThreadPoolExecutor,
    log: Path,
    env: dict[str, str],
    spec: dict[str, Any],
    rounds: int,
    run: Run,
    workdir: Path,
    *,
    paired: bool,
) -> None:
    """Warms up (one videojob job, whose ffmpeg argv it reads, and, in the first phase, one
    Celery job and one job of the ``bare`` stack), then runs the rounds. ``paired``: the first
    phase, whose rounds give the fixed cost."""
    wrapper, real = env["FFMPEG_BINARY"], env["BENCH_REAL_FFMPEG"]
    size = "{width}x{height}".format(**spec["source"]["testPattern"])
    label = f"{spec['source']['testPattern']['durationSeconds']:g} s {size}"
    frames = _frames(spec)
    argv = await _warm_up(stack, log, spec, (wrapper, real))
    loop = asyncio.get_running_loop()
    # The Celery client calls block: always on the same thread, so its connections stay warm.
    on_celery_thread = functools.partial(loop.run_in_executor, celery_thread)
    if paired:  # the first phase: Celery's first job opens its connections
        warm_name = f"celery-warm-{uuid.uuid4().hex[:8]}"
        warm_argv = argv.own(wrapper, warm_name)
        warm = await on_celery_thread(
            functools.partial(_celery_job, peer, log, warm_argv, warm_name, frames)
        )
        if warm.outcome != "completed":
            raise RuntimeError(f"the Celery warm-up render ended {warm.outcome}")
        if bare is not None:
            bare_warm, _ = await _videojob_job(bare, log, spec)
            if bare_warm.outcome != "completed":
                raise RuntimeError(f"the bare stack's warm-up render ended {bare_warm.outcome}")
    run.argv[label] = _recorded(argv.own(wrapper, "<name>"), workdir)
    run.argv[f"{label} direct"] = _recorded(argv.own(real, "<name>"), workdir)
    direct_times = run.direct.setdefault(label, [])
    order = [step for step in ORDER if step in run.sides or step == "direct"]
    for number in range(rounds):
        tag = f"{number}-{uuid.uuid4().hex[:8]}"
        outcomes: dict[str, Outcome] = {}
        direct_seconds = math.nan
        for step in order if number % 2 == 0 else order[::-1]:
            if step == "videojob":
                outcomes[step], _ = await _videojob_job(stack, log, spec)
            elif step == BARE:
                assert bare is not None
                outcomes[step], _ = await _videojob_job(bare, log, spec)
            elif step == "celery":
                name = f"celery-{tag}"
                outcomes[step] = await on_celery_thread(
                    functools.partial(_celery_job, peer, log, argv.own(wrapper, name), name, frames)
                )
            else:
                name = f"direct-{tag}"
                direct_seconds = await asyncio.to_thread(_direct_job, argv.own(real, name), name)
        direct_times.append(direct_seconds)
        for side, samples in run.sides.items():
            result = outcomes[side]
            samples.outcomes.append(result.outcome)
            samples.elapsed.setdefault(label, []).append(result.elapsed)
            if paired:
                samples.fixed_cost.append(result.elapsed - direct_seconds)
            if result.completion is not None:
                samples.completion.append(result.completion)
            samples.freshness.extend(result.freshness)
            samples.unmatched_progress += result.unmatched
    if paired and run.verify_file is None:
        name = f"verify-{uuid.uuid4().hex[:8]}"
        own = argv.own(real, name)
        await asyncio.to_thread(_direct_job, own, name, keep=True)
        rendered = next(Path(arg.removeprefix("file:")) for arg in own[1:] if name in arg)
        # Out of the output directory, which the render service tidies when it stops.
        run.verify_file = rendered.replace(workdir / f"verify{rendered.suffix}")


async def _rounds(
    stack: Stack,
    bare: Stack | None,
    peer: Peer,
    log: Path,
    env: dict[str, str],
    plan: Plan,
    workdir: Path,
) -> Run:
    sides = [*SIDES, BARE] if bare is not None else SIDES
    run = Run({side: SideSamples() for side in sides})
    phases = (
        (SHORT_SPEC, plan.short_rounds, True),
        (test_pattern_spec(plan.long_seconds, *plan.long_size), plan.long_rounds, False),
    )
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-client") as thread:
        for spec, rounds, paired in phases:
            await _phase(
                stack, bare, peer, thread, log, env, spec, rounds, run, workdir, paired=paired
            )
    return run


# --- the floor of what Celery does not do ---------------------------------------------------


def _timed(action: Callable[[], object], repeats: int) -> list[float]:
    samples: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        samples.append(time.perf_counter() - started)
    return samples


def _verify_samples(path: Path, repeats: int) -> tuple[list[float], list[float]]:
    """The export service's check (stat: a regular file of the size the render reported), and
    the render service's (that and the mp4's structure read, with its duration)."""
    size = path.stat().st_size

    def export_check() -> None:
        if not isinstance(check_output(path, size_bytes=size), CheckedOutput):
            raise RuntimeError(f"the rendered file {path.name} failed the export service's check")

    def render_check() -> None:
        checked = check_output(
            path, expected_seconds=1.0, read_media=lambda p: probe_container(p, "mp4")
        )
        if not isinstance(checked, CheckedOutput):
            raise RuntimeError(f"the rendered file {path.name} failed the render service's check")

    return _timed(export_check, repeats), _timed(render_check, repeats)


@contextlib.contextmanager
def _durable_database(path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, status TEXT, progress REAL, updated REAL)"
        )
        connection.execute("INSERT INTO jobs VALUES ('job', 'RUNNING', 0, 0)")
        connection.commit()
        yield connection
    finally:
        connection.close()


def _spawn_samples(repeats: int) -> tuple[list[float], list[float]]:
    """Starting a process and reaping it from an event loop, as the render service starts
    FFmpeg (``/bin/true`` in its place): plain, and tied to the service's life (setpriv's
    parent-death signal: one exec more); alternating."""
    tied = parent_death_prefix()

    async def spawned(prefix: tuple[str, ...]) -> float:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *prefix,
            "/bin/true",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        await process.communicate()
        return time.perf_counter() - started

    async def alternating() -> tuple[list[float], list[float]]:
        # asyncio's default child watcher: this may run inside another program's process (the
        # test suite), whose later event loops must still be able to start subprocesses.
        plain: list[float] = []
        tied_samples: list[float] = []
        for _ in range(repeats):
            plain.append(await spawned(()))
            tied_samples.append(await spawned(tied))
        return plain, tied_samples

    return asyncio.run(alternating())


def _commit_samples(workdir: Path, repeats: int) -> list[float]:
    """An UPDATE of one row and its commit (WAL, synchronous=FULL: fsync'd), ``repeats`` times."""
    with _durable_database(workdir / "floor.db") as connection:

        def commit() -> None:
            connection.execute(
                "UPDATE jobs SET status = 'COMPLETED', progress = 100, updated = ? "
                "WHERE id = 'job'",
                (time.time(),),
            )
            connection.commit()

        return _timed(commit, repeats)


# --- the report -----------------------------------------------------------------------------


def _ratio(ours: float, theirs: float) -> float:
    if theirs <= 0 or ours != ours or theirs != theirs:
        return float("nan")
    return ours / theirs


def _ms(samples: list[float]) -> list[float]:
    return [round(sample * MS, 3) for sample in samples]


def _spread(samples: list[float]) -> dict[str, float]:
    return {
        "min": min(samples, default=float("nan")) * MS,
        "p10": percentile(samples, 0.1) * MS,
        "p50": percentile(samples, 0.5) * MS,
        "p90": percentile(samples, 0.9) * MS,
        "max": max(samples, default=float("nan")) * MS,
    }


def _versions() -> dict[str, str]:
    versions = {
        package: importlib.metadata.version(package) for package in ("celery", "kombu", "redis")
    }
    versions["redis server"] = celery_worker.redis_server_version()
    return versions


def _report_bare(
    result: BenchResult,
    fixed: dict[str, float],
    completion: dict[tuple[str, float], float],
    fresh: dict[tuple[str, float], float],
) -> None:
    """The bare stack's figures: what the pinned three-process shape costs by itself (beside
    Celery's), and what videojob adds to it."""
    figures: list[tuple[str, dict[str, float]]] = [
        ("fixed cost over direct ffmpeg (median)", fixed),
    ]
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        figures.append(
            (
                f"exit -> completion seen, {label}",
                {side: completion[(side, q)] for side in (BARE, *SIDES)},
            )
        )
        figures.append(
            (
                f"progress block -> client, {label}",
                {side: fresh[(side, q)] for side in (BARE, *SIDES)},
            )
        )
    for name, by_side in figures:
        bare, celery, ours = by_side[BARE], by_side["celery"], by_side["videojob"]
        result.add(f"bare stack: {name}", bare, "ms")
        result.add(f"bare stack: {name}, ratio bare/Celery", _ratio(bare, celery), "x")
        result.add(f"bare stack: {name}, videojob minus bare", ours - bare, "ms")


def _shown_plan(plan: Plan) -> dict[str, float]:
    width, height = plan.long_size
    shown: dict[str, float] = {
        "1 s 320x240 rounds": plan.short_rounds,
        f"{plan.long_seconds:g} s {width}x{height} rounds": plan.long_rounds,
        "verify repeats": plan.verify_repeats,
        "commit repeats": plan.commit_repeats,
    }
    if plan.long_readrate is not None:
        shown[f"{width}x{height} read rate (times playback speed)"] = plan.long_readrate
    return shown


def _report(run: Run, plan: Plan, floor: dict[str, list[float]]) -> BenchResult:
    result = BenchResult(NAME, TITLE)
    ours, theirs = run.sides["videojob"], run.sides["celery"]

    fixed = {side: median(samples.fixed_cost) * MS for side, samples in run.sides.items()}
    result.add(
        "fixed cost over direct ffmpeg, 1 s 320x240 (median): videojob", fixed["videojob"], "ms"
    )
    result.add("fixed cost over direct ffmpeg, 1 s 320x240 (median): Celery", fixed["celery"], "ms")
    result.add(
        "fixed cost ratio videojob/Celery",
        _ratio(fixed["videojob"], fixed["celery"]),
        "x",
        at_most=1.0,
    )

    # videojob verifies twice: the render service reads the container, the export service
    # checks the file it is told of.
    verify_p50 = (median(floor["verify"]) + median(floor["verify_container"])) * MS
    commit_p50 = median(floor["commit"]) * MS
    completion = {
        (side, q): percentile(samples.completion, q) * MS
        for side, samples in run.sides.items()
        for q in (0.5, 0.99)
    }
    target = completion[("celery", 0.99)] + verify_p50 + commit_p50
    aim = min(COMPLETION_AIM_MS, target) if target == target else COMPLETION_AIM_MS
    result.add("exit -> completion seen, p50: videojob", completion[("videojob", 0.5)], "ms")
    result.add("exit -> completion seen, p50: Celery", completion[("celery", 0.5)], "ms")
    result.add(
        "exit -> completion seen, p99: videojob",
        completion[("videojob", 0.99)],
        "ms",
        at_most=round(aim, 3),
    )
    result.add("exit -> completion seen, p99: Celery", completion[("celery", 0.99)], "ms")
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        result.add(
            f"exit -> completion ratio videojob/Celery, {label}",
            _ratio(completion[("videojob", q)], completion[("celery", q)]),
            "x",
        )

    fresh = {
        (side, q): percentile(samples.freshness, q) * MS
        for side, samples in run.sides.items()
        for q in (0.5, 0.99)
    }
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        result.add(f"progress block -> client, {label}: videojob", fresh[("videojob", q)], "ms")
        result.add(f"progress block -> client, {label}: Celery", fresh[("celery", q)], "ms")
    result.add(
        "progress ratio videojob/Celery, p50",
        _ratio(fresh[("videojob", 0.5)], fresh[("celery", 0.5)]),
        "x",
    )
    result.add(
        "progress ratio videojob/Celery, p99",
        _ratio(fresh[("videojob", 0.99)], fresh[("celery", 0.99)]),
        "x",
        at_most=1.0,
    )

    result.add(
        "floor: verify output (render service's container read + export's check), p50",
        verify_p50,
        "ms",
    )
    result.add("floor: durable commit (SQLite WAL, synchronous=FULL), p50", commit_p50, "ms")
    result.add(
        "floor: durable commit (SQLite WAL, synchronous=FULL), p99",
        percentile(floor["commit"], 0.99) * MS,
        "ms",
    )
    result.add("completion target (Celery p99 + verify p50 + commit p50)", target, "ms")
    tie_p50 = (median(floor["spawn_tied"]) - median(floor["spawn"])) * MS
    result.add("floor: FFmpeg tied to the service's life (setpriv), per start, p50", tie_p50, "ms")
    result.add(
        "floor of the fixed cost (create + terminal commits, verify, tied start)",
        2 * commit_p50 + verify_p50 + tie_p50,
        "ms",
    )
    if BARE in run.sides:
        _report_bare(result, fixed, completion, fresh)

    result.details = {
        "plan": _shown_plan(plan),
        "order": "videojob, bare stack (embedded form), direct, Celery on even rounds; "
        "backwards on odd ones",
        "argv": run.argv,
        "versions": _versions(),
        "celery_worker": "solo pool, concurrency 1, prefetch 1, no gossip/mingle/heartbeat",
        "pairs": len(ours.fixed_cost),
        "jobs_per_side": len(ours.outcomes),
        "direct_ms": {label: _ms(times) for label, times in run.direct.items()},
        "completion_target_ms": target,
        "completion_aim_ms": aim,
        "floor_ms": {
            "verify_export_check": _ms(floor["verify"]),
            "verify_with_container_read_p50": median(floor["verify_container"]) * MS,
            "verify_with_container_read_p99": percentile(floor["verify_container"], 0.99) * MS,
            "commit": _ms(floor["commit"]),
            "spawn_plain": _ms(floor["spawn"]),
            "spawn_tied": _ms(floor["spawn_tied"]),
        },
    }
    for side, samples in run.sides.items():
        result.details[side] = {
            "outcomes": {name: samples.outcomes.count(name) for name in set(samples.outcomes)},
            "all_completed": all(o == "completed" for o in samples.outcomes),
            "samples": {
                "fixed_cost": len(samples.fixed_cost),
                "completion": len(samples.completion),
                "progress": len(samples.freshness),
            },
            "progress_unmatched": samples.unmatched_progress,
            "completion_spread_ms": _spread(samples.completion),
            "fixed_cost_spread_ms": _spread(samples.fixed_cost),
            "fixed_cost_ms": _ms(samples.fixed_cost),
            "elapsed_ms": {label: _ms(times) for label, times in samples.elapsed.items()},
            "completion_ms": _ms(samples.completion),
            "progress_ms": _ms(samples.freshness),
        }
    paired = [
        ours_cost - theirs_cost
        for ours_cost, theirs_cost in zip(ours.fixed_cost, theirs.fixed_cost, strict=True)
    ]
    result.details["fixed_cost_videojob_minus_celery_spread_ms"] = _spread(paired)
    return result


@contextlib.contextmanager
def _cluster_database() -> Iterator[str]:
    """A PostgreSQL database of this run (bench.postgres), dropped at the end."""
    database = bench_database(NAME)
    loop = asyncio.new_event_loop()
    try:
        url = loop.run_until_complete(database.__aenter__())
        try:
            yield url
        finally:
            loop.run_until_complete(database.__aexit__(None, None, None))
    finally:
        loop.close()


def _measure(workdir: Path, plan: Plan, *, cluster: bool = False) -> BenchResult:
    """One run; ``cluster``: videojob as CLUSTER_EXPORTS export replicas on PostgreSQL."""
    if not celery_worker.redis_reachable():
        return BenchResult(
            NAME,
            TITLE,
            skipped=(
                f"redis not reachable at {celery_worker.REDIS_HOST}:{celery_worker.REDIS_PORT}"
            ),
        )
    workdir.mkdir(parents=True, exist_ok=True)
    pace = None
    if plan.long_readrate is not None:
        pace = ffmpeg_wrapper.Pace(plan.long_size, plan.long_readrate)
    env, log = ffmpeg_wrapper.install(workdir, pace)
    with contextlib.ExitStack() as running:
        database = running.enter_context(_cluster_database()) if cluster else ""
        stack = running.enter_context(
            running_stack(
                workdir,
                render_env=env,
                max_concurrent=1,
                database=database,
                exports=CLUSTER_EXPORTS if cluster else 1,
            )
        )
        # The bare stack beside the embedded default only: it has the embedded default's shape.
        bare = None
        if not cluster:
            bare = running.enter_context(running_bare_stack(workdir / BARE, render_env=env))
        peer = running.enter_context(celery_worker.running_peer(workdir, env))
        run = asyncio.run(_rounds(stack, bare, peer, log, env, plan, workdir))
    if run.verify_file is None:
        raise RuntimeError("no rendered file to verify")
    verify, verify_container = _verify_samples(run.verify_file, plan.verify_repeats)
    floor = {
        "verify": verify,
        "verify_container": verify_container,
        "commit": _commit_samples(workdir, plan.commit_repeats),
    }
    floor["spawn"], floor["spawn_tied"] = _spawn_samples(plan.commit_repeats)
    return _report(run, plan, floor)


def run(workdir: Path, quick: bool) -> BenchResult:
    """The embedded default (the issue's aims); in the full form also the cluster, whose figures
    are reported beside them, prefixed ``cluster:``, without aims."""
    plan = PLANS["quick" if quick else "full"]
    result = _measure(workdir / "embedded", plan)
    if quick or result.skipped:
        return result
    cluster = _measure(workdir / "cluster", plan, cluster=True)
    result.metrics += [
        Metric(f"cluster: {metric.name}", metric.value, metric.unit) for metric in cluster.metrics
    ]
    result.details["cluster"] = {
        "exports": CLUSTER_EXPORTS,
        "database": "PostgreSQL (this machine's server)",
        **cluster.details,
    }
    return result


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: one round of each render (the longer one paced), a few repeats of
    the floor."""
    return _measure(workdir, PLANS["smoke"])

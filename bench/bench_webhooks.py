"""14. Webhooks (issue 27), two stacks side by side taking jobs in turn, one at a time:

- "plain": each job names its own endpoint on a receiver in this process, which verifies every
  delivery with ``standardwebhooks`` (the job's secret from its create answer) before it answers
  200, as a caller's receiver does (docs/webhooks.md).
- "hanging": the same, and the operator's endpoint (``--webhook-url``) on a receiver that reads
  each request and never answers: every job owes it an event too, each attempt held for the
  whole ``--webhook-timeout`` (default 10 s) and then retried.

Per job: the terminal commit (the export service's ``export.committed`` stamp of the version the
event carries, videojob.stamps) -> the event read whole at the receiver; and the job's
completion latency, ffmpeg's exit (bench.ffmpeg_wrapper) -> ``completed`` at an SSE client. The
hanging endpoint is expected to cost the other jobs' completion nothing (the ratios compare the
two stacks within the run), and the other endpoints' events nothing either: it holds at most
``--webhook-per-endpoint`` of the deliverer's slots."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import ffmpeg_wrapper, latency_path
from bench.jobs import create_job, follow_job, test_pattern_spec
from bench.report import BenchResult
from bench.stack import Stack, running_stack
from bench.stats import percentile
from bench.webhook_receiver import HangingReceiver, VerifyingReceiver
from export_service.webhooks.settings import WebhookSettings

NAME = "webhooks"
TITLE = "Webhooks: terminal commit -> event received; a hanging receiver's cost to other jobs"

SIDES = ("plain", "hanging")
DELIVERY_WAIT_SECONDS = 60.0
MS = 1000.0


@dataclass
class JobRun:
    job_id: str
    outcome: str
    exit_to_completed: float  # seconds; nan when the trace is missing
    delivered_at: float
    event_type: str
    event_version: int
    verified: bool
    webhook_ids: int  # distinct webhook-ids the endpoint received for the job


def _export_args(side: str, hanging: HangingReceiver) -> tuple[str, ...]:
    args: tuple[str, ...] = ("--webhook-allow-private",)
    if side == "hanging":
        operator_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        args += ("--webhook-url", hanging.url, "--webhook-secret", operator_secret)
    return args


@contextlib.contextmanager
def _stacks(
    workdir: Path, render_env: dict[str, str], stamps: Path, hanging: HangingReceiver
) -> Iterator[dict[str, Stack]]:
    with (
        running_stack(
            workdir / "plain",
            render_env=render_env,
            max_concurrent=1,
            stamps_file=stamps,
            export_args=_export_args("plain", hanging),
        ) as plain,
        running_stack(
            workdir / "hanging",
            render_env=render_env,
            max_concurrent=1,
            stamps_file=stamps,
            export_args=_export_args("hanging", hanging),
        ) as with_hanging,
    ):
        yield {"plain": plain, "hanging": with_hanging}


async def _one_job(
    stack: Stack, receiver: VerifyingReceiver, spec: dict[str, Any], log: Path
) -> JobRun:
    path, url = receiver.new_endpoint()
    async with httpx.AsyncClient(base_url=stack.url, timeout=60) as client:
        created = await create_job(client, {**spec, "notify": {"url": url, "events": "terminal"}})
    receiver.secret_is(path, created["notifySecret"])
    events = await follow_job(stack.gateway.port, created["id"])
    async with asyncio.timeout(DELIVERY_WAIT_SECONDS):
        delivery = await receiver.first_delivery(path)
    trace = ffmpeg_wrapper.trace_for(ffmpeg_wrapper.read_traces(log), created["id"])
    exited = trace.exited if trace is not None else float("nan")
    return JobRun(
        job_id=created["id"],
        outcome=events[-1].name,
        exit_to_completed=events[-1].received - exited,
        delivered_at=delivery.received,
        event_type=str(delivery.event.get("type", "")),
        event_version=int(delivery.event["data"]["version"]),
        verified=all(d.verified for d in receiver.deliveries[path]),
        webhook_ids=len({d.webhook_id for d in receiver.deliveries[path]}),
    )


async def _measure(
    workdir: Path,
    render_env: dict[str, str],
    log: Path,
    stamps: Path,
    jobs: int,
    spec: dict[str, Any],
) -> tuple[dict[str, list[JobRun]], dict[str, int]]:
    receiver = VerifyingReceiver()
    hanging = HangingReceiver()
    await receiver.start()
    await hanging.start()
    runs: dict[str, list[JobRun]] = {side: [] for side in SIDES}
    stacks_context = _stacks(workdir, render_env, stamps, hanging)
    try:
        # Starting and stopping the stacks blocks; the receivers answer meanwhile.
        stacks = await asyncio.to_thread(stacks_context.__enter__)
        try:
            for number in range(jobs):
                order = SIDES if number % 2 == 0 else SIDES[::-1]
                for side in order:
                    runs[side].append(await _one_job(stacks[side], receiver, spec, log))
        finally:
            await asyncio.to_thread(stacks_context.__exit__, None, None, None)
    finally:
        await hanging.stop()
        await receiver.stop()
    return runs, {"requests": hanging.requests, "peak_open": hanging.peak_open}


def _commit_lags(stamps: Path, runs: list[JobRun]) -> list[float]:
    """Terminal commit -> event read at the receiver, seconds, for each job whose commit of the
    event's version was stamped."""
    by_job = latency_path.read_stamps(stamps)
    lags: list[float] = []
    for run in runs:
        committed = [
            stamp.when
            for stamp in latency_path.stamps_of(by_job, run.job_id)
            if stamp.step == "export.committed"
            and stamp.detail.partition(":")[0] == str(run.event_version)
        ]
        if committed:
            lags.append(run.delivered_at - committed[0])
    return lags


def run(workdir: Path, quick: bool) -> BenchResult:
    return run_jobs(workdir, 2 if quick else 40, test_pattern_spec(1.0, 640, 360))


def smoke(workdir: Path) -> BenchResult:
    """For the test suite: one tiny job per side."""
    return run_jobs(workdir, 1, test_pattern_spec(1.0, 160, 120, preset="ultrafast"))


def run_jobs(workdir: Path, jobs: int, spec: dict[str, Any]) -> BenchResult:
    env, log = ffmpeg_wrapper.install(workdir)
    stamps = workdir / "stamps.log"
    runs, hanging = asyncio.run(_measure(workdir, env, log, stamps, jobs, spec))
    result = BenchResult(NAME, TITLE)
    commit: dict[str, list[float]] = {}
    completion: dict[str, list[float]] = {}
    for side in SIDES:
        done = [run for run in runs[side] if run.outcome == "completed"]
        commit[side] = _commit_lags(stamps, done)
        completion[side] = [run.exit_to_completed for run in done]
    for side, label in (("plain", ""), ("hanging", " beside a hanging endpoint")):
        for fraction, name in ((0.5, "p50"), (0.99, "p99")):
            result.add(
                f"terminal commit -> event received{label}, {name}",
                percentile(commit[side], fraction) * MS,
                "ms",
            )
    for side, label in (("plain", "no hanging endpoint"), ("hanging", "a hanging endpoint")):
        for fraction, name in ((0.5, "p50"), (0.99, "p99")):
            result.add(
                f"completion (exit -> completed at SSE), {label}, {name}",
                percentile(completion[side], fraction) * MS,
                "ms",
            )
    for fraction, name in ((0.5, "p50"), (0.99, "p99")):
        result.add(
            f"completion: ratio hanging / plain, {name}",
            percentile(completion["hanging"], fraction) / percentile(completion["plain"], fraction),
            "x",
        )
    result.details = {
        "jobs_per_side": jobs,
        "spec": spec,
        "outcomes": {side: [run.outcome for run in runs[side]] for side in SIDES},
        "event_types": {side: sorted({run.event_type for run in runs[side]}) for side in SIDES},
        "all_verified": all(run.verified for side in SIDES for run in runs[side]),
        "webhook_ids_per_job": {side: [run.webhook_ids for run in runs[side]] for side in SIDES},
        "commit_samples": {side: len(commit[side]) for side in SIDES},
        "commit_to_received_ms": {side: [lag * MS for lag in commit[side]] for side in SIDES},
        "exit_to_completed_ms": {side: [lag * MS for lag in completion[side]] for side in SIDES},
        # Attempts held unanswered at most at once, against the deliverer's slots.
        "hanging_receiver": hanging,
        "deliverer": {
            "timeout_s": WebhookSettings().timeout,
            "concurrency": WebhookSettings().concurrency,
            "per_endpoint": WebhookSettings().per_endpoint,
        },
    }
    return result

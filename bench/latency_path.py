"""Where each millisecond of an event's way from ffmpeg to the SSE client goes: the stamps the
services keep when ``VIDEOJOB_STAMPS`` is set (videojob.stamps), joined per job with the
ffmpeg wrapper's stamps and the client's receive times, as the median and p99 of each hop.

A completion's hops follow one job's terminal event; a progress event's hops follow one store
version back to the render event (``seq``) it was written from."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import median, percentile

# ffmpeg's exit (the wrapper) -> ... -> the client. Each is the first stamp of that step after
# the previous one, for the job.
COMPLETION_STEPS = (
    "render.exit_seen",
    "render.drained",
    "render.verify_start",
    "render.verify_end",
    "render.published",
    "render.completed_appended",
    "render.sent.completed",
    "export.received.completed",
    "export.check_start",
    "export.check_end",
    "export.complete_start",
    "export.committed",
    "export.watch_read",
    "gateway.received",
    "gateway.sse_yield",
)
PROGRESS_STEPS = (
    "render.block",
    "render.sent.progress",
    "export.received.progress",
    "export.committed",
    "export.watch_read",
    "gateway.received",
    "gateway.sse_yield",
)


@dataclass(frozen=True)
class Stamp:
    when: float
    step: str
    job: str
    detail: str


@dataclass
class Breakdown:
    """Per hop (``a -> b``), the lags in ms over every traced event."""

    hops: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, path: list[tuple[str, float]]) -> None:
        for (before, at), (after, then) in itertools.pairwise(path):
            self.hops[f"{before} -> {after}"].append((then - at) * 1000)

    def summary(self) -> list[dict[str, object]]:
        return [
            {
                "hop": hop,
                "samples": len(lags),
                "p50_ms": round(median(lags), 3),
                "p99_ms": round(percentile(lags, 0.99), 3),
            }
            for hop, lags in self.hops.items()
        ]


def read_stamps(path: Path) -> dict[str, list[Stamp]]:
    """Stamps by the job id they name (a render id is the job id with the attempt appended)."""
    by_job: dict[str, list[Stamp]] = defaultdict(list)
    if not path.exists():
        return by_job
    for line in path.read_text().splitlines():
        parts = line.split(" ", 4)
        if len(parts) < 4:
            continue
        when, _pid, step, job = parts[:4]
        detail = parts[4] if len(parts) == 5 else ""
        by_job[job].append(Stamp(float(when), step, job, detail))
    for stamps in by_job.values():
        stamps.sort(key=lambda stamp: stamp.when)
    return by_job


def stamps_of(by_job: dict[str, list[Stamp]], job_id: str) -> list[Stamp]:
    found = [stamp for key, stamps in by_job.items() if job_id in key for stamp in stamps]
    return sorted(found, key=lambda stamp: stamp.when)


def completion_path(
    stamps: list[Stamp], exited: float, received: float, version: int
) -> list[tuple[str, float]]:
    """The job's completion hops, from ffmpeg's exit to the client; the store-side steps are
    those of the terminal ``version``."""
    path: list[tuple[str, float]] = [("ffmpeg exit", exited)]
    at = exited
    for step in COMPLETION_STEPS:
        match = next(
            (
                stamp
                for stamp in stamps
                if stamp.step == step and stamp.when >= at and _version_ok(stamp, version)
            ),
            None,
        )
        if match is not None:
            path.append((step, match.when))
            at = match.when
    path.append(("client", received))
    return path


def progress_path(
    stamps: list[Stamp], block: float, received: float, version: int
) -> list[tuple[str, float]] | None:
    """One progress version's hops back to the render event it came from; None when a step
    is missing (the version was not written from a render progress event)."""
    committed = _find(stamps, "export.committed", lambda s: _version_ok(s, version))
    if committed is None:
        return None
    seq = committed.detail.partition(":")[2]
    received_by_export = _find(stamps, "export.received.progress", lambda s: s.detail == seq)
    sent = _find(stamps, "render.sent.progress", lambda s: s.detail == seq)
    watch = _find(stamps, "export.watch_read", lambda s: s.detail == str(version))
    gateway = _find(stamps, "gateway.received", lambda s: s.detail == str(version))
    sse = _find(stamps, "gateway.sse_yield", lambda s: s.detail == str(version))
    if None in (received_by_export, sent, watch, gateway, sse):
        return None
    assert sent is not None
    parsed = [s for s in stamps if s.step == "render.block" and s.when <= sent.when]
    path: list[tuple[str, float]] = [("ffmpeg block", block)]
    if parsed:
        path.append(("render.block", parsed[-1].when))
    for step, stamp in (
        ("render.sent.progress", sent),
        ("export.received.progress", received_by_export),
        ("export.committed", committed),
        ("export.watch_read", watch),
        ("gateway.received", gateway),
        ("gateway.sse_yield", sse),
    ):
        assert stamp is not None
        path.append((step, stamp.when))
    path.append(("client", received))
    return path


def _version_ok(stamp: Stamp, version: int) -> bool:
    if stamp.step == "export.committed":
        return stamp.detail.partition(":")[0] == str(version)
    if stamp.step in ("export.watch_read", "gateway.received", "gateway.sse_yield"):
        return stamp.detail == str(version)
    return True


def _find(stamps: list[Stamp], step: str, accept: Callable[[Stamp], bool]) -> Stamp | None:
    return next((s for s in stamps if s.step == step and accept(s)), None)


def total_ms(path: list[tuple[str, float]]) -> float:
    return (path[-1][1] - path[0][1]) * 1000 if len(path) > 1 else math.nan

"""What the harness does as an HTTP client: submit jobs, watch their events, cancel them.

The client never decides an outcome: it only records what it was told, with timestamps.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.chaos.stack import CLIP_NAME, CORRUPT_NAME
from videojob.sse_client import aevents

TERMINAL = frozenset({"completed", "failed", "cancelled"})
NEAR_END_STAGES = frozenset({"Finalizing", "Verifying"})


class Rejected(RuntimeError):
    """The request itself was refused (4xx): retrying it cannot help."""

    def __init__(self, key: str, status: int, body: str) -> None:
        super().__init__(f"{key} rejected {status}: {body}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class PlannedJob:
    index: int
    kind: str
    key: str
    body: dict[str, Any]
    expected_duration: float | None
    copies: int  # how many times the same Idempotency-Key is submitted
    concurrent_copies: bool


def _pattern(duration: float, width: int, height: int, fps: float) -> dict[str, Any]:
    return {
        "testPattern": {
            "durationSeconds": duration,
            "width": width,
            "height": height,
            "fps": fps,
        }
    }


# Every run, however short, includes these: a corrupt input, duplicate submits, and split jobs
# of both sources.
FORCED_KINDS = {3: "corrupt", 4: "split", 6: "split_transcode"}
FORCED_COPIES = {1: (2, True), 2: (3, False)}
KIND_THRESHOLDS = {
    "pattern": 0.0,
    "pattern_long": 0.52,
    "faststart": 0.62,
    "webm": 0.70,
    "transcode": 0.76,
    "split": 0.83,
    "split_transcode": 0.89,
    "corrupt": 0.93,
}
# Split jobs (output.split.parts N >= 2: N parts rendered apart, then joined; the audio a
# render of its own beside them). The planner's policy never splits outputs this short, so the
# harness asks explicitly.
SPLIT_KINDS = frozenset({"split", "split_transcode", "split_long"})


def plan_job(rng: random.Random, index: int, seed: int, clip_duration: float) -> PlannedJob:
    roll = rng.random()
    if index in FORCED_KINDS:
        roll = KIND_THRESHOLDS[FORCED_KINDS[index]]
    duration = rng.choice([1.0, 1.5, 2.0, 2.5, 3.0])
    source = _pattern(duration, 160, 120, 10)
    output: dict[str, Any] = {"container": "mp4", "preset": "ultrafast"}
    expected: float | None = duration
    kind = max((start, name) for name, start in KIND_THRESHOLDS.items() if roll >= start)[1]
    if kind == "pattern_long":
        duration = rng.choice([6.0, 8.0])
        source, expected = _pattern(duration, 320, 240, 25), duration
    elif kind == "faststart":
        output["faststart"] = True
    elif kind == "webm":
        output = {"container": "webm", "videoCodec": "vp9", "audioCodec": "opus", "crf": 40}
    elif kind == "transcode":
        source, expected = {"transcode": {"inputPath": CLIP_NAME}}, clip_duration
    elif kind == "split":
        duration = rng.choice([2.0, 3.0, 4.0])
        source, expected = _pattern(duration, 160, 120, 10), duration
        output["split"] = {"parts": rng.choice([2, 3])}
    elif kind == "split_transcode":
        source, expected = {"transcode": {"inputPath": CLIP_NAME}}, clip_duration
        output["split"] = {"parts": rng.choice([2, 3])}
    elif kind == "corrupt":
        source, expected = {"transcode": {"inputPath": CORRUPT_NAME}}, None
    copies = 1
    if rng.random() < 0.15:
        copies = rng.choice([2, 2, 3])
    concurrent = rng.random() < 0.5
    copies, concurrent = FORCED_COPIES.get(index, (copies, concurrent))
    return PlannedJob(
        index=index,
        kind=kind,
        key=f"chaos-{seed}-{index}",
        body={"source": source, "output": output},
        expected_duration=expected,
        copies=copies,
        concurrent_copies=concurrent,
    )


def plan_long_job(index: int, seed: int) -> PlannedJob:
    """A job long enough to be slowed into its last tenth: the target of an aimed fault. One in
    two is split (2 or 3 parts, by the index), so that aimed faults strike split jobs mid-part."""
    output: dict[str, Any] = {"container": "mp4", "preset": "ultrafast"}
    kind = "pattern_long"
    if index % 2:
        kind, output["split"] = "split_long", {"parts": 2 + index % 4 // 2}
    return PlannedJob(
        index=index,
        kind=kind,
        key=f"chaos-{seed}-{index}",
        body={"source": _pattern(12.0, 320, 240, 25), "output": output},
        expected_duration=12.0,
        copies=1,
        concurrent_copies=False,
    )


@dataclass(frozen=True)
class PartView:
    """One render of a split job (a part, the audio or the join) as the job's JSON shows it."""

    index: int
    state: str
    first_frame: int
    frame_count: int
    frames_done: int
    attempts: int
    render_id: str = ""
    join: bool = False
    audio: bool = False

    @property
    def label(self) -> str:
        return "the join" if self.join else "the audio" if self.audio else f"part {self.index + 1}"


def parts_from_json(job: dict[str, Any]) -> tuple[PartView, ...]:
    return tuple(
        PartView(
            index=int(part["index"]),
            state=str(part["state"]),
            first_frame=int(part["firstFrame"]),
            frame_count=int(part["frameCount"]),
            frames_done=int(part["framesDone"]),
            attempts=int(part["attempts"]),
            render_id=str(part.get("renderId") or ""),
            join=bool(part.get("join")),
            audio=bool(part.get("audio")),
        )
        for part in job.get("parts") or ()
    )


@dataclass(frozen=True)
class Observation:
    at: float
    event: str
    version: int
    status: str
    progress: float
    stage: str
    output_path: str
    # A split job's parts as this event showed them (empty: a whole job).
    parts: tuple[PartView, ...] = ()


@dataclass
class JobTrack:
    """Everything the harness saw of one job."""

    planned: PlannedJob
    job_id: str
    submit_ids: list[str] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    reconnects: int = 0
    cancels: list[tuple[float, int, str]] = field(default_factory=list)  # (at, http, status)
    watcher_error: str = ""
    cancel_ffmpeg_gone_after: float | None = None  # seconds from an accepted cancel
    submitted_at: float = field(default_factory=time.monotonic)

    @property
    def latest(self) -> Observation | None:
        return self.observations[-1] if self.observations else None

    @property
    def terminal_seen(self) -> bool:
        latest = self.latest
        return latest is not None and latest.status in TERMINAL

    def near_end(self) -> bool:
        latest = self.latest
        if latest is None or latest.status != "running":
            return False
        return latest.progress >= 90 or latest.stage in NEAR_END_STAGES

    @property
    def split(self) -> bool:
        return self.planned.kind in SPLIT_KINDS

    def cancel_accepted_at(self) -> float | None:
        for at, http_status, status in self.cancels:
            if http_status == 200 and status == "cancelled":
                return at
        return None


class Client:
    def __init__(self, base_url: str) -> None:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=50)
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(10.0, read=10.0), limits=limits
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def submit(self, job: PlannedJob, deadline: float) -> dict[str, Any]:
        """POSTs until the job is accepted; a retry reuses the Idempotency-Key, as a real
        client must. Raises Rejected when the request itself is refused."""
        delay = 0.1
        while True:
            try:
                response = await self.http.post(
                    "/api/jobs", json=job.body, headers={"Idempotency-Key": job.key}
                )
            except httpx.HTTPError:
                response = None
            if response is not None and response.is_success:
                body: dict[str, Any] = response.json()
                return body
            if response is not None and response.status_code in (400, 404, 415, 422):
                raise Rejected(job.key, response.status_code, response.text)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{job.key} not accepted before the deadline")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def get(self, job_id: str) -> tuple[int, dict[str, Any] | None]:
        response = await self.http.get(f"/api/jobs/{job_id}")
        return response.status_code, response.json() if response.is_success else None

    async def cancel(self, track: JobTrack) -> None:
        for _ in range(3):
            try:
                response = await self.http.post(f"/api/jobs/{track.job_id}/cancel")
            except httpx.HTTPError:
                await asyncio.sleep(0.3)
                continue
            status = ""
            if response.is_success:
                status = response.json().get("status", "")
            track.cancels.append((time.monotonic(), response.status_code, status))
            if response.status_code < 500:
                return
            await asyncio.sleep(0.3)

    async def watch(self, track: JobTrack, deadline: float) -> None:
        """Follows the job's SSE stream to its terminal event, reconnecting with
        Last-Event-ID after every break, until ``deadline``."""
        while not track.terminal_seen and time.monotonic() < deadline:
            headers = {"Accept": "text/event-stream"}
            if track.latest is not None:
                headers["Last-Event-ID"] = str(track.latest.version)
            try:
                await self._follow(track, headers)
            except (httpx.HTTPError, ValueError) as error:
                track.watcher_error = f"{type(error).__name__}: {error}"
            if not track.terminal_seen:
                track.reconnects += 1
                await asyncio.sleep(0.25)

    async def _follow(self, track: JobTrack, headers: dict[str, str]) -> None:
        url = f"/api/jobs/{track.job_id}/events"
        timeout = httpx.Timeout(10.0, read=20.0)
        async with self.http.stream("GET", url, headers=headers, timeout=timeout) as response:
            if response.status_code != 200:
                track.watcher_error = f"HTTP {response.status_code}"
                return
            async for frame in aevents(response.aiter_lines()):
                track.observations.append(observation(frame.name, frame.job))
                if frame.terminal:
                    return

    async def final_sse_state(self, job_id: str) -> Observation | None:
        """Opens a fresh stream: its first event is the current state."""
        url = f"/api/jobs/{job_id}/events"
        async with self.http.stream("GET", url, timeout=httpx.Timeout(10.0)) as response:
            if response.status_code != 200:
                return None
            async for frame in aevents(response.aiter_lines()):
                return observation(frame.name, frame.job)
        return None


def observation(event: str, job: dict[str, Any]) -> Observation:
    return Observation(
        at=time.monotonic(),
        event=event,
        version=int(job["version"]),
        status=str(job["status"]),
        progress=float(job["progress"]),
        stage=str(job.get("stage") or ""),
        output_path=str(job.get("outputPath") or ""),
        parts=parts_from_json(job),
    )

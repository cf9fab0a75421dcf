"""The invariants of design.md, checked over every job once the run has settled.

In s3 mode (the outputs are objects) a COMPLETED job's object must exist with the checksum the
job records (``outputSha256`` is the SHA-256 of the object's bytes, downloaded), and be the valid
video a file would have to be; an object the harness deleted behind the services must be
answered as gone; no object or unfinished upload may be left that no completed job claims.

With the run's webhook receiver (tests.chaos.webhooks) every terminal job's terminal event must
have been received at least once, every delivery signed, and none may tell of a state the job
never had (a status its history does not show at the version the event names).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc

from export_service.store.split_record import AUDIO_INDEX, JOIN_INDEX, part_render_id
from render_service.instance import INSTANCES_DIR
from tests.chaos.client import TERMINAL, Client, JobTrack, Observation, PartView, parts_from_json
from tests.chaos.faults import FaultRecord
from tests.chaos.procfs import ffmpeg_processes
from tests.chaos.stack import decode_errors
from tests.chaos.webhooks import EVENT_TYPE_PREFIX, WebhookDelivery
from tests.support.media import header_duration
from videojob.errors import VideoJobError
from videojob.export.v1 import export_pb2
from videojob.output_check import DURATION_TOLERANCE_SECONDS
from videojob.render.v1 import render_pb2
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore
from videojob.storage.settings import StoreSettings

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub as RenderStub

CANCEL_STOPS_FFMPEG_WITHIN = 2.0
# A few passes of the export replicas' orphan sweep (--orphan-sweep-interval 2 in s3 mode), and a
# removal's retries once the output directory is back (backoff capped at a few seconds).
SWEEP_PASSES_SECONDS = 20.0
# Faults that must never fail a job: a gateway holds no state, and another replica takes over a
# paused or gracefully stopped replica's jobs and re-attaches to their renders.
CANNOT_FAIL_A_JOB = frozenset({"kill_gateway", "pause_export", "restart_export"})
# A render a render service still holds as one of these has not ended.
RENDER_NOT_ENDED = frozenset({render_pb2.RENDER_STATE_QUEUED, render_pb2.RENDER_STATE_RUNNING})
# The render of a split job's part (or audio, or join) renders as <id>-p<N>, <id>-audio or
# <id>-join, then -a<attempt>: its files are the part's, not the job's output.
PART_OUTPUT = re.compile(r"-(p\d+|audio|join)(-a\d+)?\.")
STATUS_NAMES = {
    export_pb2.QUEUED: "queued",
    export_pb2.RUNNING: "running",
    export_pb2.COMPLETED: "completed",
    export_pb2.FAILED: "failed",
    export_pb2.CANCELLED: "cancelled",
}


@dataclass(frozen=True)
class Violation:
    invariant: str
    job_id: str
    detail: str


@dataclass(frozen=True)
class FinalState:
    status: str
    progress: float
    version: int
    stage: str
    output_path: str
    error_code: str
    output_sha256: str = ""
    # A split job's parts, its audio and its join as the job records them (empty: whole).
    parts: tuple[PartView, ...] = ()
    # How many render attempts a whole job started (its ``attempts``).
    attempts: int = 0
    # Why a job asked to be split renders whole (``splitReason``), e.g. its source's facts
    # unknown when it started.
    split_reason: str = ""

    @classmethod
    def from_json(cls, job: dict[str, Any]) -> FinalState:
        error = job.get("error") or {}
        return cls(
            status=str(job["status"]),
            progress=float(job["progress"]),
            version=int(job["version"]),
            stage=str(job.get("stage") or ""),
            output_path=str(job.get("outputPath") or ""),
            error_code=str(error.get("code") or ""),
            output_sha256=str(job.get("outputSha256") or ""),
            parts=parts_from_json(job),
            attempts=len(job.get("attempts") or ()),
            split_reason=str(job.get("splitReason") or ""),
        )

    @classmethod
    def from_proto(cls, job: export_pb2.VideoJob) -> FinalState:
        return cls(
            status=STATUS_NAMES.get(job.status, str(job.status)),
            progress=job.progress,
            version=job.version,
            stage=job.stage,
            output_path=job.output_path,
            error_code=job.error.code if job.HasField("error") else "",
            output_sha256=job.output_sha256,
        )

    def view(self) -> tuple[str, float, int, str]:
        return self.status, self.progress, self.version, self.output_path


def check_split_frames(parts: Sequence[PartView], expected_frames: int | None) -> list[str]:
    """A split job's plan covers its output's frames exactly: the parts (in plan order) are
    contiguous from frame 0, their frame counts add up to the join's (the output's total), and
    that total is the output's duration times its frame rate (``expected_frames``; None:
    unknown). A completed job's parts are all done, each with all its frames."""
    problems = []
    videos = [part for part in parts if not (part.join or part.audio)]
    joins = [part for part in parts if part.join]
    if not videos or len(joins) != 1:
        return [f"{len(videos)} part(s) and {len(joins)} join(s) recorded"]
    total = joins[0].frame_count
    first = 0
    for part in videos:
        if part.first_frame != first:
            problems.append(f"{part.label} starts at frame {part.first_frame}, not {first}")
        first = part.first_frame + part.frame_count
    counts = [part.frame_count for part in videos]
    if sum(counts) != total:
        problems.append(f"the parts' frames {counts} add up to {sum(counts)}, not {total}")
    if expected_frames is not None and total != expected_frames:
        problems.append(f"{total} frames planned, the output has {expected_frames}")
    return problems


def check_parts_terminal(final: FinalState) -> list[str]:
    """A completed split job's every part, audio and join is done with all its frames (the
    record holds no part still pending, rendering or retrying once the job completed)."""
    if final.status != "completed":
        return []
    return [
        f"{part.label} {part.state} with {part.frames_done}/{part.frame_count} frames"
        for part in final.parts
        if part.state != "done" or part.frames_done != part.frame_count
    ]


def check_part_progress(track: JobTrack) -> list[str]:
    """What a watcher saw of each part: its frames never fall while it renders the same
    attempt (a part rendered again starts over, with one more attempt), and its attempts never
    fall."""
    problems = []
    seen: dict[tuple[bool, bool, int], PartView] = {}
    for observation in track.observations:
        for part in observation.parts:
            key = (part.join, part.audio, part.index)
            before = seen.get(key)
            seen[key] = part
            if before is None:
                continue
            if part.attempts < before.attempts:
                problems.append(
                    f"{part.label}'s attempts went {before.attempts} -> {part.attempts} "
                    f"(v{observation.version})"
                )
            elif part.attempts == before.attempts and part.frames_done < before.frames_done:
                if part.state == "retrying":
                    continue  # lost: its frames start over once its next attempt is placed
                problems.append(
                    f"{part.label}'s frames went {before.frames_done} -> {part.frames_done} "
                    f"in attempt {part.attempts} (v{observation.version})"
                )
    return problems


def check_history(track: JobTrack) -> list[str]:
    """What a watcher saw must never go backwards, and a terminal state must never change."""
    problems = []
    previous: Observation | None = None
    terminal: Observation | None = None
    for seen in track.observations:
        if seen.progress >= 100 and seen.status != "completed":
            problems.append(f"progress 100 while {seen.status} (v{seen.version})")
        if seen.status == "completed" and seen.progress != 100:
            problems.append(f"completed with progress {seen.progress} (v{seen.version})")
        changed = terminal is not None and seen.version != terminal.version
        if terminal is not None and (changed or seen.status != terminal.status):
            problems.append(
                f"terminal {terminal.status} v{terminal.version} became {seen.status} "
                f"v{seen.version}"
            )
        if previous is not None:
            if seen.version <= previous.version:
                problems.append(f"version went {previous.version} -> {seen.version}")
            if seen.progress < previous.progress:
                problems.append(
                    f"progress went {previous.progress} -> {seen.progress} "
                    f"(v{previous.version} -> v{seen.version})"
                )
        if seen.status in TERMINAL and terminal is None:
            terminal = seen
        previous = seen
    return problems


@dataclass(frozen=True)
class HistoryRow:
    job_id: str
    version: int
    change: str
    owner: str | None
    lease_epoch: int | None


HISTORY_QUERY = (
    "SELECT job_id, version, change, owner, lease_epoch FROM job_history ORDER BY job_id, version"
)
DUPLICATE_REQUESTS_QUERY = (
    "SELECT request_id, count(*) FROM jobs GROUP BY request_id HAVING count(*) > 1"
)


async def read_history(database: str) -> tuple[list[HistoryRow], list[tuple[str, int]]]:
    """Every job's history rows in version order, and the request ids stored more than once."""
    if database.startswith("sqlite:///"):
        return await asyncio.to_thread(_read_sqlite_history, database.removeprefix("sqlite:///"))
    connection = await asyncpg.connect(database, timeout=10)
    try:
        rows = await connection.fetch(HISTORY_QUERY)
        duplicates = await connection.fetch(DUPLICATE_REQUESTS_QUERY)
    finally:
        await connection.close()
    return [HistoryRow(*row) for row in rows], [(row[0], row[1]) for row in duplicates]


def _read_sqlite_history(path: str) -> tuple[list[HistoryRow], list[tuple[str, int]]]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(HISTORY_QUERY).fetchall()
        duplicates = connection.execute(DUPLICATE_REQUESTS_QUERY).fetchall()
    finally:
        connection.close()
    return [HistoryRow(*row) for row in rows], [(row[0], row[1]) for row in duplicates]


def check_leases(rows: list[HistoryRow]) -> list[Violation]:
    """The fencing invariants over one or more jobs' history (in version order per job): no
    write names a lease epoch older than one already written (a replica that lost its lease
    wrote after the new owner began), and one epoch of a job belongs to one owner."""
    found = []
    newest: dict[str, HistoryRow] = {}
    owners: dict[tuple[str, int], str] = {}
    for row in rows:
        if row.lease_epoch is None:
            continue
        before = newest.get(row.job_id)
        if (
            before is not None
            and before.lease_epoch is not None
            and (row.lease_epoch < before.lease_epoch)
        ):
            found.append(
                Violation(
                    "no_write_of_an_old_lease",
                    row.job_id,
                    f"v{row.version} {row.change} by {row.owner} epoch {row.lease_epoch} "
                    f"after v{before.version} epoch {before.lease_epoch} by {before.owner}",
                )
            )
            continue
        newest[row.job_id] = row
        if row.owner is not None:
            first = owners.setdefault((row.job_id, row.lease_epoch), row.owner)
            if first != row.owner:
                found.append(
                    Violation(
                        "one_owner_per_lease",
                        row.job_id,
                        f"epoch {row.lease_epoch} written by {first} and {row.owner} "
                        f"(v{row.version})",
                    )
                )
    return found


def owner_changes(rows: list[HistoryRow]) -> int:
    """How many jobs were written under more than one owner."""
    owners: dict[str, set[str]] = {}
    for row in rows:
        if row.owner is not None:
            owners.setdefault(row.job_id, set()).add(row.owner)
    return sum(1 for names in owners.values() if len(names) > 1)


async def list_store(stub: Stub) -> list[export_pb2.VideoJob]:
    jobs: list[export_pb2.VideoJob] = []
    token = ""
    while True:
        page = await stub.ListExports(
            export_pb2.ListExportsRequest(page_size=100, page_token=token), timeout=10
        )
        jobs.extend(page.jobs)
        if not page.next_page_token:
            return jobs
        token = page.next_page_token


@dataclass
class StoredOutputs:
    """s3 mode: where the outputs are, and the objects the harness deleted behind the services
    (job id -> output path)."""

    settings: StoreSettings
    location: S3Location
    deleted: dict[str, str]
    # Where objects are downloaded to be checked (each removed once checked).
    scratch: Path

    def expected_url(self, job_id: str, container: str) -> re.Pattern[str]:
        """Attempt 1 stores as the job id, attempt n as <id>-a<n> (docs/scaling.md)."""
        base = re.escape(str(self.location).rstrip("/"))
        return re.compile(rf"{base}/{re.escape(job_id)}(-a\d+)?\.{re.escape(container)}")


@dataclass
class Checker:
    client: Client
    stubs: list[Stub]  # one per export replica: each must answer for every job
    output_dir: Path
    tracks: dict[str, JobTrack]
    submissions: dict[str, list[str]]  # Idempotency-Key -> every job id a submit returned
    finals: dict[str, FinalState]
    faults: list[FaultRecord]
    database: str = ""  # the store's URL: its history is checked too
    # Where the run's ffmpegs write (default: the output directory).
    ffmpeg_dir: Path | None = None
    stored: StoredOutputs | None = None
    # How long the outputs may take to be rid of what no record claims (removals retried with
    # backoff; in s3 mode, the sweep's passes too).
    sweep_wait: float = SWEEP_PASSES_SECONDS
    # What the run's webhook receiver got (None: the run had none).
    webhooks: Sequence[WebhookDelivery] | None = None
    # One per render service (direct, not through its proxy): no split job's render may still
    # run there once the job is terminal.
    renders: list[RenderStub] = field(default_factory=list)
    owner_changes: int = field(default=0, init=False)
    # s3 mode, while run() checks: the store, and every key under the outputs' location.
    objects: ObjectStore | None = field(default=None, init=False)
    stored_keys: list[str] = field(default_factory=list, init=False)

    @property
    def stub(self) -> Stub:
        return self.stubs[0]

    async def run(self) -> list[Violation]:
        if self.stored is None:
            return await self._run()
        async with ObjectStore(self.stored.settings) as objects:
            self.objects = objects
            self.stored_keys = await objects.list_keys(self.stored.location)
            return await self._run()

    async def _run(self) -> list[Violation]:
        found: list[Violation] = []
        found += self._idempotency()
        found += await self._store()
        if self.database:
            found += await self._history()
        semaphore = asyncio.Semaphore(2)
        per_job = await asyncio.gather(
            *(self._job(track, semaphore) for track in self.tracks.values())
        )
        for violations in per_job:
            found += violations
        found += self._ffmpeg_leftovers()
        if self.stored is not None:
            found += await self.stored_leftovers()
        else:
            found += await self.file_leftovers()
        if self.webhooks is not None:
            statuses = {job_id: await read_statuses(self.stub, job_id) for job_id in self.tracks}
            found += check_webhooks(self.finals, statuses, self.webhooks)
        return found

    def _idempotency(self) -> list[Violation]:
        found = []
        for key, ids in self.submissions.items():
            if len(set(ids)) > 1:
                found.append(Violation("one_job_per_key", ids[0], f"key {key} gave {ids}"))
        return found

    async def _store(self) -> list[Violation]:
        found = []
        stored = await list_store(self.stub)
        stored_ids = {job.id for job in stored}
        for job_id in self.tracks:
            if job_id not in stored_ids:
                found.append(Violation("accepted_job_in_store", job_id, "not in ListExports"))
        known = {job_id for ids in self.submissions.values() for job_id in ids}
        for job in stored:
            if job.id not in known:
                found.append(Violation("no_unknown_jobs", job.id, f"request_id {job.request_id!r}"))
        per_key = Counter(job.request_id for job in stored if job.request_id)
        for key, count in per_key.items():
            if count > 1:
                found.append(Violation("one_job_per_key", key, f"{count} jobs in the store"))
        return found

    async def _history(self) -> list[Violation]:
        rows, duplicates = await read_history(self.database)
        self.owner_changes = owner_changes(rows)
        found = check_leases(rows)
        for request_id, count in duplicates:
            found.append(Violation("one_job_per_key", request_id, f"{count} rows in jobs"))
        return found

    async def _job(self, track: JobTrack, semaphore: asyncio.Semaphore) -> list[Violation]:
        job_id = track.job_id

        def bad(invariant: str, detail: str) -> Violation:
            return Violation(invariant, job_id, detail)

        found = []
        final = self.finals.get(job_id)
        if final is None:
            return [bad("accepted_job_in_store", "GET /api/jobs/{id} did not answer 200")]
        if final.status not in TERMINAL:
            found.append(bad("terminal", f"still {final.status} {final.progress}% {final.stage}"))
        rpc_views = [await _rpc_view(stub, job_id) for stub in self.stubs]
        sse = await self.client.final_sse_state(job_id)
        sse_view = (sse.status, sse.progress, sse.version, sse.output_path) if sse else None
        if not all(final.view() == rpc_view == sse_view for rpc_view in rpc_views):
            found.append(bad("views_agree", f"HTTP {final.view()} gRPC {rpc_views} SSE {sse_view}"))
        for problem in check_history(track):
            found.append(bad("watcher_monotonic", problem))
        if not track.terminal_seen:
            found.append(
                bad("watcher_saw_terminal", f"last seen {track.latest}, {track.watcher_error}")
            )
        elif track.latest is not None and track.latest.version != final.version:
            found.append(
                bad(
                    "terminal_final",
                    f"watcher ended at {track.latest.status} v{track.latest.version}, "
                    f"store now {final.status} v{final.version}",
                )
            )
        if track.cancel_accepted_at() is not None and final.status != "cancelled":
            found.append(bad("cancel_honoured", f"cancel answered cancelled, now {final.status}"))
        if track.cancel_ffmpeg_gone_after is not None and (
            track.cancel_ffmpeg_gone_after > CANCEL_STOPS_FFMPEG_WITHIN
        ):
            found.append(
                bad("cancel_stops_ffmpeg", f"ffmpeg alive {track.cancel_ffmpeg_gone_after:.1f}s")
            )
        found += [bad("no_second_render_without_a_cause", p) for p in self._renders_again(track)]
        if track.split or final.parts:
            found += await self._split_job(track, final)
        if final.status == "completed":
            async with semaphore:
                if self.stored is None:
                    found += await asyncio.to_thread(self._completed_file, track, final)
                else:
                    found += await self.completed_object(track, final)
        else:
            if final.progress >= 100:
                found.append(bad("progress_100_only_completed", f"{final.status} at 100"))
            if final.status == "failed" and not self._explained(track):
                found.append(
                    bad("no_failure_without_a_fault", f"{final.error_code}: no fault overlapped it")
                )
            if final.status == "failed" and final.error_code in ("", "INTERNAL"):
                # INTERNAL means an exception nobody expected: a bug, not a clear error.
                found.append(bad("failed_with_clear_error", f"error code {final.error_code!r}"))
            if self.stored is None:
                stray = sorted(path.name for path in self.output_dir.glob(f"*{job_id}*"))
            else:
                stray = [key for key in self.stored_keys if job_id in key]
            if stray:
                found.append(bad("no_files_unless_completed", f"{final.status} but {stray}"))
        return found

    def _explained(self, track: JobTrack) -> bool:
        """A failure is expected for a corrupt input, or when a fault that can break this job
        happened during its life. Those in CANNOT_FAIL_A_JOB cannot; a cancel or a frozen ffmpeg
        only touches its own target."""
        return track.planned.kind == "corrupt" or bool(faults_that_can_break(track, self.faults))

    def _renders_again(self, track: JobTrack) -> list[str]:
        final = self.finals[track.job_id]
        if track.planned.kind == "corrupt" or faults_that_can_break(track, self.faults):
            return []
        return renders_again(final)

    async def _split_job(self, track: JobTrack, final: FinalState) -> list[Violation]:
        """A split job: its plan covers the output's frames, a completed one's parts are all
        done, what its watcher saw of each part never went back, and none of its renders still
        runs on a render service now that the job is terminal."""
        job_id = track.job_id

        def bad(invariant: str, detail: str) -> Violation:
            return Violation(invariant, job_id, detail)

        found = [bad("split_part_progress", problem) for problem in check_part_progress(track)]
        requested = int(track.planned.body["output"].get("split", {}).get("parts", 0))
        if final.status == "completed":
            recorded = sum(1 for part in final.parts if not (part.join or part.audio))
            if recorded != requested and not (recorded == 0 and final.split_reason):
                found.append(bad("split_as_asked", f"{requested} parts asked, {recorded} recorded"))
        if final.parts:
            expected = expected_frames(track)
            found += [
                bad("split_frames_add_up", p) for p in check_split_frames(final.parts, expected)
            ]
            found += [bad("parts_terminal", p) for p in check_parts_terminal(final)]
            for render_id, where, state in await self._renders_not_ended(job_id, final):
                found.append(
                    bad(
                        "parts_terminal",
                        f"{render_id} still {state} on {where} (job {final.status})",
                    )
                )
        return found

    async def _renders_not_ended(
        self, job_id: str, final: FinalState
    ) -> list[tuple[str, int, str]]:
        """Every render of the job's parts (every attempt's render id), as each render service
        answers for it: those still queued or running."""
        render_ids = [
            part_render_id(job_id, _record_index(part), attempt)
            for part in final.parts
            for attempt in range(1, part.attempts + 1)
        ]
        found = []
        for number, stub in enumerate(self.renders):
            for render_id in render_ids:
                try:
                    info = await stub.GetRender(
                        render_pb2.GetRenderRequest(render_id=render_id), timeout=10
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() is not grpc.StatusCode.NOT_FOUND:
                        found.append((render_id, number, f"unknown ({error.code().name})"))
                    continue
                if info.state in RENDER_NOT_ENDED:
                    found.append((render_id, number, render_pb2.RenderState.Name(info.state)))
        return found

    def _completed_file(self, track: JobTrack, final: FinalState) -> list[Violation]:
        job_id, planned = track.job_id, track.planned

        def bad(detail: str) -> list[Violation]:
            return [Violation("completed_is_valid_video", job_id, detail)]

        if planned.kind == "corrupt":
            return bad("a transcode of a corrupt file completed")
        if final.progress != 100 or final.stage != "Complete":
            return bad(f"progress {final.progress} stage {final.stage!r}")
        container = planned.body["output"]["container"]
        expected_path = Path(final.output_path)
        # Attempt 1 renders as the job id, attempt n as <id>-a<n> (docs/scaling.md); a split
        # job's output is its join's render (<id>-join[-a<n>]).
        expected_name = re.compile(
            rf"{re.escape(job_id)}{_join_suffix(final)}(-a\d+)?\.{re.escape(container)}"
        )
        if expected_path.parent != self.output_dir or not expected_name.fullmatch(
            expected_path.name
        ):
            return bad(
                f"outputPath {final.output_path!r}, expected {self.output_dir}/{job_id}"
                f"{_join_suffix(final)}[-a<n>].{container}"
            )
        if not expected_path.is_file() or expected_path.stat().st_size == 0:
            return bad(f"{expected_path.name} missing or empty")
        return _valid_video(track, expected_path, expected_path.name)

    async def completed_object(self, track: JobTrack, final: FinalState) -> list[Violation]:
        """The completed job's object, downloaded: there, of the recorded SHA-256, a valid video
        of the expected duration; or, deleted behind the services, answered as gone."""
        stored, objects = self.stored, self.objects
        assert stored is not None and objects is not None
        job_id, planned = track.job_id, track.planned

        def bad(invariant: str, detail: str) -> list[Violation]:
            return [Violation(invariant, job_id, detail)]

        if planned.kind == "corrupt":
            return bad("completed_is_valid_video", "a transcode of a corrupt file completed")
        if final.progress != 100 or final.stage != "Complete":
            return bad("completed_is_valid_video", f"progress {final.progress} {final.stage!r}")
        if job_id in stored.deleted:
            answer = await self.client.http.get(f"/api/jobs/{job_id}/download")
            if answer.status_code != 410:
                return bad(
                    "deleted_object_is_gone",
                    f"download of {stored.deleted[job_id]} answered {answer.status_code}",
                )
            return []
        container = planned.body["output"]["container"]
        if not stored.expected_url(job_id + _join_suffix(final), container).fullmatch(
            final.output_path
        ):
            return bad(
                "completed_is_valid_video",
                f"outputPath {final.output_path!r}, expected {stored.location}/{job_id}"
                f"{_join_suffix(final)}[-a<n>].{container}",
            )
        bucket, _, key = final.output_path.removeprefix("s3://").partition("/")
        copy = stored.scratch / f"{job_id}.{container}"
        try:
            try:
                await objects.download_file(bucket, key, copy)
            except VideoJobError as error:
                return bad("completed_object_has_its_checksum", error.message)
            sha256 = await asyncio.to_thread(_sha256_of, copy)
            if sha256 != final.output_sha256:
                return bad(
                    "completed_object_has_its_checksum",
                    f"{final.output_path} has SHA-256 {sha256}, the job records "
                    f"{final.output_sha256!r}",
                )
            return await asyncio.to_thread(_valid_video, track, copy, final.output_path)
        finally:
            copy.unlink(missing_ok=True)

    async def stored_leftovers(self) -> list[Violation]:
        """No object that no completed job claims, and no unfinished upload, in the store, once
        the orphan sweep had its passes (every job is terminal now: what a killed render
        service left is the sweep's to remove, within ``sweep_wait``)."""
        stored, objects = self.stored, self.objects
        assert stored is not None and objects is not None
        claimed = {
            final.output_path
            for final in self.finals.values()
            if final.status == "completed" and final.output_path
        }
        deadline = asyncio.get_running_loop().time() + self.sweep_wait
        while True:
            keys = await objects.list_keys(stored.location)
            found = [
                _stray(key) for key in keys if f"s3://{stored.location.bucket}/{key}" not in claimed
            ]
            for upload in await objects.list_unfinished_uploads(stored.location):
                found.append(Violation("no_unfinished_uploads", upload.key, "an unfinished upload"))
            if not found or asyncio.get_running_loop().time() >= deadline:
                return found
            await asyncio.sleep(0.5)  # the sweep runs on its own clock; the store tells no one

    def _ffmpeg_leftovers(self) -> list[Violation]:
        return [
            Violation(
                "no_ffmpeg_left", _job_of(process.cmdline), f"pid {process.pid} {process.state}"
            )
            for process in ffmpeg_processes(self.ffmpeg_dir or self.output_dir)
        ]

    async def file_leftovers(self) -> list[Violation]:
        """No file in the output directory that no completed job claims, and no partial file,
        once removals still being retried had ``sweep_wait`` (a removal that failed while the
        directory was out of reach is tried again with backoff: outputs of a split job's parts,
        of a job that failed)."""
        completed_files = {
            Path(final.output_path).name
            for final in self.finals.values()
            if final.status == "completed" and final.output_path
        }
        deadline = asyncio.get_running_loop().time() + self.sweep_wait
        while True:
            found = []
            for path in sorted(self.output_dir.iterdir()):
                if path.name == INSTANCES_DIR:  # the render services' instance ids
                    continue
                if ".partial." in path.name:
                    found.append(Violation("no_temp_files", path.name, "partial file left"))
                elif path.name not in completed_files:
                    found.append(_stray(path.name))
            if not found or asyncio.get_running_loop().time() >= deadline:
                return found
            await asyncio.sleep(0.5)  # removals retry on their own clock; nothing announces them


def _stray(name: str) -> Violation:
    """A file or object that no completed job claims: a split job's part output left after its
    job ended (``no_part_outputs_left``), or any other (``no_stray_outputs``)."""
    if PART_OUTPUT.search(name) and "-join" not in name:
        return Violation("no_part_outputs_left", name, "a part's output outlived its job")
    return Violation("no_stray_outputs", name, "belongs to no completed job")


def _join_suffix(final: FinalState) -> str:
    """A split job's output is its join's render; one rendered whole after all, its own."""
    return "-join" if final.parts else ""


def _record_index(part: PartView) -> int:
    """The index the job's record (and the render id) gives ``part``."""
    return JOIN_INDEX if part.join else AUDIO_INDEX if part.audio else part.index


def expected_frames(track: JobTrack) -> int | None:
    """The output's frames: its duration times its frame rate (a test pattern's own; None for a
    transcode, whose rate is the source's)."""
    source = track.planned.body["source"]
    duration = track.planned.expected_duration
    if "testPattern" not in source or duration is None:
        return None
    return round(duration * float(source["testPattern"]["fps"]))


def faults_that_can_break(track: JobTrack, faults: Sequence[FaultRecord]) -> list[FaultRecord]:
    """The faults during the job's life that can break it (make a render fail, or be lost):
    not those of CANNOT_FAIL_A_JOB; a cancel, a frozen ffmpeg or a deleted object only for its
    own target."""
    ended = track.latest.at if track.latest is not None else float("inf")
    found = []
    for fault in faults:
        if fault.began > ended + 1.0 or fault.ended < track.submitted_at - 1.0:
            continue
        if fault.kind in CANNOT_FAIL_A_JOB:
            continue
        targeted_only = ("cancel", "stop_ffmpeg", "delete_object")
        if fault.kind in targeted_only and fault.target_job != track.job_id:
            continue
        found.append(fault)
    return found


def renders_again(final: FinalState) -> list[str]:
    """What a job rendered more than once: a whole job's attempts, a split job's parts' (each
    part, the audio and the join, against the per-part budget). The caller asks only when no
    fault that can break the job happened during its life: then nothing explains a second
    render."""
    again = []
    if final.attempts > 1:
        again.append(f"{final.attempts} render attempts")
    again += [
        f"{part.label} rendered {part.attempts} times" for part in final.parts if part.attempts > 1
    ]
    return again


def _valid_video(track: JobTrack, path: Path, name: str) -> list[Violation]:
    """Blocking. The file decodes cleanly and lasts as long as the job asked."""

    def bad(detail: str) -> list[Violation]:
        return [Violation("completed_is_valid_video", track.job_id, detail)]

    errors = decode_errors(path)
    if errors:
        return bad(f"decoding {name}: {errors[:300]}")
    duration = header_duration(path)
    expected = track.planned.expected_duration
    off = None if duration is None or expected is None else abs(duration - expected)
    if off is None or off > DURATION_TOLERANCE_SECONDS:
        return bad(f"duration {duration}, expected {expected}")
    return []


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_webhooks(
    finals: dict[str, FinalState],
    statuses: dict[str, dict[int, str]],
    deliveries: Sequence[WebhookDelivery],
) -> list[Violation]:
    """Every terminal job's terminal event was received (answered 200) at least once; every
    delivery was signed with the operator's secret, and told of a status the job had at the
    version it names (``statuses``: each job's status per version, from its history); one
    webhook-id always names the same event."""
    found = []
    for job_id, final in finals.items():
        if final.status in TERMINAL and not any(
            d.answer == 200
            and (d.job_id, d.status, d.version) == (job_id, final.status, final.version)
            for d in deliveries
        ):
            found.append(
                Violation(
                    "terminal_event_delivered",
                    job_id,
                    f"no {final.status} event of v{final.version} was received",
                )
            )
    first_of: dict[str, WebhookDelivery] = {}
    for delivery in deliveries:
        if not delivery.verified or delivery.problem:
            found.append(
                Violation(
                    "webhook_verified",
                    delivery.job_id or delivery.webhook_id,
                    delivery.problem or "signature refused",
                )
            )
            continue
        had = statuses.get(delivery.job_id, {}).get(delivery.version)
        if had != delivery.status or delivery.type != EVENT_TYPE_PREFIX + delivery.status:
            found.append(
                Violation(
                    "no_event_for_a_state_never_had",
                    delivery.job_id,
                    f"{delivery.webhook_id}: {delivery.type} telling of {delivery.status} "
                    f"v{delivery.version}; the history's v{delivery.version}: {had}",
                )
            )
        first = first_of.setdefault(delivery.webhook_id, delivery)
        if first.event != delivery.event:
            found.append(
                Violation(
                    "one_event_per_webhook_id",
                    delivery.job_id,
                    f"{delivery.webhook_id} sent as {first.event} and as {delivery.event}",
                )
            )
    return found


async def read_statuses(stub: Stub, job_id: str) -> dict[int, str]:
    """The job's status at each version of its history."""
    statuses: dict[int, str] = {}
    after = 0
    while True:
        page = await stub.ListJobHistory(
            export_pb2.ListJobHistoryRequest(id=job_id, after_version=after, page_size=100),
            timeout=10,
        )
        for entry in page.entries:
            statuses[entry.version] = STATUS_NAMES.get(entry.status, str(entry.status))
        if not page.next_after_version:
            return statuses
        after = page.next_after_version


async def _rpc_view(stub: Stub, job_id: str) -> tuple[str, float, int, str]:
    try:
        job = await stub.GetExport(export_pb2.GetExportRequest(id=job_id), timeout=10)
    except grpc.aio.AioRpcError as error:
        return ("gRPC " + error.code().name, 0.0, 0, "")
    return FinalState.from_proto(job).view()


def _job_of(cmdline: tuple[str, ...]) -> str:
    for arg in cmdline:
        if ".partial." in arg:
            return Path(arg).name
    return " ".join(cmdline)[-80:]

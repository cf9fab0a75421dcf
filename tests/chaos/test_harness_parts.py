"""The harness's own parts: a check that cannot fail proves nothing, and a proxy that does not
really cut or stall injects nothing, nor does a receiver that verifies nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import secrets
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
import httpx
import pytest

from export_service.webhooks.signing import signed_headers
from tests.chaos.checks import (
    Checker,
    FinalState,
    HistoryRow,
    StoredOutputs,
    _stray,
    check_history,
    check_leases,
    check_part_progress,
    check_parts_terminal,
    check_split_frames,
    check_webhooks,
    faults_that_can_break,
    owner_changes,
    renders_again,
)
from tests.chaos.client import (
    Client,
    JobTrack,
    Observation,
    PartView,
    PlannedJob,
    plan_job,
    plan_long_job,
)
from tests.chaos.faults import STORE_FAULT_TYPES, TARGETABLE, FaultRecord, fault_types
from tests.chaos.webhooks import EVENT_TYPE_PREFIX, WebhookDelivery, WebhookReceiver, new_secret
from tests.support.media import make_clip
from tests.support.polling import poll_until
from tests.support.ports import free_port
from tests.support.processes import child_pids, scanned_child_pids
from tests.support.seaweedfs import SeaweedFS
from tests.support.tcp_proxy import TcpProxy
from tests.support.throttle import MAX_PAUSE_SECONDS, Throttle, stretched_pause
from videojob.render.v1 import render_pb2
from videojob.storage.object_store import ObjectStore

if TYPE_CHECKING:
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub as RenderStub


def _track(*states: tuple[int, str, float]) -> JobTrack:
    planned = plan_job(random.Random(0), 0, 0, 2.0)
    track = JobTrack(planned=planned, job_id="job")
    for version, status, progress in states:
        track.observations.append(Observation(0.0, status, version, status, progress, "", ""))
    return track


def test_a_clean_history_passes() -> None:
    history = _track(
        (1, "queued", 0), (3, "running", 40), (5, "running", 97), (6, "completed", 100)
    )
    assert check_history(history) == []


def test_history_checks_catch_every_kind_of_regression() -> None:
    assert any(
        "progress went" in p for p in check_history(_track((2, "running", 50), (3, "running", 40)))
    )
    assert any(
        "version went" in p for p in check_history(_track((4, "running", 10), (4, "running", 20)))
    )
    flipped = check_history(_track((5, "completed", 100), (6, "running", 100)))
    assert any("terminal completed v5 became running" in p for p in flipped)
    assert any("100 while running" in p for p in check_history(_track((2, "running", 100))))
    assert any(
        "completed with progress 99" in p for p in check_history(_track((2, "completed", 99)))
    )


def _row(version: int, owner: str | None, epoch: int | None, job: str = "job") -> HistoryRow:
    return HistoryRow(job, version, "progress", owner, epoch)


def test_a_clean_takeover_passes_the_lease_checks() -> None:
    rows = [
        _row(1, "a", 1),
        _row(2, "a", 1),
        _row(3, "b", 2),  # b took the job over
        _row(4, "b", 2),
        _row(1, "c", 1, job="other"),
        _row(1, None, None, job="legacy"),
    ]
    assert check_leases(rows) == []
    assert owner_changes(rows) == 1


def test_lease_checks_catch_a_fenced_out_write_and_a_shared_epoch() -> None:
    stale = check_leases([_row(1, "a", 1), _row(2, "b", 2), _row(3, "a", 1)])
    assert [v.invariant for v in stale] == ["no_write_of_an_old_lease"]
    assert "v3" in stale[0].detail and "epoch 1" in stale[0].detail
    shared = check_leases([_row(1, "a", 1), _row(2, "b", 1)])
    assert [v.invariant for v in shared] == ["one_owner_per_lease"]


def test_plans_are_reproducible_from_the_seed() -> None:
    first = [plan_job(random.Random(7), index, 7, 2.0) for index in range(30)]
    again = [plan_job(random.Random(7), index, 7, 2.0) for index in range(30)]
    assert first == again
    assert first[3].kind == "corrupt"
    assert first[1].copies > 1 and first[2].copies > 1


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionResetError):
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_proxy_forwards_stalls_and_cuts() -> None:
    server, port = await _echo_server()
    proxy = await TcpProxy("127.0.0.1", port).start(port=free_port())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"ping")
        assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"

        proxy.stall()
        writer.write(b"held")
        read = asyncio.ensure_future(reader.readexactly(4))
        done, _ = await asyncio.wait({read}, timeout=0.3)
        assert not done, "bytes went through a stalled proxy"
        proxy.resume()
        assert await asyncio.wait_for(read, 5) == b"held"

        assert proxy.cut() == 1
        try:
            tail = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:
            tail = b""
        assert tail == b"", "the connection survived a cut"
        writer.close()
    finally:
        await proxy.close()
        server.close()
        await server.wait_closed()


def test_a_late_throttle_stretches_its_pause_but_never_into_a_stall() -> None:
    """On time, the pause is as asked; a slice the thread let run long is followed by a pause
    stretched in proportion (the targets keep their share), capped well under the stall timeouts
    the tests use, so that the harness's slowing is never taken for a stalled ffmpeg."""
    assert stretched_pause(0.2, 0.025, 0.025) == 0.2
    assert stretched_pause(0.2, 0.025, 0.075) == pytest.approx(0.6)
    assert stretched_pause(0.2, 0.025, 0.4) == MAX_PAUSE_SECONDS < 3.0
    assert stretched_pause(math.inf, 0.025, 0.4) == math.inf  # frozen on purpose stays frozen


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def test_the_throttle_holds_its_targets_and_lets_them_go() -> None:
    """Its targets are found from the parent's children file (as a full /proc scan finds
    them); frozen, they stop; with no pause they run; frozen again, closing lets them run."""
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    try:
        pids = sorted(sleeper.pid for sleeper in sleepers)
        assert [pid for pid in child_pids(os.getpid()) if pid in pids] == pids
        assert set(pids) <= set(scanned_child_pids(os.getpid()))
        with Throttle(lambda: pids, pause=0.05, run=0.01) as throttle:
            assert throttle.freeze() == pids
            poll_until(lambda: set(map(_state, pids)) == {"T"} or None, "both stopped")
            throttle.pause = 0.0
            poll_until(lambda: "T" not in map(_state, pids) or None, "the targets to run again")
            throttle.freeze()
            poll_until(lambda: set(map(_state, pids)) == {"T"} or None, "both stopped")
        poll_until(lambda: "T" not in map(_state, pids) or None, "both running")
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()


async def test_the_object_invariant_sees_a_wrong_checksum_a_missing_object_and_leftovers(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    """Every COMPLETED job's object exists with its recorded SHA-256 (and is the video asked
    for); an object or unfinished upload no completed job claims is left over."""
    location = seaweedfs.location(f"chaos-check-{secrets.token_hex(4)}")
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0)
    planned = PlannedJob(0, "pattern", "k", {"output": {"container": "mp4"}}, 1.0, 1, False)
    track = JobTrack(planned=planned, job_id="job1")
    async with ObjectStore(seaweedfs.settings()) as store:
        uploaded = await store.upload_file(clip, location.bucket, location.key_for("job1.mp4"))
        await store.put_small(location.bucket, location.key_for("job2-a2.mp4"), b"stray")
        checker = Checker(
            client=Client("http://127.0.0.1:1"),
            stubs=[],
            output_dir=tmp_path,
            tracks={},
            submissions={},
            finals={},
            faults=[],
            stored=StoredOutputs(seaweedfs.settings(), location, {}, tmp_path),
            sweep_wait=0.0,  # no sweep runs here: the stray is reported at once
        )
        checker.objects = store
        checker.stored_keys = await store.list_keys(location)

        def final(sha256: str) -> FinalState:
            return FinalState("completed", 100.0, 5, "Complete", uploaded.url, "", sha256)

        assert await checker.completed_object(track, final(uploaded.sha256_hex)) == []
        wrong = await checker.completed_object(track, final("0" * 64))
        assert [v.invariant for v in wrong] == ["completed_object_has_its_checksum"], wrong
        checker.finals = {"job1": final(uploaded.sha256_hex)}
        leftovers = await checker.stored_leftovers()
        assert [(v.invariant, v.job_id) for v in leftovers] == [
            ("no_stray_outputs", location.key_for("job2-a2.mp4"))
        ]
        await store.delete(location.bucket, location.key_for("job1.mp4"))
        missing = await checker.completed_object(track, final(uploaded.sha256_hex))
        assert [v.invariant for v in missing] == ["completed_object_has_its_checksum"], missing
        await store.delete(location.bucket, location.key_for("job2-a2.mp4"))
        await checker.client.close()


def test_the_s3_mode_trades_the_unwritable_directory_for_the_store_s_faults() -> None:
    local = fault_types(cluster=True, database_restarts=True)
    stored = fault_types(cluster=True, database_restarts=True, s3=True)
    assert set(stored) - set(local) == set(STORE_FAULT_TYPES)
    assert set(local) - set(stored) == {"output_unwritable"}
    assert "delete_object" not in TARGETABLE  # it strikes a completed job, never a running one


def _delivery(
    job: str, status: str, version: int, *, answer: int = 200, webhook_id: str = ""
) -> WebhookDelivery:
    return WebhookDelivery(
        webhook_id or f"msg_{job}_{status}_0",
        EVENT_TYPE_PREFIX + status,
        job,
        status,
        version,
        True,
        answer,
        0.0,
    )


def _final(status: str, version: int) -> FinalState:
    return FinalState(status, 100.0 if status == "completed" else 0.0, version, "", "", "")


def test_webhook_checks_pass_a_clean_run_with_retries_and_redeliveries() -> None:
    finals = {"a": _final("completed", 6), "b": _final("cancelled", 2)}
    statuses = {
        "a": {1: "queued", 2: "running", 5: "running", 6: "completed"},
        "b": {1: "queued", 2: "cancelled"},
    }
    deliveries = [
        _delivery("a", "queued", 1),
        _delivery("a", "completed", 6, answer=503),
        _delivery("a", "running", 2),
        _delivery("a", "completed", 6),
        _delivery("a", "completed", 6),  # a redelivery: at least once
        _delivery("b", "cancelled", 2),
    ]
    assert check_webhooks(finals, statuses, deliveries) == []


def test_webhook_checks_catch_a_lost_event_a_state_never_had_and_a_bad_signature() -> None:
    finals = {"a": _final("completed", 6)}
    statuses = {"a": {1: "queued", 2: "running", 6: "completed"}}
    only_refused = check_webhooks(finals, statuses, [_delivery("a", "completed", 6, answer=503)])
    assert [v.invariant for v in only_refused] == ["terminal_event_delivered"]
    wrong_version = check_webhooks(finals, statuses, [_delivery("a", "completed", 5)])
    assert sorted(v.invariant for v in wrong_version) == [
        "no_event_for_a_state_never_had",
        "terminal_event_delivered",
    ]
    never_had = [_delivery("a", "completed", 6), _delivery("a", "failed", 2)]
    assert [v.invariant for v in check_webhooks(finals, statuses, never_had)] == [
        "no_event_for_a_state_never_had"
    ]
    unknown_job = [_delivery("a", "completed", 6), _delivery("x", "queued", 1)]
    assert [v.invariant for v in check_webhooks(finals, statuses, unknown_job)] == [
        "no_event_for_a_state_never_had"
    ]
    reused_id = [
        _delivery("a", "completed", 6),
        _delivery("a", "running", 2, webhook_id="msg_a_completed_0"),
    ]
    assert [v.invariant for v in check_webhooks(finals, statuses, reused_id)] == [
        "one_event_per_webhook_id"
    ]
    unsigned = [
        _delivery("a", "completed", 6),
        replace(_delivery("a", "completed", 6), verified=False, answer=400),
    ]
    assert [v.invariant for v in check_webhooks(finals, statuses, unsigned)] == ["webhook_verified"]


async def test_the_receiver_verifies_each_delivery_and_refuses_some_first_attempts() -> None:
    receiver = await WebhookReceiver(seed=3).start()
    try:
        async with httpx.AsyncClient() as client:

            async def send(webhook_id: str, secret: str) -> int:
                body = json.dumps(
                    {
                        "specversion": "1.0",
                        "id": f"{webhook_id}.event",
                        "source": "/videojob/export/jobs",
                        "type": "dev.videojob.export.completed",
                        "subject": "job-1",
                        "datacontenttype": "application/json",
                        "data": {"id": "job-1", "status": "completed", "version": 4},
                    }
                ).encode()
                headers = signed_headers(secret, webhook_id, int(time.time()), body)
                headers["content-type"] = "application/cloudevents+json; charset=utf-8"
                answer = await client.post(receiver.url, content=body, headers=headers)
                return answer.status_code

            ids = [f"msg_job-1_completed_{n}" for n in range(40)]
            first = [await send(webhook_id, receiver.secret) for webhook_id in ids]
            again = [await send(webhook_id, receiver.secret) for webhook_id in ids]
            forged = await send("msg_forged", new_secret())
    finally:
        await receiver.stop()
    assert 503 in first and set(first) <= {200, 503}
    assert again == [200] * len(ids)  # only a first attempt is ever refused
    assert forged == 400
    accepted = [d for d in receiver.deliveries if d.answer == 200]
    assert {d.event for d in accepted} == {
        ("dev.videojob.export.completed", "job-1", "completed", 4)
    }
    assert receiver.received("job-1", "completed", 4)
    assert not receiver.deliveries[-1].verified


# Split jobs: a part's render, the audio's and the join's as the job's JSON shows them.


def _part(
    index: int, first: int, count: int, *, state: str = "done", done: int | None = None,
    attempts: int = 1, join: bool = False, audio: bool = False,
) -> PartView:  # fmt: skip
    return PartView(
        index, state, first, count, count if done is None else done, attempts, "", join, audio
    )


def _split_parts(*counts: int, audio: bool = True) -> tuple[PartView, ...]:
    """Contiguous parts of ``counts`` frames, the audio, and the join of them all, all done."""
    parts, first = [], 0
    for index, count in enumerate(counts):
        parts.append(_part(index, first, count))
        first += count
    if audio:
        parts.append(_part(len(counts), 0, first, audio=True))
    parts.append(_part(len(parts), 0, first, join=True))
    return tuple(parts)


def _split_track(job_id: str = "job", *, parts: int = 3, seconds: float = 3.0) -> JobTrack:
    body = {
        "source": {"testPattern": {"durationSeconds": seconds, "fps": 10}},
        "output": {"container": "mp4", "split": {"parts": parts}},
    }
    planned = PlannedJob(0, "split", "k", body, seconds, 1, False)
    return JobTrack(planned=planned, job_id=job_id, submitted_at=10.0)


def _completed_split(parts: tuple[PartView, ...], *, attempts: int = 0) -> FinalState:
    return FinalState(
        "completed", 100.0, 9, "Complete", "/out/job-join.mp4", "", parts=parts, attempts=attempts
    )


def test_a_split_job_s_parts_that_cover_its_frames_and_are_all_done_pass() -> None:
    final = _completed_split(_split_parts(10, 10, 10))
    assert check_split_frames(final.parts, expected_frames=30) == []
    assert check_parts_terminal(final) == []
    assert check_parts_terminal(_final("cancelled", 3)) == []  # no parts: nothing to say


def test_split_frame_checks_catch_a_gap_a_short_sum_and_a_wrong_total() -> None:
    gap = (_part(0, 0, 10), _part(1, 11, 9), _part(2, 0, 20, join=True))
    assert any("starts at frame 11, not 10" in p for p in check_split_frames(gap, 20))
    short = (_part(0, 0, 10), _part(1, 10, 9), _part(2, 0, 20, join=True))
    assert any("add up to 19, not 20" in p for p in check_split_frames(short, 20))
    assert any(
        "20 frames planned, the output has 30" in p
        for p in check_split_frames(_split_parts(10, 10), 30)
    )
    assert check_split_frames((_part(0, 0, 10),), None) == ["1 part(s) and 0 join(s) recorded"]


def test_a_completed_split_job_with_a_part_not_done_is_caught() -> None:
    parts = list(_split_parts(10, 10))
    parts[1] = _part(1, 10, 10, state="rendering", done=4, attempts=2)
    problems = check_parts_terminal(_completed_split(tuple(parts)))
    assert problems == ["part 2 rendering with 4/10 frames"]


def _seen(version: int, *parts: PartView) -> Observation:
    return Observation(float(version), "progress", version, "running", 50.0, "Rendering", "", parts)


def test_part_progress_may_start_over_only_with_a_new_attempt() -> None:
    track = _split_track()
    track.observations += [
        _seen(2, _part(0, 0, 10, state="rendering", done=3)),
        _seen(3, _part(0, 0, 10, state="rendering", done=6)),
        _seen(4, _part(0, 0, 10, state="retrying", done=0)),  # lost: starts over
        _seen(5, _part(0, 0, 10, state="rendering", done=0, attempts=2)),
        _seen(6, _part(0, 0, 10, state="rendering", done=8, attempts=2)),
    ]
    assert check_part_progress(track) == []
    track.observations.append(_seen(7, _part(0, 0, 10, state="rendering", done=5, attempts=2)))
    assert check_part_progress(track) == ["part 1's frames went 8 -> 5 in attempt 2 (v7)"]
    track.observations.append(_seen(8, _part(0, 0, 10, state="rendering", done=9, attempts=1)))
    assert check_part_progress(track)[-1] == "part 1's attempts went 2 -> 1 (v8)"


def _fault(kind: str, began: float, ended: float, target: str = "") -> FaultRecord:
    return FaultRecord(kind, began, target_job=target, began=began, ended=ended)


def test_a_part_rendered_twice_needs_a_fault_that_can_break_its_job() -> None:
    parts = list(_split_parts(10, 10))
    parts[0] = _part(0, 0, 10, attempts=2)
    final = _completed_split(tuple(parts))
    assert renders_again(final) == ["part 1 rendered 2 times"]
    assert renders_again(_completed_split(_split_parts(10, 10), attempts=3)) == [
        "3 render attempts"
    ]
    assert renders_again(_completed_split(_split_parts(10, 10), attempts=1)) == []
    track = _split_track()
    track.observations.append(_seen(20, *final.parts))  # the job's life: 10 s to 20 s
    harmless = [
        _fault("kill_gateway", 12.0, 13.0),
        _fault("pause_export", 14.0, 19.0),
        _fault("cancel", 15.0, 15.5, target="another"),
        _fault("kill_render", 30.0, 31.0),  # after its end
    ]
    assert faults_that_can_break(track, harmless) == []
    killed = _fault("kill_render", 16.0, 16.5)
    assert faults_that_can_break(track, [*harmless, killed]) == [killed]


class _RenderServiceHolding:
    """A render service's GetRender as an in-memory map: render id -> state (others unknown)."""

    def __init__(self, states: dict[str, render_pb2.RenderState.ValueType]) -> None:
        self.states = states

    async def GetRender(self, request: render_pb2.GetRenderRequest, **_: float) -> Any:
        if request.render_id not in self.states:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "", ""
            )
        return render_pb2.RenderInfo(
            render_id=request.render_id, state=self.states[request.render_id]
        )


async def test_a_split_job_s_render_still_running_after_the_job_ended_is_caught(
    tmp_path: Path,
) -> None:
    """Every render of every part (each attempt's render id) must have ended on every render
    service once the job is terminal; a render a restarted service no longer knows has."""
    track = _split_track("j1", parts=2, seconds=2.0)
    parts = list(_split_parts(10, 10))
    parts[1] = _part(1, 10, 10, state="rendering", done=4, attempts=2)
    final = FinalState("cancelled", 40.0, 7, "", "", "", parts=tuple(parts))
    ended = _RenderServiceHolding(
        {
            "j1-p1": render_pb2.RENDER_STATE_COMPLETED,
            "j1-p2-a2": render_pb2.RENDER_STATE_CANCELLED,
            "j1-audio": render_pb2.RENDER_STATE_COMPLETED,
        }
    )  # "j1-p2" (attempt 1) unknown: its render service restarted
    checker = _checker_of_one_job(tmp_path, track, final, renders=[cast("RenderStub", ended)])
    try:
        assert await checker._split_job(track, final) == []
        still = _RenderServiceHolding({"j1-p2-a2": render_pb2.RENDER_STATE_RUNNING})
        checker.renders.append(cast("RenderStub", still))
        found = await checker._split_job(track, final)
        assert [(v.invariant, v.detail) for v in found] == [
            ("parts_terminal", "j1-p2-a2 still RENDER_STATE_RUNNING on 1 (job cancelled)")
        ]
        done = _completed_split(tuple(parts[:1]) + _split_parts(10, 10)[1:])
        asked_three = _split_track("j1", parts=3, seconds=2.0)
        found = await checker._split_job(asked_three, done)
        assert [v.invariant for v in found] == ["split_as_asked"]
        whole = replace(done, parts=(), output_path="/out/j1.mp4")
        assert [v.invariant for v in await checker._split_job(asked_three, whole)] == [
            "split_as_asked"
        ]
        said_why = replace(whole, split_reason="rendered whole: the source's facts are unknown")
        assert await checker._split_job(asked_three, said_why) == []
    finally:
        await checker.client.close()


def _checker_of_one_job(
    output_dir: Path,
    track: JobTrack,
    final: FinalState,
    *,
    renders: list[RenderStub] | None = None,
    sweep_wait: float = 0.0,
) -> Checker:
    """A checker of ``track``'s job alone, ended as ``final``, with no export replica to ask."""
    return Checker(
        client=Client("http://127.0.0.1:1"),
        stubs=[],
        output_dir=output_dir,
        tracks={track.job_id: track},
        submissions={},
        finals={track.job_id: final},
        faults=[],
        sweep_wait=sweep_wait,
        renders=renders or [],
    )


def test_a_part_s_file_left_over_is_named_as_such() -> None:
    assert _stray("abc-p2-a3.mp4").invariant == "no_part_outputs_left"
    assert _stray("chaos/renders/abc-audio.webm").invariant == "no_part_outputs_left"
    assert _stray("abc-join.mp4").invariant == "no_stray_outputs"
    assert _stray("abc-a2.mp4").invariant == "no_stray_outputs"


def test_the_job_mix_has_split_jobs_of_both_sources_and_split_aimed_targets() -> None:
    jobs = [plan_job(random.Random(1), index, 1, 2.0) for index in range(8)]
    split = {job.kind: job.body["output"]["split"]["parts"] for job in jobs if "split" in job.kind}
    assert set(split) == {"split", "split_transcode"}
    assert set(split.values()) <= {2, 3}
    long_jobs = [plan_long_job(index, 1) for index in range(4)]
    assert [job.kind for job in long_jobs] == ["pattern_long", "split_long"] * 2
    assert [job.body["output"].get("split") for job in long_jobs[1::2]] == [
        {"parts": 2},
        {"parts": 3},
    ]


async def test_a_file_left_over_is_reported_unless_its_removal_lands_while_the_check_waits(
    tmp_path: Path,
) -> None:
    """A removal that failed while the output directory was out of reach is retried with
    backoff: what goes while the check waits is no leftover, what stays is one."""
    track = _split_track("j1", parts=2, seconds=2.0)
    final = _completed_split(_split_parts(10, 10))
    (tmp_path / Path(final.output_path).name).write_bytes(b"the job's output")
    part = tmp_path / "j1-p1.mp4"
    part.write_bytes(b"a part's output")
    checker = _checker_of_one_job(tmp_path, track, final, sweep_wait=60.0)
    try:
        check = asyncio.ensure_future(checker.file_leftovers())
        await asyncio.sleep(0)  # its first look, which finds the part's output
        assert not check.done()
        part.unlink()
        assert await check == []

        part.write_bytes(b"a part's output")
        (tmp_path / "j2.partial.mp4").write_bytes(b"")
        checker.sweep_wait = 0.0
        found = await checker.file_leftovers()
        assert [(v.invariant, v.job_id) for v in found] == [
            ("no_part_outputs_left", "j1-p1.mp4"),
            ("no_temp_files", "j2.partial.mp4"),
        ]
    finally:
        await checker.client.close()

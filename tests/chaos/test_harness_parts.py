"""The harness's own parts: a check that cannot fail proves nothing, and a proxy that does not
really cut or stall injects nothing, nor does a receiver that verifies nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import secrets
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from export_service.webhooks.signing import signed_headers
from tests.chaos.checks import (
    Checker,
    FinalState,
    HistoryRow,
    StoredOutputs,
    check_history,
    check_leases,
    check_webhooks,
    owner_changes,
)
from tests.chaos.client import Client, JobTrack, Observation, PlannedJob, plan_job
from tests.chaos.faults import STORE_FAULT_TYPES, TARGETABLE, fault_types
from tests.chaos.webhooks import EVENT_TYPE_PREFIX, WebhookDelivery, WebhookReceiver, new_secret
from tests.support.media import make_clip
from tests.support.ports import free_port
from tests.support.seaweedfs import SeaweedFS
from tests.support.tcp_proxy import TcpProxy
from tests.support.throttle import MAX_PAUSE_SECONDS, stretched_pause
from videojob.storage.object_store import ObjectStore


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

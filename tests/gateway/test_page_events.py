"""The page's one event stream: ``GET /api/events`` over the export service's list-level
``WatchExports``. Every connection starts with the current state of the jobs of its view, then
their changes; several clients of one view share one upstream watch."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import pytest

from gateway.list_watch import ListWatchHub, View
from tests.gateway.conftest import Stack, create_job, wait_for
from tests.gateway.realtime_stack import cancel_all, long_pattern, start_long_jobs
from tests.gateway.realtime_stack import realtime_stack as realtime_stack
from tests.gateway.sse_client import Frame, frames
from videojob import limits
from videojob.export.v1 import export_pb2, export_pb2_grpc

READ_TIMEOUT_SECONDS = 30.0
Jobs = dict[str, dict[str, Any]]


@pytest.fixture
def http(realtime_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=realtime_stack.url, timeout=30) as client:
        yield client


def read_until(stream: Iterator[Frame], seen: Jobs, done: Callable[[Jobs], bool]) -> Jobs:
    """Reads ``event: job`` frames into ``seen`` (id -> newest job) until ``done(seen)``; the
    stream's keep-alives bound each wait, the deadline bounds the whole."""
    deadline = time.monotonic() + READ_TIMEOUT_SECONDS
    while not done(seen):
        assert time.monotonic() < deadline, f"gave up waiting; saw {sorted(seen)}"
        frame = next(stream)
        if frame.is_event:
            assert frame.name == "job", frame
            assert frame.id is None, "the page's stream needs no cursor"
            job = frame.job
            known = seen.get(job["id"])
            assert known is None or job["version"] > known["version"], (known, job)
            seen[job["id"]] = job
    return seen


def test_events_send_the_current_state_then_changes_and_again_on_reconnect(
    http: httpx.Client,
) -> None:
    job_ids = start_long_jobs(http, 3)
    first, second, third = job_ids
    try:
        params = {"limit": "2", "ids": first}
        with http.stream("GET", "/api/events", params=params) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = frames(response)
            # The two newest jobs (third, second) and the one asked for by id, as they are now.
            seen = read_until(stream, {}, lambda jobs: set(job_ids) <= set(jobs))
            assert {seen[job_id]["status"] for job_id in job_ids} <= {"queued", "running"}
            cancelled = http.post(f"/api/jobs/{second}/cancel").json()
            newer = create_job(http, long_pattern())["id"]
            job_ids.append(newer)
            # A change of a job of the view, and a new job entering the newest two.
            read_until(
                stream,
                seen,
                lambda jobs: jobs[second]["status"] == "cancelled" and newer in jobs,
            )
            assert seen[second]["version"] >= cancelled["version"]
        # A change while no one listens is in the current state the next connection starts with.
        http.post(f"/api/jobs/{first}/cancel")
        with http.stream("GET", "/api/events", params=params) as response:
            again = read_until(
                frames(response), {}, lambda jobs: {first, third, newer} <= set(jobs)
            )
        assert again[first]["status"] == "cancelled"
        assert again[third]["status"] in ("queued", "running")
    finally:
        cancel_all(http, job_ids)


def test_a_job_leaving_a_status_filter_still_reports_its_last_change(http: httpx.Client) -> None:
    job_ids = start_long_jobs(http, 1)
    try:
        wait_for(http, job_ids[0], {"running"})
        with http.stream("GET", "/api/events", params={"status": "running"}) as response:
            assert response.status_code == 200
            stream = frames(response)
            seen = read_until(stream, {}, lambda jobs: job_ids[0] in jobs)
            http.post(f"/api/jobs/{job_ids[0]}/cancel")
            read_until(stream, seen, lambda jobs: jobs[job_ids[0]]["status"] == "cancelled")
    finally:
        cancel_all(http, job_ids)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": str(limits.MAX_LIST_LIMIT + 1)}, "limit"),
        ({"status": "sleeping"}, "status"),
        ({"ids": ",".join(["a"] * (limits.MAX_WATCH_IDS + 1))}, "ids"),
        ({"ids": "a,,b"}, "ids"),
        ({"ids": "x" * (limits.MAX_JOB_ID_LENGTH + 1)}, "ids"),
    ],
)
async def test_a_bad_view_is_refused_naming_the_parameter(
    gateway_alone: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    response = await gateway_alone.get("/api/events", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_watch_exports_over_grpc(realtime_stack: Stack, http: httpx.Client) -> None:
    job_ids = start_long_jobs(http, 2)
    try:
        with grpc.insecure_channel(realtime_stack.export.address) as channel:
            stub = export_pb2_grpc.ExportServiceStub(channel)
            call = stub.WatchExports(
                export_pb2.WatchExportsRequest(ids=[*job_ids, "no-such-job"]),
                timeout=READ_TIMEOUT_SECONDS,
            )
            seen: dict[str, export_pb2.VideoJob] = {}
            for job in call:
                seen[job.id] = job
                if set(job_ids) <= set(seen):
                    break
            assert set(seen) == set(job_ids)
            http.post(f"/api/jobs/{job_ids[0]}/cancel")
            for job in call:
                assert job.id in job_ids
                seen[job.id] = job
                if seen[job_ids[0]].status == export_pb2.CANCELLED:
                    break
            with pytest.raises(grpc.RpcError) as refused:
                for _ in stub.WatchExports(export_pb2.WatchExportsRequest(), timeout=10):
                    pass
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        cancel_all(http, job_ids)


async def test_clients_of_one_view_share_one_upstream_watch(
    realtime_stack: Stack, http: httpx.Client
) -> None:
    job_ids = await asyncio.to_thread(start_long_jobs, http, 1)
    channel = grpc.aio.insecure_channel(realtime_stack.export.address)
    hub = ListWatchHub(export_pb2_grpc.ExportServiceStub(channel), retry_seconds=5.0, max_views=2)
    try:
        view = View.of(0, 1, job_ids)
        with hub.subscribe(view) as first, hub.subscribe(View.of(0, 1, job_ids)) as second:
            assert hub.watched_views() == 1
            for subscription in (first, second):
                got = await asyncio.wait_for(subscription.next(10.0), READ_TIMEOUT_SECONDS)
                assert isinstance(got, list) and job_ids[0] in {f.job_id for f in got}
            # A client joining later gets the state the shared watch holds, at once.
            with hub.subscribe(view) as late:
                got = await asyncio.wait_for(late.next(10.0), READ_TIMEOUT_SECONDS)
                assert isinstance(got, list) and job_ids[0] in {f.job_id for f in got}
            with hub.subscribe(View.of(0, 2, ())):
                assert hub.watched_views() == 2
                with (
                    pytest.raises(Exception, match="different views"),
                    hub.subscribe(View.of(0, 3, ())),
                ):
                    pass
        assert hub.watched_views() == 0
    finally:
        await hub.close()
        await channel.close(None)
        await asyncio.to_thread(cancel_all, http, job_ids)


async def test_watch_exports_sees_a_write_by_another_process_on_the_same_database(
    realtime_stack: Stack, http: httpx.Client
) -> None:
    """No change notification reaches the export service when another process writes the
    database: the list watch's periodic re-read finds it."""
    from export_service.store.sqlite import SqliteJobStore

    job_ids = await asyncio.to_thread(start_long_jobs, http, 1)
    database = realtime_stack.config.sqlite_path
    assert database is not None
    channel = grpc.aio.insecure_channel(realtime_stack.export.address)
    try:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        call = stub.WatchExports(
            export_pb2.WatchExportsRequest(ids=job_ids), timeout=READ_TIMEOUT_SECONDS
        )
        first = await call.read()
        assert isinstance(first, export_pb2.VideoJob) and first.id == job_ids[0]
        store = await SqliteJobStore.open(database)
        try:
            await store.cancel(job_ids[0])
        finally:
            await store.close()
        while True:
            job = await call.read()
            assert isinstance(job, export_pb2.VideoJob), "the stream ended"
            if job.status == export_pb2.CANCELLED:
                break
        call.cancel()
    finally:
        await channel.close(None)
        await asyncio.to_thread(cancel_all, http, job_ids)

"""The export service dies under open event streams. Restarted in time, the shared watch
re-opens WatchExport after the last version it saw and the same streams carry on to the
terminal event; gone for longer than --upstream-retry-seconds, the streams end (so EventSource
reconnects) instead of hanging."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.async_sse import StreamRecord, read_stream
from tests.gateway.conftest import start_gateway, stop
from tests.support.paced_ffmpeg import PACED_SIZE, write_paced_ffmpeg
from tests.support.polling import wait_until
from videojob_launcher import Role, Stack, StackConfig

# A render that runs until cancelled, at the speed of playback (the tests cancel it within
# seconds).
LONG_SPEC = {
    "source": {
        "testPattern": {
            "durationSeconds": 3600.0,
            "width": PACED_SIZE[0],
            "height": PACED_SIZE[1],
            "fps": 10,
        }
    },
    "output": {"preset": "ultrafast"},
}


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    """Render and export services of their own (each test adds its gateway): the export
    service is killed, and started again on its port with the same database."""
    render = Role(env={"FFMPEG_BINARY": str(write_paced_ffmpeg(tmp_path, 1.0))})
    with Stack(StackConfig(tmp_path, render=render, gateway=Role(count=0))) as stack:
        yield stack


async def _open_streams(
    http: httpx.AsyncClient, job_id: str, count: int
) -> tuple[list[StreamRecord], list[asyncio.Task[StreamRecord]]]:
    records = [StreamRecord() for _ in range(count)]
    tasks = [asyncio.create_task(read_stream(http, job_id, record)) for record in records]
    await wait_until(
        lambda: all(
            record.events and record.events[-1].job["status"] == "running" for record in records
        ),
        what="running on every stream",
    )
    return records, tasks


async def wait_healthy(http: httpx.AsyncClient) -> None:
    async def healthy() -> bool:
        return (await http.get("/healthz")).status_code == 200

    await wait_until(healthy, "the gateway to reach the export service again", 30)


async def test_export_restarted_mid_stream_streams_carry_on_to_the_terminal_event(
    own_stack: Stack,
) -> None:
    gateway = start_gateway(own_stack.export.address, "--upstream-retry-seconds", "60")
    tasks: list[asyncio.Task[StreamRecord]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://{gateway.address}", timeout=60) as http:
            created = await http.post("/api/jobs", json=LONG_SPEC)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            records, tasks = await _open_streams(http, job_id, 3)
            before = [record.versions[-1] for record in records]

            await own_stack.export.akill()
            await own_stack.export.astart()

            deadline = asyncio.get_running_loop().time() + 30
            while (await http.post(f"/api/jobs/{job_id}/cancel")).status_code != 200:
                assert asyncio.get_running_loop().time() < deadline, "cancel never answered"
                await asyncio.sleep(0.2)
            await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        for task in tasks:
            task.cancel()
        stop(gateway)
    for record, last_before in zip(records, before, strict=True):
        assert record.status == 200
        assert record.versions == sorted(set(record.versions)), record.versions
        assert record.terminal is not None, record.events[-3:]
        assert record.terminal.name == "cancelled"
        assert record.terminal.id > last_before
        assert "upstream unavailable" not in record.comments


async def test_export_gone_for_good_ends_the_streams_so_clients_reconnect(
    own_stack: Stack,
) -> None:
    gateway = start_gateway(own_stack.export.address, "--upstream-retry-seconds", "1")
    tasks: list[asyncio.Task[StreamRecord]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://{gateway.address}", timeout=60) as http:
            created = await http.post("/api/jobs", json=LONG_SPEC)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            records, tasks = await _open_streams(http, job_id, 3)
            await own_stack.export.akill()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

            # Back again: a client resuming with its Last-Event-ID follows the job to its end.
            await own_stack.export.astart()
            await wait_healthy(http)
            last_seen = records[0].versions[-1]
            resumed = StreamRecord()
            resume_task = asyncio.create_task(
                read_stream(http, job_id, resumed, **{"Last-Event-ID": str(last_seen)})
            )
            tasks.append(resume_task)
            await wait_until(lambda: resumed.status == 200, what="the resumed stream")
            cancelled = await http.post(f"/api/jobs/{job_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            await asyncio.wait_for(resume_task, 30)
    finally:
        for task in tasks:
            task.cancel()
        stop(gateway)
    for record in records:
        assert record.ended
        assert record.terminal is None
        assert "upstream unavailable" in record.comments
    assert all(version > last_seen for version in resumed.versions)
    assert resumed.terminal is not None and resumed.terminal.name == "cancelled"

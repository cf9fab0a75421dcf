"""Many event streams on one job share one upstream watch: every client sees the same frames
in order and the terminal one; late clients start from the current state; resume still works;
a client that does not read holds up nobody."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.gateway.async_sse import StreamRecord, read_stream, wait_until
from tests.gateway.conftest import LONG_SPEC, Stack, tiny_spec

CLIENTS = 25


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=CLIENTS + 10)
    async with httpx.AsyncClient(base_url=stack.url, timeout=60, limits=limits) as client:
        yield client


async def create(http: httpx.AsyncClient, spec: dict[str, Any]) -> str:
    response = await http.post("/api/jobs", json=spec)
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def cancel(http: httpx.AsyncClient, job_id: str) -> None:
    response = await http.post(f"/api/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text


def assert_increasing(record: StreamRecord) -> None:
    assert record.versions == sorted(set(record.versions)), record.versions


async def test_many_clients_on_one_job_see_the_same_frames_and_the_end(
    http: httpx.AsyncClient,
) -> None:
    job_id = await create(http, tiny_spec(2.0))
    records = [StreamRecord() for _ in range(CLIENTS)]
    await asyncio.gather(*(read_stream(http, job_id, record) for record in records))
    final = (await http.get(f"/api/jobs/{job_id}")).json()
    by_version: dict[int, str] = {}
    for record in records:
        assert record.status == 200
        assert_increasing(record)
        assert record.terminal is not None, record.events
        assert record.terminal.name == "completed"
        assert record.terminal.job == final
        for event in record.events:
            # One encoding per version, handed to everyone.
            assert by_version.setdefault(event.id, event.data) == event.data
            assert event.job["version"] == event.id
    assert {record.terminal.id for record in records if record.terminal} == {final["version"]}


async def test_late_subscriber_gets_the_current_state_first(http: httpx.AsyncClient) -> None:
    job_id = await create(http, LONG_SPEC)
    early, late, resumed = StreamRecord(), StreamRecord(), StreamRecord()
    tasks = [asyncio.create_task(read_stream(http, job_id, early))]
    try:
        # Wait for the job to be running and to have moved on from its first state.
        await wait_until(
            lambda: len(early.events) >= 3 and early.events[-1].job["status"] == "running",
            what="progress on the early stream",
        )
        seen_before = early.events[-1].id
        tasks.append(asyncio.create_task(read_stream(http, job_id, late)))
        await asyncio.wait_for(late.first_event.wait(), 30)
        first = late.events[0]
        assert first.name == "progress"
        assert first.id >= seen_before
        assert first.job["status"] == "running"
        current = (await http.get(f"/api/jobs/{job_id}")).json()
        assert first.id <= current["version"]
        # A resume from the current version while the watch runs: only later versions.
        after = str(current["version"])
        tasks.append(
            asyncio.create_task(read_stream(http, job_id, resumed, **{"Last-Event-ID": after}))
        )
        await cancel(http, job_id)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        for task in tasks:
            task.cancel()
    terminals = set()
    for record in (early, late, resumed):
        assert_increasing(record)
        assert record.terminal is not None and record.terminal.name == "cancelled"
        terminals.add(record.terminal.data)
    assert len(terminals) == 1
    assert all(version > current["version"] for version in resumed.versions), resumed.versions


def _open_unread_stream(port: int, job_id: str) -> socket.socket:
    """A client that sends its request and then does not read: a tiny receive buffer, so the
    gateway's writes to it back up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    request = (
        f"GET /api/jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_a_client_that_does_not_read_holds_up_nobody_and_still_gets_the_end(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    job_id = await create(http, LONG_SPEC)
    slow = await asyncio.to_thread(_open_unread_stream, stack.gateway.port, job_id)
    try:
        fast = [StreamRecord() for _ in range(5)]
        tasks = [asyncio.create_task(read_stream(http, job_id, record)) for record in fast]
        await wait_until(
            lambda: all(len(record.events) >= 3 for record in fast), what="progress everywhere"
        )
        await cancel(http, job_id)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        for record in fast:
            assert_increasing(record)
            assert record.terminal is not None and record.terminal.name == "cancelled"
        # Only now does the slow client read: what it gets ends with the terminal event.
        raw = await asyncio.to_thread(_read_until_closed, slow)
    finally:
        slow.close()
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"event: cancelled\n" in raw
    last_event = raw.rsplit(b"event: ", 1)[1]
    assert last_event.startswith(b"cancelled")
    assert raw.rstrip().endswith(b"0")  # the chunked body's last chunk: the stream ended

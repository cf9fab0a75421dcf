"""The in-process gateway of tests.gateway.inprocess served on a real socket (for what must stream):
a job's event stream is sent as it is written, and stopping the server with the stream open ends
it at once with the gateway's last word, as stopping a gateway process does."""

from __future__ import annotations

import asyncio

import httpx

from tests.gateway.async_sse import StreamRecord, read_stream, wait_until
from tests.gateway.conftest import LONG_SPEC
from tests.gateway.inprocess import gateway_settings, served_gateway

# Only bounds the test when something hangs.
END_TIMEOUT_SECONDS = 30


async def test_a_served_gateway_streams_and_ends_open_streams_as_it_stops(
    export_address: str,
) -> None:
    record = StreamRecord()
    # The client outlives the server: what ends the stream is the server's stop.
    async with httpx.AsyncClient(timeout=30) as http:
        async with served_gateway(gateway_settings(export_address)) as url:
            http.base_url = httpx.URL(url)
            # No render service answers the export service: the job stays queued, its stream
            # open.
            created = await http.post("/api/jobs", json=LONG_SPEC)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            reading = asyncio.create_task(read_stream(http, job_id, record))
            try:
                # The current state, then keep-alives while nothing changes: streamed as
                # written, not buffered.
                await wait_until(
                    lambda: bool(record.events) and "keep-alive" in record.comments,
                    what="the first event and a keep-alive",
                )
            except BaseException:
                reading.cancel()
                raise
        # The server stopped (the context's end) with the stream open: the stream ended.
        await asyncio.wait_for(reading, END_TIMEOUT_SECONDS)
    assert record.status == 200
    assert record.ended
    # The job never left the queue (its stage may say why): nothing but progress.
    assert {(event.name, event.job["id"], event.job["status"]) for event in record.events} == {
        ("progress", job_id, "queued")
    }
    assert record.comments[-1] == "gateway shutting down", record.comments

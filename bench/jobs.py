"""Submitting jobs through the gateway's HTTP API and following them over SSE."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from videojob.sse_client import SseFrame, SseStream


def test_pattern_spec(
    duration: float, width: int, height: int, *, fps: float = 30, preset: str = "veryfast"
) -> dict[str, Any]:
    return {
        "source": {
            "testPattern": {
                "durationSeconds": duration,
                "width": width,
                "height": height,
                "fps": fps,
            }
        },
        "output": {"container": "mp4", "videoCodec": "h264", "preset": preset},
    }


async def create_job(client: httpx.AsyncClient, spec: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        "/api/jobs", json=spec, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    return job


async def follow_job(port: int, job_id: str) -> list[SseFrame]:
    """Every SSE event of the job up to and including its terminal one."""
    stream = await SseStream.open("127.0.0.1", port, f"/api/jobs/{job_id}/events")
    events: list[SseFrame] = []
    try:
        async for event in stream.events():
            events.append(event)
            if event.terminal:
                break
    finally:
        await stream.close()
    return events

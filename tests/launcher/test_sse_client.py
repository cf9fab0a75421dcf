"""The one SSE reader: frames, comments, retry, multi-line data, and the last frame when the
stream ends without its blank line."""

from __future__ import annotations

from collections.abc import AsyncIterator

from videojob.sse_client import SseFrame, aevents, aframes, events, frames

STREAM = [
    "retry: 2000",
    ": keep-alive",
    "",
    "event: progress",
    "id: 3",
    'data: {"status":',
    'data: "running"}',
    "",
    "data:plain",
    "",
    "event: completed",
    "id: 4",
    'data: {"status": "completed"}',
]


def test_frames_keep_comments_retry_and_join_data_lines() -> None:
    parsed = list(frames(STREAM))
    assert [(frame.name, frame.id, frame.is_event) for frame in parsed] == [
        ("message", None, False),
        ("progress", "3", True),
        ("message", None, True),
        ("completed", "4", True),
    ]
    assert parsed[0].retry == "2000" and parsed[0].comments == ["keep-alive"]
    assert parsed[1].job == {"status": "running"}
    assert parsed[2].text == "plain"
    assert parsed[3].terminal and not parsed[1].terminal
    assert all(frame.received > 0 for frame in parsed)


async def test_the_async_reader_sees_the_same() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in STREAM:
            yield line

    assert [f.name for f in await _all(aframes(lines()))] == [f.name for f in frames(STREAM)]
    assert [f.id for f in await _all(aevents(lines()))] == [f.id for f in events(STREAM)]


async def _all(stream: AsyncIterator[SseFrame]) -> list[SseFrame]:
    return [item async for item in stream]

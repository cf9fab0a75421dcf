"""The event log's rules, on the real classes: bounded retention, bounded watcher buffers that
keep the newest progress and never drop a terminal event, percent that never decreases."""

from __future__ import annotations

from render_service.events import RenderRecord, WatcherBuffer
from tests.render.conftest import kind, pattern_spec
from videojob.render.v1 import render_pb2


def record(max_events: int = 2000, max_pending: int = 64) -> RenderRecord:
    return RenderRecord(
        "log-1",
        pattern_spec(1.0),
        max_events=max_events,
        max_pending_per_watcher=max_pending,
        on_finished=lambda _: None,
    )


async def test_percent_never_decreases_and_stays_below_100_until_completed() -> None:
    log = record()
    log.progress("Rendering", 40.0)
    log.progress("Rendering", 30.0)
    log.progress("Finalizing", 120.0)
    log.complete("/out/log-1.mp4", 10, 1.0)
    events = [event async for event in log.watch(0)]
    assert [e.progress.percent for e in events[:-1]] == [40.0, 40.0, 99.0]
    assert kind(events[-1]) == "completed"


async def test_nothing_is_written_after_the_terminal_event() -> None:
    log = record()
    log.cancel("stop")
    log.progress("Rendering", 50.0)
    log.fail("INTERNAL", "late")
    log.heartbeat()
    events = [event async for event in log.watch(0)]
    assert [kind(e) for e in events] == ["cancelled"]
    assert log.info().state == render_pb2.RENDER_STATE_CANCELLED


async def test_retained_log_is_bounded_and_keeps_the_terminal_event() -> None:
    log = record(max_events=10)
    for step in range(50):
        log.progress("Rendering", step)
    log.fail("STALLED", "frozen")
    events = [event async for event in log.watch(0)]
    assert len(events) == 10
    assert [e.seq for e in events] == list(range(42, 52))
    assert kind(events[-1]) == "failed"
    older = [event async for event in log.watch(5)]  # older than retained: from the oldest
    assert older == events


async def test_slow_watcher_keeps_the_newest_progress_and_the_terminal_event() -> None:
    buffer = WatcherBuffer(limit=4)
    log = record()
    for step in range(20):
        log.progress("Rendering", step)
    log.complete("/out/log-1.mp4", 10, 1.0)
    for event in [event async for event in log.watch(0)]:
        buffer.push(event)
    drained = [await buffer.next()]
    while kind(drained[-1]) != "completed":
        drained.append(await buffer.next())
    assert len(drained) <= 5
    progress = [e for e in drained if kind(e) == "progress"]
    assert progress[-1].progress.percent == 19.0
    assert [e.seq for e in drained] == sorted(e.seq for e in drained)


async def test_live_watcher_that_never_reads_does_not_grow_without_bound() -> None:
    log = record(max_pending=8)
    log.progress("Queued", 0.0)
    stream = log.watch(0)
    first = await anext(stream)  # registers the watcher, then stops reading
    assert first.seq == 1
    for step in range(1000):
        log.progress("Rendering", step / 20)
    log.complete("/out/log-1.mp4", 10, 1.0)
    rest = [event async for event in stream]
    assert len(rest) <= 9
    assert kind(rest[-1]) == "completed"

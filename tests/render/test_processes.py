"""Real render service processes: heartbeats while Queued and Finalizing, SIGKILL mid-render,
health and reflection (SIGTERM, a drain: test_draining.py)."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from render_service.ffmpeg_process import parent_death_prefix
from tests.render.conftest import (
    Running,
    collect,
    events_until,
    ffmpeg_pids,
    is_rendering,
    kill_sent,
    kind,
    long_spec,
    one_ffmpeg,
    pattern_spec,
    pid_alive,
    render_request,
    wait_for,
)
from tests.support.polling import wait_until
from tests.support.processes import ServiceProcess
from tests.support.render_dirs import RenderDirs
from videojob.endpoints import RENDER_SERVICE
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc

SERVICE = RENDER_SERVICE

# Runs the real FFmpeg, then, for renders only (they ask for -stats_period), stays silent for a
# while with its pipes open, the way a slow trailer or faststart pass looks from outside.
SLOW_FINALIZE_WRAPPER = """#!/bin/sh
"$VIDEOJOB_REAL_FFMPEG" "$@"
status=$?
case " $* " in *" -stats_period "*) sleep 2 ;; esac
exit $status
"""


def _gaps(events: list[render_pb2.RenderEvent]) -> list[float]:
    times = [e.time.seconds + e.time.nanos / 1e9 for e in events]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_heartbeats_while_queued_and_finalizing(
    process_factory: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    wrapper = tmp_path / "slow-ffmpeg"
    wrapper.write_text(SLOW_FINALIZE_WRAPPER)
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    service = process_factory(
        "--max-concurrent",
        "1",
        env={"FFMPEG_BINARY": str(wrapper), "VIDEOJOB_REAL_FFMPEG": ffmpeg_binary()},
    )
    channel = create_channel(service.address)
    stub = render_pb2_grpc.RenderServiceStub(channel)
    try:
        first_call = stub.Render(render_request("hb-a", pattern_spec(1.0)))
        first = await events_until(first_call, is_rendering)
        second_call = stub.Render(render_request("hb-b", pattern_spec(1.0)))
        first_rest, second = await asyncio.gather(collect(first_call), collect(second_call))
    finally:
        await channel.close(None)
    first += first_rest

    for events in (first, second):
        assert kind(events[-1]) == "completed", events[-1]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert max(_gaps(events)) <= 2.0, "more than 2 s without an event"
    finalizing_beats = [
        e for e in first if e.progress.heartbeat and e.progress.stage == "Finalizing"
    ]
    assert finalizing_beats, [e.progress for e in first]
    assert all(e.progress.percent == 95 for e in finalizing_beats)
    queued_beats = [e for e in second if e.progress.heartbeat and e.progress.stage == "Queued"]
    assert queued_beats, [e.progress for e in second]
    assert all(e.progress.percent == 0 for e in queued_beats)


async def test_sigkilled_service_takes_its_ffmpeg_with_it(
    process_factory: Callable[..., ServiceProcess], dirs: RenderDirs
) -> None:
    """A crash gives no chance to clean up; FFmpeg (in its own session, ignoring the broken
    progress pipe) must still not render on for nobody, nor write into a later attempt's file."""
    service = process_factory()
    async with create_channel(service.address) as channel:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        call = stub.Render(render_request("crash-1", long_spec()))
        await events_until(call, is_rendering)
        pid = await one_ffmpeg(dirs.output, "crash-1")

        os.kill(service.pid, signal.SIGKILL)
        await asyncio.to_thread(service.popen.wait, 10)
        # The service's death makes the kernel kill FFmpeg (its parent-death signal) ...
        await wait_for(lambda: kill_sent(pid), limit=10.0)
        # ... which ends as soon as the kernel lets it, however long a loaded disk takes.
        await wait_until(lambda: not pid_alive(pid), "FFmpeg to end", within=math.inf)
        call.cancel()
    assert ffmpeg_pids(dirs.output, "crash-1") == []


def test_a_command_whose_starter_died_before_its_parent_death_signal_was_set_never_runs(
    tmp_path: Path,
) -> None:
    """setpriv sets the parent-death signal in the child; a parent that died before that would
    never send it. The prefix runs the command only while its parent is the one that started
    it: here one that is not its parent stands for one that died (its child then belongs to
    another process)."""
    ran = tmp_path / "ran"
    command = ["/bin/sh", "-c", 'echo "$@" > "$0"', str(ran), "rendered"]
    not_the_parent = os.getppid()
    refused = subprocess.run([*parent_death_prefix(not_the_parent), *command], check=False)
    assert refused.returncode != 0 and not ran.exists()
    tied = subprocess.run([*parent_death_prefix(), *command], check=True)
    assert tied.returncode == 0 and ran.read_text() == "rendered\n"


async def test_health_and_reflection(service: Running) -> None:
    health = health_pb2_grpc.HealthStub(service.channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING

    def reflect() -> tuple[list[str], list[str]]:
        import grpc

        with grpc.insecure_channel(service.address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            services = list(database.get_services())
            descriptor = database.FindFileContainingSymbol(SERVICE)
            methods = [m.name for s in descriptor.service for m in s.method]
        return services, methods

    services, methods = await asyncio.to_thread(reflect)
    assert SERVICE in services and "grpc.health.v1.Health" in services
    assert {"Render", "WatchRender", "GetRender", "CancelRender", "GetCapacity"} <= set(methods)

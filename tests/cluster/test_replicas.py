"""Any export replica answers for any job (design invariant 10), as real processes on the suite's
PostgreSQL with real ffmpeg:

- WatchExport on a replica that does not write the job sees every status change, in increasing
  versions, through to the terminal state;
- with the change listeners' connections killed from the database side (and the batched poll
  turned down so that it cannot stand in), watchers still see every change;
- a cancel accepted by a replica that does not track the job is written to the record, every
  replica reports it, and the render stops leaving no file;
- the gateway given two export addresses keeps answering, and a job's event stream keeps going
  to its terminal event, when the replica serving that stream is SIGKILLed.

The replicas are started before the jobs are created, so each job is tracked by the replica
that created it alone.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import (
    TERMINAL,
    Replica,
    StackFactory,
    listener_pids,
    terminate_listeners,
)
from tests.gateway.async_sse import StreamRecord, read_stream
from tests.support.polling import wait_until
from tests.support.processes import child_pids
from tests.support.specs import pattern_spec
from tests.support.throttle import Throttle
from videojob.export.v1 import export_pb2
from videojob_launcher import ServiceProcess

pytestmark = pytest.mark.postgresql

OpenReplica = Callable[[ServiceProcess], Replica]
WATCH_WITHIN = 120.0


def assert_saw_every_status_change(
    seen: list[export_pb2.VideoJob], history: list[export_pb2.JobHistoryEntry]
) -> None:
    """Versions rise, progress never falls, the terminal state is the last thing seen and the
    history's; every status the job took after the first update seen was seen."""
    versions = [job.version for job in seen]
    assert versions == sorted(set(versions)), versions
    progress = [job.progress for job in seen]
    assert progress == sorted(progress), progress
    assert seen[-1].status in TERMINAL
    assert [job.status in TERMINAL for job in seen].count(True) == 1
    assert (seen[-1].version, seen[-1].status) == (history[-1].version, history[-1].status)
    statuses_after_first = {
        entry.status for entry in history if entry.version > seen[0].version
    } | {seen[0].status}
    assert statuses_after_first <= {job.status for job in seen}, (statuses_after_first, seen)


def written_only_by(history: list[export_pb2.JobHistoryEntry], process: ServiceProcess) -> bool:
    return all(entry.writer.endswith(f":{process.pid}") for entry in history)


async def create(replica: Replica, request_id: str, duration: float) -> export_pb2.VideoJob:
    spec = pattern_spec(duration, width=320, height=240, fps=25.0)
    return await replica.stub.CreateExport(
        export_pb2.CreateExportRequest(request_id=request_id, spec=spec), timeout=10
    )


async def wait_running(replica: Replica, job_id: str) -> None:
    async def running() -> bool:
        job = await replica.get(job_id)
        assert job.status not in TERMINAL, job
        return job.status == export_pb2.RUNNING and job.progress > 0

    await wait_until(running, f"job {job_id} rendering")


async def test_a_watch_on_a_replica_that_does_not_write_the_job_sees_every_change(
    cluster: StackFactory, replicas: OpenReplica
) -> None:
    stack = await cluster(exports=2)
    writer, other = replicas(stack.exports[0]), replicas(stack.exports[1])
    job = await create(writer, "watched-on-another-replica", 3.0)
    seen: list[export_pb2.VideoJob] = []
    await asyncio.wait_for(other.watch(job.id, seen), WATCH_WITHIN)
    history = await other.history(job.id)
    assert written_only_by(history, stack.exports[0])
    assert_saw_every_status_change(seen, history)
    assert seen[-1].status == export_pb2.COMPLETED and seen[-1].attempt == 1
    # The other replica's Get and the writer's agree.
    assert await other.get(job.id) == await writer.get(job.id)


async def test_watchers_see_every_change_after_the_listeners_are_killed(
    cluster: StackFactory, replicas: OpenReplica, schema: str
) -> None:
    # The poll checks once an hour: only the listeners (and the wake-ups when one is lost and
    # back) can carry the changes to the watcher.
    stack = await cluster(exports=2, export_args=("--change-poll-interval", "3600"))
    writer, other = replicas(stack.exports[0]), replicas(stack.exports[1])

    async def both_listening() -> bool:
        return len(await listener_pids(schema)) == 2

    await wait_until(both_listening, "both replicas listening")
    before = await listener_pids(schema)
    job = await create(writer, "listeners-killed", 30.0)
    seen: list[export_pb2.VideoJob] = []
    watch = asyncio.create_task(other.watch(job.id, seen))
    with Throttle.children_of(stack.render.pid, pause=0.2) as throttle:
        await wait_running(writer, job.id)
        throttle.freeze()
        assert await terminate_listeners(schema) >= 2

        async def listening_again() -> bool:
            now = await listener_pids(schema)
            return len(now) == 2 and not now & before

        await wait_until(listening_again, "both replicas listening on new connections")
    # ffmpeg runs again: the rest of the job's changes go through the new connections.
    await asyncio.wait_for(watch, WATCH_WITHIN)
    history = await other.history(job.id)
    assert written_only_by(history, stack.exports[0])
    assert_saw_every_status_change(seen, history)
    assert seen[-1].status == export_pb2.COMPLETED


async def test_a_cancel_through_a_replica_that_does_not_track_the_job(
    cluster: StackFactory, replicas: OpenReplica
) -> None:
    stack = await cluster(exports=2)
    writer, other = replicas(stack.exports[0]), replicas(stack.exports[1])
    job = await create(writer, "cancelled-elsewhere", 30.0)
    seen: list[export_pb2.VideoJob] = []
    watch = asyncio.create_task(writer.watch(job.id, seen))
    await wait_running(writer, job.id)
    cancelled = await other.stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
    assert cancelled.status == export_pb2.CANCELLED
    # The record says so, whichever replica is asked; the tracking replica's watch ends on it.
    await asyncio.wait_for(watch, WATCH_WITHIN)
    assert seen[-1].status == export_pb2.CANCELLED
    assert (await writer.get(job.id)).status == export_pb2.CANCELLED
    # The render stops and leaves no file.
    await wait_until(lambda: not child_pids(stack.render.pid), "ffmpeg to be stopped")
    await wait_until(lambda: not _files(stack.output_dir), f"no file in {stack.output_dir}")
    history = await writer.history(job.id)
    assert history[-1].status == export_pb2.CANCELLED
    assert history[-1].writer.endswith(f":{stack.exports[1].pid}")


def _files(directory: Path) -> list[Path]:
    """The renders' files (not the render service's own bookkeeping in hidden directories)."""
    return [path for path in directory.iterdir() if path.is_file()]


def connected(pid: int, port: int) -> bool:
    """Whether process ``pid`` has an established TCP connection to local port ``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rpartition(":")[2], 16)
            if fields[3] == "01" and remote_port == port and fields[9] in inodes:
                return True
    return False


async def test_the_gateway_keeps_answering_when_a_replica_is_killed(
    cluster: StackFactory, replicas: OpenReplica
) -> None:
    stack = await cluster(exports=2, gateways=1)
    tracking, serving = stack.exports
    writer = replicas(tracking)
    job = await create(writer, "gateway-over-two-replicas", 30.0)
    record = StreamRecord()
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
        # FFmpeg runs at a ninth of its speed until it is frozen, so the render cannot end
        # between the job seen running and the freeze, however loaded the machine.
        with Throttle.children_of(stack.render.pid, pause=0.2) as throttle:
            await wait_running(writer, job.id)
            throttle.freeze()
            # With the tracking replica stopped (its render keeps going), the gateway can only
            # open the job's event stream on the other one.
            await asyncio.to_thread(tracking.stop)
            stream = asyncio.create_task(read_stream(http, job.id, record))
            await asyncio.wait_for(record.first_event.wait(), WATCH_WITHIN)
            # Back on its port it re-attaches to the render; once the gateway is connected to
            # it again, the replica serving the stream dies.
            await asyncio.to_thread(tracking.start)
            port = int(tracking.address.rpartition(":")[2])
            await wait_until(lambda: connected(stack.gateway.pid, port), "the gateway reconnected")
            serving.kill()
            for _ in range(6):
                answer = await http.get(f"/api/jobs/{job.id}")
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "running"
        await asyncio.wait_for(stream, WATCH_WITHIN)
    assert record.status == 200
    assert record.terminal is not None and record.terminal.name == "completed"
    assert record.versions == sorted(set(record.versions)), record.versions
    final = await writer.get(job.id)
    assert final.status == export_pb2.COMPLETED and final.attempt == 1
    assert record.terminal.id == final.version

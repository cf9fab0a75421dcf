"""A split job whose owning export replica is SIGKILLed while its parts render (real processes:
two render services with ffmpeg, two export replicas on PostgreSQL):

- the replica that takes the job over re-attaches to every running part by its render id, so no
  part is rendered a second time (each keeps its one attempt and its render id), and the job
  completes;
- a cancel sent to the other replica while the dead owner's lease still holds the job stops
  every part's render from there at once: no ffmpeg left, no part's file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cluster.conftest import EXPORT_TEST_ARGS, TERMINAL, Replica
from tests.support.polling import wait_until
from tests.support.processes import child_pids
from tests.support.specs import pattern_spec
from tests.support.split import PLACED
from videojob.export.v1 import export_pb2
from videojob_launcher import Role, Stack, StackConfig


async def started(tmp_path: Path, schema: str, lease_ttl: str) -> Stack:
    config = StackConfig(
        tmp_path / "stack",
        database=schema,
        render=Role(count=2),
        export=Role(count=2, args=(*EXPORT_TEST_ARGS, "--lease-ttl", lease_ttl)),
    )
    stack = Stack(config)
    await stack.astart()
    return stack


@pytest.fixture
async def split_stack(tmp_path: Path, schema: str) -> AsyncIterator[Stack]:
    stack = await started(tmp_path, schema, "3")
    yield stack
    await stack.astop()


@pytest.fixture
async def long_lease_stack(tmp_path: Path, schema: str) -> AsyncIterator[Stack]:
    stack = await started(tmp_path, schema, "600")
    yield stack
    await stack.astop()


async def split_job_rendering(owner: Replica, request_id: str) -> export_pb2.VideoJob:
    """A split job of three minute-long parts created on ``owner``, once every part is placed
    and one reported frames."""
    spec = pattern_spec(60.0, width=320, height=240, fps=25.0)
    spec.output.split.parts = 3
    job = await owner.stub.CreateExport(
        export_pb2.CreateExportRequest(request_id=request_id, spec=spec), timeout=10
    )
    seen: list[export_pb2.VideoJob] = []

    async def every_part_rendering() -> bool:
        seen.append(await owner.get(job.id))
        parts = rendering_parts(seen[-1])
        return len(parts) == 3 and any(part.frames_done > 0 for part in parts)

    await wait_until(every_part_rendering, "every part rendering", 60)
    return seen[-1]


def rendering_parts(job: export_pb2.VideoJob) -> list[export_pb2.JobPart]:
    return [part for part in job.parts if not part.join and not part.audio and part.state in PLACED]


async def test_a_replica_killed_mid_split_hands_every_running_part_to_the_next_owner(
    split_stack: Stack,
) -> None:
    owner, other = Replica(split_stack.exports[0]), Replica(split_stack.exports[1])
    try:
        job = await split_job_rendering(owner, "split-takeover")
        seen = [job]
        before = {part.index: part.render_id for part in rendering_parts(job)}
        await split_stack.exports[0].akill()

        async def terminal() -> bool:
            seen.append(await other.get(job.id))
            return seen[-1].status in TERMINAL

        await wait_until(terminal, "the job to end on the new owner", 180)
        final = seen[-1]
        assert final.status == export_pb2.COMPLETED, final
        parts = [part for part in final.parts if not part.join and not part.audio]
        assert {part.index: part.render_id for part in parts} == before
        assert all(part.attempts == 1 and part.state == "done" for part in parts), parts
        history = await other.history(job.id)
        owners = {entry.owner for entry in history if entry.change == "part_done"}
        assert owners and all(entry.lease_epoch >= 2 for entry in history[-2:]), history[-2:]
        assert split_stack.exports[0].popen.poll() is not None
        assert owners.isdisjoint({history[0].owner}), (owners, history[0].owner)
    finally:
        await owner.close()
        await other.close()


async def test_a_cancel_through_the_other_replica_stops_every_part_while_the_dead_owner_holds_it(
    long_lease_stack: Stack,
) -> None:
    stack = long_lease_stack
    owner, other = Replica(stack.exports[0]), Replica(stack.exports[1])
    try:
        job = await split_job_rendering(owner, "split-cancel")
        await stack.exports[0].akill()
        assert any(child_pids(render.pid) for render in stack.renders), "no part renders"
        cancelled = await other.stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))
        assert cancelled.status == export_pb2.CANCELLED
        # Stopped from the replica that took the cancel, while the dead owner's lease holds.
        assert not any(child_pids(render.pid) for render in stack.renders), "ffmpeg still runs"
        left = [path.name for path in stack.output_dir.iterdir() if job.id in path.name]
        assert left == [], left
    finally:
        await owner.close()
        await other.close()

"""A split job broken while its join renders (real processes: two render services with ffmpeg
sharing an output directory, two export replicas on PostgreSQL with a 3 s lease). The join's
muxing stops itself as it starts (tests/support/held_join.py), so the join render is running,
and seen so on the job and on its render service, for as long as the test needs:

- the owning export replica SIGKILLed mid-join: the replica that takes the job over re-attaches
  to the running join by its render id; no second join render is started anywhere (one muxing
  ran), no part renders again, the job completes under the new lease with a file of exactly the
  plan's frames, and no part's file is left;
- the owner SIGKILLed mid-join and the join ending while nobody follows it (a lease long enough
  for that): the next owner finds it completed by its render id and completes the job the same;
- the join's render service SIGKILLed mid-join: the join renders again on the other render
  service (its attempt 2), from the parts already rendered (none renders again), and the job
  completes; no part's file, nor the lost join's partial file, is left."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import grpc
import pytest

from tests.cluster.conftest import EXPORT_TEST_ARGS, TERMINAL, Replica
from tests.support.held_join import HoldingFFmpeg, held_join, resume
from tests.support.polling import wait_until
from tests.support.processes import gone
from tests.support.specs import pattern_spec
from tests.support.split import PLACED, audio_seconds, decoded_frames
from videojob.export.v1 import export_pb2
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc
from videojob_launcher import Role, ServiceProcess, Stack, StackConfig

if TYPE_CHECKING:
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub

pytestmark = [pytest.mark.postgresql, pytest.mark.serial]

SECONDS = 12.0
FPS = 25.0
FRAMES = round(SECONDS * FPS)
PARTS = 3


@dataclass
class JoinStack:
    stack: Stack
    ffmpeg: HoldingFFmpeg
    # Per render service's instance id: the process and a client of it.
    renders: dict[str, tuple[ServiceProcess, RenderServiceAsyncStub]]
    channels: list[grpc.aio.Channel]

    async def render_state(self, instance_id: str, render_id: str) -> int | None:
        """The render's state on that render service; None when it never heard of it."""
        _, stub = self.renders[instance_id]
        try:
            info = await stub.GetRender(
                render_pb2.GetRenderRequest(render_id=render_id), timeout=10
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return int(info.state)

    def left_of(self, job: export_pb2.VideoJob) -> list[str]:
        """What the job left in the output directory besides its output: parts, the audio, a
        partial file."""
        output = Path(job.output_path).name
        found = [p.name for p in self.stack.output_dir.iterdir() if job.id in p.name]
        return sorted(name for name in found if name != output)


@contextlib.asynccontextmanager
async def join_cluster(tmp_path: Path, schema: str, lease_ttl: str) -> AsyncIterator[JoinStack]:
    ffmpeg = HoldingFFmpeg.write(tmp_path / "ffmpeg")
    config = StackConfig(
        tmp_path / "stack",
        database=schema,
        render=Role(count=2, env=ffmpeg.env()),
        export=Role(
            count=2,
            args=(*EXPORT_TEST_ARGS, "--lease-ttl", lease_ttl, "--failover-after", "3"),
        ),
    )
    stack = Stack(config)
    await stack.astart()
    channels: list[grpc.aio.Channel] = []
    try:
        renders = {}
        for process in stack.renders:
            channel = create_channel(process.address)
            channels.append(channel)
            stub: RenderServiceAsyncStub = render_pb2_grpc.RenderServiceStub(channel)
            capacity = await stub.GetCapacity(render_pb2.GetCapacityRequest(), timeout=10)
            renders[capacity.instance_id] = (process, stub)
        cluster = JoinStack(stack, ffmpeg, renders, channels)
        yield cluster
        # Whatever a failed test left held runs on (and stops with its render service).
        for process in stack.renders:
            for held in held_joins_of(cluster, process):
                resume(held)
    finally:
        for channel in channels:
            await channel.close(None)
        await stack.astop()


@pytest.fixture
async def join_stack(tmp_path: Path, schema: str) -> AsyncIterator[JoinStack]:
    async with join_cluster(tmp_path, schema, "3") as cluster:
        yield cluster


@pytest.fixture
async def ten_second_lease_stack(tmp_path: Path, schema: str) -> AsyncIterator[JoinStack]:
    """A lease long enough for the join to end before the dead owner's lapses."""
    async with join_cluster(tmp_path, schema, "10") as cluster:
        yield cluster


def held_joins_of(cluster: JoinStack, process: ServiceProcess) -> list[int]:
    if process.popen.poll() is not None:
        return []
    held = (held_join(process.pid, render_id) for render_id in cluster.ffmpeg.joins_run())
    return [pid for pid in held if pid is not None]


def video_parts(job: export_pb2.VideoJob) -> list[export_pb2.JobPart]:
    return [part for part in job.parts if not part.join]


def join_of(job: export_pb2.VideoJob) -> export_pb2.JobPart:
    return next(part for part in job.parts if part.join)


async def joining(cluster: JoinStack, owner: Replica) -> tuple[export_pb2.VideoJob, int]:
    """A split job created on ``owner``, once every part (and the audio) is done and its join
    is recorded running on a render service, which runs it (its muxing held there): the job as
    then seen, and the held muxing's pid."""
    spec = pattern_spec(SECONDS, width=160, height=120, fps=FPS)
    spec.output.split.parts = PARTS
    created = await owner.stub.CreateExport(
        export_pb2.CreateExportRequest(request_id="split-join", spec=spec), timeout=10
    )
    seen: list[export_pb2.VideoJob] = []
    held: list[int] = []

    async def join_held() -> bool:
        job = await owner.get(created.id)
        seen.append(job)
        if not job.parts or not all(part.state == "done" for part in video_parts(job)):
            return False
        join = join_of(job)
        if join.state not in PLACED or not join.render_id:
            return False
        process, _ = cluster.renders[join.render_service.instance_id]
        pid = held_join(process.pid, join.render_id)
        if pid is None:
            return False
        state = await cluster.render_state(join.render_service.instance_id, join.render_id)
        held.append(pid)
        return state == render_pb2.RENDER_STATE_RUNNING

    await wait_until(join_held, "every part done and the join running, held", 60)
    job = seen[-1]
    assert len(video_parts(job)) == PARTS + 1, job.parts  # the parts and the audio
    assert join_of(job).render_id == f"{job.id}-join" and join_of(job).attempts == 1
    return job, held[-1]


async def terminal(replica: Replica, job_id: str) -> export_pb2.VideoJob:
    seen: list[export_pb2.VideoJob] = []

    async def ended() -> bool:
        seen.append(await replica.get(job_id))
        return seen[-1].status in TERMINAL

    await wait_until(ended, "the job to end", 60)
    return seen[-1]


def parts_as_rendered(job: export_pb2.VideoJob) -> dict[int, tuple[str, int, str]]:
    """Per part (and the audio): its render id, attempts and render service."""
    return {
        part.index: (part.render_id, part.attempts, part.render_service.instance_id)
        for part in video_parts(job)
    }


def assert_output_verified(job: export_pb2.VideoJob) -> None:
    assert job.status == export_pb2.COMPLETED, job
    assert job.progress == 100 and job.stage == "Complete", job
    path = Path(job.output_path)
    assert path.is_file() and job.output_size_bytes == path.stat().st_size > 0
    assert len(decoded_frames(path)) == FRAMES
    assert abs(audio_seconds(path) - SECONDS) <= 1 / FPS


async def assert_nothing_left(cluster: JoinStack, job: export_pb2.VideoJob) -> None:
    """Parts' outputs are removed by the tracker just after its terminal commit."""
    left: list[list[str]] = []

    async def nothing_left() -> bool:
        left.append(cluster.left_of(job))
        return left[-1] == []

    try:
        await wait_until(nothing_left, "no part's file left", 20)
    except AssertionError:
        raise AssertionError(f"left: {left[-1]}") from None


async def assert_no_part_rendered_again(cluster: JoinStack, job: export_pb2.VideoJob) -> None:
    """No render service still running heard of a part's second attempt."""
    running = [
        name for name, (process, _) in cluster.renders.items() if process.popen.poll() is None
    ]
    for part in video_parts(job):
        for instance_id in running:
            again = await cluster.render_state(instance_id, f"{part.render_id}-a2")
            assert again is None, (part.render_id, instance_id, again)


async def lease_of(schema: str, job_id: str) -> tuple[str, int]:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(schema)
    try:
        row = await conn.fetchrow("SELECT owner, lease_epoch FROM jobs WHERE id = $1", job_id)
    finally:
        await conn.close()
    assert row is not None
    return str(row["owner"]), int(row["lease_epoch"])


def replica_of(owner: str, process: ServiceProcess) -> bool:
    """Whether ``owner`` (``host:pid:random``) is the current run of ``process``."""
    return owner.split(":")[1] == str(process.pid)


async def take_over(schema: str, job_id: str, successor: ServiceProcess) -> None:
    async def taken_over() -> bool:
        holder, epoch = await lease_of(schema, job_id)
        return epoch == 2 and replica_of(holder, successor)

    await wait_until(taken_over, "the other replica to take the job over", 30)


async def assert_completed_by_the_one_join(
    cluster: JoinStack, final: export_pb2.VideoJob, seen: export_pb2.VideoJob, new_owner: Replica
) -> None:
    """``final`` completed from the join and the parts ``seen`` before the owner died: the one
    join render (its one muxing), no part rendered again; under the new owner's lease."""
    join = join_of(seen)
    assert_output_verified(final)
    assert Path(final.output_path).name.startswith(f"{seen.id}-join.")
    assert parts_as_rendered(final) == parts_as_rendered(seen)
    done = join_of(final)
    assert (done.render_id, done.attempts, done.render_service.instance_id) == (
        join.render_id,
        1,
        join.render_service.instance_id,
    )
    assert cluster.ffmpeg.joins_run() == [join.render_id]
    for instance_id in cluster.renders:
        mine = instance_id == join.render_service.instance_id
        state = await cluster.render_state(instance_id, join.render_id)
        assert state == (render_pb2.RENDER_STATE_COMPLETED if mine else None), instance_id
        assert await cluster.render_state(instance_id, f"{join.render_id}-a2") is None
    await assert_no_part_rendered_again(cluster, final)
    history = await new_owner.history(seen.id)
    assert history[-1].change == "complete" and history[-1].lease_epoch == 2, history[-1]
    await assert_nothing_left(cluster, final)


async def test_a_replica_killed_mid_join_hands_the_running_join_to_the_next_owner(
    join_stack: JoinStack, schema: str
) -> None:
    cluster = join_stack
    exports = cluster.stack.exports
    owner, other = Replica(exports[0]), Replica(exports[1])
    try:
        job, held = await joining(cluster, owner)
        join = join_of(job)
        await exports[0].akill()
        assert (await lease_of(schema, job.id))[1] == 1
        await take_over(schema, job.id, exports[1])
        # Still joining on its render service when the new owner takes it.
        service = cluster.renders[join.render_service.instance_id][0]
        assert held_join(service.pid, join.render_id) == held
        resume(held)
        final = await terminal(other, job.id)
        await assert_completed_by_the_one_join(cluster, final, job, other)
    finally:
        await owner.close()
        await other.close()


async def test_a_join_that_ends_while_its_owner_is_dead_completes_the_job_on_the_next_owner(
    ten_second_lease_stack: JoinStack, schema: str
) -> None:
    cluster = ten_second_lease_stack
    exports = cluster.stack.exports
    owner, other = Replica(exports[0]), Replica(exports[1])
    try:
        job, held = await joining(cluster, owner)
        join = join_of(job)
        await exports[0].akill()
        resume(held)

        async def join_completed() -> bool:
            state = await cluster.render_state(join.render_service.instance_id, join.render_id)
            return state == render_pb2.RENDER_STATE_COMPLETED

        await wait_until(join_completed, "the join to complete on its render service", 20)
        # Nobody took the job over yet: the join ended with no tracker following it.
        holder, epoch = await lease_of(schema, job.id)
        assert epoch == 1 and not replica_of(holder, exports[1]), (holder, epoch)
        await take_over(schema, job.id, exports[1])
        final = await terminal(other, job.id)
        await assert_completed_by_the_one_join(cluster, final, job, other)
    finally:
        await owner.close()
        await other.close()


async def test_the_joins_render_service_killed_mid_join_joins_again_elsewhere_from_the_parts(
    join_stack: JoinStack,
) -> None:
    cluster = join_stack
    owner = Replica(cluster.stack.exports[0])
    try:
        job, held = await joining(cluster, owner)
        before = parts_as_rendered(job)
        join = join_of(job)
        victim = join.render_service.instance_id
        survivor = next(name for name in cluster.renders if name != victim)
        # The join's partial file is there: the render service that dies cannot remove it.
        assert f".{victim}.{join.render_id}.partial.mp4" in cluster.left_of(job)
        await cluster.renders[victim][0].akill()
        # Its muxing dies with it (the parent-death signal), held or not.
        await wait_until(lambda: gone(held), "the held muxing to die with its service", 10)
        final = await terminal(owner, job.id)

        assert_output_verified(final)
        again = join_of(final)
        assert (again.render_id, again.attempts, again.render_service.instance_id) == (
            f"{job.id}-join-a2",
            2,
            survivor,
        )
        assert Path(final.output_path).name.startswith(f"{job.id}-join-a2.")
        # The parts as they were rendered before the join: none rendered again.
        assert parts_as_rendered(final) == before
        await assert_no_part_rendered_again(cluster, final)
        assert await cluster.render_state(survivor, join.render_id) is None
        assert await cluster.render_state(survivor, again.render_id) == (
            render_pb2.RENDER_STATE_COMPLETED
        )
        assert cluster.ffmpeg.joins_run() == [join.render_id, again.render_id]
        await assert_nothing_left(cluster, final)
    finally:
        await owner.close()

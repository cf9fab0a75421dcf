"""Several machines, simulated honestly: three export replicas on the suite's PostgreSQL, two
render services and a gateway that share nothing but the database and a real SeaweedFS (the
media root and the outputs are ``s3://`` locations, each process has a directory of its own).

An uploaded clip (POST /api/media through the gateway) is transcoded by real ffmpeg on one render
service; mid-render (its ffmpeg held stopped from its start, so that even a tiny transcode is
caught mid-way) its owning export replica is SIGKILLed and another one takes the job over
when the lease lapses (re-attaching to the running render: attempt 1, one render); the job
completes, and its download through the gateway is, byte for byte, the object the render stored,
whose SHA-256 the job records. What each process was given is read from /proc: no directory is
given to two of them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import httpx
import pytest

from tests.cluster.conftest import EXPORT_TEST_ARGS, GATEWAY_TEST_ARGS
from tests.support.media import make_clip
from tests.support.polling import wait_until
from tests.support.processes import gone
from tests.support.seaweedfs import SeaweedFS
from tests.support.throttle import Throttle
from videojob.render.v1 import render_pb2, render_pb2_grpc
from videojob.storage.location import S3Location, is_stored_object
from videojob.storage.object_store import ObjectStore
from videojob_launcher import ObjectStorage, Role, ServiceProcess, Stack, StackConfig

pytestmark = [pytest.mark.postgresql, pytest.mark.object_store, pytest.mark.serial]

TERMINAL = ("completed", "failed", "cancelled")
LOCATION_FLAGS = ("--media-root", "--output-dir", "--render-output-dir")
FINISH_WITHIN = 180.0
# How often the frozen throttle looks for the render's ffmpeg (it is stopped when found).
CATCH_SECONDS = 0.01


@pytest.fixture
async def stored_cluster(
    tmp_path: Path, schema: str, seaweedfs: SeaweedFS
) -> AsyncIterator[tuple[Stack, S3Location]]:
    """The stack on ``schema`` with its files under a prefix of this test in the session's
    store; the location of its outputs."""
    prefix = f"cluster-{secrets.token_hex(4)}"
    outputs = seaweedfs.location(f"{prefix}/renders")
    storage = ObjectStorage(
        str(seaweedfs.location(f"{prefix}/media")), str(outputs), seaweedfs.environ()
    )
    stack = Stack(
        StackConfig(
            tmp_path / "stack",
            database=schema,
            storage=storage,
            render=Role(count=2),
            export=Role(count=3, args=(*EXPORT_TEST_ARGS, "--lease-ttl", "3")),
            gateway=Role(args=GATEWAY_TEST_ARGS),
        )
    )
    try:
        await stack.astart()
        yield stack, outputs
    finally:
        await stack.astop()


def _state_and_parent(pid: str) -> tuple[str, str]:
    """The state letter and the parent pid in /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return fields[0], fields[1]


def rendering_ffmpegs(services: list[ServiceProcess]) -> list[int]:
    """The renders' ffmpeg processes (their progress goes to a pipe) among the children of
    ``services``, in one /proc scan: not the probes and checks that run beside them."""
    parents = {str(service.pid) for service in services}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if _state_and_parent(entry.name)[1] not in parents:
                continue
            if b"\0-progress\0" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile
            continue
    return found


def stopped(pid: int) -> bool:
    try:
        return _state_and_parent(str(pid))[0] == "T"
    except OSError:
        return False


def given(pid: int) -> tuple[list[str], dict[str, str]]:
    """The arguments after ``python -m MODULE`` and the environment of process ``pid``."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    module_at = argv.index("-m") + 1
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    environ = dict(pair.partition("=")[::2] for pair in pairs if "=" in pair)
    return argv[module_at + 1 :], environ


def directories_given(args: list[str], environ: dict[str, str]) -> set[Path]:
    """Every local path among a process's arguments (``--flag PATH`` or ``--flag=PATH``), and
    its TMPDIR."""
    values = [arg.partition("=")[2] if arg.startswith("--") else arg for arg in args]
    found = {Path(value) for value in values if value.startswith("/")}
    if "TMPDIR" in environ:
        found.add(Path(environ["TMPDIR"]))
    return found


def flag_values(args: list[str], flag: str) -> list[str]:
    return [args[index + 1] for index, arg in enumerate(args[:-1]) if arg == flag]


def assert_no_directory_shared(processes: list[ServiceProcess]) -> None:
    seen: dict[str, set[Path]] = {}
    for process in processes:
        args, environ = given(process.pid)
        for flag in LOCATION_FLAGS:
            assert all(is_stored_object(value) for value in flag_values(args, flag)), args
        if process.name.startswith("render"):
            (scratch,) = flag_values(args, "--scratch-dir")
            assert Path(scratch).is_dir(), scratch
        directories = directories_given(args, environ)
        assert directories, f"{process.name} was given no directory of its own: {args}"
        seen[process.name] = directories
    for name, mine in seen.items():
        for other, theirs in seen.items():
            if other == name:
                continue
            shared = [
                (a, b)
                for a in mine
                for b in theirs
                if a == b or a.is_relative_to(b) or b.is_relative_to(a)
            ]
            assert not shared, f"{name} and {other} were given a common directory: {shared}"


async def job_row(database: str, job_id: str) -> asyncpg.Record:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database)
    try:
        row = await conn.fetchrow(
            "SELECT status, owner, lease_epoch, progress FROM jobs WHERE id = $1", job_id
        )
    finally:
        await conn.close()
    assert row is not None, job_id
    return row


async def history(database: str, job_id: str) -> list[asyncpg.Record]:
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT version, status, stage, progress, owner, lease_epoch FROM job_history "
            "WHERE job_id = $1 ORDER BY version",
            job_id,
        )
    finally:
        await conn.close()
    return rows


def owning(owner: str | None, processes: list[ServiceProcess]) -> ServiceProcess | None:
    """The replica whose current run ``owner`` (``host:pid:random``) names."""
    for process in processes:
        if owner is not None and owner.split(":")[1] == str(process.pid):
            return process
    return None


async def stored_object(store: SeaweedFS, output_path: str) -> bytes:
    bucket, _, key = output_path.removeprefix("s3://").partition("/")
    async with ObjectStore(store.settings()) as opened:
        info = await opened.head(bucket, key)
        return await opened.get_small(bucket, key, info.size)


async def render_known(address: str, render_id: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        try:
            await stub.GetRender(render_pb2.GetRenderRequest(render_id=render_id), timeout=10)
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
            return False
    return True


async def test_an_upload_transcoded_across_a_replica_takeover_downloads_as_stored(
    stored_cluster: tuple[Stack, S3Location], seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    stack, outputs = stored_cluster
    assert_no_directory_shared(stack.processes)
    clip = make_clip(tmp_path / "clip.mp4", width=320, height=240, seconds=4.0)

    def ffmpegs() -> list[int]:
        return rendering_ffmpegs(stack.renders)

    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:

        async def current(job_id: str) -> dict[str, Any]:
            answer = await http.get(f"/api/jobs/{job_id}")
            assert answer.status_code == 200, answer.text
            job: dict[str, Any] = answer.json()
            return job

        uploaded = await http.post(
            "/api/media", params={"filename": "clip.mp4"}, content=clip.read_bytes()
        )
        assert uploaded.status_code == 201, uploaded.text
        spec = {
            "source": {"transcode": {"inputPath": uploaded.json()["path"]}},
            "output": {"preset": "ultrafast", "width": 320, "height": 240},
        }
        # Frozen before the job exists: the render's ffmpeg is stopped as soon as it appears
        # (however fast a tiny transcode would be), and stays stopped until the job has
        # changed hands.
        with Throttle(ffmpegs, run=CATCH_SECONDS) as throttle:
            throttle.freeze()
            created = await http.post("/api/jobs", json=spec)
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]

            def caught() -> bool:
                pids = ffmpegs()
                return len(pids) == 1 and stopped(pids[0])

            await wait_until(caught, "the render's ffmpeg to be caught")
            (ffmpeg,) = ffmpegs()
            before = await job_row(stack.database, job_id)
            assert before["status"] == "RUNNING" and before["progress"] < 95, before
            owner = owning(before["owner"], stack.exports)
            assert owner is not None, (before["owner"], [p.pid for p in stack.exports])
            await owner.akill()
            assert not gone(ffmpeg), "ffmpeg stopped with the export replica"
            others = [process for process in stack.exports if process is not owner]

            async def taken_over() -> bool:
                row = await job_row(stack.database, job_id)
                return owning(row["owner"], others) is not None

            await wait_until(taken_over, "another replica to take the job over")
            taker = owning((await job_row(stack.database, job_id))["owner"], others)
            assert taker is not None
        # The throttle is closed: ffmpeg runs, at its own speed, to the end.

        async def finished() -> bool:
            return (await current(job_id))["status"] in TERMINAL

        await wait_until(finished, "the job to finish", FINISH_WITHIN)
        job = await current(job_id)
        download = await http.get(f"/api/jobs/{job_id}/download")

    assert job["status"] == "completed", job
    # Re-attached to the running render: one attempt, rendered once, on one render service.
    (attempt,) = job["attempts"]
    assert job["attempt"] == attempt["attempt"] == 1, job
    address = attempt["renderService"]["address"]
    assert address in [render.address for render in stack.renders], job
    for render in stack.renders:
        known = await render_known(render.address, attempt["renderId"])
        assert known == (render.address == address), (render.name, address)
    row = await job_row(stack.database, job_id)
    assert row["lease_epoch"] == before["lease_epoch"] + 1 and owning(row["owner"], [taker])
    # Taken over mid-render: the new owner tracked the render while it ran (what it wrote then
    # may be coalesced: a tiny render may go from the stopped ffmpeg's start to Finalizing in
    # one report) and wrote its end.
    after = [
        entry for entry in await history(stack.database, job_id) if entry["owner"] == row["owner"]
    ]
    assert after[0]["status"] == "RUNNING" and after[-1]["status"] == "COMPLETED", after
    # The download is the object the render stored, whose SHA-256 the job records.
    assert job["outputPath"] == outputs.url_of(outputs.key_for(f"{attempt['renderId']}.mp4"))
    stored = await stored_object(seaweedfs, job["outputPath"])
    assert download.status_code == 200, download.text
    assert download.content == stored
    assert len(stored) == job["outputSizeBytes"]
    assert hashlib.sha256(stored).hexdigest() == job["outputSha256"]
    assert stored[4:8] == b"ftyp"
    # Still none shares a directory with another (read again, at the end).
    assert_no_directory_shared([process for process in stack.processes if process is not owner])

"""The output path on a real SeaweedFS, end to end: the render service renders into its scratch
directory and stores the file (--output-dir s3://...), the export service checks the object
before COMPLETED and removes it with its job (--render-output-dir s3://...), and the gateway
serves it (streamed with Range, or redirected to a presigned link). Real processes
(videojob_launcher), tiny renders."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.gateway.conftest import create_job, start_gateway, tiny_spec, wait_terminal
from tests.support.polling import wait_until
from tests.support.seaweedfs import SeaweedFS
from tests.support.tcp_proxy import TcpProxy
from videojob.render.v1 import render_pb2, render_pb2_grpc
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore
from videojob_launcher import Role, Stack, StackConfig

pytestmark = pytest.mark.object_store

GATEWAY_ARGS = ("--heartbeat-seconds", "0.2")


def s3_stack_config(
    workdir: Path,
    location: S3Location,
    environ: dict[str, str],
    render_environ: dict[str, str],
    export_environ: dict[str, str] | None = None,
    export_args: tuple[str, ...] = (),
) -> StackConfig:
    """A stack whose render service stores its outputs at ``location`` (reaching the store
    with ``render_environ``) and whose export service (with ``export_environ``, by default
    ``environ``, and ``export_args``) and gateway read them there."""
    url = str(location)
    return StackConfig(
        workdir,
        render=Role(
            args=("--output-dir", url, "--scratch-dir", str(workdir / "scratch")),
            env=render_environ,
        ),
        export=Role(
            args=("--render-output-dir", url, *export_args),
            env=environ if export_environ is None else export_environ,
        ),
        gateway=Role(args=(*GATEWAY_ARGS, "--render-output-dir", url), env=environ),
    )


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def object_of(location: S3Location, output_path: str) -> tuple[str, str]:
    bucket, _, key = output_path.removeprefix("s3://").partition("/")
    assert bucket == location.bucket and key.startswith(location.key_prefix), output_path
    return bucket, key


async def stored_keys(seaweedfs: SeaweedFS, location: S3Location) -> list[str]:
    async with ObjectStore(seaweedfs.settings()) as store:
        return await store.list_keys(location)


async def unfinished_uploads(seaweedfs: SeaweedFS, location: S3Location) -> list[str]:
    async with ObjectStore(seaweedfs.settings()) as store:
        return [upload.key for upload in await store.list_unfinished_uploads(location)]


@pytest.fixture(scope="module")
def s3_location(seaweedfs: SeaweedFS) -> S3Location:
    return seaweedfs.location(f"tests/{secrets.token_hex(6)}/renders")


@pytest.fixture(scope="module")
def s3_stack(
    seaweedfs: SeaweedFS, s3_location: S3Location, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    environ = seaweedfs.environ()
    config = s3_stack_config(tmp_path_factory.mktemp("s3-stack"), s3_location, environ, environ)
    with Stack(config) as running:
        yield running


@pytest.fixture(scope="module")
def s3_completed(s3_stack: Stack) -> dict[str, Any]:
    with httpx.Client(base_url=s3_stack.url, timeout=30) as http:
        job = create_job(http, tiny_spec(1.0))
        finished: dict[str, Any] = wait_terminal(http, job["id"])
    assert finished["status"] == "completed", finished
    return finished


@pytest.fixture
def client(s3_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=s3_stack.url, timeout=30) as http:
        yield http


def test_a_job_completes_as_an_object_whose_sha256_it_records(
    client: httpx.Client,
    s3_completed: dict[str, Any],
    s3_location: S3Location,
    s3_stack: Stack,
    seaweedfs: SeaweedFS,
) -> None:
    job = s3_completed
    _, key = object_of(s3_location, job["outputPath"])
    attempt = job["attempts"][-1]
    assert key == s3_location.key_for(f"{attempt['renderId']}.mp4"), job
    downloaded = client.get(f"/api/jobs/{job['id']}/download")
    assert downloaded.status_code == 200, downloaded.text
    assert downloaded.headers["content-type"] == "video/mp4"
    assert downloaded.content[4:8] == b"ftyp"
    assert len(downloaded.content) == job["outputSizeBytes"]
    assert job["outputSha256"] == sha256_of(downloaded.content)
    assert job["stageProgress"] is None  # no stage moves once terminal
    # The object is there as stored, and no scratch file stays behind.
    assert key in asyncio.run(stored_keys(seaweedfs, s3_location))
    scratch = s3_stack.workdir / "scratch"
    assert not [path.name for path in scratch.glob("*.mp4")], list(scratch.iterdir())
    # Not asserted: "Uploading" in the job's history. A tiny file's upload takes milliseconds
    # and a completion supersedes the progress still waiting to be written (as any stage's may
    # be coalesced); the render's own stream shows it (the next test), and a job whose upload
    # is held shows it (test_a_cancel_during_the_upload_leaves_no_object_and_no_unfinished_upload).


async def test_the_render_stream_shows_the_upload_rising_before_completed(
    s3_stack: Stack, s3_completed: dict[str, Any]
) -> None:
    """Uploading keeps percent at 99 while stage_progress rises to 100 (bytes acknowledged by
    the store), and completed comes after, with the object's checksums."""
    render_id = s3_completed["attempts"][-1]["renderId"]
    async with grpc.aio.insecure_channel(s3_stack.render_addr) as channel:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        watch = render_pb2.WatchRenderRequest(render_id=render_id, after_seq=0)
        events = [event async for event in stub.WatchRender(watch, timeout=30)]
    uploading = [
        event.progress
        for event in events
        if event.WhichOneof("event") == "progress" and event.progress.stage == "Uploading"
    ]
    assert uploading, [event.WhichOneof("event") for event in events]
    shares = [progress.stage_progress for progress in uploading]
    assert shares == sorted(shares) and shares[-1] == 100.0, shares
    assert all(progress.percent == 99.0 for progress in uploading), uploading
    completed = events[-1]
    assert completed.WhichOneof("event") == "completed", completed
    assert completed.completed.sha256 == s3_completed["outputSha256"]
    assert completed.completed.store_checksum.endswith("-1"), completed.completed


def test_a_stored_output_is_downloaded_with_range(
    client: httpx.Client, s3_completed: dict[str, Any]
) -> None:
    url = f"/api/jobs/{s3_completed['id']}/download"
    whole = client.get(url).content
    size = len(whole)
    head = client.get(url, headers={"Range": "bytes=0-99"})
    assert head.status_code == 206, head.text
    assert head.headers["content-range"] == f"bytes 0-99/{size}"
    assert head.content == whole[:100]
    tail = client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole[-10:]
    outside = client.get(url, headers={"Range": f"bytes={size + 10}-"})
    assert outside.status_code == 416, outside.text
    assert outside.headers["content-range"] == f"bytes */{size}"


def test_a_redirecting_gateway_answers_with_a_presigned_link(
    s3_stack: Stack, s3_completed: dict[str, Any], seaweedfs: SeaweedFS, s3_location: S3Location
) -> None:
    gateway = start_gateway(
        s3_stack.export_addr,
        "--render-output-dir",
        str(s3_location),
        "--downloads",
        "redirect",
        "--download-link-seconds",
        "60",
        env=seaweedfs.environ(),
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", timeout=30) as http:
            answer = http.get(f"/api/jobs/{s3_completed['id']}/download")
            assert answer.status_code == 302, answer.text
            link = answer.headers["location"]
            assert link.startswith(seaweedfs.endpoint), link
            assert "X-Amz-Expires=60" in link, link
            again = http.get(f"/api/jobs/{s3_completed['id']}/download")
            assert again.headers["location"] != "", again.headers
        with httpx.Client(timeout=30) as direct:
            whole = direct.get(link)
            assert whole.status_code == 200, whole.text
            assert sha256_of(whole.content) == s3_completed["outputSha256"]
            ranged = direct.get(link, headers={"Range": "bytes=4-7"})
            assert ranged.status_code == 206 and ranged.content == b"ftyp"
    finally:
        gateway.stop()


def test_an_object_deleted_behind_the_service_is_a_clear_download_error(
    client: httpx.Client, s3_location: S3Location, seaweedfs: SeaweedFS
) -> None:
    job = create_job(client, tiny_spec(1.0))
    finished = wait_terminal(client, job["id"])
    assert finished["status"] == "completed", finished
    bucket, key = object_of(s3_location, finished["outputPath"])

    async def delete() -> None:
        async with ObjectStore(seaweedfs.settings()) as store:
            await store.delete(bucket, key)

    asyncio.run(delete())
    answer = client.get(f"/api/jobs/{job['id']}/download")
    assert answer.status_code == 410, answer.text
    body = answer.json()
    assert body["code"] == "gone", body
    assert finished["outputPath"] in body["message"] and "object store" in body["message"]


def test_deleting_a_job_removes_its_object(
    client: httpx.Client, s3_location: S3Location, seaweedfs: SeaweedFS
) -> None:
    job = create_job(client, tiny_spec(1.0))
    finished = wait_terminal(client, job["id"])
    assert finished["status"] == "completed", finished
    _, key = object_of(s3_location, finished["outputPath"])
    assert key in asyncio.run(stored_keys(seaweedfs, s3_location))
    deleted = client.delete(f"/api/jobs/{job['id']}")
    assert deleted.status_code in (200, 204), deleted.text
    assert key not in asyncio.run(stored_keys(seaweedfs, s3_location))


@pytest.fixture
async def stalling_store(seaweedfs: SeaweedFS) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the store that the test can stall (the render service's only way
    to it)."""
    proxy = await TcpProxy("127.0.0.1", seaweedfs.s3_port).start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def test_a_cancel_during_the_upload_leaves_no_object_and_no_unfinished_upload(
    seaweedfs: SeaweedFS, stalling_store: TcpProxy, tmp_path: Path
) -> None:
    location = seaweedfs.location(f"tests/{secrets.token_hex(6)}/renders")
    environ = seaweedfs.environ()
    render_environ = {**environ, "AWS_ENDPOINT_URL": f"http://{stalling_store.address}"}
    config = s3_stack_config(tmp_path, location, environ, render_environ)
    # An upload whose creation was held in the stalled link may reach the store after the
    # render service's abort looked for it: the orphan sweep is what removes it then.
    export = replace(config.export, args=(*config.export.args, "--orphan-sweep-interval", "1"))
    stack = Stack(replace(config, export=export))
    await asyncio.to_thread(stack.start)
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            stalling_store.stall()
            created = await http.post("/api/jobs", json=tiny_spec(1.0))
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]

            seen: list[dict[str, Any]] = []

            async def uploading() -> bool:
                job: dict[str, Any] = (await http.get(f"/api/jobs/{job_id}")).json()
                assert job["status"] in ("queued", "running"), job
                seen.append(job)
                return bool(job["stage"] == "Uploading")

            await wait_until(uploading, "the job to be Uploading", 60)
            assert 95 <= seen[-1]["progress"] < 100, seen[-1]
            cancelled = await http.post(f"/api/jobs/{job_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            # The stalled upload gives way once the store answers again: it is aborted.
            stalling_store.resume()

            async def cancelled_job() -> bool:
                job = (await http.get(f"/api/jobs/{job_id}")).json()
                return bool(job["status"] == "cancelled")

            await wait_until(cancelled_job, "the job to be cancelled", 60)

            left: list[tuple[list[str], list[str]]] = []

            async def nothing_left() -> bool:
                keys = await stored_keys(seaweedfs, location)
                uploads = await unfinished_uploads(seaweedfs, location)
                left.append((keys, uploads))
                return not keys and not uploads

            try:
                await wait_until(nothing_left, "no object and no unfinished upload", 20)
            except AssertionError:
                raise AssertionError(f"left: {left[-1]}") from None
    finally:
        await asyncio.to_thread(stack.stop)


async def test_a_store_that_stops_answering_is_retried_then_fails_storage_unavailable(
    seaweedfs: SeaweedFS, stalling_store: TcpProxy, tmp_path: Path
) -> None:
    location = seaweedfs.location(f"tests/{secrets.token_hex(6)}/renders")
    environ = seaweedfs.environ()
    render_environ = {**environ, "AWS_ENDPOINT_URL": f"http://{stalling_store.address}"}
    attempts = ("--max-attempts", "2")
    stack = Stack(
        s3_stack_config(tmp_path, location, environ, render_environ, export_args=attempts)
    )
    await asyncio.to_thread(stack.start)
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            # Checked at the start through the proxy; from now on it turns connections away
            # (the start's kept-alive connection included).
            stalling_store.refuse = True
            stalling_store.cut()
            created = await http.post("/api/jobs", json=tiny_spec(1.0))
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            finished: list[dict[str, Any]] = []

            async def failed() -> bool:
                job: dict[str, Any] = (await http.get(f"/api/jobs/{job_id}")).json()
                finished.append(job)
                return job["status"] in ("completed", "failed", "cancelled")

            await wait_until(failed, "the job to end", 90)
            job = finished[-1]
            assert job["status"] == "failed", job
            assert job["error"]["code"] == "STORAGE_UNAVAILABLE", job
            # Each attempt rendered and could not store its file: the store may have answered
            # the next time; the job says why once none is left.
            assert job["attempt"] == 2, job
            assert "could not be stored" in job["error"]["message"], job
            assert job["error"]["message"].endswith("gave up after 2 attempts"), job
            assert "AWS_ENDPOINT_URL" in job["error"]["message"], job
            assert job["outputPath"] is None and job["outputSha256"] is None, job
        assert await stored_keys(seaweedfs, location) == []
        assert not list((tmp_path / "scratch").glob("*.mp4"))
    finally:
        await asyncio.to_thread(stack.stop)

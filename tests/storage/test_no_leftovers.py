"""No leftovers, end to end on SeaweedFS (invariant 12): once a job is terminal, none of its
failed, cancelled or superseded attempts leaves an object or an unfinished upload behind: the
release of a superseded attempt whose render service forgot it removes what it stored, and the
orphan sweep takes what nobody could remove, deciding from the records (a slow live upload is
left alone). Real processes (videojob_launcher), tiny renders; the render services reach the
store through a proxy the test stalls, so an upload stays in flight as long as the test wants."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import tiny_spec
from tests.storage.test_s3_output import s3_stack_config
from tests.support.polling import wait_until
from tests.support.seaweedfs import SeaweedFS
from tests.support.tcp_proxy import TcpProxy
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore
from videojob_launcher import Stack, StackConfig

pytestmark = pytest.mark.object_store

SWEEP_SECONDS = "0.3"


@pytest.fixture
async def private_proxy(private_seaweedfs: SeaweedFS) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy("127.0.0.1", private_seaweedfs.s3_port).start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def shared_proxy(seaweedfs: SeaweedFS) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy("127.0.0.1", seaweedfs.s3_port).start()
    try:
        yield proxy
    finally:
        await proxy.close()


def stack_config(
    workdir: Path, store: SeaweedFS, location: S3Location, proxy: TcpProxy, sweep: str
) -> StackConfig:
    """Render services reach the store through ``proxy``; the export service sweeps every
    ``sweep`` seconds (0: never)."""
    environ = store.environ()
    render_environ = {**environ, "AWS_ENDPOINT_URL": f"http://{proxy.address}"}
    config = s3_stack_config(workdir, location, environ, render_environ)
    export_args = (*config.export.args, "--orphan-sweep-interval", sweep)
    return replace(config, export=replace(config.export, args=export_args))


async def in_store(store: SeaweedFS, location: S3Location) -> tuple[set[str], set[str]]:
    """The keys of the objects and of the unfinished uploads under ``location``."""
    async with ObjectStore(store.settings()) as opened:
        keys = set(await opened.list_keys(location))
        uploads = {upload.key for upload in await opened.list_unfinished_uploads(location)}
    return keys, uploads


async def start_upload(store: SeaweedFS, location: S3Location, key: str) -> None:
    """An unfinished multipart upload of ``key`` with a part sent, made straight on the store:
    what a render's upload leaves there when its creation reached the store and nothing after
    it did (the render's own upload is held in the proxy meanwhile)."""
    async with ObjectStore(store.settings()) as opened:
        created = await opened.client.create_multipart_upload(Bucket=location.bucket, Key=key)
        await opened.client.upload_part(
            Bucket=location.bucket,
            Key=key,
            UploadId=created["UploadId"],
            PartNumber=1,
            Body=b"x" * 1024,
        )


async def put(store: SeaweedFS, location: S3Location, key: str) -> None:
    async with ObjectStore(store.settings()) as opened:
        await opened.put_small(location.bucket, key, b"left by a job nobody knows")


async def job_of(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    answer = await http.get(f"/api/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


async def uploading_job(http: httpx.AsyncClient) -> dict[str, Any]:
    """A new job, once its render is in the stage Uploading (held there by the stalled
    proxy)."""
    created = await http.post("/api/jobs", json=tiny_spec(1.0))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    seen: list[dict[str, Any]] = []

    async def uploading() -> bool:
        job = await job_of(http, job_id)
        assert job["status"] in ("queued", "running"), job
        seen.append(job)
        return bool(job["stage"] == "Uploading")

    await wait_until(uploading, "the job to be Uploading", 60)
    return seen[-1]


async def terminal(http: httpx.AsyncClient, job_id: str, within: float = 90) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def ended() -> bool:
        seen.append(await job_of(http, job_id))
        return seen[-1]["status"] in ("completed", "failed", "cancelled")

    await wait_until(ended, "the job to end", within)
    return seen[-1]


async def test_a_store_killed_mid_upload_and_restarted_leaves_no_orphan_and_a_truthful_job(
    private_seaweedfs: SeaweedFS, private_proxy: TcpProxy, tmp_path: Path
) -> None:
    store = private_seaweedfs
    location = store.location(f"tests/{secrets.token_hex(6)}/renders")
    stack = Stack(stack_config(tmp_path, store, location, private_proxy, SWEEP_SECONDS))
    await asyncio.to_thread(stack.start)
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            private_proxy.stall()
            job = await uploading_job(http)
            render_id = job["attempts"][-1]["renderId"]
            live = location.key_for(f"{render_id}.mp4")
            await start_upload(store, location, live)
            # A sweep pass that listed the store after the live upload began: it removed this
            # orphan (no job has its render id), and judged the upload beside it.
            orphan = location.key_for(f"{uuid.uuid4().hex}.mp4")
            await put(store, location, orphan)
            await wait_until(
                lambda: _lacks(store, location, orphan), "the sweep to remove the orphan", 30
            )
            assert (await in_store(store, location))[1] == {live}  # the slow upload stays

            await asyncio.to_thread(store.kill)
            private_proxy.resume()
            ended = await terminal(http, job["id"])
            # The job says what happened: its output could not be stored.
            assert ended["status"] == "failed", ended
            assert ended["error"]["code"] == "STORAGE_UNAVAILABLE", ended
            assert ended["outputPath"] is None, ended

            await asyncio.to_thread(store.restart)
            left: list[tuple[set[str], set[str]]] = []

            async def nothing_left() -> bool:
                left.append(await in_store(store, location))
                return left[-1] == (set(), set())

            try:
                await wait_until(nothing_left, "no object and no unfinished upload", 60)
            except AssertionError:
                raise AssertionError(f"left: {left[-1]}") from None
    finally:
        await asyncio.to_thread(stack.stop)


async def _lacks(store: SeaweedFS, location: S3Location, key: str) -> bool:
    return key not in (await in_store(store, location))[0]


async def test_a_render_service_killed_mid_upload_leaves_nothing_once_the_retry_completes(
    seaweedfs: SeaweedFS, shared_proxy: TcpProxy, tmp_path: Path
) -> None:
    """Without the sweep: the superseded attempt's release finds its render forgotten by the
    restarted render service, and removes what that render stored or was storing."""
    location = seaweedfs.location(f"tests/{secrets.token_hex(6)}/renders")
    stack = Stack(stack_config(tmp_path, seaweedfs, location, shared_proxy, "0"))
    await asyncio.to_thread(stack.start)
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            shared_proxy.stall()
            job = await uploading_job(http)
            first = job["attempts"][-1]["renderId"]
            await start_upload(seaweedfs, location, location.key_for(f"{first}.mp4"))

            await stack.render.akill()
            shared_proxy.resume()
            await stack.render.astart()
            ended = await terminal(http, job["id"])

            assert ended["status"] == "completed", ended
            assert ended["attempt"] == 2 and ended["attempts"][0]["renderId"] == first, ended
            final = ended["outputPath"].removeprefix(f"s3://{location.bucket}/")
            left: list[tuple[set[str], set[str]]] = []

            async def only_the_output() -> bool:
                left.append(await in_store(seaweedfs, location))
                return left[-1] == ({final}, set())

            try:
                await wait_until(only_the_output, "only the completed job's object", 60)
            except AssertionError:
                raise AssertionError(f"left: {left[-1]}, expected only {final}") from None
    finally:
        await asyncio.to_thread(stack.stop)


async def test_a_job_cancelled_between_its_upload_and_its_commit_leaves_no_object(
    seaweedfs: SeaweedFS, shared_proxy: TcpProxy, tmp_path: Path
) -> None:
    """Without the sweep: the render stored its object and reported it, the export service's
    check of it is held (its way to the store stalls), the job is cancelled meanwhile; its
    release removes the object once the store answers."""
    location = seaweedfs.location(f"tests/{secrets.token_hex(6)}/renders")
    config = stack_config(tmp_path, seaweedfs, location, shared_proxy, "0")
    # This time the render service reaches the store directly, the export service by the proxy.
    export_environ = {**config.export.env, "AWS_ENDPOINT_URL": f"http://{shared_proxy.address}"}
    config = replace(
        config,
        render=replace(config.render, env=seaweedfs.environ()),
        export=replace(config.export, env=export_environ),
    )
    stack = Stack(config)
    await asyncio.to_thread(stack.start)
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            shared_proxy.stall()
            created = await http.post("/api/jobs", json=tiny_spec(1.0))
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]

            async def stored_not_committed() -> bool:
                job = await job_of(http, job_id)
                assert job["status"] in ("queued", "running"), job
                return len((await in_store(seaweedfs, location))[0]) == 1

            await wait_until(stored_not_committed, "the render's object, the job running", 60)
            cancelled = await http.post(f"/api/jobs/{job_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert (await job_of(http, job_id))["status"] == "cancelled"
            shared_proxy.resume()
            left: list[tuple[set[str], set[str]]] = []

            async def nothing_left() -> bool:
                left.append(await in_store(seaweedfs, location))
                return left[-1] == (set(), set())

            try:
                await wait_until(nothing_left, "no object and no unfinished upload", 60)
            except AssertionError:
                raise AssertionError(f"left: {left[-1]}") from None
            assert (await job_of(http, job_id))["status"] == "cancelled"
    finally:
        await asyncio.to_thread(stack.stop)

"""The object store failing while jobs are made: hung when a job is created, out of reach of the
export service when it checks a finished render's object, killed in the middle of an upload and
started again, slow. Health says so, no create hangs, and a job retries or fails saying why;
it is never COMPLETED without an object the export service saw. Real processes (or real
servers in-process where a setting has no flag), a real SeaweedFS, tiny renders."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from export_service.config import ExportConfig
from export_service.render_health import render_health_name
from export_service.server import SERVICE_NAME as EXPORT_SERVICE_NAME
from export_service.server import STORE_HEALTH_NAME
from export_service.server import create_server as create_export_server
from export_service.store import open_store
from render_service.config import RenderConfig
from render_service.server import create_server as create_render_server
from tests.export.conftest import FAST_TRACKER
from tests.gateway.conftest import tiny_spec
from tests.storage.test_media_root_in_store import start_store_stack, transcode
from tests.storage.test_s3_output import s3_stack_config, stored_keys
from tests.support.media import make_clip
from tests.support.polling import wait_until
from tests.support.seaweedfs import SeaweedFS
from tests.support.specs import pattern_spec
from tests.support.tcp_proxy import TcpProxy
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import spec_pb2
from videojob.storage.object_store import ObjectStore
from videojob.storage.settings import MIN_PART_BYTES
from videojob_launcher import Stack

pytestmark = pytest.mark.object_store

TERMINAL = ("completed", "failed", "cancelled")


async def health_of(address: str, service: str = "") -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


async def job_of(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    answer = await http.get(f"/api/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


async def ended(http: httpx.AsyncClient, job_id: str, within: float = 90) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def terminal() -> bool:
        seen.append(await job_of(http, job_id))
        return seen[-1]["status"] in TERMINAL

    await wait_until(terminal, f"job {job_id} to end", within)
    return seen[-1]


async def sha256_of_object(store: SeaweedFS, output_path: str, tmp_path: Path) -> str:
    bucket, _, key = output_path.removeprefix("s3://").partition("/")
    copy = tmp_path / f"copy-{secrets.token_hex(4)}"
    async with ObjectStore(store.settings()) as opened:
        await opened.download_file(bucket, key, copy)
    return await asyncio.to_thread(lambda: hashlib.sha256(copy.read_bytes()).hexdigest())


@contextlib.asynccontextmanager
async def proxy_to(store: SeaweedFS) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy("127.0.0.1", store.s3_port).start()
    try:
        yield proxy
    finally:
        await proxy.close()


# The store unreachable at create.


async def test_a_hung_store_makes_a_create_answer_unavailable_and_health_say_so(
    private_seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    """SIGSTOP: the store's sockets still accept, nothing answers. A create (HTTP and gRPC)
    answers at once that the store does not, and every health view follows it, both ways."""
    running = await asyncio.to_thread(start_store_stack, private_seaweedfs, tmp_path / "stack")
    stack = running.stack
    export_render_health = render_health_name(EXPORT_SERVICE_NAME)
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = "uploads/clip.mp4"
    try:
        async with (
            httpx.AsyncClient(base_url=stack.url, timeout=30) as http,
            grpc.aio.insecure_channel(stack.export_addr) as channel,
        ):
            stub = export_pb2_grpc.ExportServiceStub(channel)
            private_seaweedfs.pause()
            try:
                created = await http.post("/api/jobs", json=transcode("uploads/clip.mp4"))
                assert created.status_code == 503, created.text
                assert "object store" in created.json()["message"], created.text
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.CreateExport(
                        export_pb2.CreateExportRequest(request_id="hung", spec=spec), timeout=30
                    )
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
                assert "object store" in str(refused.value.details()), refused.value

                ready = await http.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert "did not answer" in ready.json()["store"], ready.text

                async def unhealthy() -> bool:
                    render = await health_of(stack.render_addr)
                    export = await health_of(stack.export_addr, export_render_health)
                    return render == export == "NOT_SERVING"

                await wait_until(unhealthy, "the render service's health to follow the store")
                assert (await http.get("/api/jobs")).json()["jobs"] == []
            finally:
                private_seaweedfs.resume()

            async def healthy() -> bool:
                render = await health_of(stack.render_addr)
                export = await health_of(stack.export_addr, export_render_health)
                ready = await http.get("/readyz")
                return render == export == "SERVING" and ready.status_code == 200

            await wait_until(healthy, "every health view to see the store again")
    finally:
        await asyncio.to_thread(stack.stop)


async def test_a_hung_store_holds_no_view_of_a_job_and_the_media_listing_says_so(
    private_seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    """A gateway that has not read an upload's record yet (here: restarted) serves the jobs
    that use it while the store hangs, without the original name (asked for again later), and
    answers the media listing 503 at once instead of after every retry of a store call."""
    running = await asyncio.to_thread(start_store_stack, private_seaweedfs, tmp_path / "stack")
    stack = running.stack
    clip = make_clip(tmp_path / "clip.mp4")
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=15) as http:
            uploaded = await http.post(
                "/api/media", params={"filename": "Holiday.mp4"}, content=clip.read_bytes()
            )
            assert uploaded.status_code == 201, uploaded.text
            path = uploaded.json()["path"]
            created = await http.post("/api/jobs", json=transcode(path))
            assert created.status_code == 201, created.text
            job_id = created.json()["id"]
            assert (await ended(http, job_id))["status"] == "completed"
        await stack.gateway.arestart()
        async with httpx.AsyncClient(base_url=stack.url, timeout=15) as http:
            private_seaweedfs.pause()
            try:
                job = await job_of(http, job_id)
                assert (job["status"], job["inputNames"]) == ("completed", {}), job
                listing = await http.get("/api/media")
                assert listing.status_code == 503, listing.text
                assert "did not answer" in listing.json()["message"], listing.text
            finally:
                private_seaweedfs.resume()
            job = await job_of(http, job_id)
            assert job["inputNames"] == {path: "Holiday.mp4"}, job
    finally:
        await asyncio.to_thread(stack.stop)


# The store out of the export service's reach when it checks the object.


@contextlib.asynccontextmanager
async def export_behind(
    seaweedfs: SeaweedFS, proxy: TcpProxy, workdir: Path, output_wait: float
) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    """A stack on ``seaweedfs`` whose export service alone reaches the store through
    ``proxy``: it waits ``output_wait`` seconds for a finished render's object."""
    location = seaweedfs.location(f"tests/{secrets.token_hex(6)}/renders")
    environ = seaweedfs.environ()
    export_environ = {**environ, "AWS_ENDPOINT_URL": f"http://{proxy.address}"}
    config = s3_stack_config(
        workdir,
        location,
        environ,
        environ,
        export_environ=export_environ,
        export_args=("--output-wait", str(output_wait)),
    )
    stack = Stack(config)
    await asyncio.to_thread(stack.start)
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            yield stack, http
    finally:
        await asyncio.to_thread(stack.stop)


async def test_an_object_the_export_service_cannot_reach_fails_the_job_storage_unavailable(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    async with (
        proxy_to(seaweedfs) as proxy,
        export_behind(seaweedfs, proxy, tmp_path, output_wait=3.0) as (stack, http),
    ):
        assert await health_of(stack.export_addr, STORE_HEALTH_NAME) == "SERVING"
        proxy.refuse = True
        proxy.cut()  # the start's kept-alive connection too
        created = await http.post("/api/jobs", json=tiny_spec(1.0))
        assert created.status_code == 201, created.text

        job = await ended(http, created.json()["id"])

        async def store_unhealthy() -> bool:
            return await health_of(stack.export_addr, STORE_HEALTH_NAME) == "NOT_SERVING"

        await wait_until(store_unhealthy, "the export service's health to say the store is away")
        # Only its own name: the export service still answers for its jobs.
        assert await health_of(stack.export_addr) == "SERVING"

        assert job["status"] == "failed", job
        assert job["error"]["code"] == "STORAGE_UNAVAILABLE", job
        message = job["error"]["message"]
        assert message.startswith("the render reported completion but output s3://"), job
        assert "cannot be reached" in message and "AWS_ENDPOINT_URL" in message, job
        assert job["outputPath"] is None and job["outputSha256"] is None, job
        assert proxy.refused > 0


async def test_an_object_the_store_shows_again_within_the_wait_completes_the_job(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    async with (
        proxy_to(seaweedfs) as proxy,
        export_behind(seaweedfs, proxy, tmp_path, output_wait=60.0) as (stack, http),
    ):
        proxy.refuse = True
        proxy.cut()
        created = await http.post("/api/jobs", json=tiny_spec(1.0))
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        # The export service asked for the object and was turned away: the render is done, and
        # the job says it is being verified (a render this short may have had none of its
        # progress written: it would still say queued).
        await wait_until(lambda: proxy.refused > 0, "the export service to look for the object")

        async def verifying() -> bool:
            job = await job_of(http, job_id)
            return bool(job["status"] == "running" and job["stage"] == "Verifying")

        await wait_until(verifying, "the job to show that its output is being verified")
        proxy.refuse = False
        job = await ended(http, job_id)

        assert job["status"] == "completed", job
        assert job["outputSha256"] == await sha256_of_object(seaweedfs, job["outputPath"], tmp_path)

        async def store_healthy() -> bool:
            return await health_of(stack.export_addr, STORE_HEALTH_NAME) == "SERVING"

        await wait_until(store_healthy, "the export service's health to see the store")


# The store killed mid-upload, and started again.


async def test_a_store_killed_mid_upload_and_started_again_costs_an_attempt_not_the_job(
    private_seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    store = private_seaweedfs
    location = store.location(f"tests/{secrets.token_hex(6)}/renders")
    environ = store.environ()
    async with proxy_to(store) as proxy:
        render_environ = {**environ, "AWS_ENDPOINT_URL": f"http://{proxy.address}"}
        attempts = ("--max-attempts", "8")
        config = s3_stack_config(tmp_path, location, environ, render_environ, export_args=attempts)
        stack = Stack(config)
        await asyncio.to_thread(stack.start)
        try:
            async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
                proxy.stall()
                created = await http.post("/api/jobs", json=tiny_spec(1.0))
                assert created.status_code == 201, created.text
                job_id = created.json()["id"]

                async def uploading() -> bool:
                    return bool((await job_of(http, job_id))["stage"] == "Uploading")

                await wait_until(uploading, "the job to be Uploading", 60)
                store.kill()
                proxy.resume()

                async def retried_and_unhealthy() -> bool:
                    job = await job_of(http, job_id)
                    assert job["status"] == "running", job
                    return job["attempt"] >= 2 and await health_of(stack.render_addr) == (
                        "NOT_SERVING"
                    )

                await wait_until(retried_and_unhealthy, "a second attempt, and health to say so")
                await asyncio.to_thread(store.restart)
                job = await ended(http, job_id)

                assert job["status"] == "completed", job
                assert job["attempt"] >= 2, job
                assert job["outputPath"].endswith(f"{job_id}-a{job['attempt']}.mp4"), job
                sha256 = await sha256_of_object(store, job["outputPath"], tmp_path)
                assert job["outputSha256"] == sha256
                # Only the object of the attempt that completed is there.
                assert await stored_keys(store, location) == [
                    job["outputPath"].removeprefix(f"s3://{location.bucket}/")
                ]

                async def healthy() -> bool:
                    return await health_of(stack.render_addr) == "SERVING"

                await wait_until(healthy, "the render service's health to see the store again")
        finally:
            await asyncio.to_thread(stack.stop)


# A slow store.


async def test_a_slow_store_shows_the_job_s_upload_rising_before_completed(
    seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    """An output of several parts (S3's smallest) through a slow link: the job, as the export
    service serves it, shows Uploading with stageProgress rising while progress holds at 99,
    and completed only after."""
    location = seaweedfs.location(f"tests/{secrets.token_hex(6)}/renders")
    async with proxy_to(seaweedfs) as slow_link:
        slow_link.bytes_per_second = 3 * 1024 * 1024
        render_settings = seaweedfs.settings(
            endpoint=f"http://{slow_link.address}",
            part_bytes=MIN_PART_BYTES,
            upload_concurrency=1,
        )
        render_config = RenderConfig(
            listen="127.0.0.1:0",
            output_dir=tmp_path / "unused-out",
            media_root=tmp_path / "media",
            scratch_dir=tmp_path / "scratch",
            output_store=location,
            store_settings=render_settings,
            max_concurrent=1,
        )
        render = await create_render_server(render_config)
        try:
            export_config = ExportConfig(
                listen="127.0.0.1:0",
                render_addr=f"127.0.0.1:{render.port}",
                database=f"sqlite:///{tmp_path / 'export.db'}",
                tracker=FAST_TRACKER,
                output_store=location,
                store_settings=seaweedfs.settings(),
            )
            export = await create_export_server(
                export_config, await open_store(export_config.database)
            )
            try:
                updates = await render_and_watch(f"127.0.0.1:{export.port}", big_spec())
            finally:
                await export.stop(0)
        finally:
            await render.stop(0)

    final = updates[-1]
    assert final.status == export_pb2.COMPLETED, final
    uploading = [job for job in updates if job.stage == "Uploading"]
    shares = [job.stage_progress for job in uploading]
    # Several parts, each acknowledged on its own: at least two steps short of the whole.
    assert len({share for share in shares if 0 < share < 100}) >= 2, shares
    assert shares == sorted(shares), shares
    assert all(95 <= job.progress < 100 for job in uploading), uploading
    assert final.output_size_bytes > 2 * MIN_PART_BYTES, final
    assert final.output_sha256 == await sha256_of_object(seaweedfs, final.output_path, tmp_path)


def big_spec() -> spec_pb2.RenderSpec:
    """About 12 MB in a second of CPU: lossless 1080p of the test pattern."""
    spec = pattern_spec(3.0, width=1920, height=1080, fps=30.0)
    spec.output.crf = 0
    return spec


async def render_and_watch(
    export_address: str, spec: spec_pb2.RenderSpec
) -> list[export_pb2.VideoJob]:
    async with create_channel(export_address) as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        job = await stub.CreateExport(
            export_pb2.CreateExportRequest(request_id=secrets.token_hex(4), spec=spec), timeout=30
        )
        request = export_pb2.WatchExportRequest(id=job.id, after_version=0)
        return [update async for update in stub.WatchExport(request, timeout=120)]


async def test_a_gateway_serving_stored_outputs_is_not_ready_while_their_store_hangs(
    private_seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    """A gateway whose downloads come from the store (no media root there) reports that store
    in /readyz: 503 naming it while it hangs, ready again once it answers."""
    location = private_seaweedfs.location(f"renders-{secrets.token_hex(4)}")
    environ = private_seaweedfs.environ()
    config = s3_stack_config(tmp_path / "stack", location, environ, environ)
    stack = await asyncio.to_thread(Stack(config).start)
    try:
        async with httpx.AsyncClient(base_url=stack.url, timeout=30) as http:
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()["store"]) == (200, "ok"), ready.text
            private_seaweedfs.pause()
            try:
                ready = await http.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert "did not answer" in ready.json()["store"], ready.text
                assert ready.json()["message"] == ready.json()["store"], ready.text
            finally:
                private_seaweedfs.resume()

            async def ready_again() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await wait_until(ready_again, "the gateway to see the outputs' store again")
    finally:
        await asyncio.to_thread(stack.stop)

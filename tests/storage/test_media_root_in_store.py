"""The media root in the object store (``--media-root s3://bucket/prefix`` on the gateway and the
render service), against a real SeaweedFS and the real processes: an upload is stored with its
record and listed, a transcode of it completes from a copy fetched into the render service's
scratch directory (removed after), a refused upload leaves nothing anywhere, a missing object is
refused naming the field, and the store going away makes a create answer 503 at once and the
gateway's readiness say so."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.gateway.conftest import GATEWAY_TEST_ARGS, wait_terminal
from tests.gateway.test_input_answers import refusal_of_input, write_image
from tests.support.media import make_clip
from tests.support.polling import poll_until
from tests.support.seaweedfs import SeaweedFS
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.storage.location import S3Location
from videojob.storage.object_store import ObjectStore
from videojob_launcher import Role, Stack, StackConfig

pytestmark = pytest.mark.object_store

TRANSCODE_FIELD = "source.transcode.inputPath"


@dataclass
class StoreStack:
    stack: Stack
    store: SeaweedFS
    location: S3Location
    scratch_dir: Path  # the render service's
    gateway_tmp: Path  # the gateway's TMPDIR: where it spools uploads

    def keys(self) -> list[str]:
        return asyncio.run(_keys(self.store, self.location))

    def unfinished_uploads(self) -> list[str]:
        return asyncio.run(_unfinished(self.store, self.location))

    def spooled_files(self) -> list[Path]:
        return [path for path in self.gateway_tmp.rglob("*") if path.is_file()]

    def fetched_inputs(self) -> list[Path]:
        return [path for path in (self.scratch_dir / "inputs").rglob("*") if path.is_file()]


async def _keys(store: SeaweedFS, location: S3Location) -> list[str]:
    async with ObjectStore(store.settings()) as opened:
        return await opened.list_keys(location)


async def _unfinished(store: SeaweedFS, location: S3Location) -> list[str]:
    async with ObjectStore(store.settings()) as opened:
        return [upload.key for upload in await opened.list_unfinished_uploads(location)]


def start_store_stack(store: SeaweedFS, workdir: Path) -> StoreStack:
    location = store.location(f"media-{secrets.token_hex(4)}")
    scratch_dir, gateway_tmp = workdir / "scratch", workdir / "gateway-tmp"
    gateway_tmp.mkdir(parents=True)
    media = ("--media-root", str(location))
    config = StackConfig(
        workdir,
        render=Role(args=(*media, "--scratch-dir", str(scratch_dir)), env=store.environ()),
        gateway=Role(
            args=(*GATEWAY_TEST_ARGS, *media),
            env={**store.environ(), "TMPDIR": str(gateway_tmp)},
        ),
    )
    stack = Stack(config).start()
    return StoreStack(stack, store, location, scratch_dir, gateway_tmp)


@pytest.fixture(scope="module")
def store_stack(
    seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StoreStack]:
    running = start_store_stack(seaweedfs, tmp_path_factory.mktemp("store-stack"))
    yield running
    running.stack.stop()


@pytest.fixture
def client(store_stack: StoreStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=store_stack.stack.url, timeout=30) as http:
        yield http


def render_health(address: str) -> str:
    with grpc.insecure_channel(address) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


def transcode(path: str) -> dict[str, Any]:
    return {"source": {"transcode": {"inputPath": path}}, "output": {"preset": "ultrafast"}}


def test_an_upload_is_stored_with_its_name_listed_and_transcoded(
    client: httpx.Client, store_stack: StoreStack, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "clip.mp4")

    uploaded = client.post(
        "/api/media", params={"filename": "Holiday clip.MOV"}, content=clip.read_bytes()
    )

    assert uploaded.status_code == 201, uploaded.text
    upload = uploaded.json()
    path = upload["path"]
    assert path.startswith("uploads/") and path.endswith(".mov"), upload
    assert (upload["originalName"], upload["transcodable"]) == ("Holiday clip.MOV", True)
    prefix = store_stack.location.key_prefix
    name = path.removeprefix("uploads/")
    assert sorted(store_stack.keys()) == [f"{prefix}uploads/.{name}.json", f"{prefix}{path}"]
    assert store_stack.spooled_files() == []

    listed = client.get("/api/media").json()["files"]
    assert [(item["path"], item["originalName"], item["transcodable"]) for item in listed] == [
        (path, "Holiday clip.MOV", True)
    ]
    assert listed[0]["sizeBytes"] == clip.stat().st_size

    created = client.post("/api/jobs", json=transcode(path))
    assert created.status_code == 201, created.text
    assert created.json()["inputNames"] == {path: "Holiday clip.MOV"}
    job = wait_terminal(client, created.json()["id"])
    assert job["status"] == "completed", job
    assert Path(job["outputPath"]).stat().st_size > 0
    assert store_stack.fetched_inputs() == []


def test_a_refused_upload_leaves_nothing_anywhere(
    client: httpx.Client, store_stack: StoreStack
) -> None:
    before = store_stack.keys()

    not_media = client.post("/api/media", params={"filename": "a.mp4"}, content=b"text\n" * 500)

    assert not_media.status_code == 422, not_media.text
    assert not_media.json()["field"] == "body"
    assert store_stack.keys() == before
    assert store_stack.unfinished_uploads() == []
    assert store_stack.spooled_files() == []


def test_a_missing_object_is_refused_naming_the_field(
    client: httpx.Client, store_stack: StoreStack
) -> None:
    response = client.post("/api/jobs", json=transcode("uploads/not-there.mp4"))

    message = refusal_of_input(client, response, TRANSCODE_FIELD, store_stack.stack)

    assert "file not found: 'uploads/not-there.mp4'" in message
    assert store_stack.fetched_inputs() == []


def test_a_path_that_is_no_plain_key_is_refused_naming_the_field(
    client: httpx.Client, store_stack: StoreStack
) -> None:
    for path in ("./uploads/clip.mp4", "uploads//clip.mp4", "../clip.mp4"):
        response = client.post("/api/jobs", json=transcode(path))

        assert response.status_code == 422, response.text
        assert response.json()["field"] == TRANSCODE_FIELD, response.text


def test_a_slideshow_fetches_its_slides_soundtrack_and_subtitles(
    client: httpx.Client, store_stack: StoreStack, tmp_path: Path
) -> None:
    folder = f"show-{secrets.token_hex(3)}"
    write_image(tmp_path / "slide.png")
    write_tone(tmp_path / "tone.m4a")
    subtitles = b"1\n00:00:00,000 --> 00:00:01,000\nHello\n"
    asyncio.run(
        _put(
            store_stack,
            {
                f"{folder}/slide.png": (tmp_path / "slide.png").read_bytes(),
                f"{folder}/deeper/slide.png": (tmp_path / "slide.png").read_bytes(),
                f"{folder}/tone.m4a": (tmp_path / "tone.m4a").read_bytes(),
                f"{folder}/hello.srt": subtitles,
            },
        )
    )
    spec = {
        "source": {
            "slideshow": {
                "slides": [
                    {"imagePath": f"{folder}/slide.png", "durationSeconds": 0.5},
                    {"imagePath": f"{folder}/deeper/slide.png", "durationSeconds": 0.5},
                ],
                "audioPath": f"{folder}/tone.m4a",
                "subtitlesPath": f"{folder}/hello.srt",
            }
        },
        "output": {"preset": "ultrafast"},
    }

    created = client.post("/api/jobs", json=spec)

    assert created.status_code == 201, created.text
    job = wait_terminal(client, created.json()["id"])
    assert job["status"] == "completed", store_stack.stack.renders[0].log()
    assert store_stack.fetched_inputs() == []


def write_tone(path: Path) -> None:
    subprocess.run(
        [
            *(tool_ffmpeg(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error"),
            *("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(path)),
        ],
        check=True,
        timeout=60,
    )


async def _put(running: StoreStack, objects: dict[str, bytes]) -> None:
    async with ObjectStore(running.store.settings()) as opened:
        for relative, data in objects.items():
            await opened.put_small(
                running.location.bucket, running.location.key_for(relative), data
            )


def test_the_store_going_away_makes_a_create_answer_503_and_readiness_say_so(
    private_seaweedfs: SeaweedFS, tmp_path: Path
) -> None:
    running = start_store_stack(private_seaweedfs, tmp_path / "stack")
    try:
        with httpx.Client(base_url=running.stack.url, timeout=30) as http:
            assert http.get("/readyz").json()["store"] == "ok"
            private_seaweedfs.kill()

            created = http.post("/api/jobs", json=transcode("uploads/clip.mp4"))

            assert created.status_code == 503, created.text
            assert "object store" in created.json()["message"], created.text
            ready = http.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "object store" in ready.json()["store"], ready.text
            poll_until(
                lambda: render_health(running.stack.render_addr) == "NOT_SERVING",
                "the render service's health to follow the store",
            )
            # Still refused, not queued, once the render service is known to be unusable.
            again = http.post("/api/jobs", json=transcode("uploads/clip.mp4"))
            assert again.status_code == 503, again.text
            assert http.get("/api/jobs").json()["jobs"] == []
    finally:
        running.stack.stop()


@pytest.mark.parametrize("module", ["render_service", "gateway", "export_service"])
def test_a_service_with_a_wrong_secret_refuses_to_start_naming_the_variable(
    seaweedfs: SeaweedFS, tmp_path: Path, module: str
) -> None:
    environ = {**seaweedfs.environ(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}

    ended = run_module(module, environ, tmp_path, "--media-root", str(seaweedfs.location("media")))

    assert ended.returncode == 2, ended
    (line,) = ended.stderr.strip().splitlines()
    assert "AWS_SECRET_ACCESS_KEY" in line, line


@pytest.mark.parametrize("module", ["render_service", "gateway", "export_service"])
def test_a_service_with_a_missing_bucket_refuses_to_start_naming_the_flag(
    seaweedfs: SeaweedFS, tmp_path: Path, module: str
) -> None:
    ended = run_module(
        module, seaweedfs.environ(), tmp_path, "--media-root", "s3://no-such-bucket/media"
    )

    assert ended.returncode == 2, ended
    (line,) = ended.stderr.strip().splitlines()
    assert "--media-root" in line and "no-such-bucket" in line, line


def run_module(
    module: str, environ: dict[str, str], workdir: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m module`` in ``workdir`` until it ends (these refuse to start)."""
    listen = ("--listen", "127.0.0.1:0")
    return subprocess.run(
        [sys.executable, "-m", module, *listen, *args],
        cwd=workdir,
        env={**_base_environ(), **environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _base_environ() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}

"""Hostile paths end to end: through the HTTP API (gateway → export → render) and straight at
the render service. Inputs are confined to the media root, downloads to a job's own output.
Paths refused by their text alone never reach a render service: those requests go to the
gateway and an export service in-process (tests.gateway.inprocess).

(Render-level cases already covered elsewhere: tests/render/test_validation.py — `..`,
absolute, a symlinked file out, missing files; tests/render/test_sources.py — subtitles
escaping.)
"""

from __future__ import annotations

import http.client
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.gateway.conftest import wait_terminal
from tests.gateway.inprocess import export_address as export_address
from tests.gateway.inprocess import gateway_over_export as gateway_over_export
from tests.security.conftest import SecurityStack, make_clip
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2

UNICODE_NAME = "vidéo 日本.mp4"
# Every character that means something to FFmpeg's filter-graph parsers.
SUBTITLES_NAME = "subs: it's, [a] \\ b.srt"
SECRET = b"SECRET-OUTSIDE-THE-MEDIA-ROOT"


@pytest.fixture(scope="module")
def media(stack: SecurityStack) -> Path:
    """The media root with a unicode-named clip, an image, subtitles with filter-graph
    characters, and symlinks pointing out of it (to a file and to a directory)."""
    root = stack.media_root
    make_clip(root / UNICODE_NAME)
    outside = stack.workdir / "outside"
    outside.mkdir()
    make_clip(outside / "clip.mp4")
    (outside / "secret.srt").write_bytes(b"1\n00:00:00,000 --> 00:00:01,000\n" + SECRET + b"\n")
    os.symlink(outside / "clip.mp4", root / "escape.mp4")
    os.symlink(outside, root / "outdir")
    (root / SUBTITLES_NAME).write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    subprocess.run(
        [tool_ffmpeg(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error",
         "-f", "lavfi", "-i", "color=c=red:s=64x48", "-frames:v", "1", str(root / "one.png")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return root


@pytest.fixture
def client(stack: SecurityStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        yield http


def transcode(path: str) -> dict[str, Any]:
    return {"source": {"transcode": {"inputPath": path}}, "output": {"preset": "ultrafast"}}


def slideshow(image: str = "one.png", **extra: str) -> dict[str, Any]:
    show: dict[str, Any] = {"slides": [{"imagePath": image, "durationSeconds": 1}], **extra}
    return {
        "source": {"slideshow": show},
        "output": {"preset": "ultrafast", "width": 160, "height": 120, "fps": 10},
    }


HOSTILE = [
    ("dotdot", "../outside/clip.mp4", "'..'"),
    ("dotdot inside", "a/../../outside/clip.mp4", "'..'"),
    ("absolute", "/etc/passwd", "relative"),
    ("nul byte", "clip\x00.mp4", "NUL"),
    ("control character", "line\nbreak.mp4", "control characters"),
    ("5000 characters", "x" * 5000, "at most 1024 characters"),
    ("long component", "d/" + "y" * 300 + ".mp4", "longer than 255 bytes"),
]
SPEC_FIELDS = [
    (transcode, "source.transcode.inputPath"),
    (lambda path: slideshow(image=path), "source.slideshow.slides[0].imagePath"),
    (lambda path: slideshow(audioPath=path), "source.slideshow.audioPath"),
    (lambda path: slideshow(subtitlesPath=path), "source.slideshow.subtitlesPath"),
]


@pytest.mark.parametrize(("path", "problem"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
async def test_hostile_input_paths_are_422_naming_the_field(
    gateway_over_export: httpx.AsyncClient, path: str, problem: str
) -> None:
    for build, field in SPEC_FIELDS:
        response = await gateway_over_export.post("/api/jobs", json=build(path))
        assert response.status_code == 422, (field, response.text)
        body = response.json()
        assert body["field"] == field, body
        assert problem in body["message"], body


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (transcode("escape.mp4"), "source.transcode.inputPath"),
        (transcode("outdir/clip.mp4"), "source.transcode.inputPath"),
        (slideshow(subtitlesPath="outdir/secret.srt"), "source.slideshow.subtitlesPath"),
    ],
    ids=["symlinked file", "symlinked directory", "subtitles via symlinked directory"],
)
def test_symlinks_out_of_the_media_root_are_refused_at_create_unread(
    client: httpx.Client, media: Path, stack: SecurityStack, spec: dict[str, Any], field: str
) -> None:
    # The export service cannot see the media root: the render service's input check resolves
    # the symlink and refuses the path before anything opens the file.
    before = {job["id"] for job in client.get("/api/jobs", params={"limit": 100}).json()["jobs"]}
    refused = client.post("/api/jobs", json=spec)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["field"] == field, body
    assert body["message"] == f"{field}: resolves outside the media root", body
    assert SECRET.decode() not in refused.text
    assert str(stack.workdir / "outside") not in refused.text
    after = {job["id"] for job in client.get("/api/jobs", params={"limit": 100}).json()["jobs"]}
    assert after == before
    for process in stack.processes:
        assert not [line for line in process.output if SECRET.decode() in line], process.name


def test_unicode_names_and_filter_graph_characters_render(
    client: httpx.Client, media: Path
) -> None:
    for spec in (transcode(UNICODE_NAME), slideshow(subtitlesPath=SUBTITLES_NAME)):
        created = client.post("/api/jobs", json=spec)
        assert created.status_code == 201, created.text
        job = wait_terminal(client, created.json()["id"])
        assert job["status"] == "completed", job
        download = client.get(f"/api/jobs/{job['id']}/download")
        assert download.status_code == 200
        assert download.content[4:8] == b"ftyp"


def raw_get(stack: SecurityStack, target: str) -> tuple[int, bytes]:
    """GET with the request target sent exactly as written (no client-side normalization)."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.gateway.port, timeout=30)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_downloads_and_static_files_cannot_name_another_file(
    client: httpx.Client, stack: SecurityStack, media: Path
) -> None:
    created = client.post("/api/jobs", json=slideshow())
    assert created.status_code == 201, created.text
    own = wait_terminal(client, created.json()["id"])
    assert own["status"] == "completed", own
    job_id = own["id"]
    targets = [
        "/api/jobs/..%2F..%2Fetc%2Fpasswd/download",
        "/api/jobs/..%252F..%252Fetc%252Fpasswd/download",
        "/api/jobs/%2Fetc%2Fpasswd/download",
        "/api/jobs/../../etc/passwd/download",
        "/api/jobs/%2e%2e/download",
        f"/api/jobs/{job_id}%00/download",
        f"/api/jobs/{job_id}.mp4/download",
        f"/api/jobs/{job_id}%2F..%2F..%2Foutside%2Fsecret.srt/download",
        "/api/jobs/" + "a" * 5000 + "/download",
        "/static/../../../../etc/passwd",
        "/static/..%2F..%2Fgateway%2Fapp.py",
        "/static/%2e%2e/%2e%2e/gateway/app.py",
    ]
    for target in targets:
        status, body = raw_get(stack, target)
        assert status in (400, 404, 422), (target, status, body[:200])
        assert b"root:" not in body and SECRET not in body and b"import" not in body, target
    status, body = raw_get(stack, f"/api/jobs/{job_id}/download")
    assert status == 200 and body[4:8] == b"ftyp"


def test_render_service_refuses_nul_long_and_directory_symlink_paths(
    stack: SecurityStack, media: Path
) -> None:
    cases = {
        "clip\x00.mp4": "NUL",
        "x" * 5000: "at most 1024 characters",
        "outdir/clip.mp4": "resolves outside the media root",
        "outdir": "resolves outside the media root",
        ".": "is not a regular file",
    }
    with grpc.insecure_channel(stack.render.address) as channel:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        for index, (path, problem) in enumerate(cases.items()):
            spec = spec_pb2.RenderSpec()
            spec.source.transcode.input_path = path
            request = render_pb2.RenderRequest(render_id=f"hostile-{index}", spec=spec)
            with pytest.raises(grpc.RpcError) as caught:
                next(iter(stub.Render(request, timeout=30)))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = caught.value.details() or ""
            assert details.startswith("spec.source.transcode.input_path: "), details
            assert problem in details, details

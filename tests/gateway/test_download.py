"""GET /api/jobs/{id}/download: the job's own file, with Range, and the refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.gateway.conftest import LONG_SPEC, Stack, create_job, wait_for, wait_terminal
from tests.support.media import make_clip


def assert_json_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["message"], body
    return body


def test_download_whole_file(client: httpx.Client, completed_job: dict[str, Any]) -> None:
    path = Path(completed_job["outputPath"])
    content = path.read_bytes()
    response = client.get(f"/api/jobs/{completed_job['id']}/download")
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert int(response.headers["content-length"]) == len(content)
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment")
    assert f'filename="{completed_job["id"]}.mp4"' in disposition
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == content
    assert content[4:8] == b"ftyp"


def test_download_with_range(client: httpx.Client, completed_job: dict[str, Any]) -> None:
    content = Path(completed_job["outputPath"]).read_bytes()
    url = f"/api/jobs/{completed_job['id']}/download"
    head = client.get(url, headers={"Range": "bytes=0-99"})
    assert head.status_code == 206
    assert head.headers["content-range"] == f"bytes 0-99/{len(content)}"
    assert head.content == content[:100]
    tail = client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.content == content[-10:]
    middle = client.get(url, headers={"Range": "bytes=100-"})
    assert middle.content == content[100:]
    outside = client.get(url, headers={"Range": f"bytes={len(content) + 10}-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{len(content)}"


def test_range_errors_are_the_api_json_errors(
    client: httpx.Client, completed_job: dict[str, Any]
) -> None:
    size = Path(completed_job["outputPath"]).stat().st_size
    url = f"/api/jobs/{completed_job['id']}/download"
    for unreadable in ("bytes=abc", "bytes=", "bytes=5-3", "bytes"):
        response = client.get(url, headers={"Range": unreadable})
        body = assert_json_error(response, 400, "invalid_argument")
        assert body["field"] == "Range", (unreadable, body)
    for outside in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        response = client.get(url, headers={"Range": outside})
        body = assert_json_error(response, 416, "range_not_satisfiable")
        assert response.headers["content-range"] == f"bytes */{size}", outside
        assert str(size) in body["message"], body
    # A range unit the server does not know is ignored (RFC 9110): the whole file.
    whole = client.get(url, headers={"Range": "items=0-5"})
    assert whole.status_code == 200, whole.text
    assert int(whole.headers["content-length"]) == size


def test_download_is_409_until_completed_then_for_cancelled(client: httpx.Client) -> None:
    job = create_job(client, LONG_SPEC)
    wait_for(client, job["id"], {"running"})
    running = client.get(f"/api/jobs/{job['id']}/download")
    assert running.status_code == 409
    assert "running" in running.json()["message"]
    assert "once it has completed" in running.json()["message"]
    client.post(f"/api/jobs/{job['id']}/cancel")
    assert wait_terminal(client, job["id"])["status"] == "cancelled"
    cancelled = client.get(f"/api/jobs/{job['id']}/download")
    body = assert_json_error(cancelled, 409, "failed_precondition")
    assert "cancelled" in body["message"], body
    assert "never" in body["message"] and "once it has completed" not in body["message"], body


def test_download_of_a_failed_job_says_it_has_no_file(client: httpx.Client, stack: Stack) -> None:
    """An MP4 cut after its header passes the input check and fails in ffmpeg."""
    clip = make_clip(stack.media_root / "downloads" / "whole.mp4", seconds=2.0)
    (clip.parent / "cut.mp4").write_bytes(clip.read_bytes()[:3000])
    spec = {"source": {"transcode": {"inputPath": "downloads/cut.mp4"}}}
    failed = wait_terminal(client, create_job(client, spec)["id"])
    assert failed["status"] == "failed", failed
    body = assert_json_error(
        client.get(f"/api/jobs/{failed['id']}/download"), 409, "failed_precondition"
    )
    assert "failed" in body["message"], body
    assert "never" in body["message"] and "once it has completed" not in body["message"], body


def test_download_is_410_when_the_file_vanished(client: httpx.Client) -> None:
    job = create_job(client)
    finished = wait_terminal(client, job["id"])
    assert finished["status"] == "completed"
    Path(finished["outputPath"]).unlink()
    response = client.get(f"/api/jobs/{job['id']}/download")
    assert response.status_code == 410
    assert response.json()["message"]

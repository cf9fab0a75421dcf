"""GET /api/jobs/{id}/download: the job's own file, with Range, and the refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.gateway.conftest import LONG_SPEC, create_job, wait_for, wait_terminal


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


def test_download_is_409_until_completed_then_for_cancelled(client: httpx.Client) -> None:
    job = create_job(client, LONG_SPEC)
    wait_for(client, job["id"], {"running"})
    running = client.get(f"/api/jobs/{job['id']}/download")
    assert running.status_code == 409
    assert "running" in running.json()["message"]
    client.post(f"/api/jobs/{job['id']}/cancel")
    assert wait_terminal(client, job["id"])["status"] == "cancelled"
    cancelled = client.get(f"/api/jobs/{job['id']}/download")
    assert cancelled.status_code == 409


def test_download_is_410_when_the_file_vanished(client: httpx.Client) -> None:
    job = create_job(client)
    finished = wait_terminal(client, job["id"])
    assert finished["status"] == "completed"
    Path(finished["outputPath"]).unlink()
    response = client.get(f"/api/jobs/{job['id']}/download")
    assert response.status_code == 410
    assert response.json()["message"]

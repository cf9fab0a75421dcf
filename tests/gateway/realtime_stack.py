"""A stack whose renders run at the speed of playback (ffmpeg ``-re``), so that many jobs stay
active for as long as a test needs them without burning the machine's CPU, and whose gateway
takes uploads up to a small limit. Shared by the page, events and upload tests."""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import GATEWAY_TEST_ARGS, create_job
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob_launcher import Role, Stack, StackConfig

MAX_UPLOAD_BYTES = 256 * 1024
RENDER_SLOTS = 2


def write_realtime_ffmpeg(folder: Path) -> Path:
    """An ffmpeg that reads its first input at its native rate (``-re``)."""
    script = folder / "ffmpeg-realtime"
    script.write_text(f'#!/bin/sh\nexec "{ffmpeg_binary()}" -re "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def make_clip(path: Path, seconds: float = 1.0) -> Path:
    """A tiny real clip (160x120, 10 fps, with a tone)."""
    subprocess.run(
        [
            tool_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=10:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", "-y", str(path),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def realtime_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("realtime-stack")
    ffmpeg = write_realtime_ffmpeg(workdir)
    config = StackConfig(
        workdir,
        render=Role(
            args=("--max-concurrent", str(RENDER_SLOTS)), env={"FFMPEG_BINARY": str(ffmpeg)}
        ),
        gateway=Role(args=(*GATEWAY_TEST_ARGS, "--max-upload-bytes", str(MAX_UPLOAD_BYTES))),
    )
    with Stack(config) as running:
        yield running


def long_pattern() -> dict[str, object]:
    """Ten minutes of a tiny test pattern: active until the test cancels it."""
    return {
        "source": {"testPattern": {"durationSeconds": 600, "width": 160, "height": 120, "fps": 5}},
        "output": {"preset": "ultrafast"},
    }


def start_long_jobs(http: httpx.Client, count: int) -> list[str]:
    return [create_job(http, long_pattern())["id"] for _ in range(count)]


def cancel_all(http: httpx.Client, job_ids: list[str]) -> None:
    for job_id in job_ids:
        response = http.post(f"/api/jobs/{job_id}/cancel")
        assert response.status_code in (200, 409), response.text

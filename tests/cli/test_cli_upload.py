"""``videojob upload`` against the gateway served in-process (uvicorn on port 0; an upload needs
no other service): the file is stored under the gateway's name and keeps its own, and each
refusal has its exit status and says why."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.gateway.inprocess import NOWHERE, gateway_settings, served_gateway
from tests.gateway.realtime_stack import MAX_UPLOAD_BYTES, make_clip
from videojob_cli import run
from videojob_cli.exit_status import ExitStatus

pytestmark = pytest.mark.ffmpeg

API_TOKEN = "s3cret-token"
# More than the socket buffers on both sides take in before the gateway answers.
FAR_OVER_BYTES = 64 * 1024 * 1024


@dataclass
class Result:
    status: int
    out: str
    err: str

    def json(self) -> dict[str, object]:
        document: dict[str, object] = json.loads(self.out)
        return document


async def videojob(*argv: str) -> Result:
    """The command in a thread (it blocks on HTTP), so the gateway in this loop can answer."""
    out, err = io.StringIO(), io.StringIO()
    status = await asyncio.to_thread(run, list(argv), out=out, err=err, environ={})
    return Result(status, out.getvalue(), err.getvalue())


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def gateway(media_root: Path) -> AsyncIterator[str]:
    settings = gateway_settings(
        media_root=media_root, max_upload_bytes=MAX_UPLOAD_BYTES, api_token=API_TOKEN
    )
    async with served_gateway(settings) as url:
        yield url


def flags(gateway: str) -> tuple[str, ...]:
    return ("--gateway-url", gateway, "--api-token", API_TOKEN)


async def test_upload_stores_the_file_and_keeps_its_name(
    gateway: str, media_root: Path, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path / "Mein Film.mp4")
    result = await videojob("upload", str(clip), *flags(gateway), "--json")
    assert result.status == ExitStatus.OK, result.err
    stored = result.json()
    path = str(stored["path"])
    assert path.startswith("uploads/") and path.endswith(".mp4")
    assert stored["originalName"] == "Mein Film.mp4" and stored["transcodable"] is True
    assert (media_root / path).read_bytes() == clip.read_bytes()

    renamed = await videojob("upload", str(clip), *flags(gateway), "--name", "holiday.mp4")
    assert renamed.status == ExitStatus.OK, renamed.err
    (line,) = renamed.out.splitlines()
    assert line.startswith("uploads/") and "(holiday.mp4): 160x120, h264/aac, 1.0 s" in line


async def test_a_file_that_is_not_media_is_a_usage_error_and_leaves_nothing(
    gateway: str, media_root: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 100)
    result = await videojob("upload", str(notes), *flags(gateway))
    assert result.status == ExitStatus.USAGE
    assert "422" in result.err and "not a video, audio or image file" in result.err
    assert result.out == ""
    assert not [path for path in (media_root / "uploads").iterdir()]


async def test_refusals_and_failures_have_their_own_status(gateway: str, tmp_path: Path) -> None:
    just_over = tmp_path / "over.bin"
    just_over.write_bytes(b"\0" * (MAX_UPLOAD_BYTES + 1))
    # Far over: the gateway answers before it reads the body and closes the connection while
    # the file is being sent; its answer is still what the command reports.
    far_over = tmp_path / "far-over.bin"
    far_over.write_bytes(b"\0" * FAR_OVER_BYTES)
    for file in (just_over, far_over):
        over = await videojob("upload", str(file), *flags(gateway))
        assert over.status == ExitStatus.REFUSED, over.err
        assert "413" in over.err and str(MAX_UPLOAD_BYTES) in over.err

    clip = make_clip(tmp_path / "clip.mp4")
    no_token = await videojob("upload", str(clip), "--gateway-url", gateway)
    assert no_token.status == ExitStatus.GATEWAY
    assert "401" in no_token.err

    missing = await videojob("upload", str(tmp_path / "missing.mp4"), *flags(gateway))
    assert missing.status == ExitStatus.USAGE
    assert "missing.mp4" in missing.err

    nowhere = await videojob("upload", str(clip), "--gateway-url", f"http://{NOWHERE}")
    assert nowhere.status == ExitStatus.GATEWAY
    assert "cannot be reached" in nowhere.err

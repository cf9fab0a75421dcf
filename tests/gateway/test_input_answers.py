"""What a user is told about an input file at create, over HTTP against the real stack: the field
that is wrong, in plain words, and no path of the server (paths are relative to the media
root)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.gateway.conftest import Stack, wait_terminal
from tests.support.media import make_clip
from tests.support.tool_ffmpeg import tool_ffmpeg


def server_paths(stack: Stack) -> list[str]:
    found = set()
    for directory in (stack.media_root, stack.output_dir, stack.workdir):
        found |= {str(directory.absolute()), str(directory.resolve())}
    return sorted(found)


def assert_plain(text: str, stack: Stack) -> None:
    for path in server_paths(stack):
        assert path not in text, text
    assert "file:/" not in text, text


def assert_plain_422(response: httpx.Response, field: str, stack: Stack) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    assert (body["code"], body["field"]) == ("invalid_argument", field), body
    assert_plain(body["message"], stack)
    return body


def refusal_of_input(
    client: httpx.Client, response: httpx.Response, field: str, stack: Stack
) -> str:
    """The message that refuses an input: the create's 422 when the render service answered its
    input check in time; else (a loaded machine) the job is accepted and the render's own check
    fails it INVALID_INPUT naming the same field. Either way in plain words."""
    if response.status_code != 201:
        return str(assert_plain_422(response, field, stack)["message"])
    failed = wait_terminal(client, response.json()["id"])
    error = failed["error"]
    assert (failed["status"], error["code"], error["field"]) == ("failed", "INVALID_INPUT", field)
    assert_plain(error["message"], stack)
    assert_plain("\n".join(error.get("logLines") or []), stack)
    return str(error["message"])


def write_image(path: Path) -> None:
    subprocess.run(
        [
            *(tool_ffmpeg(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error"),
            *("-f", "lavfi", "-i", "color=c=red:s=64x48", "-frames:v", "1", str(path)),
        ],
        check=True,
        timeout=60,
    )


def test_a_transcode_of_a_file_that_is_not_video_names_it_relative_to_the_media_root(
    client: httpx.Client, stack: Stack
) -> None:
    folder = stack.media_root / "answers"
    folder.mkdir(exist_ok=True)
    (folder / "text.mp4").write_text("this is not a video\n" * 20)
    spec = {"source": {"transcode": {"inputPath": "answers/text.mp4"}}}

    response = client.post("/api/jobs", json=spec)

    message = refusal_of_input(client, response, "source.transcode.inputPath", stack)

    assert "answers/text.mp4" in message


def test_an_upload_that_is_not_media_is_refused_in_plain_words(
    client: httpx.Client, stack: Stack
) -> None:
    response = client.post("/api/media", params={"filename": "notes.mp4"}, content=b"text\n" * 50)
    assert_plain_422(response, "body", stack)


def test_subtitles_that_are_not_text_subtitles_are_refused_at_create(
    client: httpx.Client, stack: Stack
) -> None:
    folder = stack.media_root / "answers"
    folder.mkdir(exist_ok=True)
    write_image(folder / "a.png")
    make_clip(folder / "clip.mp4")
    (folder / "notes.srt").write_text("not subtitles at all\n")
    (folder / "good.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    field = "source.slideshow.subtitlesPath"

    def slideshow(subtitles: str) -> dict[str, Any]:
        return {
            "source": {
                "slideshow": {
                    "slides": [{"imagePath": "answers/a.png", "durationSeconds": 1}],
                    "subtitlesPath": subtitles,
                }
            },
            "output": {"preset": "ultrafast"},
        }

    for name in ("answers/a.png", "answers/clip.mp4", "answers/notes.srt"):
        response = client.post("/api/jobs", json=slideshow(name))
        assert name in refusal_of_input(client, response, field, stack)
    # Text subtitles are accepted (the job is cancelled at once: only the create matters).
    created = client.post("/api/jobs", json=slideshow("answers/good.srt"))
    assert created.status_code == 201, created.text
    client.post(f"/api/jobs/{created.json()['id']}/cancel")

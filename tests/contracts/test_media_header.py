"""videojob.media_header, the one reading of FFmpeg's input header (gateway uploads, render
inputs), checked against what FFmpeg itself prints for small files made here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.media_header import (
    TEXT_SUBTITLE_CODECS,
    MediaHeader,
    header_command,
    parse_media_header,
    subtitle_codec,
)


def _make(*args: str) -> None:
    subprocess.run(
        [tool_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _printed(path: Path) -> str:
    run = subprocess.run(
        header_command(ffmpeg_binary(), path), capture_output=True, text=True, timeout=60
    )
    return run.stderr


def _header_of(path: Path) -> MediaHeader | None:
    return parse_media_header(_printed(path))


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("media")
    _make(
        *("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10:duration=0.5"),
        *("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=0.5"),
        *("-c:v", "libx264", "-c:a", "aac", "-shortest", str(directory / "clip.mp4")),
    )
    _make("-f", "lavfi", "-i", "sine=duration=0.3", str(directory / "tone.wav"))
    _make(
        *("-f", "lavfi", "-i", "testsrc2=size=50x30:rate=1:duration=1"),
        *("-frames:v", "1", str(directory / "still.png")),
    )
    (directory / "list.txt").write_text("ffconcat version 1.0\nfile 'clip.mp4'\n")
    (directory / "captions.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    (directory / "captions.vtt").write_text("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nHello\n")
    _make("-i", str(directory / "captions.srt"), str(directory / "captions.ass"))
    (directory / "notes.txt").write_text("not media\n")
    return directory


def test_a_video_with_sound(media: Path) -> None:
    header = _header_of(media / "clip.mp4")
    assert header is not None
    assert "mp4" in header.format_name.split(",")
    assert (header.width, header.height) == (96, 64)
    assert (header.video_codec, header.audio_codec) == ("h264", "aac")
    assert header.has_video and header.has_audio
    assert header.duration_seconds == pytest.approx(0.5, abs=0.1)


def test_sound_alone(media: Path) -> None:
    header = _header_of(media / "tone.wav")
    assert header is not None
    assert header.format_name == "wav"
    assert header.has_audio and not header.has_video
    assert header.width is None and header.height is None
    assert header.duration_seconds == pytest.approx(0.3, abs=0.05)


def test_a_picture(media: Path) -> None:
    header = _header_of(media / "still.png")
    assert header is not None
    assert header.video_codec == "png" and not header.has_audio
    assert (header.width, header.height) == (50, 30)


def test_a_concat_list_is_refused_though_ffmpeg_shows_the_video_it_names(media: Path) -> None:
    """FFmpeg reads a concat list as the files it names: its header shows their streams, but
    what it holds is other files, which an upload or an input must never reach through it."""
    run = subprocess.run(
        header_command(ffmpeg_binary(), media / "list.txt"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Input #0, concat" in run.stderr and "Video: h264" in run.stderr
    assert parse_media_header(run.stderr) is None


@pytest.mark.parametrize("name", ["notes.txt", "missing.mp4"])
def test_what_holds_no_media(media: Path, name: str) -> None:
    assert _header_of(media / name) is None


@pytest.mark.parametrize(
    ("name", "codec"),
    [("captions.srt", "subrip"), ("captions.vtt", "webvtt"), ("captions.ass", "ass")],
)
def test_text_subtitles(media: Path, name: str, codec: str) -> None:
    found = subtitle_codec(_printed(media / name))
    assert found == codec
    assert found in TEXT_SUBTITLE_CODECS
    # Subtitles alone are no media (an upload, a slide or a soundtrack).
    assert _header_of(media / name) is None


@pytest.mark.parametrize("name", ["still.png", "clip.mp4", "notes.txt", "list.txt", "missing.srt"])
def test_what_holds_no_subtitles(media: Path, name: str) -> None:
    assert subtitle_codec(_printed(media / name)) is None


def test_picture_subtitles_are_not_text() -> None:
    printed = (
        "Input #0, matroska,webm, from 'file:x.mkv':\n  Stream #0:0(eng): Subtitle: dvd_subtitle\n"
    )
    codec = subtitle_codec(printed)
    assert codec == "dvd_subtitle"
    assert codec not in TEXT_SUBTITLE_CODECS

"""An input's header is read by FFmpeg once while the file stays the same (CheckInputs at create,
Render before it starts), and again once the file is written, replaced or touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from render_service.failures import FailureCode, RenderFailure
from render_service.media_probe import probe_media, probe_subtitles
from tests.support.media import make_clip
from videojob.ffmpeg_binary import ffmpeg_binary

# Counts its runs in a file, then is the real FFmpeg.
COUNTING_WRAPPER = """#!/bin/sh
echo run >> "{runs}"
exec "{real}" "$@"
"""


@pytest.fixture
def counting(tmp_path: Path) -> tuple[str, Path]:
    runs = tmp_path / "runs"
    wrapper = tmp_path / "counting-ffmpeg"
    wrapper.write_text(COUNTING_WRAPPER.format(runs=runs, real=ffmpeg_binary()))
    wrapper.chmod(0o755)
    return str(wrapper), runs


def _runs(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0


async def test_a_header_is_read_again_only_once_its_file_changed(
    tmp_path: Path, counting: tuple[str, Path]
) -> None:
    binary, runs = counting
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0)

    first = await probe_media(binary, clip, "spec.source.transcode.input_path")
    assert await probe_media(binary, clip, "spec.source.transcode.input_path") == first
    assert _runs(runs) == 1

    make_clip(clip, seconds=2.0)  # rewritten in place: another size, other times
    longer = await probe_media(binary, clip, "spec.source.transcode.input_path")
    assert _runs(runs) == 2
    assert first.duration_seconds is not None and longer.duration_seconds is not None
    assert longer.duration_seconds > first.duration_seconds

    os.utime(clip)  # touched: its content may have changed at the same size
    assert await probe_media(binary, clip, "spec.source.transcode.input_path") == longer
    assert _runs(runs) == 3

    replacement = make_clip(tmp_path / "other.mp4", seconds=1.0)
    replacement.replace(clip)  # another file under the same name
    assert await probe_media(binary, clip, "spec.source.transcode.input_path") == first
    assert _runs(runs) == 4


async def test_a_file_that_holds_no_media_is_read_each_time_and_named_by_its_field(
    tmp_path: Path, counting: tuple[str, Path]
) -> None:
    binary, runs = counting
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 64)
    for expected_runs in (1, 2):
        with pytest.raises(RenderFailure) as refused:
            await probe_media(binary, junk, "spec.source.slideshow.audio_path")
        assert refused.value.code is FailureCode.INVALID_INPUT
        assert refused.value.message.startswith("spec.source.slideshow.audio_path: ")
        assert _runs(runs) == expected_runs


async def test_subtitles_read_once_are_not_taken_for_media(
    tmp_path: Path, counting: tuple[str, Path]
) -> None:
    binary, runs = counting
    subtitles = tmp_path / "words.srt"
    subtitles.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    field = "spec.source.slideshow.subtitles_path"
    assert await probe_subtitles(binary, subtitles, field) == "subrip"
    assert await probe_subtitles(binary, subtitles, field) == "subrip"
    assert _runs(runs) == 1
    with pytest.raises(RenderFailure) as refused:
        await probe_media(binary, subtitles, "spec.source.slideshow.audio_path")
    assert refused.value.message.startswith("spec.source.slideshow.audio_path: ")

"""What a client is shown of a failure names no path of the server: an input is named relative to
the media root, the output by its name in the output directory, in the message and in the log
lines alike (the service's own log keeps the full detail)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from render_service.public_paths import RelativePaths
from tests.render.conftest import Running, collect, kind, render_request
from tests.support.media import make_clip
from videojob.grpc_errors import field_violation
from videojob.render.v1 import render_pb2, spec_pb2

TRANSCODE_FIELD = "spec.source.transcode.input_path"


def server_paths(running: Running) -> list[str]:
    """Every spelling of the service's directories a message could carry."""
    config = running.config
    found = set()
    for directory in (config.media_root, config.output_dir):
        found |= {str(directory.absolute()), str(directory.resolve())}
    return sorted(found)


def assert_no_server_path(text: str, running: Running) -> None:
    for path in server_paths(running):
        assert path not in text, text
    assert "file:/" not in text, text


def transcode(input_path: str) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = input_path
    spec.output.preset = "ultrafast"
    return spec


async def test_a_file_that_is_not_media_is_refused_naming_it_relative_to_the_media_root(
    service: Running,
) -> None:
    (service.config.media_root / "notes").mkdir()
    (service.config.media_root / "notes" / "text.mp4").write_text("this is not a video\n")
    spec = transcode("notes/text.mp4")

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.CheckInputs(render_pb2.CheckInputsRequest(spec=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violation = field_violation(caught.value)
    assert violation is not None and violation.field == TRANSCODE_FIELD
    assert "notes/text.mp4" in violation.description
    assert_no_server_path(violation.description, service)
    assert_no_server_path(caught.value.details() or "", service)

    events = await collect(service.stub.Render(render_request("not-media-1", spec)))
    failed = events[-1]
    assert kind(failed) == "failed" and failed.failed.code == "INVALID_INPUT", failed
    assert "notes/text.mp4" in failed.failed.message
    assert_no_server_path(failed.failed.message, service)
    assert_no_server_path(failed.failed.log_tail, service)


async def test_a_failed_render_shows_no_server_path_in_its_message_or_log_lines(
    service: Running,
) -> None:
    """An MP4 cut after its header: the input check passes, ffmpeg fails on the frames."""
    clip = make_clip(service.config.media_root / "clips" / "whole.mp4", seconds=2.0)
    (clip.parent / "cut.mp4").write_bytes(clip.read_bytes()[:3000])

    events = await collect(service.stub.Render(render_request("cut-1", transcode("clips/cut.mp4"))))

    failed = events[-1]
    assert kind(failed) == "failed" and failed.failed.code == "FFMPEG_ERROR", failed
    assert failed.failed.log_tail, "ffmpeg's log lines are kept"
    assert_no_server_path(failed.failed.message, service)
    assert_no_server_path(failed.failed.log_tail, service)


def test_paths_under_the_roots_become_relative(tmp_path: Path) -> None:
    media = tmp_path / "var" / "media"
    output = tmp_path / "var" / "renders"
    spaced = tmp_path / "my media"
    for directory in (media, output, spaced):
        directory.mkdir(parents=True)
    linked = tmp_path / "linked"
    linked.symlink_to(media)
    rewrite = RelativePaths(linked, output, spaced)
    real = media.resolve()

    assert rewrite(f"file:{real}/clips/a b.mp4: Invalid data found") == (
        "clips/a b.mp4: Invalid data found"
    )
    assert rewrite(f"Error opening input file file:{linked}/x.mp4.") == (
        "Error opening input file x.mp4."
    )
    assert rewrite(f"Unable to locate subtitle stream in {real}/subs/a.png") == (
        "Unable to locate subtitle stream in subs/a.png"
    )
    assert rewrite(f"[out] {output.resolve()}/.i.r.partial.mp4: No space left") == (
        "[out] .i.r.partial.mp4: No space left"
    )
    # The filter graph's escaped spellings of a path (both levels, and the option level).
    assert rewrite(f"with args 'filename={tmp_path}/my\\\\\\ media/s.srt'") == (
        "with args 'filename=s.srt'"
    )
    assert rewrite(f"with args 'filename={tmp_path}/my\\ media/s.srt'") == (
        "with args 'filename=s.srt'"
    )
    assert rewrite(f"cannot write to '{output}'") == "cannot write to '.'"
    # A sibling whose name starts like a root is not under it.
    sibling = f"{tmp_path}/var/media-old/a.mp4"
    assert rewrite(sibling) == sibling
    assert rewrite("no path at all") == "no path at all"

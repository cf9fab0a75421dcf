"""The FFmpeg command the render service builds: an argv list (never a shell), every file input
``file:``-prefixed with ``-protocol_whitelist file``, lavfi only for the service's own graphs,
image inputs without pattern expansion, whatever the (already confined) paths are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from render_service.ffmpeg_command import RenderInputs, build_render_argv
from videojob.render.v1 import spec_pb2
from videojob.spec_validation import normalize_spec

BINARY = "/opt/ffmpeg/bin/ffmpeg"
OWN_GRAPHS = ("testsrc2=", "sine=", "anullsrc=")
# Names that would mean something to FFmpeg if they were not files: protocols, sequences, globs.
HOSTILE_NAMES = ["http:evil.mp4", "concat:a.mp4|b.mp4", "img%03d.png", "*.png", "pipe:0", "-y"]


def input_options(argv: list[str]) -> list[tuple[dict[str, str], str]]:
    """Each ``-i`` value with the options given just before it (back to the previous input)."""
    inputs: list[tuple[dict[str, str], str]] = []
    start = 0
    for index, arg in enumerate(argv):
        if arg == "-i":
            options = argv[start:index]
            pairs = {
                options[k]: options[k + 1]
                for k in range(len(options) - 1)
                if options[k].startswith("-")
            }
            inputs.append((pairs, argv[index + 1]))
            start = index + 2
    return inputs


def assert_inputs_are_safe(argv: list[str]) -> None:
    assert argv[0] == BINARY and all(isinstance(arg, str) for arg in argv)
    inputs = input_options(argv)
    assert inputs
    for options, value in inputs:
        if options.get("-f") == "lavfi":
            assert value.startswith(OWN_GRAPHS), value
            assert "file" not in value and "movie" not in value, value
        else:
            assert value.startswith("file:/"), value
            assert options.get("-protocol_whitelist") == "file", (options, value)
            if options.get("-f") == "image2":
                assert options.get("-pattern_type") == "none", options


def spec_of(kind: str) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    if kind == "test_pattern":
        spec.source.test_pattern.duration_seconds = 1
    elif kind == "transcode":
        spec.source.transcode.input_path = "in.mp4"
    else:
        for _ in HOSTILE_NAMES:
            spec.source.slideshow.slides.add(image_path="x.png", duration_seconds=1)
        spec.source.slideshow.audio_path = "a.wav"
        spec.source.slideshow.subtitles_path = "s.srt"
    return normalize_spec(spec)


@pytest.mark.parametrize("kind", ["test_pattern", "transcode", "slideshow"])
def test_every_input_is_a_whitelisted_file_or_an_own_graph(kind: str, tmp_path: Path) -> None:
    names = [tmp_path / name for name in HOSTILE_NAMES]
    inputs = RenderInputs(
        transcode_path=names[0] if kind == "transcode" else None,
        transcode_has_audio=True,
        slide_paths=names if kind == "slideshow" else (),
        slide_size=(160, 120),
        audio_path=names[1] if kind == "slideshow" else None,
        subtitles_path=tmp_path / "s: it's, [a] \\ b.srt" if kind == "slideshow" else None,
    )
    argv = build_render_argv(BINARY, spec_of(kind), inputs, tmp_path / ".x.partial.mp4", 1.0)
    assert_inputs_are_safe(argv)
    files = [value for options, value in input_options(argv) if options.get("-f") != "lavfi"]
    if kind != "test_pattern":
        assert {value.removeprefix("file:") for value in files} <= {str(n) for n in names}

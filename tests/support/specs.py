"""Render specs for tests: tiny, fast test patterns unless a test asks for more."""

from __future__ import annotations

from videojob.render.v1 import spec_pb2


def pattern_spec(
    duration: float = 2.0,
    *,
    width: int = 160,
    height: int = 120,
    fps: float = 10.0,
    container: str = "mp4",
    video_codec: str = "",
    audio_codec: str = "",
    faststart: bool = False,
) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.test_pattern.duration_seconds = duration
    spec.source.test_pattern.width = width
    spec.source.test_pattern.height = height
    spec.source.test_pattern.fps = fps
    spec.output.container = container
    spec.output.video_codec = video_codec
    spec.output.audio_codec = audio_codec
    spec.output.preset = "ultrafast"
    spec.output.faststart = faststart
    return spec

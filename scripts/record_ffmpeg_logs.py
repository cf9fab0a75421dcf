"""Records what FFmpeg prints when a render fails, for the failure-reason tests.

Each case builds the render service's own command (render_service.ffmpeg_command) for an input
that cannot be rendered, runs it in a scratch directory with relative paths (so no path of the
machine is recorded), and writes its log to tests/render/ffmpeg_logs/<case>.<version>.log.
Run it once per FFmpeg build users run (Debian's ffmpeg 5.1 on PATH, the imageio-ffmpeg wheel's):

    .venv/bin/python scripts/record_ffmpeg_logs.py          # the ffmpeg the service would use
    .venv/bin/python scripts/record_ffmpeg_logs.py --wheel  # the imageio-ffmpeg wheel's
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from render_service.ffmpeg_command import RenderInputs, build_render_argv
from videojob.ffmpeg_binary import ffmpeg_binary
from videojob.render.v1 import spec_pb2
from videojob.spec_validation import normalize_spec

LOGS = Path(__file__).resolve().parent.parent / "tests" / "render" / "ffmpeg_logs"


def _ffmpeg(cwd: Path, *args: str) -> None:
    subprocess.run(
        [ffmpeg_binary(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args],
        cwd=cwd,
        check=True,
    )


def _clip(cwd: Path, name: str) -> None:
    """A tiny H.264 MP4 with its index first (a truncated copy keeps a readable header)."""
    _ffmpeg(
        cwd,
        *("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=1"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-movflags", "+faststart", name),
    )


def _image(cwd: Path, name: str) -> None:
    _ffmpeg(cwd, "-f", "lavfi", "-i", "color=c=red:s=64x48", "-frames:v", "1", name)


def corrupt_transcode(cwd: Path) -> tuple[spec_pb2.RenderSpec, RenderInputs, float]:
    """An MP4 cut after its header: the input check passes, the frames are missing."""
    _clip(cwd, "clip.mp4")
    (cwd / "cut.mp4").write_bytes((cwd / "clip.mp4").read_bytes()[:3000])
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = "cut.mp4"
    spec.output.preset = "ultrafast"
    return spec, RenderInputs(transcode_path=Path("cut.mp4")), 1.0


def subtitles_not_text(cwd: Path) -> tuple[spec_pb2.RenderSpec, RenderInputs, float]:
    """A slideshow whose subtitles file is an image."""
    _image(cwd, "one.png")
    _image(cwd, "a.png")
    spec = spec_pb2.RenderSpec()
    spec.source.slideshow.slides.add(image_path="one.png", duration_seconds=1.0)
    spec.source.slideshow.subtitles_path = "a.png"
    spec.output.preset = "ultrafast"
    inputs = RenderInputs(
        slide_paths=[Path("one.png")], slide_size=(64, 48), subtitles_path=Path("a.png")
    )
    return spec, inputs, 1.0


def video_as_slide(cwd: Path) -> tuple[spec_pb2.RenderSpec, RenderInputs, float]:
    """A slideshow whose slide is a video."""
    _clip(cwd, "clip.mp4")
    spec = spec_pb2.RenderSpec()
    spec.source.slideshow.slides.add(image_path="clip.mp4", duration_seconds=1.0)
    spec.output.preset = "ultrafast"
    inputs = RenderInputs(slide_paths=[Path("clip.mp4")], slide_size=(160, 120))
    return spec, inputs, 1.0


CASES: dict[str, Callable[[Path], tuple[spec_pb2.RenderSpec, RenderInputs, float]]] = {
    "corrupt_transcode": corrupt_transcode,
    "subtitles_not_text": subtitles_not_text,
    "video_as_slide": video_as_slide,
}


def ffmpeg_version() -> str:
    """major.minor of the FFmpeg in use ("5.1", "9.0")."""
    first = subprocess.run(
        [ffmpeg_binary(), "-version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    match = re.search(r"version n?(\d+\.\d+)", first)
    if match is None:
        raise SystemExit(f"cannot tell the FFmpeg version from {first!r}")
    return match[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--wheel", action="store_true", help="record with the imageio-ffmpeg wheel's FFmpeg"
    )
    if parser.parse_args().wheel:
        import imageio_ffmpeg

        os.environ["FFMPEG_BINARY"] = imageio_ffmpeg.get_ffmpeg_exe()
        ffmpeg_binary.cache_clear()
    version = ffmpeg_version()
    LOGS.mkdir(parents=True, exist_ok=True)
    for name, make in CASES.items():
        with tempfile.TemporaryDirectory() as scratch:
            cwd = Path(scratch)
            spec, inputs, duration = make(cwd)
            spec = normalize_spec(spec)
            argv = build_render_argv(ffmpeg_binary(), spec, inputs, Path("out.mp4"), duration)
            run = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
            if run.returncode == 0:
                raise SystemExit(f"{name}: ffmpeg {version} did not fail")
            log = re.sub(r" @ 0x[0-9a-f]+\]", " @ 0x0]", run.stderr)
        target = LOGS / f"{name}.{version}.log"
        target.write_text(log)
        print(f"{target.relative_to(LOGS.parent.parent.parent)}: {len(log.splitlines())} lines")


if __name__ == "__main__":
    main()

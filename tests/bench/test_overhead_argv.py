"""Which of the render service's children the overhead benchmark takes for its FFmpeg, and from
where its command starts (argv shapes as /proc shows them)."""

from __future__ import annotations

from bench.bench_overhead import ffmpeg_argv

BINARY = "/usr/bin/ffmpeg"
RENDER = ["-y", "-f", "lavfi", "-i", "testsrc", "-progress", "pipe:1", "out.mp4"]
PREFIX = ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--", "/bin/sh", "-c", "exec", "41"]


def test_the_command_starts_at_the_binary_the_service_was_given() -> None:
    assert ffmpeg_argv([BINARY, *RENDER], BINARY) == [BINARY, *RENDER]
    assert ffmpeg_argv([*PREFIX, BINARY, *RENDER], BINARY) == [BINARY, *RENDER]


def test_a_wrapper_script_on_path_is_followed_to_the_ffmpeg_it_executes() -> None:
    wrapper = "/opt/counting/ffmpeg"
    # Before the wrapper execs: the script run by its interpreter; after: the real binary.
    assert ffmpeg_argv(["/bin/sh", wrapper, *RENDER], wrapper) == [wrapper, *RENDER]
    assert ffmpeg_argv([BINARY, *RENDER], wrapper) == [BINARY, *RENDER]
    wheel = "/venv/imageio_ffmpeg/binaries/ffmpeg-linux-x86_64-v9.0.2"
    assert ffmpeg_argv([wheel, *RENDER], wrapper) == [wheel, *RENDER]


def test_a_child_that_writes_no_progress_or_runs_no_ffmpeg_is_not_taken() -> None:
    assert ffmpeg_argv([BINARY, "-hide_banner", "-version"], BINARY) is None
    assert ffmpeg_argv([*PREFIX, "/usr/bin/other", *RENDER], BINARY) is None
    assert ffmpeg_argv([], BINARY) is None

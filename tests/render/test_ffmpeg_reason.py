"""The failure's message is the line of ffmpeg's log that names the cause, by one rule, whichever
FFmpeg build users run. The logs in ffmpeg_logs/ are what Debian's ffmpeg 5.1 and the
imageio-ffmpeg wheel's 9.0 printed for the render service's own commands
(scripts/record_ffmpeg_logs.py records them again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from render_service.failures import ffmpeg_reason

LOGS = Path(__file__).parent / "ffmpeg_logs"
BUILDS = ("5.1", "9.0")

# For each case, what the reason must say, and what it must not (the consequence a naive
# "last error line" rule would pick).
EXPECTED = {
    "corrupt_transcode": (
        "Invalid data found when processing input",
        ("filters", "after EOF", "Nothing was written", "encoder"),
    ),
    "subtitles_not_text": (
        "Unable to locate subtitle stream in a.png",
        ("initializing", "Stream not found"),
    ),
    "video_as_slide": ("codec", ("filtergraph", "binding")),
}


def test_every_case_was_recorded_with_both_builds() -> None:
    recorded = {path.name for path in LOGS.glob("*.log")}
    assert recorded == {f"{case}.{build}.log" for case in EXPECTED for build in BUILDS}


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_the_reason_is_the_line_naming_the_cause(case: str, build: str) -> None:
    log = (LOGS / f"{case}.{build}.log").read_text()
    says, never = EXPECTED[case]
    reason = ffmpeg_reason(log)
    assert says in reason, reason
    assert reason in {line.split("] ")[-1].strip() for line in log.splitlines()}
    for consequence in never:
        assert consequence not in reason, reason


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        ("", ""),
        ("frame=1 fps=0.0\nprogress=end\n", ""),
        # An echo and advice are never the reason; a lone consequence is no reason either.
        ("Conversion failed!\nConsider increasing the value\n", ""),
        ("Error marking filters as finished\n", ""),
        # The strongest wording wins over a later weak line.
        (
            "[file @ 0x0] Permission denied\n[out#0] something failed\n",
            "Permission denied",
        ),
        ("[libx264 @ 0x0] width not divisible by 2 (161x120)\nunknown thing\n", "unknown thing"),
    ],
)
def test_the_rule_on_small_logs(log: str, reason: str) -> None:
    assert ffmpeg_reason(log) == reason

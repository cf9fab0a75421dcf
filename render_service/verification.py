"""Checking a rendered file before it may be reported ``completed``: it exists, is non-empty, is
a valid container with a video stream, and lasts the expected time (within 0.5 s). The streams
are copied to the null muxer, so nothing is decoded."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from render_service.failures import FailureCode, RenderFailure
from render_service.ffmpeg_process import run_ffmpeg_captured
from render_service.ffmpeg_progress import parse_header_duration
from render_service.media_probe import parse_media_info

DURATION_TOLERANCE_SECONDS = 0.5
VERIFY_TIMEOUT_SECONDS = 600.0
_LAST_PACKET_TIME = re.compile(r"time=(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


def _last_packet_time(log: str) -> float | None:
    matches = _LAST_PACKET_TIME.findall(log)
    if not matches:
        return None
    hours, minutes, seconds = matches[-1]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


async def verify_output(binary: str, path: Path, expected_seconds: float) -> tuple[int, float]:
    """Returns the file's size and duration, or raises VERIFICATION_FAILED."""
    try:
        size = (await asyncio.to_thread(path.stat)).st_size
    except FileNotFoundError:
        raise RenderFailure(FailureCode.VERIFICATION_FAILED, "no output file was written") from None
    except OSError as exc:
        raise RenderFailure(
            FailureCode.OUTPUT_UNWRITABLE, f"cannot read the output file: {exc.strerror or exc}"
        ) from None
    if size == 0:
        raise RenderFailure(FailureCode.VERIFICATION_FAILED, "the output file is empty")
    run = await run_ffmpeg_captured(
        [
            binary,
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "info",
            "-protocol_whitelist",
            "file",
            "-i",
            f"file:{path}",
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ],
        VERIFY_TIMEOUT_SECONDS,
    )
    if run.returncode != 0:
        raise RenderFailure(
            FailureCode.VERIFICATION_FAILED,
            "the output is not a valid media file",
            _tail(run.stderr),
        )
    if not parse_media_info(run.stderr).has_video:
        raise RenderFailure(FailureCode.VERIFICATION_FAILED, "the output has no video stream")
    duration = parse_header_duration(run.stderr) or _last_packet_time(run.stderr)
    if duration is None:
        raise RenderFailure(
            FailureCode.VERIFICATION_FAILED, "the output has no duration", _tail(run.stderr)
        )
    if abs(duration - expected_seconds) > DURATION_TOLERANCE_SECONDS:
        raise RenderFailure(
            FailureCode.VERIFICATION_FAILED,
            f"the output lasts {duration:.2f} s, expected {expected_seconds:.2f} s",
        )
    return size, duration

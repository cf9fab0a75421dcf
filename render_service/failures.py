"""Why a render failed, as carried by ``Failed.code``."""

from __future__ import annotations

import re
from enum import StrEnum

from videojob import limits
from videojob.errors import VideoJobError


class FailureCode(StrEnum):
    """The codes of the ``FailureCode`` proto enum that a render service reports."""

    INVALID_INPUT = limits.FAILURE_INVALID_INPUT
    FFMPEG_ERROR = limits.FAILURE_FFMPEG_ERROR
    STALLED = limits.FAILURE_STALLED
    VERIFICATION_FAILED = limits.FAILURE_VERIFICATION_FAILED
    OUTPUT_UNWRITABLE = limits.FAILURE_OUTPUT_UNWRITABLE
    SHUTDOWN = limits.FAILURE_SHUTDOWN
    INTERNAL = limits.FAILURE_INTERNAL
    STORAGE_UNAVAILABLE = limits.FAILURE_STORAGE_UNAVAILABLE


class RenderFailure(Exception):
    """Ends a render with a ``failed`` event; ``field`` (a proto path) names the spec field it
    is about, if any."""

    def __init__(
        self, code: FailureCode, message: str, log_tail: str = "", *, field: str = ""
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.log_tail = log_tail
        self.field = field


def storage_failure(error: VideoJobError) -> RenderFailure:
    """A store that did not answer, refused the upload or this service's settings: the render
    was made and verified, but could not be stored."""
    return RenderFailure(
        FailureCode.STORAGE_UNAVAILABLE, f"the output could not be stored: {error.message}"
    )


def input_storage_failure(error: VideoJobError) -> RenderFailure:
    """A store that did not answer, or refused this service, when the render fetched its
    inputs: nothing was rendered."""
    return RenderFailure(
        FailureCode.STORAGE_UNAVAILABLE,
        f"the inputs could not be fetched from the object store: {error.message}",
    )


def invalid_input(field: str, problem: str, log_tail: str = "") -> RenderFailure:
    """An INVALID_INPUT failure about the input named by ``field``: ``<field>: <problem>``."""
    return RenderFailure(FailureCode.INVALID_INPUT, f"{field}: {problem}", log_tail, field=field)


# ffmpeg's lines that restate an error already logged, or give advice: never the reason.
_ECHO = re.compile(
    r"Task finished with error code|Terminating thread with return code|Last message repeated"
    r"|Consider increasing|Conversion failed!|^Exiting normally"
)
# What follows from an earlier error rather than causing it: the filter graph, encoder or muxer
# giving up once an input failed (ffmpeg 5.1 and 9.0 word these differently, the causes alike).
_CONSEQUENCE = re.compile(
    r"^Error (?:initializing (?:complex )?filters?|marking filters as finished|binding"
    r"|while filtering|reinitializing filters|while processing the decoded data)"
    r"|^Cannot determine format of input .* after EOF"
    r"|^Nothing was written into output file"
    r"|^Could not open encoder before EOF"
    r"|^Decode error rate"
    r"|^Failed to inject frame into filter network"
    r"|^(?:Error\s*:\s*)?Stream not found\.?$",
    re.IGNORECASE,
)
# A line's "[component @ 0x...]" prefixes.
_PREFIXES = re.compile(r"^(?:\[[^\]]*\]\s*)+")
_STRONG = re.compile(
    r"^Error\b|Invalid data found|No such file|Permission denied|Unable to", re.IGNORECASE
)
_WEAK = re.compile(
    r"could not|cannot|not found|unknown|unsupported|invalid|failed|error",
    re.IGNORECASE,
)


def ffmpeg_reason(log: str) -> str:
    """ffmpeg's own reason for failing, found in its log: the line that names the cause, in the
    same words whichever FFmpeg build wrote it. Echoes, advice and consequences (the filter
    graph, encoder or muxer giving up after an input failed) are passed over; of the rest, the
    last line that starts with "Error", says "Invalid data found" or "Unable to", or names a
    missing or forbidden file, else the last line that speaks of an error at all; "" when no
    line does."""
    lines = [_PREFIXES.sub("", line).strip() for line in log.splitlines()]
    lines = [
        line for line in lines if line and not _ECHO.search(line) and not _CONSEQUENCE.search(line)
    ]
    for pattern in (_STRONG, _WEAK):
        for line in reversed(lines):
            if pattern.search(line):
                return line
    return ""

"""Why a render failed, as carried by ``Failed.code``."""

from __future__ import annotations

import re
from enum import StrEnum

from videojob import limits


class FailureCode(StrEnum):
    """The codes of the ``FailureCode`` proto enum that a render service reports."""

    INVALID_INPUT = limits.FAILURE_INVALID_INPUT
    FFMPEG_ERROR = limits.FAILURE_FFMPEG_ERROR
    STALLED = limits.FAILURE_STALLED
    VERIFICATION_FAILED = limits.FAILURE_VERIFICATION_FAILED
    OUTPUT_UNWRITABLE = limits.FAILURE_OUTPUT_UNWRITABLE
    SHUTDOWN = limits.FAILURE_SHUTDOWN
    INTERNAL = limits.FAILURE_INTERNAL


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


def invalid_input(field: str, problem: str, log_tail: str = "") -> RenderFailure:
    """An INVALID_INPUT failure about the input named by ``field``: ``<field>: <problem>``."""
    return RenderFailure(FailureCode.INVALID_INPUT, f"{field}: {problem}", log_tail, field=field)


# ffmpeg's lines that restate an error already logged, or give advice: never the reason.
_ECHO = re.compile(
    r"Task finished with error code|Terminating thread with return code|Last message repeated"
    r"|Consider increasing|Conversion failed!|^Exiting normally"
)
# A line's "[component @ 0x...]" prefixes.
_PREFIXES = re.compile(r"^(?:\[[^\]]*\]\s*)+")
_STRONG = re.compile(r"^Error\b|Invalid data found|No such file|Permission denied", re.IGNORECASE)
_WEAK = re.compile(
    r"could not|cannot|unable to|not found|unknown|unsupported|invalid|failed|error",
    re.IGNORECASE,
)


def ffmpeg_reason(log: str) -> str:
    """ffmpeg's own reason for failing, found in its log: the last line that starts with
    "Error" or says "Invalid data found" (or names a missing or forbidden file), else the last
    line that speaks of an error at all; "" when no line does."""
    lines = [_PREFIXES.sub("", line).strip() for line in log.splitlines()]
    lines = [line for line in lines if line and not _ECHO.search(line)]
    for pattern in (_STRONG, _WEAK):
        for line in reversed(lines):
            if pattern.search(line):
                return line
    return ""

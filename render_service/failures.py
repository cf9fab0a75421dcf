"""Why a render failed, as carried by ``Failed.code``."""

from __future__ import annotations

from enum import StrEnum


class FailureCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    FFMPEG_ERROR = "FFMPEG_ERROR"
    STALLED = "STALLED"
    VERIFICATION_FAILED = "VERIFICATION_FAILED"
    OUTPUT_UNWRITABLE = "OUTPUT_UNWRITABLE"
    SHUTDOWN = "SHUTDOWN"
    INTERNAL = "INTERNAL"


class RenderFailure(Exception):
    """Ends a render with a ``failed`` event."""

    def __init__(self, code: FailureCode, message: str, log_tail: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.log_tail = log_tail

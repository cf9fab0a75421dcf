"""Why a render failed, as carried by ``Failed.code``."""

from __future__ import annotations

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

"""The label values of the tracker's metrics: each question and observation under a name an
operator reads (``retry_timer``, not the class ``TimerFired``), from fixed tables that cover
every question and observation (tests.export.test_activity_labels). docs/operations.md lists
them; a renamed class keeps its label, a new class needs one here."""

from __future__ import annotations

from typing import Final

from export_service.tracking.actions import (
    BeginAttempt,
    CallRender,
    CheckOutput,
    GetRender,
    Question,
    ReadJob,
    ReadStream,
    Wait,
    WatchRender,
    WriteCancel,
    WriteComplete,
    WriteFail,
)
from export_service.tracking.observations import (
    Draining,
    EventReceived,
    JobEnded,
    JobMissing,
    JobRead,
    LeaseLost,
    NotPlaced,
    Observation,
    OutputChecked,
    Refused,
    RenderReport,
    RpcFailed,
    Stopping,
    StreamEnded,
    StreamSilent,
    TimerFired,
    Unreached,
    Written,
)

QUESTION_LABELS: Final[dict[type[Question], str]] = {
    ReadJob: "read_job",
    CallRender: "render",
    WatchRender: "watch_render",
    ReadStream: "read_stream",
    GetRender: "get_render",
    CheckOutput: "check_output",
    BeginAttempt: "begin_attempt",
    WriteComplete: "write_completed",
    WriteFail: "write_failed",
    WriteCancel: "write_cancelled",
    Wait: "backoff_wait",
}

OBSERVATION_LABELS: Final[dict[type[Observation], str]] = {
    JobRead: "job_read",
    JobMissing: "job_missing",
    Written: "store_written",
    Refused: "store_refused",
    EventReceived: "render_event",
    StreamEnded: "stream_ended",
    StreamSilent: "stream_silent",
    RpcFailed: "render_call_failed",
    RenderReport: "render_report",
    NotPlaced: "not_placed",
    Draining: "render_draining",
    Unreached: "render_unreached",
    OutputChecked: "output_checked",
    TimerFired: "retry_timer",
    JobEnded: "job_ended_elsewhere",
    Stopping: "service_stopping",
    LeaseLost: "lease_lost",
}

# The reason of what a tracker does before it has observed anything.
TRACKER_START: Final = "tracker_start"


def question_label(question: Question) -> str:
    return QUESTION_LABELS[type(question)]


def observation_label(observation: Observation) -> str:
    """The observation's label; a failed render call's adds its gRPC status code
    (``render_call_failed_unavailable``): a bounded set, and the code is what an operator
    acts on."""
    label = OBSERVATION_LABELS[type(observation)]
    if isinstance(observation, RpcFailed):
        return f"{label}_{observation.code.name.lower()}"
    return label

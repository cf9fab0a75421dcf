"""A job that fails because no render service answers says so in plain words: no address, no
gRPC status or error text (the tracker's log, one line per retry, keeps them for operators)."""

from __future__ import annotations

import grpc
import pytest

from export_service.config import TrackerSettings
from export_service.tracking.actions import NextStep, Wait
from export_service.tracking.observations import NotPlaced, Observation, RpcFailed
from tests.export.test_decide import drive, final_failure

SETTINGS = TrackerSettings(retry_budget=5.0, backoff_initial=0.5, backoff_max=1.0)
GRPC_TEXT = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.1.2.3:50051: "
    "Failed to connect to remote host: Connection refused"
)
INTERNALS = ("10.1.2.3", "50051", "ipv4", "UNAVAILABLE", "failed to connect", "Connection refused")


@pytest.mark.parametrize(
    "answer",
    [
        RpcFailed(grpc.StatusCode.UNAVAILABLE, GRPC_TEXT),
        RpcFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"),
        NotPlaced("every render service is draining or refused it (10.1.2.3:50051)"),
    ],
    ids=["refused", "timed out", "none placed"],
)
def test_render_unavailable_says_no_render_service_answered_in_plain_words(
    answer: Observation,
) -> None:
    def unreachable(ask: NextStep, now: float) -> tuple[Observation, float]:
        return answer, 1.0

    _, _, history = drive(SETTINGS, 7, unreachable)

    failure = final_failure(history)
    assert failure.code == "RENDER_UNAVAILABLE"
    assert "retry budget 5 s" in failure.message, failure.message
    for internal in (*INTERNALS, "Deadline Exceeded", "DEADLINE_EXCEEDED"):
        assert internal not in failure.message, failure.message
    # The detail is kept where operators read it: the tracker logs each wait's reason.
    reasons = " ".join(d.next.why for d in history if isinstance(d.next, Wait))
    assert isinstance(answer, RpcFailed | NotPlaced)
    assert (answer.details if isinstance(answer, RpcFailed) else answer.why) in reasons

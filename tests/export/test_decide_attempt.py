"""The decisions of one render attempt on their own (tracking.attempt), without I/O, and how the
job's tracker turns each way an attempt ends into the job's transition."""

from __future__ import annotations

import random

import grpc
import pytest

from export_service.config import TrackerSettings
from export_service.store import JobStatus
from export_service.tracking.actions import (
    BeginAttempt,
    CallRender,
    CheckOutput,
    CloseStream,
    DiscardProgress,
    DropProgress,
    FlushProgress,
    GetRender,
    OfferProgress,
    OfferStage,
    ReadJob,
    ReadStream,
    ReleaseAttempt,
    Stop,
    Wait,
    WatchRender,
    WriteCancel,
    WriteFail,
)
from export_service.tracking.attempt import (
    AttemptDecision,
    AttemptPhase,
    AttemptState,
    GaveUp,
    Jitter,
    JobGone,
    Lost,
    RenderLost,
    UnexpectedObservation,
    Verdict,
    begin,
    decide_attempt,
)
from export_service.tracking.decide import Decision, Phase, decide, start
from export_service.tracking.observations import (
    Cancelled,
    Completed,
    Draining,
    EventReceived,
    Failed,
    JobEnded,
    JobRead,
    Observation,
    Progress,
    Refused,
    RenderReport,
    RpcFailed,
    StreamEnded,
    StreamSilent,
    TimerFired,
    Written,
)
from videojob.limits import STAGE_WAITING_FOR_RENDER

SETTINGS = TrackerSettings(
    stall_timeout=3.0,
    max_attempts=3,
    retry_budget=20.0,
    backoff_initial=0.5,
    backoff_max=4.0,
    rpc_timeout=2.0,
    max_quiet_rounds=2,
    output_wait=5.0,
)


def submitted(number: int = 1, seed: str = "part") -> AttemptDecision:
    return begin(AttemptState(number=number, jitter=Jitter(seed)), submit=True)


def step(decision: AttemptDecision, observation: Observation, now: float) -> AttemptDecision:
    assert not isinstance(decision.next, Verdict | RenderLost | GaveUp | JobGone), decision
    return decide_attempt(decision.state, observation, now, SETTINGS)


def test_an_attempt_submits_or_reattaches_its_own_render() -> None:
    fresh = AttemptState(number=2, jitter=Jitter("j"))
    assert begin(fresh, submit=True).next == CallRender(2)
    known = AttemptState(number=2, jitter=Jitter("j"), last_seq=7)
    assert begin(known, submit=False).next == WatchRender(7)


def test_two_attempts_of_one_job_are_decided_independently() -> None:
    """Two attempts (as two parts of a split job will be) fed interleaved answers decide
    exactly as each would alone: nothing of one leaks into the other."""
    answers: dict[str, list[Observation]] = {
        "a": [
            EventReceived(1, Progress(10.0, "Rendering", 9.0)),
            StreamSilent(3.0),
            RpcFailed(grpc.StatusCode.UNAVAILABLE, "refused"),
            JobRead(False, 1, 1, 2.0),
            TimerFired(),
            RenderReport(4, Progress(40.0, "Rendering", 5.0)),
            EventReceived(5, Progress(50.0, "Rendering", 4.0, heartbeat=True)),
        ],
        "b": [
            Draining("render-a", "draining"),
            EventReceived(1, Progress(5.0, "Preparing", 0.0)),
            EventReceived(2, Completed("/out/b.mp4", 9, 2.0)),
        ],
    }
    first = {"a": submitted(1, seed="a"), "b": submitted(1, seed="b")}

    def alone(name: str) -> list[AttemptDecision]:
        decisions, decision = [first[name]], first[name]
        for n, observation in enumerate(answers[name]):
            decision = step(decision, observation, float(n))
            decisions.append(decision)
        return decisions

    together: dict[str, list[AttemptDecision]] = {name: [first[name]] for name in first}
    rng = random.Random(5)
    pending = {name: list(enumerate(seen)) for name, seen in answers.items()}
    while any(pending.values()):
        name = rng.choice([name for name, left in pending.items() if left])
        n, observation = pending[name].pop(0)
        together[name].append(step(together[name][-1], observation, float(n)))

    assert together == {"a": alone("a"), "b": alone("b")}
    a, b = together["a"][-1], together["b"][-1]
    # a: its render service went unanswered (its stage shown), then its heartbeat put the
    # render's stage back; b: placed elsewhere once, then finished.
    assert a.effects == (OfferProgress(50.0, "Rendering", 4.0, 5),)
    assert a.state.avoid == frozenset() and not a.state.showing_wait
    assert b.next == Verdict(2, Completed("/out/b.mp4", 9, 2.0))
    assert b.state.avoid == frozenset({"render-a"})


def test_an_attempt_ends_with_the_renders_verdict() -> None:
    running = step(submitted(), EventReceived(1, Progress(30.0, "Rendering", 4.0)), 0.0)
    done = step(running, EventReceived(2, Completed("/out/j.mp4", 5, 2.0)), 1.0)
    assert (done.next, done.effects) == (
        Verdict(2, Completed("/out/j.mp4", 5, 2.0)),
        (CloseStream(),),
    )
    assert done.state.phase is AttemptPhase.ENDED
    failed = Failed("FFMPEG_ERROR", "boom", log_tail="tail")
    verdict = step(running, EventReceived(2, failed), 1.0)
    assert (verdict.next, verdict.effects) == (Verdict(2, failed), (CloseStream(), FlushProgress()))
    cancelled = step(running, EventReceived(2, Cancelled()), 1.0)
    assert cancelled.next == Verdict(2, Cancelled())
    # A spec the render service refused at Render is a verdict too, at no seq.
    invalid = RpcFailed(grpc.StatusCode.INVALID_ARGUMENT, "bad crf", field="spec.output.crf")
    refused = step(submitted(), invalid, 0.0)
    assert refused.next == Verdict(0, Failed("INVALID_INPUT", "bad crf", "spec.output.crf"))


def test_an_attempt_ends_lost_when_its_render_is_gone() -> None:
    shut_down = step(submitted(), EventReceived(2, Failed("SHUTDOWN", "stopping")), 1.0)
    assert shut_down.next == RenderLost(
        Lost("RENDER_LOST", "the render was lost (SHUTDOWN: stopping)")
    )
    # A store that did not answer for the render's inputs or output: lost too, the store's
    # reason kept for the job's failure when no attempt is left; no render service avoided.
    store_down = Failed("STORAGE_UNAVAILABLE", "the inputs could not be fetched: no answer")
    unstored = step(submitted(), EventReceived(2, store_down), 1.0)
    assert unstored.next == RenderLost(
        Lost(
            "STORAGE_UNAVAILABLE",
            "the object store did not answer (the inputs could not be fetched: no answer)",
            shown="the inputs could not be fetched: no answer",
        )
    )
    investigating = step(submitted(), StreamEnded(), 1.0)
    unknown = RpcFailed(grpc.StatusCode.NOT_FOUND, "unknown render", others_available=True)
    not_known = step(investigating, unknown, 1.0)
    assert isinstance(not_known.next, RenderLost) and not_known.next.lost.at_once
    # Its render service refuses connections while another can take the render.
    refusing = RpcFailed(grpc.StatusCode.UNAVAILABLE, "refused", others_available=True)
    gone = step(investigating, refusing, 1.0)
    assert isinstance(gone.next, RenderLost) and gone.next.lost.service_lost


def test_an_attempt_gives_up_when_its_patience_is_spent() -> None:
    decision = submitted()
    now = 0.0
    for _ in range(SETTINGS.max_quiet_rounds + 1):
        decision = step(decision, StreamSilent(3.0), now)
        assert isinstance(decision.next, GetRender)
        decision = step(decision, RenderReport(0, Progress(0.0, "Queued", 0.0)), now)
        if isinstance(decision.next, Wait):
            now += decision.next.seconds
            decision = step(decision, TimerFired(), now)
        if isinstance(decision.next, GaveUp):
            break
    assert isinstance(decision.next, GaveUp) and decision.next.code == "RENDER_STALLED"

    unanswered = step(submitted(), StreamEnded(), 0.0)
    unanswered = step(unanswered, RpcFailed(grpc.StatusCode.UNAVAILABLE, "refused"), 0.0)
    assert unanswered.next == ReadJob()  # the job still active? (asked before each retry)
    ended = step(unanswered, JobRead(False, 1, 0, 2.0), SETTINGS.retry_budget)
    assert isinstance(ended.next, GaveUp) and ended.next.code == "RENDER_UNAVAILABLE"


def test_an_attempt_ends_when_its_job_is_gone() -> None:
    refused = step(submitted(), Refused(JobStatus.CANCELLED, 1), 0.0)
    assert (refused.next, refused.effects) == (JobGone(), (CloseStream(),))
    unanswered = step(submitted(), StreamEnded(), 0.0)
    unanswered = step(unanswered, RpcFailed(grpc.StatusCode.UNAVAILABLE, "refused"), 0.0)
    gone = step(unanswered, JobRead(True, 1, 0, 2.0), 1.0)
    assert (gone.next, gone.effects) == (JobGone(), ())


def test_an_ended_attempt_and_news_from_outside_are_not_the_attempts_to_decide() -> None:
    done = step(submitted(), EventReceived(1, Cancelled()), 0.0)
    with pytest.raises(UnexpectedObservation):
        decide_attempt(done.state, EventReceived(2, Cancelled()), 0.0, SETTINGS)
    with pytest.raises(UnexpectedObservation):
        step(submitted(), JobEnded(), 0.0)  # the job's tracker stops on it


# How the job's tracker turns an attempt's end into the job's transition.


def rendering(last_seq: int = 0) -> Decision:
    decision = decide(start(SETTINGS, seed=3).state, JobRead(False, 1, last_seq, 2.0), 0.0)
    assert decision.state.phase is Phase.RENDERING
    return decision


def test_the_job_follows_the_attempts_questions() -> None:
    decision = rendering()
    assert decision.next == CallRender(1)
    progress = decide(decision.state, EventReceived(1, Progress(20.0, "Rendering", 8.0)), 1.0)
    assert (progress.next, progress.effects) == (
        ReadStream(),
        (OfferProgress(20.0, "Rendering", 8.0, 1),),
    )
    assert progress.state.current is not None and progress.state.current.last_seq == 1


def test_a_lost_attempt_becomes_the_next_attempt_which_keeps_what_the_job_learned() -> None:
    """The job reads itself, begins attempt 2 and follows a fresh attempt: a new patience, the
    same render services avoided, the waiting stage still shown until its render reports."""
    busy = RpcFailed(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "full", others_available=True, member="render-a"
    )
    elsewhere = decide(rendering().state, busy, 0.5)
    assert elsewhere.next == CallRender(1, elsewhere=True, avoid=frozenset({"render-a"}))
    running = decide(elsewhere.state, EventReceived(1, Progress(5.0, "Rendering", 9.0)), 1.0)
    broke = decide(running.state, StreamEnded(), 2.0)
    confirm = decide(broke.state, RpcFailed(grpc.StatusCode.UNAVAILABLE, "down"), 2.0)
    wait = decide(confirm.state, JobRead(False, 1, 1, 2.0), 2.0)
    assert wait.effects == (OfferStage(STAGE_WAITING_FOR_RENDER),)
    assert isinstance(wait.next, Wait)
    ask = decide(wait.state, TimerFired(), 2.0 + wait.next.seconds)
    lost = decide(ask.state, RpcFailed(grpc.StatusCode.NOT_FOUND, "unknown render"), 3.0)
    assert (lost.next, lost.state.phase) == (ReadJob(), Phase.CONFIRMING)
    later = decide(lost.state, JobRead(False, 1, 1, 2.0), 3.0)
    assert isinstance(later.next, Wait) and later.next.then == "resubmitting as attempt 2"
    begin_ = decide(later.state, TimerFired(), 3.0 + later.next.seconds)
    assert (begin_.next, begin_.effects) == (BeginAttempt(1), (DropProgress(),))
    second = decide(begin_.state, Written(2), 4.0)
    assert second.next == CallRender(2, avoid=frozenset({"render-a"}))
    assert second.effects == (ReleaseAttempt(1),)
    attempt = second.state.current
    assert attempt is not None and attempt.number == second.state.attempt == 2
    assert attempt.showing_wait and (attempt.retry_rounds, attempt.unreachable_since) == (0, None)


def test_an_attempt_that_gave_up_fails_the_job_and_releases_the_render() -> None:
    decision = rendering(last_seq=3)
    for _ in range(SETTINGS.max_quiet_rounds + 1):
        decision = decide(decision.state, StreamSilent(3.0), 0.0)
        decision = decide(decision.state, RenderReport(3, Progress(1.0, "Rendering", 1.0)), 0.0)
        if isinstance(decision.next, Wait):
            decision = decide(decision.state, TimerFired(), 1.0)
        if isinstance(decision.next, WriteFail):
            break
    assert isinstance(decision.next, WriteFail)
    assert decision.next.code == "RENDER_STALLED" and decision.next.release_render


def test_the_renders_verdict_becomes_the_jobs() -> None:
    done = decide(rendering().state, EventReceived(3, Completed("/out/j.mp4", 5, 2.0)), 1.0)
    assert (done.next, done.effects) == (
        CheckOutput("/out/j.mp4", 5),
        (CloseStream(), DiscardProgress()),
    )
    cancelled = decide(rendering().state, EventReceived(3, Cancelled()), 1.0)
    assert cancelled.next == WriteCancel()
    gone = decide(rendering().state, Refused(JobStatus.COMPLETED, 1), 1.0)
    assert (gone.next, gone.effects) == (Stop(), (CloseStream(),))

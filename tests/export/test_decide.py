"""The tracker's decisions, without I/O: generated worlds (hypothesis) drive ``decide`` through
long sequences of answers with advancing time, and a few decisions are checked one by one."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_service.config import TrackerSettings
from export_service.store import MAX_RUNNING_PROGRESS, JobStatus
from export_service.store.records import STAGE_VERIFYING
from export_service.tracking.actions import (
    BeginAttempt,
    CallRender,
    CheckOutput,
    CloseStream,
    DiscardProgress,
    DropProgress,
    FlushProgress,
    GetRender,
    MarkRenderReleased,
    NextStep,
    OfferProgress,
    OfferStage,
    ReadJob,
    ReadStream,
    ReleaseAttempt,
    RemoveOutput,
    Stop,
    Wait,
    WatchRender,
    WriteCancel,
    WriteComplete,
    WriteFail,
)
from export_service.tracking.attempt import (
    AttemptState,
    UnexpectedObservation,
    render_call_failure,
)
from export_service.tracking.decide import Decision, Phase, TrackerState, decide, start
from export_service.tracking.observations import (
    Cancelled,
    Completed,
    Draining,
    EventReceived,
    Failed,
    JobEnded,
    JobMissing,
    JobRead,
    NotPlaced,
    Observation,
    OutputChecked,
    Progress,
    Refused,
    RenderOutcome,
    RenderReport,
    RpcFailed,
    Stopping,
    StreamEnded,
    StreamSilent,
    TimerFired,
    Unreached,
    Written,
)
from videojob.limits import STAGE_WAITING_FOR_RENDER
from videojob.output_check import OutputFault, OutputProblem

TERMINAL_WRITES = (WriteComplete, WriteFail, WriteCancel)
UNREACHABLE_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
)
RPC_CODES = (
    *UNREACHABLE_CODES,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INVALID_ARGUMENT,
)
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
MISSING = OutputProblem(OutputFault.MISSING, "output '/out/j.mp4' does not exist")
EMPTY = OutputProblem(OutputFault.EMPTY, "output '/out/j.mp4' is empty")


@st.composite
def tracker_settings(draw: st.DrawFn) -> TrackerSettings:
    backoff_initial = draw(st.floats(0.05, 2.0))
    return TrackerSettings(
        stall_timeout=draw(st.floats(0.1, 30.0)),
        max_attempts=draw(st.integers(1, 6)),
        retry_budget=draw(st.floats(0.5, 60.0)),
        backoff_initial=backoff_initial,
        backoff_max=draw(st.floats(backoff_initial, 20.0)),
        rpc_timeout=draw(st.floats(0.1, 10.0)),
        max_quiet_rounds=draw(st.integers(1, 5)),
        output_wait=draw(st.floats(0.0, 30.0)),
    )


def followed(state: TrackerState) -> AttemptState:
    """The render attempt the tracker follows."""
    assert state.current is not None, state
    return state.current


def attempt_phase(state: TrackerState) -> str:
    """What the followed attempt asked last, while the tracker renders ("" otherwise)."""
    if state.phase is Phase.RENDERING and state.current is not None:
        return state.current.phase.value
    return ""


def outcome(rng: random.Random, terminal_weight: int) -> RenderOutcome:
    if rng.randrange(30 + terminal_weight) < 30:
        return Progress(
            percent=rng.uniform(-5.0, 120.0),
            stage=rng.choice(["Preparing", "Rendering", "Verifying"]),
            eta_seconds=rng.uniform(0.0, 100.0),
            heartbeat=rng.random() < 0.2,
        )
    match rng.randrange(3):
        case 0:
            return Completed(
                output_path=rng.choice(["/out/j.mp4", ""]),
                size_bytes=rng.randrange(11),
                duration_seconds=rng.uniform(0.0, 12.0),
            )
        case 1:
            code = rng.choice(["FFMPEG_ERROR", "SHUTDOWN", "SHUTDOWN", "INVALID_INPUT", ""])
            return Failed(
                code=code,
                message=rng.choice(["boom", ""]),
                field=rng.choice(["", "spec.source.transcode.input_path"]),
                never_started=code == "SHUTDOWN" and rng.random() < 0.5,
            )
    return Cancelled()


@dataclass
class World:
    """The test's own account of what the tracker was told, to judge its decisions by."""

    settings: TrackerSettings
    now: float = 1000.0
    render_seq: int = 0
    # Since when every render call has failed without an answer (None: it answered last).
    unreachable_since: float | None = None
    # Render calls in a row that brought no new event, not counting busy answers.
    quiet_calls: int = 0
    call_brought_event: bool = False
    terminal_write_committed: bool = False
    terminal_write_asked: bool = False


def answer(rng: random.Random, world: World, state: TrackerState, ask: NextStep) -> Observation:
    """A plausible answer to ``ask``, after the time it took. Choices come from ``rng`` seeded
    by hypothesis: uniform choices make long runs, where hypothesis' own favour early ends."""
    s = world.settings
    if rng.random() < 0.01:
        news: list[Observation] = [JobEnded(), Stopping()]
        return rng.choice(news)
    match ask:
        case ReadJob():
            world.now += rng.uniform(0.0, 0.05)
            if state.phase.value == "loading":
                if rng.random() < 0.05:
                    return JobMissing()
                attempt = rng.randint(1, s.max_attempts)
                return JobRead(
                    terminal=rng.random() < 0.05,
                    attempt=attempt,
                    last_render_seq=rng.choice([0, 0, rng.randint(1, 5)]),
                    expected_duration_seconds=rng.choice([None, rng.uniform(0.5, 10.0)]),
                    placed_attempts=tuple(range(1, attempt + rng.randrange(2))),
                    placed_by_create=rng.random() < 0.3,
                )
            terminal = rng.random() < 0.05
            last_seq = followed(state).last_seq
            return JobRead(terminal, state.attempt, last_seq, state.expected_duration)
        case CallRender() | WatchRender() | ReadStream():
            if not isinstance(ask, ReadStream):
                world.render_seq = followed(state).last_seq if isinstance(ask, WatchRender) else 0
            kind = rng.randrange(20)
            if kind < 16:
                world.now += rng.uniform(0.0, min(s.stall_timeout, 2.0))
                world.render_seq += rng.choice([0, 1, 1, 1, 2])  # 0: a replayed event
                # None: an event of a kind this service does not know.
                event = None if rng.random() < 0.02 else outcome(rng, 1)
                member = rng.choice(["", "render-a", "render-b"])
                return EventReceived(max(world.render_seq, 1), event, member)
            if kind < 17:
                world.now += rng.uniform(0.0, 1.0)
                return StreamEnded()
            if kind < 18:
                world.now += s.stall_timeout
                return StreamSilent(s.stall_timeout)
            world.now += rng.uniform(0.0, s.rpc_timeout)
            if isinstance(ask, CallRender) and rng.random() < 0.3:
                if rng.random() < 0.3:
                    return Unreached("render-a", "failed to connect to all addresses")
                if rng.random() < 0.5:
                    return Draining("render-a", "draining")
                return NotPlaced("every render service is draining", busy=rng.random() < 0.5)
            code = rng.choice((*RPC_CODES, *UNREACHABLE_CODES))
            others = rng.random() < 0.3
            return RpcFailed(code, "details", field="spec.output", others_available=others)
        case GetRender():
            world.now += rng.uniform(0.0, s.rpc_timeout)
            if rng.random() < 0.5:
                code = rng.choice((*RPC_CODES, *UNREACHABLE_CODES))
                return RpcFailed(code, "details", others_available=rng.random() < 0.3)
            event = rng.choice([None, outcome(rng, 10)])
            return RenderReport(world.render_seq + 1, event)
        case CheckOutput():
            world.now += rng.uniform(0.0, 0.1)
            return OutputChecked(rng.choice([None, MISSING, MISSING, MISSING, EMPTY]))
        case BeginAttempt(expected_attempt=expected):
            world.now += rng.uniform(0.0, 0.05)
            if rng.random() < 0.8:
                return Written(expected + 1)
            return Refused(rng.choice(list(JobStatus)), expected + 1)
        case WriteComplete() | WriteFail() | WriteCancel():
            world.now += rng.uniform(0.0, 0.05)
            if rng.random() < 0.8:
                return Written(state.attempt)
            return Refused(rng.choice(list(JobStatus)), state.attempt)
        case Wait(seconds=seconds):
            world.now += seconds + rng.uniform(0.0, 0.01)
            return TimerFired()
    raise AssertionError(f"nothing answers {ask!r}")


def observe(world: World, ask: NextStep, observation: Observation) -> None:
    """Updates the world's account with what the tracker was told."""
    if isinstance(ask, CallRender | WatchRender):
        world.call_brought_event = False
    if isinstance(observation, EventReceived):
        world.unreachable_since = None
        world.call_brought_event = True
        world.quiet_calls = 0
    elif isinstance(observation, RenderReport):
        world.unreachable_since = None
    elif isinstance(observation, RpcFailed):
        if observation.code in UNREACHABLE_CODES:
            # A broken stream is investigated first; an unanswered GetRender starts the clock.
            if world.unreachable_since is None and isinstance(ask, GetRender):
                world.unreachable_since = world.now
        elif observation.code != grpc.StatusCode.INVALID_ARGUMENT:
            world.unreachable_since = None
    if isinstance(observation, StreamEnded | StreamSilent) or (
        isinstance(observation, RpcFailed)
        and observation.code != grpc.StatusCode.RESOURCE_EXHAUSTED
        and isinstance(ask, CallRender | WatchRender | ReadStream)
    ):
        world.quiet_calls = 0 if world.call_brought_event else world.quiet_calls + 1
    if isinstance(observation, Written) and isinstance(ask, BeginAttempt):
        world.quiet_calls = 0
        world.unreachable_since = None  # a new render, perhaps elsewhere: patience anew


def check(world: World, before: TrackerState, seen: Observation, decision: Decision) -> None:
    s = world.settings
    state, ask = decision.state, decision.next
    assert isinstance(ask, NextStep.__args__)
    assert 1 <= state.attempt <= s.max_attempts
    if isinstance(ask, CallRender):
        assert ask.attempt <= s.max_attempts
    if isinstance(ask, Wait):
        assert ask.seconds > 0, f"a wait of nothing loops silently: {ask}"
        assert ask.seconds <= max(s.backoff_max, 2.0, s.output_wait_seconds) + 1e-9
    # A committed terminal write is the last write; after one is asked, no progress or attempt.
    writes = [
        a
        for a in (*decision.effects, ask)
        if isinstance(
            a,
            (
                OfferProgress,
                OfferStage,
                FlushProgress,
                BeginAttempt,
                DropProgress,
                *TERMINAL_WRITES,
            ),
        )
    ]
    if world.terminal_write_committed:
        assert isinstance(ask, Stop) and not writes, decision
        assert all(isinstance(e, RemoveOutput | MarkRenderReleased) for e in decision.effects)
    if world.terminal_write_asked:
        assert not [w for w in writes if not isinstance(w, TERMINAL_WRITES)], decision
    if isinstance(seen, JobEnded | Stopping):
        assert isinstance(ask, Stop)
    # A refusal that costs nothing (a draining render service, a render handed back before it
    # started, a full one while another has room) places the same attempt elsewhere at once;
    # nowhere to place it is waited out like a busy or unreachable render service.
    handed_back = (
        isinstance(seen, EventReceived)
        and seen.seq > followed(before).last_seq
        and isinstance(seen.event, Failed)
        and seen.event.never_started
    )
    full_here = (
        isinstance(seen, RpcFailed)
        and seen.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and seen.others_available
    )
    if attempt_phase(before) == "streaming" and (
        isinstance(seen, Draining | Unreached) or handed_back or full_here
    ):
        assert isinstance(ask, CallRender) and ask.elsewhere, decision
        assert ask.attempt == state.attempt == before.attempt
        # ... never again on a render service that refused it (until none is left).
        refusing = seen.instance_id if isinstance(seen, Draining | Unreached) else ""
        refusing = seen.member if isinstance(seen, RpcFailed | EventReceived) else refusing
        assert followed(before).avoid <= ask.avoid and (not refusing or refusing in ask.avoid)
    if attempt_phase(before) == "streaming" and isinstance(seen, NotPlaced):
        assert isinstance(ask, ReadJob) and state.attempt == before.attempt, decision
        assert followed(state).avoid == frozenset()
    # Only the first Render after the job's create may skip the lease's confirmation.
    if isinstance(ask, CallRender) and ask.lease_proven:
        assert isinstance(seen, JobRead) and seen.placed_by_create, decision
    # Only a new attempt releases the one it supersedes, and never the new one; at the start,
    # the superseded attempts recorded on the job are released again.
    for effect in decision.effects:
        if isinstance(effect, ReleaseAttempt) and before.phase.value == "loading":
            assert isinstance(seen, JobRead) and effect.attempt in seen.placed_attempts
            assert effect.attempt != seen.attempt == state.attempt
        elif isinstance(effect, ReleaseAttempt):
            assert isinstance(seen, Written) and before.phase.value == "beginning attempt"
            assert effect.attempt == before.attempt < state.attempt
    # The tracker's own stages: Verifying, once, when a completed render's output is not seen
    # at the first look; "Waiting for a render service", shown once a wait for an unanswering
    # render service begins, and only then; a heartbeat is offered only to put the render's
    # stage back over it.
    for effect in decision.effects:
        if effect == OfferStage(STAGE_VERIFYING):
            assert before.phase.value == "checking output" and before.completion is not None
            assert not before.completion.shown_verifying, decision
            assert isinstance(ask, Wait) and ask.then == "checking again", decision
        elif isinstance(effect, OfferStage):
            assert effect == OfferStage(STAGE_WAITING_FOR_RENDER), decision
            assert not followed(before).showing_wait and followed(state).showing_wait, decision
            assert isinstance(ask, Wait) and ask.then == "asking again", decision
            assert getattr(followed(before).retry, "busy", True) is False, decision
    if (
        isinstance(seen, EventReceived)
        and isinstance(seen.event, Progress)
        and seen.event.heartbeat
        and seen.seq > followed(before).last_seq
    ):
        offered = any(isinstance(e, OfferProgress) for e in decision.effects)
        assert offered == followed(before).showing_wait, decision
        assert not followed(state).showing_wait
    if isinstance(seen, EventReceived) and seen.event is None:
        assert (ask, decision.effects) == (ReadStream(), ()), decision  # proof of life only
    # Give-ups no later than their budgets.
    if world.unreachable_since is not None and isinstance(ask, Wait) and ask.then == "asking again":
        assert world.now + ask.seconds <= world.unreachable_since + s.retry_budget + 1e-6
    if (
        isinstance(seen, JobRead)
        and not seen.terminal
        and world.unreachable_since is not None
        and world.now - world.unreachable_since >= s.retry_budget
        and attempt_phase(before) == "confirming"
        and getattr(followed(before).retry, "busy", True) is False
    ):
        assert isinstance(ask, WriteFail) and ask.code == "RENDER_UNAVAILABLE", decision
    if (
        isinstance(seen, RenderReport)
        and not isinstance(seen.last_event, Completed | Failed | Cancelled)
        and world.quiet_calls >= s.max_quiet_rounds
    ):
        assert isinstance(ask, WriteFail) and ask.code == "RENDER_STALLED", decision


def run_world(rng: random.Random, world: World, steps: int) -> tuple[Decision, list[Decision]]:
    decision = start(world.settings, seed=rng.getrandbits(64))
    history = [decision]
    for _ in range(steps):
        if isinstance(decision.next, Stop):
            break
        ask = decision.next
        seen = answer(rng, world, decision.state, ask)
        observe(world, ask, seen)
        if isinstance(ask, TERMINAL_WRITES):
            world.terminal_write_asked = True
            world.terminal_write_committed = isinstance(seen, Written)
        before = decision.state
        decision = decide(before, seen, world.now)
        check(world, before, seen, decision)
        history.append(decision)
    return decision, history


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tracker_settings(), st.integers(0, 2**64 - 1))
def test_every_decision_ends_or_keeps_asking(settings_: TrackerSettings, world_seed: int) -> None:
    world = World(settings_)
    last, history = run_world(random.Random(world_seed), world, steps=400)
    for decision in history:
        assert isinstance(decision.next, Stop) == (decision.state.phase.value == "stopped")
    if isinstance(last.next, Stop):
        with pytest.raises(UnexpectedObservation):
            decide(last.state, TimerFired(), world.now)


Reply = Callable[[NextStep, float], tuple[Observation, float]]


def drive(
    settings_: TrackerSettings, seed: int, reply: Reply, first_seq: int = 0, limit: int = 10_000
) -> tuple[Decision, float, list[Decision]]:
    """Answers every question the same way (``reply(ask, now)``) until Stop."""
    decision = start(settings_, seed)
    now = 0.0
    history = [decision]
    for _ in range(limit):
        if isinstance(decision.next, Stop):
            return decision, now, history
        ask = decision.next
        if isinstance(ask, Wait):
            now += ask.seconds
            seen: Observation = TimerFired()
        elif isinstance(ask, ReadJob):
            seen = JobRead(False, decision.state.attempt or 1, first_seq, None)
        elif isinstance(ask, BeginAttempt):
            seen = Written(ask.expected_attempt + 1)
        elif isinstance(ask, TERMINAL_WRITES):
            seen = Written(decision.state.attempt)
        else:
            seen, spent = reply(ask, now)
            now += spent
        decision = decide(decision.state, seen, now)
        history.append(decision)
    raise AssertionError("the tracker never stopped")


def final_failure(history: list[Decision]) -> WriteFail:
    fails = [d.next for d in history if isinstance(d.next, WriteFail)]
    assert len(fails) == 1
    return fails[0]


@settings(max_examples=50, deadline=None)
@given(tracker_settings(), st.integers(0, 2**32), st.integers(0, 3))
def test_an_unreachable_render_service_fails_the_job_within_the_budget(
    settings_: TrackerSettings, seed: int, first_seq: int
) -> None:
    def unreachable(ask: NextStep, now: float) -> tuple[Observation, float]:
        return RpcFailed(grpc.StatusCode.UNAVAILABLE, "connection refused"), 0.0

    _, stopped_at, history = drive(settings_, seed, unreachable, first_seq)
    failure = final_failure(history)
    assert failure.code == "RENDER_UNAVAILABLE" and failure.release_render
    assert stopped_at <= settings_.retry_budget + 1e-6


@settings(max_examples=50, deadline=None)
@given(tracker_settings(), st.integers(0, 2**32))
def test_a_render_lost_again_and_again_fails_after_max_attempts(
    settings_: TrackerSettings, seed: int
) -> None:
    def lost(ask: NextStep, now: float) -> tuple[Observation, float]:
        return RpcFailed(grpc.StatusCode.NOT_FOUND, "unknown render"), 0.01

    _, _, history = drive(settings_, seed, lost)
    renders = [d.next for d in history if isinstance(d.next, CallRender)]
    assert [r.attempt for r in renders] == list(range(1, settings_.max_attempts + 1))
    failure = final_failure(history)
    assert failure.code == "RENDER_LOST"
    assert f"gave up after {settings_.max_attempts} attempts" in failure.message


@settings(max_examples=50, deadline=None)
@given(tracker_settings(), st.integers(0, 2**32))
def test_a_silent_render_fails_stalled_after_max_quiet_rounds(
    settings_: TrackerSettings, seed: int
) -> None:
    def silent(ask: NextStep, now: float) -> tuple[Observation, float]:
        if isinstance(ask, GetRender):
            return RenderReport(3, Progress(40.0, "Rendering", 5.0)), 0.01
        return StreamSilent(settings_.stall_timeout), settings_.stall_timeout

    _, _, history = drive(settings_, seed, silent, first_seq=3)
    watches = [d.next for d in history if isinstance(d.next, WatchRender)]
    assert len(watches) == settings_.max_quiet_rounds
    assert final_failure(history).code == "RENDER_STALLED"


@settings(max_examples=50, deadline=None)
@given(tracker_settings(), st.integers(0, 2**32))
def test_a_missing_output_fails_the_job_once_the_output_wait_is_over(
    settings_: TrackerSettings, seed: int
) -> None:
    def completed_but_missing(ask: NextStep, now: float) -> tuple[Observation, float]:
        if isinstance(ask, CheckOutput):
            return OutputChecked(MISSING), 0.0
        return EventReceived(1, Completed("/out/j.mp4", 5, 2.0)), 0.0

    _, stopped_at, history = drive(settings_, seed, completed_but_missing)
    failure = final_failure(history)
    assert failure.code == "VERIFICATION_FAILED" and "does not exist" in failure.message
    assert stopped_at <= settings_.output_wait_seconds + 1e-6
    assert history[-1].effects == (RemoveOutput("/out/j.mp4"),)


@settings(max_examples=50, deadline=None)
@given(tracker_settings(), st.integers(0, 2**32))
def test_a_store_that_never_answers_costs_every_attempt_then_fails_the_job_saying_so(
    settings_: TrackerSettings, seed: int
) -> None:
    """STORAGE_UNAVAILABLE (the render could not fetch its inputs or store its output) is worth
    another attempt; with none left the job fails with the store's own reason."""
    store_down = Failed("STORAGE_UNAVAILABLE", "the output could not be stored: no answer")

    def unavailable(ask: NextStep, now: float) -> tuple[Observation, float]:
        return EventReceived(1, store_down), 0.0

    _, _, history = drive(settings_, seed, unavailable)
    renders = [d.next for d in history if isinstance(d.next, CallRender)]
    assert [render.attempt for render in renders] == list(range(1, settings_.max_attempts + 1))
    failure = final_failure(history)
    assert failure.code == "STORAGE_UNAVAILABLE"
    assert failure.message == (
        f"the output could not be stored: no answer; "
        f"gave up after {settings_.max_attempts} attempts"
    )


UNREACHABLE = OutputProblem(
    OutputFault.UNREACHABLE, "output s3://b/j.mp4 cannot be reached (no answer)"
)


def test_an_output_the_store_never_showed_fails_storage_unavailable_never_completed() -> None:
    done = decide(streaming(), EventReceived(4, Completed("s3://b/j.mp4", 5, 2.0)), 100.0)
    decision = decide(done.state, OutputChecked(UNREACHABLE), 100.0)
    now = 100.0
    while isinstance(decision.next, Wait):
        now += decision.next.seconds
        recheck = decide(decision.state, TimerFired(), now)
        decision = decide(recheck.state, OutputChecked(UNREACHABLE), now)
    assert decision.next == WriteFail(
        "STORAGE_UNAVAILABLE",
        "the render reported completion but output s3://b/j.mp4 cannot be reached (no answer)",
        release_render=True,
    )
    assert now == pytest.approx(100.0 + SETTINGS.output_wait_seconds)
    # The store answering before the wait is over completes the job.
    answered = decide(done.state, OutputChecked(UNREACHABLE), 100.0)
    recheck = decide(answered.state, TimerFired(), 100.1)
    assert decide(recheck.state, OutputChecked(None), 100.1).next == WriteComplete(
        "s3://b/j.mp4", 5, 2.0, 4
    )


# Single decisions.


def streaming(last_seq: int = 0, expected: float | None = 2.0) -> TrackerState:
    decision = decide(start(SETTINGS, seed=7).state, JobRead(False, 1, last_seq, expected), 0.0)
    return decision.state


def test_start_submits_a_new_render_and_reattaches_to_a_known_one() -> None:
    first = start(SETTINGS, seed=1)
    assert first.next == ReadJob()
    assert decide(first.state, JobRead(False, 2, 0, None), 0.0).next == CallRender(2)
    assert decide(first.state, JobRead(False, 2, 7, None), 0.0).next == WatchRender(7)
    assert decide(first.state, JobRead(True, 2, 7, None), 0.0).next == Stop()
    assert decide(first.state, JobMissing(), 0.0).next == Stop()


def test_the_start_releases_superseded_attempts_again() -> None:
    """Attempts given up for a newer one may still run where their render service did not
    answer the release: each is released again when the job is tracked, before its render is
    followed; the current attempt never is, nor anything for a job that ended."""
    first = start(SETTINGS, seed=1).state
    resumed = decide(first, JobRead(False, 3, 5, None, placed_attempts=(1, 2, 3)), 0.0)
    assert resumed.next == WatchRender(5)
    assert resumed.effects == (ReleaseAttempt(1), ReleaseAttempt(2))
    # The current attempt not placed yet: only the older ones.
    placing = decide(first, JobRead(False, 2, 0, None, placed_attempts=(1,)), 0.0)
    assert (placing.next, placing.effects) == (CallRender(2), (ReleaseAttempt(1),))
    ended = decide(first, JobRead(True, 3, 5, None, placed_attempts=(1, 2, 3)), 0.0)
    assert (ended.next, ended.effects) == (Stop(), ())
    # Read again before a retry, the job's attempts are not released again.
    broke = decide(resumed.state, StreamEnded(), 1.0)
    confirm = decide(broke.state, RpcFailed(grpc.StatusCode.UNAVAILABLE, "refused"), 1.0)
    wait = decide(confirm.state, JobRead(False, 3, 5, None, placed_attempts=(1, 2, 3)), 1.0)
    assert isinstance(wait.next, Wait)
    assert not [e for e in wait.effects if isinstance(e, ReleaseAttempt)]


def test_only_the_first_render_of_a_job_its_create_placed_skips_confirming_the_lease() -> None:
    """The create's fenced insert of the placement proves the lease for the first Render; any
    later Render of the job confirms it (or places the render anew) with a write."""
    first = start(SETTINGS, seed=1).state
    created = decide(first, JobRead(False, 1, 0, 2.0, placed_by_create=True), 0.0)
    assert created.next == CallRender(1, lease_proven=True)
    read = decide(first, JobRead(False, 1, 0, 2.0), 0.0)
    assert read.next == CallRender(1)
    # Refused there: placed again, proven by that placement's own write.
    elsewhere = decide(created.state, Draining("render-a", "draining"), 1.0)
    assert elsewhere.next == CallRender(1, elsewhere=True, avoid=frozenset({"render-a"}))
    # Asked again after a busy answer: the lease confirmed.
    busy = decide(created.state, RpcFailed(grpc.StatusCode.RESOURCE_EXHAUSTED, "full"), 1.0)
    wait = decide(busy.state, JobRead(False, 1, 0, 2.0, placed_by_create=True), 1.0)
    assert isinstance(wait.next, Wait)
    assert decide(wait.state, TimerFired(), 1.0 + wait.next.seconds).next == CallRender(1)


def test_progress_is_offered_below_100_and_replayed_events_are_skipped() -> None:
    state = streaming()
    offered = decide(state, EventReceived(1, Progress(120.0, "Rendering", 3.0)), 1.0)
    assert offered.next == ReadStream()
    assert offered.effects == (OfferProgress(MAX_RUNNING_PROGRESS, "Rendering", 3.0, 1),)
    replayed = decide(offered.state, EventReceived(1, Progress(50.0, "Rendering", 3.0)), 1.1)
    assert (replayed.next, replayed.effects) == (ReadStream(), ())
    heartbeat = decide(offered.state, EventReceived(2, Progress(0.0, "", 0.0, heartbeat=True)), 2)
    last_seq = followed(heartbeat.state).last_seq
    assert (heartbeat.next, heartbeat.effects, last_seq) == (ReadStream(), (), 2)


def test_an_event_of_an_unknown_kind_only_proves_life() -> None:
    """A newer render service's event this service cannot read: the render lives, nothing is
    offered, not even over the tracker's own waiting stage (a heartbeat would put the render's
    stage back; this event has none)."""
    running = decide(streaming(), EventReceived(3, Progress(40.0, "Rendering", 12.0)), 0.5)
    broke = decide(running.state, StreamEnded(), 1.0)
    wait = unanswered(broke.state, 1.0, grpc.StatusCode.UNAVAILABLE)
    assert isinstance(wait.next, Wait) and wait.effects == (OfferStage(STAGE_WAITING_FOR_RENDER),)
    ask = decide(wait.state, TimerFired(), 1.0 + wait.next.seconds)
    report = decide(ask.state, RenderReport(4, Progress(40.0, "Rendering", 9.0)), 2.0)
    assert report.next == WatchRender(3)
    unknown = decide(report.state, EventReceived(4, None), 2.1)
    assert (unknown.next, unknown.effects) == (ReadStream(), ())
    assert followed(unknown.state).last_seq == 4 and followed(unknown.state).showing_wait
    # It counts as an event of the round: the stream is not quiet.
    ended = decide(unknown.state, StreamEnded(), 2.2)
    assert followed(ended.state).quiet_rounds == 0


def test_a_completion_is_checked_then_written() -> None:
    done = decide(streaming(), EventReceived(4, Completed("/out/j.mp4", 5, 2.2)), 10.0)
    assert done.effects == (CloseStream(), DiscardProgress())
    assert done.next == CheckOutput("/out/j.mp4", 5)
    write = decide(done.state, OutputChecked(None), 10.1)
    assert write.next == WriteComplete("/out/j.mp4", 5, 2.2, 4)
    assert decide(write.state, Written(1), 10.2).next == Stop()
    cancelled = decide(write.state, Refused(JobStatus.CANCELLED, 1), 10.2)
    assert (cancelled.next, cancelled.effects) == (Stop(), (RemoveOutput("/out/j.mp4"),))


def test_a_stored_object_is_checked_with_the_store_s_checksum_and_its_sha256_written() -> None:
    url, sha256, checksum = "s3://b/renders/j.mp4", "ab" * 32, "c2hh-1"
    event = Completed(url, 5, 2.2, sha256=sha256, store_checksum=checksum)
    done = decide(streaming(), EventReceived(4, event), 10.0)
    assert done.next == CheckOutput(url, 5, checksum)
    recheck = decide(done.state, OutputChecked(MISSING), 10.0)
    assert isinstance(recheck.next, Wait)
    again = decide(recheck.state, TimerFired(), 10.2)
    assert again.next == CheckOutput(url, 5, checksum)
    write = decide(again.state, OutputChecked(None), 10.3)
    assert write.next == WriteComplete(url, 5, 2.2, 4, output_sha256=sha256)


def test_a_wrong_duration_fails_verification_and_removes_the_file() -> None:
    done = decide(streaming(expected=2.0), EventReceived(4, Completed("/out/j.mp4", 5, 3.0)), 1)
    assert done.next == WriteFail(
        "VERIFICATION_FAILED",
        "the render reported 3.00 s of video, expected 2.00 s",
        release_render=True,
    )
    written = decide(done.state, Written(1), 2.0)
    assert (written.next, written.effects) == (Stop(), (RemoveOutput("/out/j.mp4"),))


def test_a_missing_file_is_looked_for_until_the_output_wait_is_over() -> None:
    done = decide(streaming(), EventReceived(4, Completed("/out/j.mp4", 5, 2.0)), 100.0)
    waits = []
    decision = decide(done.state, OutputChecked(MISSING), 100.0)
    offered = [decision.effects]
    now = 100.0
    while isinstance(decision.next, Wait):
        waits.append(decision.next.seconds)
        now += decision.next.seconds
        recheck = decide(decision.state, TimerFired(), now)
        assert recheck.next == CheckOutput("/out/j.mp4", 5)
        decision = decide(recheck.state, OutputChecked(MISSING), now)
        offered.append(decision.effects)
    # The job shows that it is verifying while it waits: once, not at every look.
    assert offered[0] == (OfferStage(STAGE_VERIFYING),)
    assert all(effects == () for effects in offered[1:])
    assert waits[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert sum(waits) == pytest.approx(SETTINGS.output_wait_seconds)
    assert isinstance(decision.next, WriteFail) and decision.next.code == "VERIFICATION_FAILED"
    lasting = decide(done.state, OutputChecked(EMPTY), 100.0)
    assert isinstance(lasting.next, WriteFail) and "is empty" in lasting.next.message


def test_a_render_verdict_carries_its_field_and_releases_nothing() -> None:
    failed = Failed("INVALID_INPUT", "no such file", "spec.source.transcode.input_path")
    decision = decide(streaming(), EventReceived(2, failed), 1.0)
    assert decision.next == WriteFail(
        "INVALID_INPUT", "no such file", "spec.source.transcode.input_path", release_render=False
    )


def test_a_shut_down_render_is_resubmitted_as_the_next_attempt() -> None:
    lost = decide(streaming(), EventReceived(3, Failed("SHUTDOWN", "stopping")), 1.0)
    assert lost.next == ReadJob()
    wait = decide(lost.state, JobRead(False, 1, 3, 2.0), 1.1)
    assert isinstance(wait.next, Wait) and "resubmitting as attempt 2" in wait.next.then
    assert SETTINGS.backoff_initial / 2 <= wait.next.seconds <= SETTINGS.backoff_initial
    begin = decide(wait.state, TimerFired(), 2.0)
    assert (begin.next, begin.effects) == (BeginAttempt(1), (DropProgress(),))
    assert decide(begin.state, Written(2), 2.1).next == CallRender(2)
    assert decide(begin.state, Refused(JobStatus.CANCELLED, 1), 2.1).next == Stop()
    assert decide(lost.state, JobRead(True, 1, 3, 2.0), 1.1).next == Stop()


def test_invalid_argument_judges_the_spec_only_at_render() -> None:
    invalid = RpcFailed(grpc.StatusCode.INVALID_ARGUMENT, "bad crf", field="spec.output.crf")
    at_render = decide(streaming(), invalid, 1.0)
    assert at_render.next == WriteFail("INVALID_INPUT", "bad crf", "spec.output.crf")
    at_watch = decide(streaming(last_seq=4), invalid, 1.0)
    assert at_watch.next == GetRender("the render stream broke (INVALID_ARGUMENT)")


def unanswered(state: TrackerState, now: float, code: grpc.StatusCode) -> Decision:
    """A GetRender (or Render) the render service did not answer, and the job read again."""
    confirm = decide(state, RpcFailed(code, "connection refused"), now)
    assert confirm.next == ReadJob(), confirm
    return decide(confirm.state, JobRead(False, 1, 3, 2.0), now)


def test_a_render_service_that_does_not_answer_shows_as_waited_for_until_events_flow() -> None:
    """The stream breaks and GetRender finds nobody: the job says "Waiting for a render
    service" (once, whatever the rounds), until the render's next event puts its own stage
    back, a heartbeat included."""
    running = decide(streaming(), EventReceived(3, Progress(40.0, "Rendering", 12.0)), 0.5)
    broke = decide(running.state, RpcFailed(grpc.StatusCode.UNAVAILABLE, "reset"), 1.0)
    assert broke.next == GetRender("the render stream broke (UNAVAILABLE)")
    wait = unanswered(broke.state, 1.0, grpc.StatusCode.UNAVAILABLE)
    assert isinstance(wait.next, Wait) and wait.next.then == "asking again"
    assert wait.effects == (OfferStage(STAGE_WAITING_FOR_RENDER),)
    assert followed(wait.state).showing_wait
    now = 1.0
    for code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, None):
        assert isinstance(wait.next, Wait)
        now += wait.next.seconds
        ask = decide(wait.state, TimerFired(), now)
        assert isinstance(ask.next, GetRender)
        if code is None:
            break
        wait = unanswered(ask.state, now, code)
        assert wait.effects == ()  # shown once
    # It answers: the render runs; re-attached, its heartbeat brings its stage back.
    report = decide(ask.state, RenderReport(5, Progress(41.0, "Rendering", 11.0)), now)
    assert report.next == WatchRender(3) and report.effects == ()
    beat = Progress(41.0, "Rendering", 11.0, heartbeat=True)
    back = decide(report.state, EventReceived(6, beat), now + 0.1)
    assert back.effects == (OfferProgress(41.0, "Rendering", 11.0, 6),)
    assert not followed(back.state).showing_wait
    again = decide(back.state, EventReceived(7, beat), now + 1.1)
    assert again.effects == ()  # a heartbeat is offered only over the tracker's own stage


def test_the_stage_of_a_new_attempt_replaces_the_wait() -> None:
    """A render service that comes back without the render: the next attempt's own progress
    replaces the waiting stage (and the wait is not shown again when nothing needs it)."""
    broke = decide(streaming(last_seq=3), StreamEnded(), 1.0)
    wait = unanswered(broke.state, 1.0, grpc.StatusCode.UNAVAILABLE)
    assert isinstance(wait.next, Wait) and wait.effects == (OfferStage(STAGE_WAITING_FOR_RENDER),)
    ask = decide(wait.state, TimerFired(), 1.0 + wait.next.seconds)
    lost = decide(ask.state, RpcFailed(grpc.StatusCode.NOT_FOUND, "unknown render"), 2.0)
    resubmit = decide(lost.state, JobRead(False, 1, 3, 2.0), 2.0)
    assert isinstance(resubmit.next, Wait) and resubmit.effects == ()
    begin = decide(resubmit.state, TimerFired(), 3.0)
    render = decide(begin.state, Written(2), 3.0)
    assert render.next == CallRender(2) and followed(render.state).showing_wait
    first = decide(render.state, EventReceived(1, Progress(0.0, "Preparing", 0.0)), 3.1)
    assert first.effects == (OfferProgress(0.0, "Preparing", 0.0, 1),)
    assert not followed(first.state).showing_wait


def test_a_busy_render_service_or_a_budget_spent_shows_no_wait() -> None:
    busy = decide(streaming(), RpcFailed(grpc.StatusCode.RESOURCE_EXHAUSTED, "full"), 1.0)
    wait = decide(busy.state, JobRead(False, 1, 0, 2.0), 1.0)
    assert isinstance(wait.next, Wait) and wait.effects == ()
    broke = decide(streaming(last_seq=3), StreamEnded(), 0.0)
    ask = decide(broke.state, RpcFailed(grpc.StatusCode.UNAVAILABLE, "refused"), 0.0)
    gave_up = decide(ask.state, JobRead(False, 1, 3, 2.0), SETTINGS.retry_budget)
    assert isinstance(gave_up.next, WriteFail) and gave_up.effects == ()
    assert gave_up.next.code == "RENDER_UNAVAILABLE"


def test_a_busy_render_service_is_asked_again_without_limit_and_with_growing_backoff() -> None:
    decision = decide(start(SETTINGS, seed=3).state, JobRead(False, 1, 0, None), 0.0)
    now, waits = 0.0, []
    for _ in range(200):
        busy = RpcFailed(grpc.StatusCode.RESOURCE_EXHAUSTED, "100 renders running")
        confirm = decide(decision.state, busy, now)
        wait = decide(confirm.state, JobRead(False, 1, 0, None), now)
        assert isinstance(wait.next, Wait) and wait.next.then == "asking again"
        waits.append(wait.next.seconds)
        now += wait.next.seconds
        decision = decide(wait.state, TimerFired(), now)
        assert decision.next == CallRender(1)
    assert now > SETTINGS.retry_budget * 10
    assert waits[0] <= SETTINGS.backoff_initial and max(waits) > SETTINGS.backoff_max / 2


def test_news_from_outside_stops_whatever_was_asked() -> None:
    for news in (JobEnded(), Stopping()):
        stopped = decide(streaming(), news, 1.0)
        assert (stopped.next, stopped.effects) == (Stop(), (CloseStream(),))
        with pytest.raises(UnexpectedObservation):
            decide(stopped.state, EventReceived(1, Cancelled()), 1.0)


def test_an_answer_to_another_question_is_a_bug() -> None:
    with pytest.raises(UnexpectedObservation):
        decide(streaming(), TimerFired(), 1.0)
    with pytest.raises(UnexpectedObservation):
        decide(start(SETTINGS).state, StreamEnded(), 1.0)


def test_the_jitter_comes_from_the_seed() -> None:
    def first_wait(seed: int) -> float:
        state = decide(start(SETTINGS, seed).state, JobRead(False, 1, 0, None), 0.0).state
        investigate = decide(state, StreamEnded(), 0.0)
        assert isinstance(investigate.next, GetRender)
        confirm = decide(investigate.state, RpcFailed(grpc.StatusCode.UNAVAILABLE, "down"), 0.0)
        wait = decide(confirm.state, JobRead(False, 1, 0, None), 0.0).next
        assert isinstance(wait, Wait)
        return wait.seconds

    assert first_wait(11) == first_wait(11)
    assert len({first_wait(seed) for seed in range(20)}) > 1


def test_a_cancel_reported_by_the_render_service_is_recorded_and_released() -> None:
    cancelling = decide(streaming(), EventReceived(2, Cancelled()), 1.0)
    assert cancelling.next == WriteCancel()
    written = decide(cancelling.state, Written(1), 1.1)
    assert (written.next, written.effects) == (Stop(), (MarkRenderReleased(),))
    assert decide(cancelling.state, Refused(JobStatus.COMPLETED, 1), 1.1).next == Stop()


# A pool of render services.


def test_a_draining_refusal_places_the_same_attempt_elsewhere_at_once() -> None:
    for refusal in (Draining("render-a", "draining"), Unreached("render-a", "no connection")):
        refused = decide(streaming(), refusal, 1.0)
        placed_elsewhere = CallRender(1, elsewhere=True, avoid=frozenset({"render-a"}))
        assert (refused.next, refused.effects) == (placed_elsewhere, (CloseStream(),))
        assert refused.state.attempt == 1


def test_what_a_failed_render_call_means_is_decided_from_its_facts() -> None:
    def failure(
        submitted: bool, draining: bool, never_connected: bool, others: bool
    ) -> Observation:
        return render_call_failure(
            grpc.StatusCode.UNAVAILABLE,
            "why",
            member="render-a",
            submitted=submitted,
            draining=draining,
            never_connected=never_connected,
            others_usable=others,
            others_with_room=others,
        )

    assert failure(True, True, False, True) == Draining("render-a", "why")
    # Only a Render is refused for draining or unreached; a watch of a running render is not.
    assert failure(False, True, False, True) == RpcFailed(
        grpc.StatusCode.UNAVAILABLE, "why", others_available=True, member="render-a"
    )
    assert failure(True, False, True, True) == Unreached("render-a", "why")
    # Unreached with nowhere else to go: waited for instead, like any unavailable service.
    assert isinstance(failure(True, False, True, False), RpcFailed)


def test_a_busy_render_service_fails_over_only_to_one_with_room() -> None:
    """Somewhere to fail over to: for a full render service, another with room; for one that
    failed otherwise, any other usable one (full or not)."""

    def failure(code: grpc.StatusCode, *, usable: bool, room: bool) -> Observation:
        return render_call_failure(
            code,
            "why",
            member="render-a",
            submitted=True,
            draining=False,
            never_connected=False,
            others_usable=usable,
            others_with_room=room,
        )

    full = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failure(full, usable=True, room=False) == RpcFailed(full, "why", member="render-a")
    assert failure(full, usable=True, room=True) == RpcFailed(
        full, "why", others_available=True, member="render-a"
    )
    down = grpc.StatusCode.UNAVAILABLE
    assert failure(down, usable=True, room=False) == RpcFailed(
        down, "why", others_available=True, member="render-a"
    )
    # The whole way: a full service with nowhere that has room is asked again later.
    busy = decide(streaming(), failure(full, usable=True, room=False), 1.0)
    assert busy.next == ReadJob()


def test_render_services_that_failed_the_job_are_avoided_until_none_is_left() -> None:
    busy = RpcFailed(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "full", others_available=True, member="render-a"
    )
    first = decide(streaming(), busy, 1.0)
    assert first.next == CallRender(1, elsewhere=True, avoid=frozenset({"render-a"}))
    # The second refuses too: both avoided ...
    second = decide(first.state, Draining("render-b", "draining"), 2.0)
    assert second.next == CallRender(1, elsewhere=True, avoid=frozenset({"render-a", "render-b"}))
    # ... until nowhere is left: the wait starts afresh with every render service.
    nowhere = decide(second.state, NotPlaced("all refused", busy=True), 3.0)
    assert followed(nowhere.state).avoid == frozenset()
    # An answer that is not a fail-over (an invalid spec) avoids nobody.
    invalid = RpcFailed(grpc.StatusCode.INVALID_ARGUMENT, "bad", others_available=True, member="c")
    assert followed(decide(streaming(), invalid, 1.0).state).avoid == frozenset()


def test_a_placement_refused_by_the_store_is_judged_by_decide() -> None:
    ended = decide(streaming(), Refused(JobStatus.CANCELLED, 1), 1.0)
    assert ended.state.phase is Phase.STOPPED
    gone = decide(streaming(), JobMissing(), 1.0)
    assert gone.state.phase is Phase.STOPPED
    # Another attempt began meanwhile: investigated (GetRender), then followed.
    moved = decide(streaming(), Refused(JobStatus.RUNNING, 2), 1.0)
    assert isinstance(moved.next, GetRender) and CloseStream() in moved.effects


def test_a_render_handed_back_before_it_started_costs_no_attempt() -> None:
    handed_back = Failed("SHUTDOWN", "draining", never_started=True)
    decision = decide(streaming(), EventReceived(2, handed_back), 1.0)
    assert decision.next == CallRender(1, elsewhere=True)
    assert DropProgress() in decision.effects
    # Without never_started, SHUTDOWN is a lost render (the next attempt, after a backoff).
    lost = decide(streaming(), EventReceived(2, Failed("SHUTDOWN", "stopping")), 1.0)
    assert lost.next == ReadJob()


def test_a_render_handed_back_is_not_placed_again_where_it_was_handed_back() -> None:
    """The render service that handed the render back joins the services avoided for it, as
    one that refused it would: from its stream's event, or from GetRender's answer."""
    handed_back = Failed("SHUTDOWN", "draining", never_started=True)
    streamed = decide(streaming(), EventReceived(2, handed_back, "render-a"), 1.0)
    assert streamed.next == CallRender(1, elsewhere=True, avoid=frozenset({"render-a"}))
    investigating = decide(streaming(last_seq=1), StreamEnded(), 1.0).state
    reported = decide(investigating, RenderReport(2, handed_back, "render-b"), 1.0)
    assert reported.next == CallRender(1, elsewhere=True, avoid=frozenset({"render-b"}))
    # Both kept until none is left to choose.
    again = decide(streamed.state, EventReceived(1, handed_back, "render-b"), 2.0)
    assert again.next == CallRender(1, elsewhere=True, avoid=frozenset({"render-a", "render-b"}))


def test_a_full_render_service_sends_the_render_elsewhere_only_when_another_has_room() -> None:
    full = RpcFailed(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", others_available=True)
    assert decide(streaming(), full, 1.0).next == CallRender(1, elsewhere=True)
    alone = RpcFailed(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")
    assert decide(streaming(), alone, 1.0).next == ReadJob()  # busy: asked again later


def test_nowhere_to_place_is_waited_out_without_costing_an_attempt() -> None:
    busy = decide(streaming(), NotPlaced("all draining", busy=True), 1.0)
    wait = decide(busy.state, JobRead(False, 1, 0, 2.0), 1.1)
    assert isinstance(wait.next, Wait) and wait.next.then == "asking again"
    assert decide(wait.state, TimerFired(), 1.1 + wait.next.seconds).next == CallRender(1)


def failover(observation: RpcFailed, now: float, state: TrackerState | None = None) -> Decision:
    """From a GetRender answer to the next Render: confirm, begin the next attempt, Render."""
    investigating = state or decide(streaming(last_seq=3), StreamEnded(), 0.0).state
    confirm = decide(investigating, observation, now)
    assert confirm.next == ReadJob(), confirm
    begin = decide(confirm.state, JobRead(False, 1, 3, 2.0), now)
    assert begin.next == BeginAttempt(1), begin
    return decide(begin.state, Written(2), now)


def test_a_render_service_that_refuses_connections_fails_over_at_once() -> None:
    refused = RpcFailed(grpc.StatusCode.UNAVAILABLE, "connection refused", others_available=True)
    moved = failover(refused, 1.0)
    assert moved.next == CallRender(2, elsewhere=True)
    assert moved.effects == (ReleaseAttempt(1, service_lost=True),)
    assert (followed(moved.state).unreachable_since, followed(moved.state).retry_rounds) == (
        None,
        0,
    )


def test_a_render_service_that_no_longer_knows_the_render_fails_over_at_once() -> None:
    not_found = RpcFailed(grpc.StatusCode.NOT_FOUND, "unknown render", others_available=True)
    moved = failover(not_found, 1.0)
    assert moved.next == CallRender(2, elsewhere=True)
    assert moved.effects == (ReleaseAttempt(1, service_lost=False),)


def test_a_silent_render_service_fails_over_after_failover_after_not_the_budget() -> None:
    settings_ = SETTINGS  # failover_after 15 s < retry_budget 20 s
    timeout = RpcFailed(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", others_available=True)
    state = decide(streaming(last_seq=3), StreamEnded(), 0.0).state
    now = 0.0
    for _ in range(100):
        decision = decide(state, timeout, now)
        assert decision.next == ReadJob()
        after = decide(decision.state, JobRead(False, 1, 3, 2.0), now)
        if isinstance(after.next, BeginAttempt):
            break
        assert isinstance(after.next, Wait) and after.next.then == "asking again"
        now += after.next.seconds
        state = decide(after.state, TimerFired(), now).state
    assert isinstance(after.next, BeginAttempt)
    assert settings_.failover_after <= now < settings_.retry_budget


def test_importing_decide_loads_no_database_driver() -> None:
    """decide is pure: it needs the job's models, not the stores that keep them."""
    heavy = (
        "asyncpg",
        "sqlite3",
        "export_service.store.postgres",
        "export_service.store.sqlite",
        "export_service.store.factory",
        "export_service.ownership",
    )
    script = (
        "import sys, export_service.tracking.decide; "
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""

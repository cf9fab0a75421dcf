"""Every decision of a job's tracker: ``decide(state, observation, now) -> Decision``.

Pure: no I/O, no clock, no global random source (the jitter comes from the seed in the state),
so each decision can be tested by calling it. The runner (tracking.runner) performs the
decision's effects and its next step, and feeds the answer back as the next observation.

Two levels. What happens to one render (its placement, its stream, investigating it, waiting
for its render service, its progress) is decided per render attempt in ``tracking.attempt``;
this module decides for the job: it reads the job, follows the current attempt (delegating to
``decide_attempt`` while it runs) and turns how the attempt ended into the job's transitions.
A job split into parts will follow one attempt per part the same way.

What it decides for the job:

- start: read the job; a terminal one needs nothing (Stop); one with render events seen is
  re-attached (WatchRender after the last seq), otherwise the render is submitted (Render).
  The render of a superseded attempt recorded on the job is released again (ReleaseAttempt):
  its render service may not have answered when it was given up. An attempt whose placement
  the job's create recorded needs no confirming write before its first Render.
- a render verdict: Completed: the reported duration must match the spec's (shared
  tolerance); then the shared output check, repeated with backoff while the file may yet
  appear, for ``output_wait_seconds`` (then VERIFICATION_FAILED, or STORAGE_UNAVAILABLE when
  the storage never answered), the job showing meanwhile that it is verifying (a render quick
  enough to complete before any progress of it was written would otherwise still show
  queued); then COMPLETED. A completion refused because the job was
  cancelled meanwhile removes the file. Failed (with its field and ffmpeg's log tail), or an
  invalid spec at Render (INVALID_INPUT) → FAILED; Cancelled → CANCELLED.
- a lost render (the attempt ended RenderLost: NOT_FOUND, Failed SHUTDOWN or
  STORAGE_UNAVAILABLE, a render service gone while another can take the render): the job is
  read again (one that became terminal elsewhere needs nothing more); then, after a backoff (at
  once when another render service can take it), the render is resubmitted as attempt + 1, up
  to ``max_attempts`` (then RENDER_LOST, or STORAGE_UNAVAILABLE for a store that did not
  answer). The superseded attempt is released (ReleaseAttempt). The new attempt keeps the
  render services to avoid and the stage shown; its patience starts afresh.
- an attempt that gave up (stalled, unreachable for the retry budget) → FAILED with
  ``release_render`` (the supervisor cancels the render and removes its output; a wrong file is
  removed here once the failure is written).
- JobEnded (the job became terminal elsewhere), Stopping (shutdown) or LeaseLost (another replica
  owns the job now: its render is left to that one), whatever was asked → Stop.

What it decides per attempt: see ``tracking.attempt``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import NoReturn

from export_service.config import TrackerSettings
from export_service.store import JobStatus
from export_service.store.records import STAGE_VERIFYING
from export_service.tracking.actions import (
    BeginAttempt,
    CheckOutput,
    CloseStream,
    DiscardProgress,
    DropProgress,
    Effect,
    MarkRenderReleased,
    NextStep,
    OfferStage,
    ReadJob,
    ReleaseAttempt,
    RemoveOutput,
    Stop,
    Wait,
    WriteCancel,
    WriteComplete,
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
    backoff_delay,
    begin,
    decide_attempt,
)
from export_service.tracking.observations import (
    Cancelled,
    Completed,
    Failed,
    JobEnded,
    JobMissing,
    JobRead,
    LeaseLost,
    Observation,
    OutputChecked,
    Refused,
    Stopping,
    TimerFired,
    Written,
)
from videojob.limits import (
    FAILURE_INTERNAL,
    FAILURE_STORAGE_UNAVAILABLE,
    FAILURE_VERIFICATION_FAILED,
)
from videojob.output_check import OutputFault, duration_problem

# The output check of a completed render is repeated after this long, doubling up to the cap.
FIRST_RECHECK_SECONDS = 0.1
MAX_RECHECK_SECONDS = 2.0


class Phase(enum.Enum):
    """What the tracker asked last, hence which observations may answer it."""

    LOADING = "loading"  # ReadJob at the start
    RENDERING = "rendering"  # whatever the current attempt asked (``current``)
    CONFIRMING = "confirming"  # ReadJob before resubmitting a lost render (``lost``)
    WAITING = "waiting"  # Wait (``after_wait`` says what follows)
    BEGINNING_ATTEMPT = "beginning attempt"  # BeginAttempt
    CHECKING_OUTPUT = "checking output"  # CheckOutput (``completion`` holds the render's report)
    COMPLETING = "completing"  # WriteComplete
    FAILING = "failing"  # WriteFail
    CANCELLING = "cancelling"  # WriteCancel
    STOPPED = "stopped"  # Stop: nothing more is asked


class AfterWait(enum.Enum):
    RESUBMIT = "resubmit"  # begin the next attempt, then Render
    RECHECK_OUTPUT = "recheck output"


@dataclass(frozen=True)
class PendingCompletion:
    output_path: str
    size_bytes: int
    duration_seconds: float
    render_seq: int
    # Until when a missing file is looked for again, and after how long the next look.
    deadline: float
    recheck_delay: float
    # An object in a store: the whole file's SHA-256 and the store's checksum, as reported.
    sha256: str = ""
    store_checksum: str = ""
    # Whether the job was given its stage while the output is looked for again.
    shown_verifying: bool = False


@dataclass(frozen=True)
class TrackerState:
    settings: TrackerSettings
    # Jitter source of the job's own waits (a resubmission's backoff); each attempt draws from
    # its own, derived from this seed and its number.
    jitter: Jitter
    phase: Phase = Phase.LOADING
    # The job's current attempt, counted against ``max_attempts``.
    attempt: int = 1
    # The render attempt followed (None until the job is read); kept once it ended, for the
    # next attempt to inherit what it learned (the render services to avoid, the stage shown).
    current: AttemptState | None = None
    expected_duration: float | None = None
    # Why the render is being resubmitted.
    lost: Lost | None = None
    after_wait: AfterWait | None = None
    completion: PendingCompletion | None = None
    # A file to remove once the failure is written (a completed render that failed its checks).
    remove_on_fail: str = ""


@dataclass(frozen=True)
class Decision:
    state: TrackerState
    next: NextStep
    # Done in order before ``next``.
    effects: tuple[Effect, ...] = ()


def start(settings: TrackerSettings, seed: int = 0) -> Decision:
    """The first decision of a tracker: read its job."""
    return Decision(TrackerState(settings=settings, jitter=Jitter(str(seed))), ReadJob())


def decide(state: TrackerState, observation: Observation, now: float) -> Decision:
    """The next state and actions, given what the tracker observed at monotonic time ``now``."""
    if state.phase is Phase.STOPPED:
        _unexpected(state, observation)
    if isinstance(observation, JobEnded | Stopping | LeaseLost):
        return _stop(state)
    return _BY_PHASE[state.phase](state, observation, now)


# Phase by phase.


def _loading(state: TrackerState, observation: Observation, now: float) -> Decision:
    match observation:
        case JobMissing():
            return _stop(state)
        case JobRead(terminal=True):
            return _stop(state)
        case JobRead():
            first = AttemptState(
                number=observation.attempt,
                jitter=_attempt_jitter(state, observation.attempt),
                last_seq=observation.last_render_seq,
                lease_proven=observation.placed_by_create,
            )
            state = replace(
                state,
                attempt=observation.attempt,
                expected_duration=observation.expected_duration_seconds,
            )
            # Superseded attempts a render service may still hold (it was unreachable when
            # they were given up): released again, which costs a CancelRender each; not those
            # whose release was given up before (the supervisor skips them).
            releases = tuple(
                ReleaseAttempt(number)
                for number in observation.placed_attempts
                if number != observation.attempt
            )
            decision = _follow(state, begin(first, submit=observation.last_render_seq == 0), now)
            return replace(decision, effects=(*releases, *decision.effects))
    _unexpected(state, observation)


def _rendering(state: TrackerState, observation: Observation, now: float) -> Decision:
    assert state.current is not None
    step = decide_attempt(state.current, observation, now, state.settings)
    return _follow(state, step, now)


def _follow(state: TrackerState, step: AttemptDecision, now: float) -> Decision:
    """The attempt's question is the tracker's; how it ended becomes the job's transition."""
    state = replace(state, phase=Phase.RENDERING, current=step.state)
    match step.next:
        case Verdict(seq=seq, event=event):
            return _verdict(state, seq, event, now, step.effects)
        case RenderLost(lost=lost):
            return _confirm_resubmission(state, lost, step.effects)
        case GaveUp(code=code, message=message):
            return _give_up(state, code, message, effects=step.effects)
        case JobGone():
            return _stop(state, *step.effects)
    return Decision(state, step.next, step.effects)


def _confirming(state: TrackerState, observation: Observation, now: float) -> Decision:
    match observation:
        case JobMissing() | JobRead(terminal=True):
            return _stop(state)
        case JobRead() if state.lost is not None:
            return _resubmit_later(state, state.lost)
    _unexpected(state, observation)


def _resubmit_later(state: TrackerState, lost: Lost) -> Decision:
    if state.attempt >= state.settings.max_attempts:
        why = lost.shown or lost.message
        return _give_up(state, lost.code, f"{why}; gave up after {state.attempt} attempts")
    if lost.at_once:
        # Another render service can take it: no reason to wait.
        return _begin_attempt(state)
    delay, jitter = backoff_delay(state.settings, state.attempt, state.jitter)
    state = replace(state, jitter=jitter)
    then = f"resubmitting as attempt {state.attempt + 1}"
    return _wait(state, delay, lost.message, then, AfterWait.RESUBMIT)


def _waiting(state: TrackerState, observation: Observation, now: float) -> Decision:
    if not isinstance(observation, TimerFired):
        _unexpected(state, observation)
    match state.after_wait:
        case AfterWait.RESUBMIT:
            return _begin_attempt(state)
        case AfterWait.RECHECK_OUTPUT if state.completion is not None:
            done = state.completion
            checking = replace(state, phase=Phase.CHECKING_OUTPUT)
            check = CheckOutput(done.output_path, done.size_bytes, done.store_checksum)
            return Decision(checking, check)
    _unexpected(state, observation)


def _beginning_attempt(state: TrackerState, observation: Observation, now: float) -> Decision:
    ended = state.current
    assert ended is not None
    match observation:
        case JobMissing():
            return _stop(state)
        case Refused() if observation.terminal:
            return _stop(state)
        case Written(attempt=attempt):
            lost = state.lost
            release = ReleaseAttempt(
                state.attempt, service_lost=lost is not None and lost.service_lost
            )
            # A new render, maybe on another render service: its own budget of patience; the
            # render services that failed the job stay avoided, the stage shown stays shown.
            fresh = AttemptState(
                number=attempt,
                jitter=_attempt_jitter(state, attempt),
                elsewhere=lost is not None and lost.at_once,
                avoid=ended.avoid,
                showing_wait=ended.showing_wait,
            )
            decision = _follow(replace(state, attempt=attempt), begin(fresh, submit=True), now)
            return replace(decision, effects=(release, *decision.effects))
        case Refused(attempt=attempt):
            # Refused while active: someone else already began that attempt; follow it as the
            # render this tracker followed, with the patience it has left.
            followed = replace(
                ended,
                number=attempt,
                jitter=_attempt_jitter(state, attempt),
                quiet_rounds=0,
            )
            return _follow(replace(state, attempt=attempt), begin(followed, submit=True), now)
    _unexpected(state, observation)


def _checking_output(state: TrackerState, observation: Observation, now: float) -> Decision:
    done = state.completion
    if not isinstance(observation, OutputChecked) or done is None:
        _unexpected(state, observation)
    problem = observation.problem
    if problem is None:
        write = WriteComplete(
            done.output_path,
            done.size_bytes,
            done.duration_seconds,
            done.render_seq,
            output_sha256=done.sha256,
        )
        return Decision(replace(state, phase=Phase.COMPLETING), write)
    remaining = done.deadline - now
    if problem.lasting or remaining <= 0:
        unreachable = problem.fault is OutputFault.UNREACHABLE
        return _give_up(
            state,
            FAILURE_STORAGE_UNAVAILABLE if unreachable else FAILURE_VERIFICATION_FAILED,
            f"the render reported completion but {problem.reason}",
            remove=done.output_path,
        )
    later = replace(
        done,
        recheck_delay=min(done.recheck_delay * 2, MAX_RECHECK_SECONDS),
        shown_verifying=True,
    )
    state = replace(state, completion=later)
    delay = min(done.recheck_delay, remaining)
    shown = () if done.shown_verifying else (OfferStage(STAGE_VERIFYING),)
    return _wait(state, delay, problem.reason, "checking again", AfterWait.RECHECK_OUTPUT, shown)


def _completing(state: TrackerState, observation: Observation, now: float) -> Decision:
    done = state.completion
    match observation:
        case Written() | JobMissing():
            return _stop(state)
        case Refused(status=JobStatus.CANCELLED) if done is not None:
            return _stop(state, RemoveOutput(done.output_path))
        case Refused() if observation.terminal:
            return _stop(state)
        case Refused():
            return _give_up(state, FAILURE_INTERNAL, "the store refused the completion")
    _unexpected(state, observation)


def _failing(state: TrackerState, observation: Observation, now: float) -> Decision:
    match observation:
        case Written() if state.remove_on_fail:
            return _stop(state, RemoveOutput(state.remove_on_fail))
        case Written() | Refused() | JobMissing():
            # The store refuses a failure only when the job is already terminal.
            return _stop(state)
    _unexpected(state, observation)


def _cancelling(state: TrackerState, observation: Observation, now: float) -> Decision:
    match observation:
        case Written():
            # The render service cancelled it itself: nothing is left to clean up.
            return _stop(state, MarkRenderReleased())
        case Refused() | JobMissing():
            return _stop(state)
    _unexpected(state, observation)


def _stopped(state: TrackerState, observation: Observation, now: float) -> Decision:
    _unexpected(state, observation)


_BY_PHASE = {
    Phase.LOADING: _loading,
    Phase.RENDERING: _rendering,
    Phase.CONFIRMING: _confirming,
    Phase.WAITING: _waiting,
    Phase.BEGINNING_ATTEMPT: _beginning_attempt,
    Phase.CHECKING_OUTPUT: _checking_output,
    Phase.COMPLETING: _completing,
    Phase.FAILING: _failing,
    Phase.CANCELLING: _cancelling,
    Phase.STOPPED: _stopped,
}


# Shared steps.


def _attempt_jitter(state: TrackerState, attempt: int) -> Jitter:
    return Jitter(f"{state.jitter.seed}/attempt {attempt}")


def _begin_attempt(state: TrackerState) -> Decision:
    # The old render's progress must not land after the new attempt's seq reset.
    waiting = replace(state, phase=Phase.BEGINNING_ATTEMPT)
    return Decision(waiting, BeginAttempt(state.attempt), (DropProgress(),))


def _verdict(
    state: TrackerState,
    seq: int,
    event: Completed | Failed | Cancelled,
    now: float,
    effects: tuple[Effect, ...],
) -> Decision:
    """The render's verdict becomes the job's: a completion is checked, then written."""
    match event:
        case Completed():
            effects = (*effects, DiscardProgress())
            wrong = duration_problem(event.duration_seconds, state.expected_duration, "the render")
            if wrong is not None:
                return _give_up(
                    state,
                    FAILURE_VERIFICATION_FAILED,
                    f"the render reported {event.duration_seconds:.2f} s of video, "
                    f"expected {state.expected_duration or 0:.2f} s",
                    remove=event.output_path,
                    effects=effects,
                )
            done = PendingCompletion(
                output_path=event.output_path,
                size_bytes=event.size_bytes,
                duration_seconds=event.duration_seconds,
                render_seq=seq,
                deadline=now + state.settings.output_wait_seconds,
                recheck_delay=FIRST_RECHECK_SECONDS,
                sha256=event.sha256,
                store_checksum=event.store_checksum,
            )
            checking = replace(state, phase=Phase.CHECKING_OUTPUT, completion=done)
            check = CheckOutput(event.output_path, event.size_bytes, event.store_checksum)
            return Decision(checking, check, effects)
        case Failed():
            code = event.code or FAILURE_INTERNAL
            message = event.message or "the render failed"
            return _write_fail(state, code, message, event.field, effects, event.log_tail)
        case Cancelled():
            return Decision(replace(state, phase=Phase.CANCELLING), WriteCancel(), effects)


def _confirm_resubmission(
    state: TrackerState, lost: Lost, effects: tuple[Effect, ...] = ()
) -> Decision:
    """Before resubmitting: is the job still active?"""
    return Decision(replace(state, phase=Phase.CONFIRMING, lost=lost), ReadJob(), effects)


def _wait(
    state: TrackerState,
    seconds: float,
    why: str,
    then: str,
    after: AfterWait,
    effects: tuple[Effect, ...] = (),
) -> Decision:
    waiting = replace(state, phase=Phase.WAITING, after_wait=after)
    return Decision(waiting, Wait(max(seconds, 0.0), why, then), effects)


def _give_up(
    state: TrackerState,
    code: str,
    message: str,
    *,
    remove: str = "",
    effects: tuple[Effect, ...] = (),
) -> Decision:
    """FAILED with the render to be released (cancelled, its output removed)."""
    failing = replace(state, phase=Phase.FAILING, remove_on_fail=remove)
    return Decision(failing, WriteFail(code, message, release_render=True), effects)


def _write_fail(
    state: TrackerState,
    code: str,
    message: str,
    field: str,
    effects: tuple[Effect, ...],
    log_tail: str = "",
) -> Decision:
    """FAILED by the render's verdict."""
    failing = replace(state, phase=Phase.FAILING, remove_on_fail="")
    return Decision(failing, WriteFail(code, message, field, log_tail=log_tail), effects)


def _stop(state: TrackerState, *effects: Effect) -> Decision:
    current = state.current
    if state.phase is Phase.RENDERING and current is not None:
        if current.phase is AttemptPhase.STREAMING:
            effects = (CloseStream(), *effects)
        state = replace(state, current=replace(current, phase=AttemptPhase.ENDED))
    return Decision(replace(state, phase=Phase.STOPPED), Stop(), effects)


def _unexpected(state: TrackerState, observation: Observation) -> NoReturn:
    raise UnexpectedObservation(f"{observation!r} does not answer phase {state.phase.value}")

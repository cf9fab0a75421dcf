"""Every decision of a job's tracker: ``decide(state, observation, now) -> Decision``.

Pure: no I/O, no clock, no global random source (the jitter comes from the seed in the state),
so each decision can be tested by calling it. The runner (tracking.runner) performs the
decision's effects and its next step, and feeds the answer back as the next observation.

What it decides, phase by phase:

- start: read the job; a terminal one needs nothing (Stop); one with render events seen is
  re-attached (WatchRender after the last seq), otherwise the render is submitted (Render).
- streaming: progress is offered to the coalescing writer (clamped below 100), heartbeats and
  replayed events only prove life; a terminal event flushes progress and is applied at once.
  A stream that ends, breaks or stays silent for the stall timeout is investigated (GetRender).
  Re-attaching costs no attempt; ``max_quiet_rounds`` render calls in a row that bring no event
  while the render service still reports the render running → RENDER_STALLED.
- lost render (NOT_FOUND, Failed SHUTDOWN): after a backoff the render is resubmitted as
  attempt + 1, up to ``max_attempts`` (then RENDER_LOST).
- unreachable render service: asked again after a growing backoff with jitter; unreachable for
  ``retry_budget`` seconds without an answer in between → RENDER_UNAVAILABLE. Meanwhile the job
  says so: its stage becomes "Waiting for a render service" (OfferStage: the progress it had, no
  ETA) when the first wait begins, until the render's next progress (a heartbeat too) puts the
  render's own stage back, or a new attempt's render reports its own. A busy one
  (RESOURCE_EXHAUSTED) answered: asked again with backoff, without limit.
  Before each such retry the job is read again: one that became terminal elsewhere needs
  nothing more.
- Completed: the reported duration must match the spec's (shared tolerance); then the shared
  output check, repeated with backoff while the file may yet appear, for ``output_wait_seconds``
  (then VERIFICATION_FAILED); then COMPLETED. A completion refused because the job was
  cancelled meanwhile removes the file.
- a render verdict (Failed with any other code, with its field) or an invalid spec at Render
  (INVALID_INPUT) → FAILED.
- giving up → FAILED with ``release_render`` (the supervisor cancels the render and removes its
  output; a wrong file is removed here once the failure is written).
- a pool of render services: CallRender places a render not yet placed (the runner chooses a
  render service by load and records it with a fenced write before Render; NotPlaced when none
  can take it: asked again like a busy or unreachable one). A DRAINING refusal, a Failed
  SHUTDOWN with never_started, a Render that could not connect at all (Unreached), or
  RESOURCE_EXHAUSTED while another service has room: placed again elsewhere at once, same
  attempt, nothing spent. The attempt's service refusing
  connections or answering NOT_FOUND while another can take the render: resubmitted (attempt
  + 1) at once; silent or timing out: after ``failover_after``. A superseded attempt is
  released (ReleaseAttempt). With a pool of one, none of these has anywhere else to go and
  the decisions are those above.
- JobEnded (the job became terminal elsewhere), Stopping (shutdown) or LeaseLost (another replica
  owns the job now: its render is left to that one), whatever was asked → Stop.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from typing import NoReturn

import grpc

from export_service.config import TrackerSettings
from export_service.store import MAX_RUNNING_PROGRESS, JobStatus
from export_service.tracking.actions import (
    BeginAttempt,
    CallRender,
    CheckOutput,
    CloseStream,
    DiscardProgress,
    DropProgress,
    Effect,
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
from export_service.tracking.observations import (
    Cancelled,
    Completed,
    Draining,
    EventReceived,
    Failed,
    JobEnded,
    JobMissing,
    JobRead,
    LeaseLost,
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
from videojob.backoff import Backoff
from videojob.limits import (
    FAILURE_INTERNAL,
    FAILURE_INVALID_INPUT,
    FAILURE_RENDER_LOST,
    FAILURE_RENDER_STALLED,
    FAILURE_RENDER_UNAVAILABLE,
    FAILURE_VERIFICATION_FAILED,
    RETRYABLE_RENDER_FAILURES,
    STAGE_WAITING_FOR_RENDER,
)
from videojob.output_check import duration_problem

# The output check of a completed render is repeated after this long, doubling up to the cap.
FIRST_RECHECK_SECONDS = 0.1
MAX_RECHECK_SECONDS = 2.0


class Phase(enum.Enum):
    """What the tracker asked last, hence which observations may answer it."""

    LOADING = "loading"  # ReadJob at the start
    STREAMING = "streaming"  # CallRender, WatchRender, ReadStream
    INVESTIGATING = "investigating"  # GetRender
    CONFIRMING = "confirming"  # ReadJob before a retry (``retry`` says which)
    WAITING = "waiting"  # Wait (``after_wait`` says what follows)
    BEGINNING_ATTEMPT = "beginning attempt"  # BeginAttempt
    CHECKING_OUTPUT = "checking output"  # CheckOutput (``completion`` holds the render's report)
    COMPLETING = "completing"  # WriteComplete
    FAILING = "failing"  # WriteFail
    CANCELLING = "cancelling"  # WriteCancel
    STOPPED = "stopped"  # Stop: nothing more is asked


class AfterWait(enum.Enum):
    RESUBMIT = "resubmit"  # begin the next attempt, then Render
    ASK_AGAIN = "ask again"  # Render (nothing seen of this attempt yet) or GetRender
    REATTACH = "reattach"  # WatchRender after the last seq
    RECHECK_OUTPUT = "recheck output"


@dataclass(frozen=True)
class Lost:
    """The render is gone: resubmit it (attempt + 1)."""

    code: str
    message: str
    # Another render service can take it: resubmitted there without a backoff.
    at_once: bool = False
    # What the job's failure says when no attempt is left, when ``message`` (logged with each
    # retry) carries the render service's address or gRPC's own words.
    shown: str = ""
    # The render service the lost attempt ran on stopped answering (its partial file is
    # removed by the export service).
    service_lost: bool = False


@dataclass(frozen=True)
class Unreachable:
    """The render service did not answer (or answered busy): ask it again after a backoff."""

    message: str  # logged with each retry: gRPC's own words, addresses
    busy: bool = False
    # What the job's failure says once the retry budget is spent: no address, no gRPC text.
    shown: str = "the render service is unreachable"


@dataclass(frozen=True)
class PendingCompletion:
    output_path: str
    size_bytes: int
    duration_seconds: float
    render_seq: int
    # Until when a missing file is looked for again, and after how long the next look.
    deadline: float
    recheck_delay: float


@dataclass(frozen=True)
class TrackerState:
    settings: TrackerSettings
    # Jitter source: draw n of a job's tracker is Random(f"{seed}:{n}").
    seed: int = 0
    draws: int = 0
    phase: Phase = Phase.LOADING
    attempt: int = 1
    last_seq: int = 0
    expected_duration: float | None = None
    # The open call is Render (not WatchRender): an INVALID_ARGUMENT answer judges the spec.
    submitted: bool = False
    # The open call brought a new event.
    round_had_event: bool = False
    # Render calls in a row that ended without a new event (silent, empty or broken).
    quiet_rounds: int = 0
    # Backoff rounds since the last event or plain answer of the render service.
    retry_rounds: int = 0
    # Since when the render service has not answered at all (None: it answered last time).
    unreachable_since: float | None = None
    retry: Lost | Unreachable | None = None
    after_wait: AfterWait | None = None
    completion: PendingCompletion | None = None
    # A file to remove once the failure is written (a completed render that failed its checks).
    remove_on_fail: str = ""
    # The next Render is to be placed on another render service than the last one.
    elsewhere: bool = False
    # Render services (pool keys) that refused or failed this job: not chosen for it again until
    # none is left to choose (NotPlaced starts afresh).
    avoid: frozenset[str] = frozenset()
    # The job shows STAGE_WAITING_FOR_RENDER, offered by this tracker: the render's next
    # progress, a heartbeat included, is offered to put the render's own stage back.
    showing_wait: bool = False


@dataclass(frozen=True)
class Decision:
    state: TrackerState
    next: NextStep
    # Done in order before ``next``.
    effects: tuple[Effect, ...] = ()


class UnexpectedObservation(Exception):
    """The runner fed an observation that does not answer what was asked: a bug."""


def start(settings: TrackerSettings, seed: int = 0) -> Decision:
    """The first decision of a tracker: read its job."""
    return Decision(TrackerState(settings=settings, seed=seed), ReadJob())


def decide(state: TrackerState, observation: Observation, now: float) -> Decision:
    """The next state and actions, given what the tracker observed at monotonic time ``now``."""
    if state.phase is Phase.STOPPED:
        _unexpected(state, observation)
    if isinstance(observation, JobEnded | Stopping | LeaseLost):
        return _stop(state)
    match observation:
        case RpcFailed(code=code, others_available=True, member=member) if code in _FAIL_OVER:
            state = _avoiding(state, member)  # busy or gone while others can take it
    return _BY_PHASE[state.phase](state, observation, now)


# Phase by phase.


def _loading(state: TrackerState, observation: Observation, now: float) -> Decision:
    match observation:
        case JobMissing():
            return _stop(state)
        case JobRead(terminal=True):
            return _stop(state)
        case JobRead():
            state = replace(
                state,
                attempt=observation.attempt,
                last_seq=observation.last_render_seq,
                expected_duration=observation.expected_duration_seconds,
            )
            return _open_stream(state, submit=observation.last_render_seq == 0)
    _unexpected(state, observation)


def _streaming(state: TrackerState, observation: Observation, now: float) -> Decision:
    closed = (CloseStream(),)
    match observation:
        case EventReceived(seq=seq, event=event):
            state = _answered(state)
            if seq <= state.last_seq:  # replayed: already applied
                return Decision(state, ReadStream())
            state = replace(state, last_seq=seq, round_had_event=True)
            if isinstance(event, Progress):
                if event.heartbeat and not state.showing_wait:
                    return Decision(state, ReadStream())
                # A heartbeat repeats the render's last progress: offered only to replace the
                # stage this tracker showed while the render service did not answer.
                percent = min(max(event.percent, 0.0), MAX_RUNNING_PROGRESS)
                offer = OfferProgress(percent, event.stage, event.eta_seconds, seq)
                if state.showing_wait:
                    state = replace(state, showing_wait=False)
                return Decision(state, ReadStream(), (offer,))
            return _verdict(state, seq, event, now, closed)
        case StreamEnded():
            why = "the render stream ended without a terminal event"
            return _investigate(_end_round(state), why, closed)
        case StreamSilent(seconds=seconds):
            return _investigate(_end_round(state), f"no render event for {seconds:g} s", closed)
        case Draining(instance_id=member) | Unreached(instance_id=member):
            # Refused (or never sent) before anything started: elsewhere, same attempt, at once.
            return _place_elsewhere(_answered(_avoiding(state, member)), closed)
        case NotPlaced(busy=True, why=why):
            busy = Unreachable(f"no render service has room: {why}", busy=True)
            return _unreachable(_answered(replace(state, avoid=frozenset())), busy, closed)
        case NotPlaced(why=why):
            state = replace(state, avoid=frozenset())
            if state.unreachable_since is None:
                state = replace(state, unreachable_since=now)
            unreachable = Unreachable(
                f"no render service answers: {why}", shown="no render service answers"
            )
            return _unreachable(state, unreachable, closed)
        case Refused() if observation.terminal:
            return _stop(state)  # the placement found the job ended elsewhere
        case Refused():
            # The attempt moved on before this placement was recorded: investigated, then
            # followed, as a stream that ended.
            why = f"attempt {state.attempt} moved on to {observation.attempt} meanwhile"
            return _investigate(_end_round(state), why, closed)
        case JobMissing():
            return _stop(state)
        case RpcFailed(code=grpc.StatusCode.RESOURCE_EXHAUSTED, others_available=True):
            return _place_elsewhere(_answered(state), closed)
        case RpcFailed(code=grpc.StatusCode.RESOURCE_EXHAUSTED):
            # Busy: an answer, not a quiet stream (the render was not started).
            return _call_failed(state, observation, closed)
        case RpcFailed():
            return _call_failed(_end_round(state), observation, closed)
    _unexpected(state, observation)


def _call_failed(state: TrackerState, failed: RpcFailed, effects: tuple[Effect, ...]) -> Decision:
    if failed.code == grpc.StatusCode.INVALID_ARGUMENT and state.submitted:
        message = failed.details or "invalid render spec"
        return _write_fail(state, FAILURE_INVALID_INPUT, message, failed.field, effects)
    if failed.code == grpc.StatusCode.NOT_FOUND:
        return _lost(_answered(state), _not_known(failed.others_available), effects)
    if failed.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # An answer (the budget starts afresh) that asks for time: the backoff keeps growing.
        busy = Unreachable(f"the render service is busy: {failed.details}", busy=True)
        return _unreachable(replace(state, unreachable_since=None), busy, effects)
    return _investigate(state, f"the render stream broke ({failed.code.name})", effects)


def _investigating(state: TrackerState, observation: Observation, now: float) -> Decision:
    match observation:
        case RenderReport(seq=seq, last_event=Completed() | Failed() | Cancelled() as event):
            state = replace(_answered(state), last_seq=max(state.last_seq, seq))
            return _verdict(state, seq, event, now)
        case RenderReport():
            state = _answered(state)
            quiet = state.quiet_rounds
            if quiet >= state.settings.max_quiet_rounds:
                return _give_up(
                    state,
                    FAILURE_RENDER_STALLED,
                    "the render service says the render is running, but its stream brought "
                    f"nothing {quiet} times in a row "
                    f"(stall timeout {state.settings.stall_timeout:g} s)",
                )
            if quiet:
                delay, state = _backoff(state, quiet)
                why = f"the render stream brought nothing {quiet} time(s) in a row"
                return _wait(state, delay, why, "re-attaching", AfterWait.REATTACH)
            return _open_stream(state, submit=False)
        case RpcFailed(code=grpc.StatusCode.NOT_FOUND, others_available=others):
            return _lost(_answered(state), _not_known(others))
        case RpcFailed(code=code, details=details, others_available=others):
            message = f"the render service is unreachable ({code.name}: {details})"
            if state.unreachable_since is None:
                state = replace(state, unreachable_since=now)
            since = state.unreachable_since
            silent_for = 0.0 if since is None else now - since
            refused = code == grpc.StatusCode.UNAVAILABLE
            if others and (refused or silent_for >= state.settings.failover_after):
                lost = Lost(
                    FAILURE_RENDER_LOST,
                    message,
                    at_once=True,
                    service_lost=True,
                    shown="the render service became unreachable",
                )
                return _lost(state, lost)
            return _unreachable(state, Unreachable(message))
    _unexpected(state, observation)


def _confirming(state: TrackerState, observation: Observation, now: float) -> Decision:
    match observation:
        case JobMissing() | JobRead(terminal=True):
            return _stop(state)
        case JobRead():
            if isinstance(state.retry, Lost):
                return _resubmit_later(state, state.retry)
            if isinstance(state.retry, Unreachable):
                return _ask_again_later(state, state.retry, now)
    _unexpected(state, observation)


def _resubmit_later(state: TrackerState, lost: Lost) -> Decision:
    if state.attempt >= state.settings.max_attempts:
        why = lost.shown or lost.message
        return _give_up(state, lost.code, f"{why}; gave up after {state.attempt} attempts")
    if lost.at_once:
        # Another render service can take it: no reason to wait.
        return _begin_attempt(state)
    delay, state = _backoff(state, state.attempt)
    then = f"resubmitting as attempt {state.attempt + 1}"
    return _wait(state, delay, lost.message, then, AfterWait.RESUBMIT)


def _ask_again_later(state: TrackerState, unreachable: Unreachable, now: float) -> Decision:
    rounds = state.retry_rounds + 1
    delay, state = _backoff(replace(state, retry_rounds=rounds), rounds)
    effects: tuple[Effect, ...] = ()
    if not unreachable.busy:
        since = now if state.unreachable_since is None else state.unreachable_since
        waited = now - since
        budget = state.settings.retry_budget
        if waited >= budget:
            return _give_up(
                state,
                FAILURE_RENDER_UNAVAILABLE,
                f"{unreachable.shown}; gave up after {waited:.0f} s (retry budget {budget:g} s)",
            )
        delay = min(delay, budget - waited)
        if waited < state.settings.failover_after:  # a pool may fail over then
            delay = min(delay, state.settings.failover_after - waited)
        if not state.showing_wait:
            # The job says that its render service does not answer, not the render's last
            # stage with a frozen ETA.
            effects = (OfferStage(STAGE_WAITING_FOR_RENDER),)
            state = replace(state, showing_wait=True)
    return _wait(state, delay, unreachable.message, "asking again", AfterWait.ASK_AGAIN, effects)


def _waiting(state: TrackerState, observation: Observation, now: float) -> Decision:
    if not isinstance(observation, TimerFired):
        _unexpected(state, observation)
    match state.after_wait:
        case AfterWait.RESUBMIT:
            return _begin_attempt(state)
        case AfterWait.ASK_AGAIN if state.last_seq == 0:
            # Nothing seen of this attempt's render: Render starts it, or attaches to it.
            return _open_stream(state, submit=True)
        case AfterWait.ASK_AGAIN:
            return _investigate(state, "the render service was unreachable")
        case AfterWait.REATTACH:
            return _open_stream(state, submit=False)
        case AfterWait.RECHECK_OUTPUT if state.completion is not None:
            done = state.completion
            checking = replace(state, phase=Phase.CHECKING_OUTPUT)
            return Decision(checking, CheckOutput(done.output_path, done.size_bytes))
    _unexpected(state, observation)


def _beginning_attempt(state: TrackerState, observation: Observation, now: float) -> Decision:
    match observation:
        case JobMissing():
            return _stop(state)
        case Refused() if observation.terminal:
            return _stop(state)
        case Written(attempt=attempt):
            lost = state.retry if isinstance(state.retry, Lost) else None
            release = ReleaseAttempt(
                state.attempt, service_lost=lost is not None and lost.service_lost
            )
            # A new render, maybe on another render service: its own budget of patience.
            fresh = replace(
                state,
                attempt=attempt,
                quiet_rounds=0,
                unreachable_since=None,
                retry_rounds=0,
                elsewhere=lost is not None and lost.at_once,
            )
            decision = _open_stream(fresh, submit=True)
            return replace(decision, effects=(release, *decision.effects))
        case Refused(attempt=attempt):
            # Refused while active: someone else already began that attempt; follow it.
            return _open_stream(replace(state, attempt=attempt, quiet_rounds=0), submit=True)
    _unexpected(state, observation)


def _checking_output(state: TrackerState, observation: Observation, now: float) -> Decision:
    done = state.completion
    if not isinstance(observation, OutputChecked) or done is None:
        _unexpected(state, observation)
    problem = observation.problem
    if problem is None:
        write = WriteComplete(
            done.output_path, done.size_bytes, done.duration_seconds, done.render_seq
        )
        return Decision(replace(state, phase=Phase.COMPLETING), write)
    remaining = done.deadline - now
    if problem.lasting or remaining <= 0:
        return _give_up(
            state,
            FAILURE_VERIFICATION_FAILED,
            f"the render reported completion but {problem.reason}",
            remove=done.output_path,
        )
    later = replace(done, recheck_delay=min(done.recheck_delay * 2, MAX_RECHECK_SECONDS))
    state = replace(state, completion=later)
    delay = min(done.recheck_delay, remaining)
    return _wait(state, delay, problem.reason, "checking again", AfterWait.RECHECK_OUTPUT)


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
    Phase.STREAMING: _streaming,
    Phase.INVESTIGATING: _investigating,
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

_NOT_KNOWN = Lost(FAILURE_RENDER_LOST, "the render service no longer knows the render")


def _not_known(others_available: bool) -> Lost:
    return replace(_NOT_KNOWN, at_once=others_available)


def _begin_attempt(state: TrackerState) -> Decision:
    # The old render's progress must not land after the new attempt's seq reset.
    waiting = replace(state, phase=Phase.BEGINNING_ATTEMPT)
    return Decision(waiting, BeginAttempt(state.attempt), (DropProgress(),))


def _place_elsewhere(state: TrackerState, effects: tuple[Effect, ...] = ()) -> Decision:
    """Nothing started where the render was refused or handed back: the same attempt is placed
    on another render service at once, costing nothing."""
    decision = _open_stream(replace(state, elsewhere=True), submit=True)
    return replace(decision, effects=(*effects, *decision.effects))


def _verdict(
    state: TrackerState,
    seq: int,
    event: RenderOutcome,
    now: float,
    effects: tuple[Effect, ...] = (),
) -> Decision:
    """A terminal render event: the newest progress is written first, then the verdict (a
    completion, which supersedes it, does not wait for it)."""
    if not isinstance(event, Completed):
        effects = (*effects, FlushProgress())
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
            )
            checking = replace(state, phase=Phase.CHECKING_OUTPUT, completion=done)
            return Decision(checking, CheckOutput(event.output_path, event.size_bytes), effects)
        case Failed(never_started=True):
            # Handed back by a draining render service before it started: nothing was spent.
            return _place_elsewhere(state, (*effects, DropProgress()))
        case Failed(code=code) if code in RETRYABLE_RENDER_FAILURES:
            lost = Lost(FAILURE_RENDER_LOST, f"the render was lost ({code}: {event.message})")
            return _lost(state, lost, effects)
        case Failed():
            code = event.code or FAILURE_INTERNAL
            message = event.message or "the render failed"
            return _write_fail(state, code, message, event.field, effects, event.log_tail)
        case Cancelled():
            return Decision(replace(state, phase=Phase.CANCELLING), WriteCancel(), effects)
    raise UnexpectedObservation(f"not a verdict: {event!r}")


def _open_stream(state: TrackerState, *, submit: bool) -> Decision:
    if submit:
        elsewhere = state.elsewhere
        state = replace(
            state,
            phase=Phase.STREAMING,
            submitted=True,
            round_had_event=False,
            last_seq=0,
            elsewhere=False,
        )
        return Decision(state, CallRender(state.attempt, elsewhere=elsewhere, avoid=state.avoid))
    state = replace(state, phase=Phase.STREAMING, submitted=False, round_had_event=False)
    return Decision(state, WatchRender(state.last_seq))


# A render service that answered these while another could take the job is avoided for it.
_FAIL_OVER = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


def _avoiding(state: TrackerState, member: str) -> TrackerState:
    return replace(state, avoid=state.avoid | {member}) if member else state


def render_call_failure(
    code: grpc.StatusCode,
    details: str,
    *,
    member: str,
    submitted: bool,
    draining: bool,
    never_connected: bool,
    others_available: bool,
    field: str = "",
) -> Observation:
    """What a failed render call means, from its facts: a Render a draining render service
    refused (``draining``: its error names the reason DRAINING) → Draining; a Render whose
    request never reached its render service while another could take it → Unreached; anything
    else → RpcFailed. Both of the first cost nothing: nothing started there."""
    if submitted and draining:
        return Draining(member, details)
    if submitted and never_connected and others_available:
        return Unreached(member, details)
    return RpcFailed(code, details, field, others_available=others_available, member=member)


def _investigate(state: TrackerState, why: str, effects: tuple[Effect, ...] = ()) -> Decision:
    return Decision(replace(state, phase=Phase.INVESTIGATING), GetRender(why), effects)


def _lost(state: TrackerState, lost: Lost, effects: tuple[Effect, ...] = ()) -> Decision:
    """Before resubmitting: is the job still active?"""
    return Decision(replace(state, phase=Phase.CONFIRMING, retry=lost), ReadJob(), effects)


def _unreachable(
    state: TrackerState, unreachable: Unreachable, effects: tuple[Effect, ...] = ()
) -> Decision:
    """Before asking again: is the job still active?"""
    return Decision(replace(state, phase=Phase.CONFIRMING, retry=unreachable), ReadJob(), effects)


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
    if state.phase is Phase.STREAMING:
        effects = (CloseStream(), *effects)
    return Decision(replace(state, phase=Phase.STOPPED), Stop(), effects)


def _answered(state: TrackerState) -> TrackerState:
    if state.unreachable_since is None and state.retry_rounds == 0:
        return state  # the usual case, on every render event: no copy
    return replace(state, unreachable_since=None, retry_rounds=0)


def _end_round(state: TrackerState) -> TrackerState:
    quiet = 0 if state.round_had_event else state.quiet_rounds + 1
    return replace(state, quiet_rounds=quiet)


def _backoff(state: TrackerState, rounds: int) -> tuple[float, TrackerState]:
    """videojob.backoff's wait before round ``rounds``, its draw the next from the seed."""
    settings = state.settings
    draw = random.Random(f"{state.seed}:{state.draws}").random()
    backoff = Backoff(first=settings.backoff_initial, cap=settings.backoff_max)
    return backoff.delay(rounds, draw), replace(state, draws=state.draws + 1)


def _unexpected(state: TrackerState, observation: Observation) -> NoReturn:
    raise UnexpectedObservation(f"{observation!r} does not answer phase {state.phase.value}")

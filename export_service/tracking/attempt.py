"""The decisions of one render attempt: ``decide_attempt(attempt, observation, now, settings)``.

A render attempt is one render id on one render service: its placement, its stream, the
investigation of a quiet or broken stream, the backoff while its render service does not
answer, the quiet rounds that end in a stall, the progress it reports and the render services
it avoids. Pure, like ``tracking.decide``, which follows one attempt at a time for a job and
turns how an attempt ends into the job's transitions; a job split into parts will follow one
attempt per part.

An attempt asks questions (the same ones as a job's tracker) until it ends with an outcome:

- ``Verdict``: the render's terminal event (Completed, Failed, Cancelled), or the spec refused
  at Render, for the job to verify and write;
- ``RenderLost``: the render is gone (or its render service is): the job resubmits it as the
  next attempt, or gives up when no attempt is left;
- ``GaveUp``: stalled, or its render service unreachable for the retry budget: the job fails;
- ``JobGone``: the job ended elsewhere or its record is gone: nothing more to do.

What it decides:

- streaming: progress is offered to the coalescing writer (clamped below 100), heartbeats,
  replayed events and events of a kind this service does not know only prove life; a terminal
  event flushes progress and ends the attempt. A stream that ends, breaks or stays silent for
  the stall timeout is investigated (GetRender). Re-attaching costs no attempt;
  ``max_quiet_rounds`` render calls in a row that bring no event while the render service
  still reports the render running → GaveUp RENDER_STALLED.
- unreachable render service: asked again after a growing backoff with jitter; unreachable for
  ``retry_budget`` seconds without an answer in between → GaveUp RENDER_UNAVAILABLE. Meanwhile
  the job says so: its stage becomes "Waiting for a render service" (OfferStage: the progress
  it had, no ETA) when the first wait begins, until the render's next progress (a heartbeat
  too) puts the render's own stage back, or a new attempt's render reports its own. A busy one
  (RESOURCE_EXHAUSTED) answered: asked again with backoff, without limit. Before each such
  retry the job is read again: one that became terminal elsewhere needs nothing more.
- a pool of render services: CallRender places a render not yet placed (the runner chooses a
  render service by load and records it with a fenced write before Render; NotPlaced when none
  can take it: asked again like a busy or unreachable one). A DRAINING refusal, a Failed
  SHUTDOWN with never_started, a Render that could not connect at all (Unreached), or
  RESOURCE_EXHAUSTED while another service has room: placed again elsewhere at once, same
  attempt, nothing spent. The attempt's service refusing connections or answering NOT_FOUND
  while another can take the render: RenderLost at once; silent or timing out: after
  ``failover_after``. With a pool of one, none of these has anywhere else to go.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, replace
from typing import NoReturn

import grpc

from export_service.config import TrackerSettings
from export_service.store import MAX_RUNNING_PROGRESS
from export_service.tracking.actions import (
    CallRender,
    CloseStream,
    DropProgress,
    Effect,
    FlushProgress,
    GetRender,
    OfferProgress,
    OfferStage,
    Question,
    ReadJob,
    ReadStream,
    Wait,
    WatchRender,
)
from export_service.tracking.observations import (
    Cancelled,
    Completed,
    Draining,
    EventReceived,
    Failed,
    JobMissing,
    JobRead,
    NotPlaced,
    Observation,
    Progress,
    Refused,
    RenderOutcome,
    RenderReport,
    RpcFailed,
    StreamEnded,
    StreamSilent,
    TimerFired,
    Unreached,
)
from videojob.backoff import Backoff
from videojob.limits import (
    FAILURE_INVALID_INPUT,
    FAILURE_RENDER_LOST,
    FAILURE_RENDER_STALLED,
    FAILURE_RENDER_UNAVAILABLE,
    FAILURE_STORAGE_UNAVAILABLE,
    RETRYABLE_RENDER_FAILURES,
    STAGE_WAITING_FOR_RENDER,
)


class UnexpectedObservation(Exception):
    """The runner fed an observation that does not answer what was asked: a bug."""


@dataclass(frozen=True)
class Jitter:
    """A deterministic source of backoff jitter: draw n is Random(f"{seed}:{n}")."""

    seed: str
    draws: int = 0

    def draw(self) -> tuple[float, Jitter]:
        value = random.Random(f"{self.seed}:{self.draws}").random()
        return value, replace(self, draws=self.draws + 1)


def backoff_delay(settings: TrackerSettings, rounds: int, jitter: Jitter) -> tuple[float, Jitter]:
    """videojob.backoff's wait before round ``rounds``, its draw the next of ``jitter``."""
    draw, jitter = jitter.draw()
    backoff = Backoff(first=settings.backoff_initial, cap=settings.backoff_max)
    return backoff.delay(rounds, draw), jitter


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


# How an attempt ends.


@dataclass(frozen=True)
class Verdict:
    """The render's terminal event at ``seq`` (a spec refused at Render: a Failed
    INVALID_INPUT at seq 0). A Failed here is for good: nothing retries it."""

    seq: int
    event: Completed | Failed | Cancelled


@dataclass(frozen=True)
class RenderLost:
    """The render is gone, or its render service is: resubmit it as the next attempt."""

    lost: Lost


@dataclass(frozen=True)
class GaveUp:
    """The attempt ran out of patience (stalled, unreachable): the job fails with the render
    released."""

    code: str
    message: str


@dataclass(frozen=True)
class JobGone:
    """The job ended elsewhere, or its record is gone: nothing more to do."""


AttemptOutcome = Verdict | RenderLost | GaveUp | JobGone


class AttemptPhase(enum.Enum):
    """What the attempt asked last, hence which observations may answer it."""

    STREAMING = "streaming"  # CallRender, WatchRender, ReadStream
    INVESTIGATING = "investigating"  # GetRender
    CONFIRMING = "confirming"  # ReadJob before asking an unanswering render service again
    WAITING = "waiting"  # Wait (``after_wait`` says what follows)
    ENDED = "ended"  # an outcome was handed to the job: nothing more is asked


class AfterWait(enum.Enum):
    ASK_AGAIN = "ask again"  # Render (nothing seen of this attempt yet) or GetRender
    REATTACH = "reattach"  # WatchRender after the last seq


@dataclass(frozen=True)
class AttemptState:
    # The job's attempt this render is (its render id and placement are the attempt's own).
    number: int
    jitter: Jitter
    phase: AttemptPhase = AttemptPhase.STREAMING
    last_seq: int = 0
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
    retry: Unreachable | None = None
    after_wait: AfterWait | None = None
    # The next Render is to be placed on another render service than the last one.
    elsewhere: bool = False
    # Render services (pool keys) that refused or failed this render: not chosen for it again
    # until none is left to choose (NotPlaced starts afresh).
    avoid: frozenset[str] = frozenset()
    # The job shows STAGE_WAITING_FOR_RENDER, offered for this attempt: the render's next
    # progress, a heartbeat included, is offered to put the render's own stage back.
    showing_wait: bool = False
    # The job's create recorded this attempt's placement with a fenced insert, which proves
    # the lease: its first Render needs no confirming write.
    lease_proven: bool = False


@dataclass(frozen=True)
class AttemptDecision:
    state: AttemptState
    # A question for the runner, or how the attempt ended (for the job to act on).
    next: Question | AttemptOutcome
    # Done in order before ``next``.
    effects: tuple[Effect, ...] = ()


def begin(attempt: AttemptState, *, submit: bool) -> AttemptDecision:
    """The attempt's first call: Render (``submit``) or WatchRender after its last seq."""
    return _open_stream(attempt, submit=submit)


def decide_attempt(
    attempt: AttemptState, observation: Observation, now: float, settings: TrackerSettings
) -> AttemptDecision:
    """The attempt's next state and question, or its outcome, given what it observed at
    monotonic time ``now``. News from outside (JobEnded, Stopping, LeaseLost) is the job's."""
    if attempt.phase is AttemptPhase.ENDED:
        _unexpected(attempt, observation)
    match observation:
        case RpcFailed(code=code, others_available=True, member=member) if code in _FAIL_OVER:
            attempt = _avoiding(attempt, member)  # busy or gone while others can take it
    return _BY_PHASE[attempt.phase](attempt, observation, now, settings)


def render_call_failure(
    code: grpc.StatusCode,
    details: str,
    *,
    member: str,
    submitted: bool,
    draining: bool,
    never_connected: bool,
    others_usable: bool,
    others_with_room: bool,
    field: str = "",
) -> Observation:
    """What a failed render call means, from its facts: a Render a draining render service
    refused (``draining``: its error names the reason DRAINING) → Draining; a Render whose
    request never reached its render service while another could take it → Unreached; anything
    else → RpcFailed. Both of the first cost nothing: nothing started there. A busy render
    service (RESOURCE_EXHAUSTED) has somewhere to fail over to only where another has room;
    any other failure, wherever another usable render service is."""
    if submitted and draining:
        return Draining(member, details)
    if submitted and never_connected and others_usable:
        return Unreached(member, details)
    busy = code == grpc.StatusCode.RESOURCE_EXHAUSTED
    others = others_with_room if busy else others_usable
    return RpcFailed(code, details, field, others_available=others, member=member)


# Phase by phase.


def _streaming(
    state: AttemptState, observation: Observation, now: float, settings: TrackerSettings
) -> AttemptDecision:
    closed = (CloseStream(),)
    match observation:
        case EventReceived(seq=seq, event=event):
            state = _answered(state)
            if seq <= state.last_seq:  # replayed: already applied
                return AttemptDecision(state, ReadStream())
            state = replace(state, last_seq=seq, round_had_event=True)
            if event is None:  # a kind of event this service does not know: proof of life
                return AttemptDecision(state, ReadStream())
            if isinstance(event, Progress):
                if event.heartbeat and not state.showing_wait:
                    return AttemptDecision(state, ReadStream())
                # A heartbeat repeats the render's last progress: offered only to replace the
                # stage this tracker showed while the render service did not answer.
                percent = min(max(event.percent, 0.0), MAX_RUNNING_PROGRESS)
                offer = OfferProgress(
                    percent, event.stage, event.eta_seconds, seq, event.stage_progress
                )
                if state.showing_wait:
                    state = replace(state, showing_wait=False)
                return AttemptDecision(state, ReadStream(), (offer,))
            return _terminal_event(state, seq, event, observation.member, closed)
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
            return _end(state, JobGone(), closed)  # the placement found the job ended elsewhere
        case Refused():
            # The attempt moved on before this placement was recorded: investigated, then
            # followed, as a stream that ended.
            why = f"attempt {state.number} moved on to {observation.attempt} meanwhile"
            return _investigate(_end_round(state), why, closed)
        case JobMissing():
            return _end(state, JobGone(), closed)
        case RpcFailed(code=grpc.StatusCode.RESOURCE_EXHAUSTED, others_available=True):
            return _place_elsewhere(_answered(state), closed)
        case RpcFailed(code=grpc.StatusCode.RESOURCE_EXHAUSTED):
            # Busy: an answer, not a quiet stream (the render was not started).
            return _call_failed(state, observation, closed)
        case RpcFailed():
            return _call_failed(_end_round(state), observation, closed)
    _unexpected(state, observation)


def _call_failed(
    state: AttemptState, failed: RpcFailed, effects: tuple[Effect, ...]
) -> AttemptDecision:
    if failed.code == grpc.StatusCode.INVALID_ARGUMENT and state.submitted:
        message = failed.details or "invalid render spec"
        refused = Failed(FAILURE_INVALID_INPUT, message, failed.field)
        return _end(state, Verdict(0, refused), effects)
    if failed.code == grpc.StatusCode.NOT_FOUND:
        return _end(_answered(state), RenderLost(_not_known(failed.others_available)), effects)
    if failed.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # An answer (the budget starts afresh) that asks for time: the backoff keeps growing.
        busy = Unreachable(f"the render service is busy: {failed.details}", busy=True)
        return _unreachable(replace(state, unreachable_since=None), busy, effects)
    return _investigate(state, f"the render stream broke ({failed.code.name})", effects)


def _investigating(
    state: AttemptState, observation: Observation, now: float, settings: TrackerSettings
) -> AttemptDecision:
    match observation:
        case RenderReport(seq=seq, last_event=Completed() | Failed() | Cancelled() as event):
            state = replace(_answered(state), last_seq=max(state.last_seq, seq))
            return _terminal_event(state, seq, event, observation.member)
        case RenderReport():
            state = _answered(state)
            quiet = state.quiet_rounds
            if quiet >= settings.max_quiet_rounds:
                return _end(
                    state,
                    GaveUp(
                        FAILURE_RENDER_STALLED,
                        "the render service says the render is running, but its stream "
                        f"brought nothing {quiet} times in a row "
                        f"(stall timeout {settings.stall_timeout:g} s)",
                    ),
                )
            if quiet:
                delay, jitter = backoff_delay(settings, quiet, state.jitter)
                why = f"the render stream brought nothing {quiet} time(s) in a row"
                state = replace(state, jitter=jitter)
                return _wait(state, delay, why, "re-attaching", AfterWait.REATTACH)
            return _open_stream(state, submit=False)
        case RpcFailed(code=grpc.StatusCode.NOT_FOUND, others_available=others):
            return _end(_answered(state), RenderLost(_not_known(others)))
        case RpcFailed(code=code, details=details, others_available=others):
            message = f"the render service is unreachable ({code.name}: {details})"
            if state.unreachable_since is None:
                state = replace(state, unreachable_since=now)
            since = state.unreachable_since
            silent_for = 0.0 if since is None else now - since
            refused = code == grpc.StatusCode.UNAVAILABLE
            if others and (refused or silent_for >= settings.failover_after):
                lost = Lost(
                    FAILURE_RENDER_LOST,
                    message,
                    at_once=True,
                    service_lost=True,
                    shown="the render service became unreachable",
                )
                return _end(state, RenderLost(lost))
            return _unreachable(state, Unreachable(message))
    _unexpected(state, observation)


def _confirming(
    state: AttemptState, observation: Observation, now: float, settings: TrackerSettings
) -> AttemptDecision:
    match observation:
        case JobMissing() | JobRead(terminal=True):
            return _end(state, JobGone())
        case JobRead() if state.retry is not None:
            return _ask_again_later(state, state.retry, now, settings)
    _unexpected(state, observation)


def _ask_again_later(
    state: AttemptState, unreachable: Unreachable, now: float, settings: TrackerSettings
) -> AttemptDecision:
    rounds = state.retry_rounds + 1
    delay, jitter = backoff_delay(settings, rounds, state.jitter)
    state = replace(state, retry_rounds=rounds, jitter=jitter)
    effects: tuple[Effect, ...] = ()
    if not unreachable.busy:
        since = now if state.unreachable_since is None else state.unreachable_since
        waited = now - since
        budget = settings.retry_budget
        if waited >= budget:
            return _end(
                state,
                GaveUp(
                    FAILURE_RENDER_UNAVAILABLE,
                    f"{unreachable.shown}; gave up after {waited:.0f} s "
                    f"(retry budget {budget:g} s)",
                ),
            )
        delay = min(delay, budget - waited)
        if waited < settings.failover_after:  # a pool may fail over then
            delay = min(delay, settings.failover_after - waited)
        if not state.showing_wait:
            # The job says that its render service does not answer, not the render's last
            # stage with a frozen ETA.
            effects = (OfferStage(STAGE_WAITING_FOR_RENDER),)
            state = replace(state, showing_wait=True)
    return _wait(state, delay, unreachable.message, "asking again", AfterWait.ASK_AGAIN, effects)


def _waiting(
    state: AttemptState, observation: Observation, now: float, settings: TrackerSettings
) -> AttemptDecision:
    if not isinstance(observation, TimerFired):
        _unexpected(state, observation)
    match state.after_wait:
        case AfterWait.ASK_AGAIN if state.last_seq == 0:
            # Nothing seen of this attempt's render: Render starts it, or attaches to it.
            return _open_stream(state, submit=True)
        case AfterWait.ASK_AGAIN:
            return _investigate(state, "the render service was unreachable")
        case AfterWait.REATTACH:
            return _open_stream(state, submit=False)
    _unexpected(state, observation)


def _ended(
    state: AttemptState, observation: Observation, now: float, settings: TrackerSettings
) -> AttemptDecision:
    _unexpected(state, observation)


_BY_PHASE = {
    AttemptPhase.STREAMING: _streaming,
    AttemptPhase.INVESTIGATING: _investigating,
    AttemptPhase.CONFIRMING: _confirming,
    AttemptPhase.WAITING: _waiting,
    AttemptPhase.ENDED: _ended,
}


# Shared steps.

_NOT_KNOWN = Lost(FAILURE_RENDER_LOST, "the render service no longer knows the render")

# A render service that answered these while another could take the render is avoided for it.
_FAIL_OVER = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


def _not_known(others_available: bool) -> Lost:
    return replace(_NOT_KNOWN, at_once=others_available)


def _terminal_event(
    state: AttemptState,
    seq: int,
    event: RenderOutcome,
    member: str,
    effects: tuple[Effect, ...] = (),
) -> AttemptDecision:
    """A terminal render event from render service ``member``: the newest progress is written
    first (a completion, which supersedes it, does not wait for it)."""
    if not isinstance(event, Completed):
        effects = (*effects, FlushProgress())
    match event:
        case Completed() | Cancelled():
            return _end(state, Verdict(seq, event), effects)
        case Failed(never_started=True):
            # Handed back by a draining render service before it started: nothing was spent.
            return _place_elsewhere(_avoiding(state, member), (*effects, DropProgress()))
        case Failed(code=code) if code in RETRYABLE_RENDER_FAILURES:
            return _end(state, RenderLost(_retryable_loss(event)), effects)
        case Failed():
            return _end(state, Verdict(seq, event), effects)
    raise UnexpectedObservation(f"not a verdict: {event!r}")


def _retryable_loss(event: Failed) -> Lost:
    """A render failed for a reason another attempt may not meet. The object store that did
    not answer stays the job's reason when no attempt is left (the store is shared: no render
    service is avoided for it)."""
    if event.code == FAILURE_STORAGE_UNAVAILABLE:
        return Lost(
            FAILURE_STORAGE_UNAVAILABLE,
            f"the object store did not answer ({event.message})",
            shown=event.message,
        )
    return Lost(FAILURE_RENDER_LOST, f"the render was lost ({event.code}: {event.message})")


def _place_elsewhere(state: AttemptState, effects: tuple[Effect, ...] = ()) -> AttemptDecision:
    """Nothing started where the render was refused or handed back: the same attempt is placed
    on another render service at once, costing nothing."""
    decision = _open_stream(replace(state, elsewhere=True), submit=True)
    return replace(decision, effects=(*effects, *decision.effects))


def _open_stream(state: AttemptState, *, submit: bool) -> AttemptDecision:
    if submit:
        render = CallRender(
            state.number,
            elsewhere=state.elsewhere,
            avoid=state.avoid,
            lease_proven=state.lease_proven,
        )
        state = replace(
            state,
            phase=AttemptPhase.STREAMING,
            submitted=True,
            round_had_event=False,
            last_seq=0,
            elsewhere=False,
            lease_proven=False,
        )
        return AttemptDecision(state, render)
    state = replace(
        state,
        phase=AttemptPhase.STREAMING,
        submitted=False,
        round_had_event=False,
        lease_proven=False,
    )
    return AttemptDecision(state, WatchRender(state.last_seq))


def _avoiding(state: AttemptState, member: str) -> AttemptState:
    return replace(state, avoid=state.avoid | {member}) if member else state


def _investigate(
    state: AttemptState, why: str, effects: tuple[Effect, ...] = ()
) -> AttemptDecision:
    return AttemptDecision(
        replace(state, phase=AttemptPhase.INVESTIGATING), GetRender(why), effects
    )


def _unreachable(
    state: AttemptState, unreachable: Unreachable, effects: tuple[Effect, ...] = ()
) -> AttemptDecision:
    """Before asking again: is the job still active?"""
    confirming = replace(state, phase=AttemptPhase.CONFIRMING, retry=unreachable)
    return AttemptDecision(confirming, ReadJob(), effects)


def _wait(
    state: AttemptState,
    seconds: float,
    why: str,
    then: str,
    after: AfterWait,
    effects: tuple[Effect, ...] = (),
) -> AttemptDecision:
    waiting = replace(state, phase=AttemptPhase.WAITING, after_wait=after)
    return AttemptDecision(waiting, Wait(max(seconds, 0.0), why, then), effects)


def _end(
    state: AttemptState, outcome: AttemptOutcome, effects: tuple[Effect, ...] = ()
) -> AttemptDecision:
    return AttemptDecision(replace(state, phase=AttemptPhase.ENDED), outcome, effects)


def _answered(state: AttemptState) -> AttemptState:
    if state.unreachable_since is None and state.retry_rounds == 0:
        return state  # the usual case, on every event: no copy
    return replace(state, unreachable_since=None, retry_rounds=0)


def _end_round(state: AttemptState) -> AttemptState:
    quiet = 0 if state.round_had_event else state.quiet_rounds + 1
    return replace(state, quiet_rounds=quiet)


def _unexpected(state: AttemptState, observation: Observation) -> NoReturn:
    raise UnexpectedObservation(
        f"{observation!r} does not answer attempt {state.number} {state.phase.value}"
    )

"""Whether nobody drives a job, derived when it is read (export_service.ownership.owner_gone),
without I/O: the reader's roster of heartbeats and the time are inputs. A generated world of an
owner renewing on its schedule (late by up to half a second) and a reader renewing on its own
checks that a live owner is never taken for gone, and a dead one is within its bound; a few
cases are checked one by one, and the answer as GetExport shows it."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from export_service.job_proto import job_to_proto
from export_service.ownership import (
    RENEWALS_PER_TTL,
    Roster,
    SeenBeat,
    missed_renewal_after,
    owner_gone,
    roster_of,
)
from export_service.store import Job, JobStatus
from export_service.store.base import ReplicaBeat
from tests.support.specs import pattern_spec
from videojob.export.v1 import export_pb2
from videojob.limits import STAGE_WAITING_FOR_OWNER

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TTL = 10.0
REFRESH = TTL / RENEWALS_PER_TTL


def job(owner: str | None = "owner", status: JobStatus = JobStatus.RUNNING) -> Job:
    return Job(
        id="j",
        request_id="r",
        status=status,
        progress=40.0,
        stage="Rendering",
        output_path="",
        error_code="",
        error_message="",
        error_field="",
        attempt=1,
        version=7,
        spec=pattern_spec().SerializeToString(),
        created_at=NOW,
        updated_at=NOW,
        started_at=NOW,
        finished_at=None,
        last_render_seq=12,
        eta_seconds=30.0,
        output_size_bytes=0,
        output_duration_seconds=0.0,
        cancel_requested=False,
        owner=owner,
        lease_epoch=None if owner is None else 1,
    )


def roster(renewed_ago: float, expires_in: float, read_at: float = 100.0) -> Roster:
    """The reader's roster read at ``read_at``: ``owner`` renewed ``renewed_ago`` s before."""
    beats = [ReplicaBeat("owner", renewed_ago, expires_in)]
    return roster_of("reader", beats, read_at, refresh=REFRESH)


def test_a_roster_is_on_the_readers_clock_as_late_as_it_may_be() -> None:
    read = roster_of("reader", [ReplicaBeat("a", 2.0, 8.0)], 50.0, refresh=REFRESH)
    assert read.beats == {"a": SeenBeat(renewed_at=48.0, expires_at=58.0)}
    assert (read.read_at, read.beats["a"].ttl, read.exclusive) == (50.0, 10.0, False)


def test_a_live_owner_drives_its_job() -> None:
    fresh = roster(renewed_ago=0.5, expires_in=TTL - 0.5)
    assert not owner_gone(job(), fresh, 100.0)
    # Its latest renewal may be one the reader has not read yet: up to the bound, it is alive.
    bound = missed_renewal_after(fresh.beats["owner"], REFRESH)
    assert bound == TTL / 3 + REFRESH + 1.0
    assert not owner_gone(job(), fresh, 100.0 - 0.5 + bound)


def test_an_owner_that_missed_a_renewal_or_whose_lease_lapsed_is_gone() -> None:
    late = roster(renewed_ago=TTL / 3 + REFRESH + 1.5, expires_in=2.0)
    assert owner_gone(job(), late, 100.0)
    lapsed = roster(renewed_ago=TTL + 0.1, expires_in=-0.1)
    assert owner_gone(job(), lapsed, 100.0)
    # Handed back (a replica that stopped) and not taken yet: nobody drives it either.
    assert owner_gone(job(owner=None), roster(0.5, TTL), 100.0)


def test_what_is_never_derived() -> None:
    late = roster(renewed_ago=TTL, expires_in=-1.0)
    # A finished job needs nobody.
    for status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
        assert not owner_gone(job(status=status), late, 100.0)
    # The reader's own job: it answers, so it is alive.
    assert not owner_gone(job(owner="reader"), late, 100.0)
    # An owner the roster does not know started after it was read.
    assert not owner_gone(job(owner="newcomer"), late, 100.0)
    # One replica on an exclusive database owns everything.
    assert not owner_gone(job(owner=None), replace(late, exclusive=True), 100.0)
    # A roster never read, or too old to judge by (the reader's own renewals are late).
    assert not owner_gone(job(), Roster("reader"), 100.0)
    assert not owner_gone(job(), late, 100.0 + REFRESH + 1.01)


def test_a_job_nobody_drives_is_shown_waiting_for_its_replica_and_its_record_kept() -> None:
    record = job()
    shown = job_to_proto(record, awaiting_owner=True)
    assert (shown.awaiting_owner, shown.stage, shown.eta_seconds) == (
        True,
        STAGE_WAITING_FOR_OWNER,
        0,
    )
    assert (shown.version, shown.progress, shown.status) == (7, 40.0, export_pb2.RUNNING)
    assert (record.stage, record.eta_seconds) == ("Rendering", 30.0)  # nothing written
    driven = job_to_proto(record)
    assert (driven.awaiting_owner, driven.stage, driven.eta_seconds) == (False, "Rendering", 30)
    done = job_to_proto(job(status=JobStatus.COMPLETED), awaiting_owner=True)
    assert not done.awaiting_owner


@settings(max_examples=200, deadline=None)
@given(
    st.floats(1.0, 60.0),
    st.floats(1.0, 60.0),
    st.floats(0.0, 30.0),
    st.integers(0, 2**32),
)
def test_a_live_owner_is_never_gone_and_a_dead_one_is_soon(
    owner_ttl: float, reader_ttl: float, dies_after: float, seed: int
) -> None:
    """The owner renews every TTL/3 plus up to 0.5 s, the reader every TTL/3 plus up to 0.4 s
    (its roster read as each renewal answers), each with its own TTL; the owner dies after
    ``dies_after`` s. Asked at random moments: never gone while it lives; always gone from the
    bound after its last renewal on (the reader still reading)."""
    rng = random.Random(seed)
    refresh = reader_ttl / RENEWALS_PER_TTL
    death = dies_after
    renewals = [0.0]
    while renewals[-1] < death:
        renewals.append(renewals[-1] + owner_ttl / RENEWALS_PER_TTL + rng.uniform(0.0, 0.5))
    renewals = [at for at in renewals if at <= death]
    last = renewals[-1]
    bound = owner_ttl / RENEWALS_PER_TTL + refresh + max(1.0, owner_ttl / 10)
    read_at = rng.uniform(0.0, refresh)
    end = last + bound + 3 * (refresh + 0.4)
    while read_at < end:
        renewed = max(at for at in renewals if at <= read_at)
        seen = roster_of(
            "reader",
            [ReplicaBeat("owner", read_at - renewed, renewed + owner_ttl - read_at)],
            read_at,
            refresh=refresh,
        )
        next_read = read_at + refresh + rng.uniform(0.0, 0.4)
        for now in sorted(rng.uniform(read_at, next_read) for _ in range(5)):
            gone = owner_gone(job(), seen, now)
            if now <= death:
                assert not gone, (now, renewals, read_at)
            if now > last + bound:
                assert gone, (now, last, bound, read_at)
        read_at = next_read

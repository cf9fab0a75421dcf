"""Webhooks from several export replicas on one PostgreSQL database: a replica SIGKILLed after
the terminal commit, while it holds the job's delivery and before any answer, loses no event:
another replica sends it once the dead one's claim lapses, with the same webhook-id, and the
receiver verifies both attempts with ``standardwebhooks`` and ``cloudevents``."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from tests.cluster.conftest import Replica, StackFactory
from tests.support.polling import wait_until
from tests.support.specs import pattern_spec
from tests.support.webhook_receiver import HANG, WebhookReceiver
from videojob.export.v1 import export_pb2
from videojob_launcher import ServiceProcess

pytestmark = pytest.mark.postgresql

# An attempt the receiver never answers is held this long by its replica (plus the claim's
# margin) before another may take the delivery over; the test kills the holder well within it.
ATTEMPT_TIMEOUT_SECONDS = "8"
WEBHOOK_ARGS = ("--webhook-allow-private", "--webhook-timeout", ATTEMPT_TIMEOUT_SECONDS)

OpenReplica = Callable[[ServiceProcess], Replica]


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    started = await WebhookReceiver(script=deque([HANG])).start()
    yield started
    await started.stop()


async def claimed_by(database_url: str, job_id: str) -> str | None:
    """The deliverer holding the job's delivery (``name@host:pid``), read from the outbox."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(database_url)
    try:
        holder: str | None = await conn.fetchval(
            "SELECT claimed_by FROM webhook_deliveries WHERE job_id = $1", job_id
        )
        return holder
    finally:
        await conn.close()


async def test_a_replica_killed_while_it_sends_an_event_loses_none(
    cluster: StackFactory, replicas: OpenReplica, schema: str, receiver: WebhookReceiver
) -> None:
    stack = await cluster(exports=2, export_args=WEBHOOK_ARGS)
    first = replicas(stack.exports[0])
    created = await first.stub.CreateExport(
        export_pb2.CreateExportRequest(
            request_id="killed-while-sending",
            spec=pattern_spec(1.0),
            notify=export_pb2.WebhookEndpoint(url=receiver.url),
        )
    )
    secret = created.notify_secret

    async def hanging() -> bool:
        return receiver.hanging == 1

    await wait_until(hanging, "the first attempt to reach the receiver")
    job = await first.get(created.id)
    assert job.status == export_pb2.COMPLETED  # the terminal commit came first
    holder = await claimed_by(schema, created.id)
    assert holder is not None
    (sender,) = [p for p in stack.exports if holder.endswith(f":{p.pid}")]
    (survivor,) = [p for p in stack.exports if p is not sender]
    await asyncio.to_thread(sender.kill)

    async def delivered_again() -> bool:
        return len(receiver.received) == 2

    await wait_until(delivered_again, "another replica to send the event", 60)
    lost, delivered = receiver.received
    assert lost.webhook_id == delivered.webhook_id
    for attempt in (lost, delivered):
        event = attempt.verified(secret)
        assert event.get_type() == "dev.videojob.export.completed"
        assert event.get_subject() == created.id
    other = replicas(survivor)

    async def shown_delivered() -> bool:
        answer = await other.stub.ListJobDeliveries(
            export_pb2.ListJobDeliveriesRequest(id=created.id)
        )
        return answer.deliveries[0].state == export_pb2.DELIVERY_DELIVERED

    await wait_until(shown_delivered, "the delivery to be recorded")
    answer = await other.stub.ListJobDeliveries(export_pb2.ListJobDeliveriesRequest(id=created.id))
    (shown,) = answer.deliveries
    # The killed replica never recorded its attempt: one attempt, answered 200.
    assert (shown.id, shown.attempts, shown.last_status_code) == (lost.webhook_id, 1, 200)
    assert await claimed_by(schema, created.id) is None


async def test_replicas_together_hold_no_more_attempts_to_one_endpoint_than_its_cap(
    cluster: StackFactory, replicas: OpenReplica
) -> None:
    """Jobs on both replicas owe a receiver that never answers: between them the replicas hold
    two requests open there (``--webhook-per-endpoint``), not two each, and another endpoint's
    events, owed after all of them, arrive while both still hang."""
    hanging = await WebhookReceiver(script=deque([HANG] * 20)).start()
    receiver = await WebhookReceiver().start()
    try:
        args = ("--webhook-allow-private", "--webhook-timeout", "30", "--webhook-per-endpoint", "2")
        stack = await cluster(exports=2, export_args=args)
        both = [replicas(process) for process in stack.exports]

        async def finished(replica: Replica, request_id: str, url: str) -> None:
            created = await replica.stub.CreateExport(
                export_pb2.CreateExportRequest(
                    request_id=request_id,
                    spec=pattern_spec(0.5),
                    notify=export_pb2.WebhookEndpoint(url=url),
                )
            )
            await replica.watch(created.id, [])

        # One at a time, alternately: each terminal commit wakes its replica's deliverer, which
        # claims while the other replica's attempts are held.
        for number in range(6):
            await finished(both[number % 2], f"hang-{number}", hanging.url)

        async def cap_reached() -> bool:
            return hanging.open_hanging >= 2

        await wait_until(cap_reached, "two attempts open at the hanging receiver")
        for number, replica in enumerate(both):
            await finished(replica, f"other-{number}", receiver.url)

        async def others_delivered() -> bool:
            return len(receiver.received) == 2

        await wait_until(others_delivered, "the other endpoint's events")
        assert (hanging.open_hanging, hanging.abandoned) == (2, 0)
        assert (len(hanging.received), hanging.most_open_hanging) == (2, 2)
    finally:
        await receiver.stop()
        await hanging.stop()

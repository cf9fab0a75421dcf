"""Webhooks end to end: a real render service, the export service in-process, and receivers on
127.0.0.1 that verify every delivery with the ``standardwebhooks`` and ``cloudevents``
libraries. Private destinations are allowed by the operator's flag here (every packet stays on
loopback); the refusals are tested with it off, on literal addresses, and with a stub resolver
for names."""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from export_service.config import ExportConfig
from export_service.server import ExportServer, create_server
from export_service.store import open_store
from export_service.webhooks.destination import Resolver
from export_service.webhooks.settings import WebhookSettings
from tests.export.conftest import FAST_TRACKER, InProcessRender, pattern_spec, wait_for, watch
from tests.support.certs import CertPair, make_named_server_cert
from tests.support.ports import free_port
from tests.support.webhook_receiver import HANG, Answer, WebhookReceiver
from videojob import metrics
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

LOOPBACK_ALLOWED = WebhookSettings(
    allow_private=True, timeout=1.0, backoff_first=0.2, backoff_max=1.0, poll_interval=0.2
)

Start = Callable[..., Awaitable["Stub"]]


class StubResolver:
    """Names resolved from a table: each lookup of a name takes its next answer (the last one
    again once they run out; a name not in it resolves to nothing). Counts lookups."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        answers = self.table.get(host, [[]])
        return list(answers.pop(0) if len(answers) > 1 else answers[0])


@pytest.fixture
async def start(tmp_path: Path, render_service: InProcessRender) -> AsyncIterator[Start]:
    """Starts the export service in-process with these webhook settings and resolver; its
    client stub."""
    servers: list[ExportServer] = []
    channels: list[grpc.aio.Channel] = []

    async def start_with(
        settings: WebhookSettings = LOOPBACK_ALLOWED, resolver: Resolver | None = None
    ) -> Stub:
        config = ExportConfig(
            listen="127.0.0.1:0",
            render_addr=render_service.address,
            database=f"sqlite:///{tmp_path / 'export.db'}",
            tracker=FAST_TRACKER,
            webhooks=settings,
        )
        server = await create_server(config, await open_store(config.database), resolver=resolver)
        servers.append(server)
        channel = create_channel(f"127.0.0.1:{server.port}")
        channels.append(channel)
        stub: Stub = export_pb2_grpc.ExportServiceStub(channel)
        return stub

    yield start_with
    for channel in channels:
        await channel.close(None)
    for server in servers:
        await server.stop(0)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    started = await WebhookReceiver().start()
    yield started
    await started.stop()


async def create(stub: Stub, request_id: str, url: str, **kwargs: object) -> export_pb2.VideoJob:
    request = export_pb2.CreateExportRequest(
        request_id=request_id,
        spec=pattern_spec(0.5),
        notify=export_pb2.WebhookEndpoint(url=url, **kwargs),  # type: ignore[arg-type]
    )
    return await stub.CreateExport(request)


async def deliveries(stub: Stub, job_id: str) -> list[export_pb2.WebhookDelivery]:
    answer = await stub.ListJobDeliveries(export_pb2.ListJobDeliveriesRequest(id=job_id))
    return list(answer.deliveries)


async def test_a_finished_job_sends_a_signed_cloud_event(
    start: Start, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stub = await start()
    job = await create(stub, "hook-1", receiver.url)
    secret = job.notify_secret
    assert secret.startswith("whsec_") and len(secret) > 40
    final = (await watch(stub, job.id))[-1]
    assert final.status == export_pb2.COMPLETED

    async def delivered() -> bool:
        shown = await deliveries(stub, job.id)
        return bool(shown) and shown[0].state == export_pb2.DELIVERY_DELIVERED

    await wait_for(delivered)
    (received,) = receiver.received
    event = received.verified(secret)
    assert event.get_type() == "dev.videojob.export.completed"
    assert (event.get_specversion(), event.get_subject()) == ("1.0", job.id)
    data = event.get_data()
    assert isinstance(data, dict)
    assert (data["id"], data["status"], data["progress"]) == (job.id, "completed", 100)
    assert data["version"] == final.version and data["outputPath"] == final.output_path
    assert received.headers["content-type"].startswith("application/cloudevents+json")
    (shown,) = await deliveries(stub, job.id)
    assert (shown.id, shown.attempts, shown.last_status_code) == (received.webhook_id, 1, 200)
    assert shown.job_version == final.version and not shown.HasField("next_attempt_at")
    # The secret was in the create's answer only.
    assert not (await stub.GetExport(export_pb2.GetExportRequest(id=job.id))).notify_secret
    assert not final.notify_secret
    replayed = await create(stub, "hook-1", receiver.url)
    assert replayed.id == job.id and not replayed.notify_secret
    assert secret not in received.body.decode()
    history = await stub.ListJobHistory(export_pb2.ListJobHistoryRequest(id=job.id))
    assert secret not in str(history) and secret not in str(await deliveries(stub, job.id))
    assert caplog.records and secret not in caplog.text


async def test_every_status_change_when_asked(start: Start, receiver: WebhookReceiver) -> None:
    """One event per status the job had, as its history shows them (a render quick enough to
    end before its first progress is written goes from queued to completed), and none other."""
    stub = await start()
    job = await create(
        stub, "hook-all", receiver.url, events=export_pb2.WEBHOOK_EVENTS_STATUS_CHANGES
    )
    await watch(stub, job.id)
    history = await stub.ListJobHistory(export_pb2.ListJobHistoryRequest(id=job.id))
    statuses = {export_pb2.JobStatus.Name(entry.status).lower() for entry in history.entries}
    assert {"queued", "completed"} <= statuses
    await wait_for(lambda: _count(receiver, len(statuses)))
    events = [r.verified(job.notify_secret) for r in receiver.received]
    assert sorted(e.get_type() for e in events) == sorted(
        f"dev.videojob.export.{status}" for status in statuses
    )
    assert len({r.webhook_id for r in receiver.received}) == len(statuses)
    versions = {r.headers["webhook-id"]: r.event_data()["version"] for r in receiver.received}
    assert sorted(versions.values())[0] == 1  # queued: the create's version


async def _count(receiver: WebhookReceiver, at_least: int) -> bool:
    return len(receiver.received) >= at_least


async def test_a_receiver_down_while_the_job_ends_gets_the_event_later(start: Start) -> None:
    stub = await start()
    down = WebhookReceiver(port=free_port())
    job = await create(stub, "hook-down", down.url)
    assert (await watch(stub, job.id))[-1].status == export_pb2.COMPLETED

    async def refused_at_least_once() -> bool:
        shown = await deliveries(stub, job.id)
        return bool(shown) and shown[0].attempts >= 1 and shown[0].last_error != ""

    await wait_for(refused_at_least_once)
    (waiting,) = await deliveries(stub, job.id)
    assert waiting.state == export_pb2.DELIVERY_PENDING and waiting.last_status_code == 0
    assert waiting.HasField("next_attempt_at")
    await down.start()
    try:
        await wait_for(lambda: _count(down, 1))
        event = down.received[0].verified(job.notify_secret)
        assert event.get_type() == "dev.videojob.export.completed"
        assert down.received[0].webhook_id == waiting.id
    finally:
        await down.stop()


async def test_500_then_200_is_delivered_with_the_same_id_and_a_fresh_signature(
    start: Start, receiver: WebhookReceiver
) -> None:
    receiver.script.append(Answer(500, headers=(("retry-after", "1"),), body=b"busy"))
    stub = await start()
    job = await create(stub, "hook-500", receiver.url)
    await watch(stub, job.id)

    async def delivered() -> bool:
        shown = await deliveries(stub, job.id)
        return bool(shown) and shown[0].state == export_pb2.DELIVERY_DELIVERED

    await wait_for(delivered)
    first, second = receiver.received
    for attempt in (first, second):
        assert attempt.verified(job.notify_secret).get_type() == "dev.videojob.export.completed"
    assert first.webhook_id == second.webhook_id
    assert first.body == second.body
    # Retry-After: 1 was respected, so the second attempt is stamped at least a second later.
    first_time, second_time = (int(r.headers["webhook-timestamp"]) for r in (first, second))
    assert second_time >= first_time + 1
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"]
    (shown,) = await deliveries(stub, job.id)
    assert (shown.attempts, shown.last_status_code) == (2, 200)


async def test_410_gone_gives_up_visibly(start: Start, receiver: WebhookReceiver) -> None:
    receiver.script.append(Answer(410, body=b"g" * 5000))
    gave_up_before = metrics.WEBHOOKS_GAVE_UP._value.get()
    stub = await start()
    job = await create(stub, "hook-410", receiver.url)
    await watch(stub, job.id)

    async def given_up() -> bool:
        shown = await deliveries(stub, job.id)
        return bool(shown) and shown[0].state == export_pb2.DELIVERY_GAVE_UP

    await wait_for(given_up)
    (shown,) = await deliveries(stub, job.id)
    assert (shown.attempts, shown.last_status_code) == (1, 410)
    assert shown.last_response == "g" * 256  # at most a few hundred bytes kept
    assert not shown.HasField("next_attempt_at") and shown.HasField("finished_at")
    assert len(receiver.received) == 1
    assert metrics.WEBHOOKS_GAVE_UP._value.get() == gave_up_before + 1


async def test_a_hanging_receiver_holds_no_other_delivery(
    start: Start, receiver: WebhookReceiver
) -> None:
    """Two jobs end together; one's receiver never answers its first request. The other's event
    is delivered while that attempt still hangs, and the hanging one times out and is sent
    again (same webhook-id), then delivered."""
    hanging = await WebhookReceiver(script=deque([HANG])).start()
    try:
        stub = await start(replace(LOOPBACK_ALLOWED, timeout=10.0))
        stuck = await create(stub, "hook-hang", hanging.url)
        other = await create(stub, "hook-other", receiver.url)
        await watch(stub, stuck.id)
        await watch(stub, other.id)
        await wait_for(lambda: _count(receiver, 1))
        await wait_for(lambda: _hangs(hanging))
        # The other event came while the first attempt still hangs: no answer, none recorded.
        (held,) = await deliveries(stub, stuck.id)
        assert (held.state, held.attempts) == (export_pb2.DELIVERY_PENDING, 0)
        assert len(hanging.received) == 1

        async def stuck_delivered() -> bool:
            shown = await deliveries(stub, stuck.id)
            return shown[0].state == export_pb2.DELIVERY_DELIVERED

        await wait_for(stuck_delivered)
        (shown,) = await deliveries(stub, stuck.id)
        assert (shown.attempts, shown.last_status_code) == (2, 200)  # the first timed out
        assert hanging.received[0].webhook_id == hanging.received[1].webhook_id
    finally:
        await hanging.stop()


async def _hangs(receiver: WebhookReceiver) -> bool:
    return receiver.hanging >= 1


# Long enough that an attempt ending by timeout cannot be mistaken for one that did not hang.
HANG_TIMEOUT = 30.0


async def owe_hanging_events(stub: Stub, receiver: WebhookReceiver, count: int) -> list[str]:
    """``count`` finished jobs, each owing ``receiver`` its event."""
    jobs = [await create(stub, f"hook-hang-{n}", receiver.url) for n in range(count)]
    for job in jobs:
        await watch(stub, job.id)
    return [job.id for job in jobs]


async def test_a_receiver_that_hangs_with_many_events_owed_delays_no_other_endpoint(
    start: Start, receiver: WebhookReceiver
) -> None:
    """Six events owed to a receiver that never answers, four send slots, two per endpoint: the
    hanging receiver holds two slots, and another endpoint's event, owed after all of them,
    arrives while both of those attempts still hang (before any of them times out)."""
    hanging = await WebhookReceiver(script=deque([HANG] * 12)).start()
    try:
        settings = replace(LOOPBACK_ALLOWED, timeout=HANG_TIMEOUT, concurrency=4, per_endpoint=2)
        stub = await start(settings)
        await owe_hanging_events(stub, hanging, 6)

        async def slots_held() -> bool:
            return hanging.open_hanging >= 2

        await wait_for(slots_held)
        other = await create(stub, "hook-other", receiver.url)
        await wait_for(lambda: _count(receiver, 1))
        assert receiver.received[0].event_data()["id"] == other.id
        assert (hanging.open_hanging, hanging.abandoned) == (2, 0)
        # The claims that took the other endpoint's event skipped the older hanging ones.
        assert (len(hanging.received), hanging.most_open_hanging) == (2, 2)
    finally:
        await hanging.stop()


async def test_an_endpoint_never_has_more_attempts_open_than_its_cap(
    start: Start, receiver: WebhookReceiver
) -> None:
    """With every send slot free, a hanging receiver owed many events still gets only
    ``per_endpoint`` requests at once; its other deliveries wait, due, unclaimed."""
    hanging = await WebhookReceiver(script=deque([HANG] * 12)).start()
    try:
        stub = await start(replace(LOOPBACK_ALLOWED, timeout=HANG_TIMEOUT, per_endpoint=3))
        jobs = await owe_hanging_events(stub, hanging, 8)

        async def cap_reached() -> bool:
            return hanging.open_hanging >= 3

        await wait_for(cap_reached)
        # A later event to another endpoint is sent: the deliverer claimed since the cap
        # was reached, and left the hanging receiver's due deliveries where they were.
        await create(stub, "hook-other", receiver.url)
        await wait_for(lambda: _count(receiver, 1))
        waiting = [(await deliveries(stub, job_id))[0] for job_id in jobs]
        assert all(d.state == export_pb2.DELIVERY_PENDING and d.attempts == 0 for d in waiting)
        assert (len(hanging.received), hanging.most_open_hanging, hanging.abandoned) == (3, 3, 0)
    finally:
        await hanging.stop()


async def test_a_name_is_resolved_once_per_attempt_and_the_checked_address_is_used(
    start: Start, receiver: WebhookReceiver
) -> None:
    resolver = StubResolver({"hooks.videojob.test": [["127.0.0.1"]]})
    stub = await start(resolver=resolver)
    url = f"http://hooks.videojob.test:{receiver.port}/hook?k=1"
    job = await create(stub, "hook-name", url)
    assert resolver.lookups == ["hooks.videojob.test"]  # checked at create
    await watch(stub, job.id)
    await wait_for(lambda: _count(receiver, 1))
    (received,) = receiver.received
    assert received.headers["host"] == f"hooks.videojob.test:{receiver.port}"
    assert received.path == "/hook?k=1"
    received.verified(job.notify_secret)
    assert resolver.lookups == ["hooks.videojob.test", "hooks.videojob.test"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/hook", "a loopback address"),
        ("http://[::1]/hook", "a loopback address"),
        ("http://10.1.2.3/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data", "a link-local address"),
        ("http://[::ffff:192.168.0.1]/", "a private address"),
        ("http://0.0.0.0/", "an unspecified address"),
        ("http://hooks.private.test/", "resolves to a private address (10.9.8.7)"),
        ("http://nowhere.test/", "nowhere.test does not resolve"),
        ("ftp://hooks.example/", "must be an http:// or https:// URL"),
        ("http://user:pw@hooks.example/", "must not carry credentials"),
    ],
)
async def test_a_destination_that_is_not_public_is_refused_at_create(
    start: Start, url: str, why: str
) -> None:
    resolver = StubResolver({"hooks.private.test": [["93.184.216.34", "10.9.8.7"]]})
    stub = await start(WebhookSettings(), resolver)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await create(stub, "hook-refused", url)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert details.startswith("notify.url: ") and why in details
    listed = await stub.ListExports(export_pb2.ListExportsRequest(page_size=10))
    assert list(listed.jobs) == []


async def test_a_name_checked_public_at_create_is_checked_again_before_each_attempt(
    start: Start,
) -> None:
    """The name resolved to a public address at create and to a loopback one later (DNS
    rebinding): the attempt is refused before any packet is sent, and shown as such."""
    resolver = StubResolver({"hooks.public.test": [["93.184.216.34"], ["127.0.0.1"]]})
    stub = await start(WebhookSettings(backoff_first=0.2, poll_interval=0.2), resolver)
    job = await create(stub, "hook-public", "https://hooks.public.test/in")
    assert job.notify_secret.startswith("whsec_")
    await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id))

    async def refused() -> bool:
        shown = await deliveries(stub, job.id)
        return bool(shown) and shown[0].attempts >= 1

    await wait_for(refused)
    (shown,) = await deliveries(stub, job.id)
    assert shown.type == "dev.videojob.export.cancelled"
    assert shown.state == export_pb2.DELIVERY_PENDING and shown.last_status_code == 0
    assert shown.last_error.startswith("destination refused: hooks.public.test resolves to a")
    with pytest.raises(grpc.aio.AioRpcError) as bad_events:
        await create(stub, "hook-events", "https://hooks.public.test/in", events=7)
    assert (bad_events.value.details() or "").startswith("notify.events: ")


async def test_an_unknown_job_has_no_deliveries(start: Start) -> None:
    stub = await start()
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await deliveries(stub, "nope")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def server_tls(pair: CertPair) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pair.cert, pair.key)
    return context


async def test_https_keeps_the_name_for_sni_and_the_certificate_check(
    start: Start, tmp_path: Path
) -> None:
    """The attempt connects to the address it checked, and TLS still names the host: the
    certificate (valid for the name alone) is checked against it, and SNI carries it."""
    name = "hooks.videojob.test"
    ca, pair = make_named_server_cert(tmp_path / "tls", name)
    receiver = await WebhookReceiver(tls=server_tls(pair)).start()
    try:
        resolver = StubResolver({name: [["127.0.0.1"]]})
        stub = await start(replace(LOOPBACK_ALLOWED, ca=ca), resolver)
        job = await create(stub, "hook-tls", f"https://{name}:{receiver.port}/hook")
        await watch(stub, job.id)
        await wait_for(lambda: _count(receiver, 1))
        receiver.received[0].verified(job.notify_secret)
        assert receiver.received[0].headers["host"] == f"{name}:{receiver.port}"
        assert receiver.server_names == [name]
    finally:
        await receiver.stop()


async def test_https_to_a_receiver_whose_certificate_names_another_host_fails(
    start: Start, tmp_path: Path
) -> None:
    ca, pair = make_named_server_cert(tmp_path / "tls", "elsewhere.videojob.test")
    receiver = await WebhookReceiver(tls=server_tls(pair)).start()
    try:
        resolver = StubResolver({"hooks.videojob.test": [["127.0.0.1"]]})
        stub = await start(replace(LOOPBACK_ALLOWED, ca=ca), resolver)
        job = await create(stub, "hook-tls-bad", f"https://hooks.videojob.test:{receiver.port}/")
        await watch(stub, job.id)

        async def refused() -> bool:
            shown = await deliveries(stub, job.id)
            return bool(shown) and shown[0].attempts >= 1

        await wait_for(refused)
        (shown,) = await deliveries(stub, job.id)
        assert shown.state == export_pb2.DELIVERY_PENDING and shown.last_status_code == 0
        assert "CERTIFICATE_VERIFY_FAILED" in shown.last_error
        assert receiver.received == []
    finally:
        await receiver.stop()

"""The deliverer's decisions, alone: what an answer means for a delivery (delivered, gone, due
again after a backoff that respects Retry-After, given up once the retry period is over), and
the Standard Webhooks signature checked by the ``standardwebhooks`` library."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from export_service.store.outbox import Delivery, DeliveryState
from export_service.webhooks.deliverer import Answer, backoff, outcome, retry_after
from export_service.webhooks.destination import BadDestination, parse_url, refusal
from export_service.webhooks.settings import WebhookSettings
from export_service.webhooks.signing import new_secret, signed_headers

SETTINGS = WebhookSettings(backoff_first=1.0, backoff_max=60.0, retry_for=3600.0)
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def delivery(attempts: int) -> Delivery:
    return Delivery(
        id="msg_j_completed_0",
        job_id="j",
        position=0,
        type="dev.videojob.export.completed",
        url="https://hooks.example/",
        state=DeliveryState.PENDING,
        attempts=attempts,
        payload="{}",
        job_version=5,
        created_at=CREATED,
        next_attempt_at=CREATED,
        last_attempt_at=None,
        finished_at=None,
        last_status=0,
        last_error="",
        last_response="",
    )


def test_an_answer_decides_the_delivery() -> None:
    at = CREATED + timedelta(seconds=10)
    assert outcome(SETTINGS, delivery(0), Answer(204), at).state is DeliveryState.DELIVERED
    gone = outcome(SETTINGS, delivery(0), Answer(410, excerpt="bye"), at)
    assert (gone.state, gone.next_attempt_at, gone.response) == (DeliveryState.GAVE_UP, None, "bye")
    for answer in (Answer(500), Answer(302), Answer(error="refused"), Answer(429)):
        again = outcome(SETTINGS, delivery(0), answer, at)
        assert again.state is DeliveryState.PENDING and again.next_attempt_at is not None
        assert at + timedelta(seconds=0.5) <= again.next_attempt_at <= at + timedelta(seconds=1)


def test_retry_after_is_respected_and_the_retry_period_ends_in_gave_up() -> None:
    at = CREATED + timedelta(seconds=10)
    waited = outcome(SETTINGS, delivery(0), Answer(503, retry_after=120), at)
    assert waited.next_attempt_at == at + timedelta(seconds=120)
    late = CREATED + timedelta(seconds=3599)
    over = outcome(SETTINGS, delivery(20), Answer(500), late)
    assert over.state is DeliveryState.GAVE_UP and over.status == 500


@pytest.mark.parametrize("attempts", [0, 1, 5, 30, 1000])
def test_the_backoff_doubles_up_to_its_cap_with_jitter(attempts: int) -> None:
    step = min(60.0, 2.0**attempts)
    waits = [backoff(SETTINGS, attempts) for _ in range(200)]
    assert all(step / 2 <= wait <= step for wait in waits)
    assert len(set(waits)) > 1


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("30") == 30
    soon = datetime.now(UTC) + timedelta(seconds=90)
    assert 80 <= (retry_after(format_datetime(soon, usegmt=True)) or 0) <= 90
    assert retry_after(None) is None and retry_after("soon") is None


def test_the_signature_is_the_standard_one() -> None:
    secret = new_secret()
    body = b'{"specversion":"1.0"}'
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers(secret, "msg_1", now, body)
    assert Webhook(secret).verify(body, headers) == {"specversion": "1.0"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.2", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("fd00:ec2::254", "a private address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("100.64.0.1", "a non-public address"),
        ("224.0.0.1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("93.184.216.34", None),
        ("2606:2800:220:1::1", None),
    ],
)
def test_only_public_addresses_may_be_sent_to(address: str, why: str | None) -> None:
    found = refusal(address)
    assert (found is None) if why is None else (found is not None and found.startswith(why))


def test_a_url_is_an_http_one_with_a_host() -> None:
    parsed = parse_url("https://Hooks.Example:8443/in?x=1")
    assert (parsed.scheme, parsed.host, parsed.port) == ("https", "hooks.example", 8443)
    for bad in ("", "hooks.example/in", "file:///etc/passwd", "http://", "http://h:99999/"):
        with pytest.raises(BadDestination):
            parse_url(bad)

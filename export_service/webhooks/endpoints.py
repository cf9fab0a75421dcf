"""The webhook endpoints of a new job: the one its create names (checked, with a secret made
for it) and the operator's."""

from __future__ import annotations

from export_service.store.outbox import OPERATOR_SECRET, NotifyEvents, WebhookTarget
from export_service.webhooks.destination import (
    BadDestination,
    Resolver,
    parse_url,
    resolve_checked,
)
from export_service.webhooks.settings import WebhookSettings
from export_service.webhooks.signing import new_secret
from videojob.errors import InvalidArgument
from videojob.export.v1 import export_pb2

_EVENTS = {
    export_pb2.WEBHOOK_EVENTS_UNSPECIFIED: NotifyEvents.TERMINAL,
    export_pb2.WEBHOOK_EVENTS_TERMINAL: NotifyEvents.TERMINAL,
    export_pb2.WEBHOOK_EVENTS_STATUS_CHANGES: NotifyEvents.ALL,
}


async def caller_target(
    request: export_pb2.CreateExportRequest, settings: WebhookSettings, resolver: Resolver
) -> WebhookTarget | None:
    """The endpoint ``request.notify`` names, with a new secret (None when it names none);
    InvalidArgument naming the field when it may not be used."""
    if not request.HasField("notify"):
        return None
    notify = request.notify
    if notify.events not in _EVENTS:
        raise InvalidArgument("notify.events", f"unknown value {notify.events}")
    try:
        destination = parse_url(notify.url)
        await resolve_checked(destination, resolver, allow_private=settings.allow_private)
    except BadDestination as why:
        raise InvalidArgument("notify.url", str(why)) from None
    return WebhookTarget(notify.url, _EVENTS[notify.events], new_secret())


def operator_targets(settings: WebhookSettings) -> tuple[WebhookTarget, ...]:
    """The operator's endpoints (signed with its secret, which is never stored)."""
    return tuple(
        WebhookTarget(url, settings.events, OPERATOR_SECRET) for url in settings.urls if url
    )

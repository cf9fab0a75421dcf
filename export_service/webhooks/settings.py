"""The webhook settings an operator gives (export_service flags --webhook-*)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from export_service.store.outbox import NotifyEvents

# Three days: a receiver down over a long weekend still gets its events.
DEFAULT_RETRY_FOR_SECONDS = 3 * 24 * 3600.0


@dataclass(frozen=True)
class WebhookSettings:
    # The operator's endpoints: every job created while they are set tells them of its changes
    # (``events``), signed with ``secret`` (given by flag or variable, never stored).
    urls: tuple[str, ...] = ()
    events: NotifyEvents = NotifyEvents.TERMINAL
    secret: str = ""
    # Loopback, private and link-local destinations allowed (a private network's receivers,
    # and tests): off, they are refused (export_service.webhooks.destination).
    allow_private: bool = False
    # A CA that verifies https:// receivers besides the system's (a private network's own).
    ca: Path | None = None
    # One attempt: connect, send, and the answer's head and first bytes, at most this long.
    timeout: float = 10.0
    # A delivery is tried again, with exponential backoff and jitter, for this long after the
    # change it tells of; then it is given up.
    retry_for: float = DEFAULT_RETRY_FOR_SECONDS
    backoff_first: float = 1.0
    backoff_max: float = 3600.0
    # Attempts in flight at once on this replica (a hanging receiver holds one for ``timeout``).
    concurrency: int = 16
    # Attempts in flight at once to one endpoint (scheme, host, port), counted over every
    # replica: a receiver that hangs holds no more, the others' deliveries take the rest.
    per_endpoint: int = 2
    # How often the deliverer looks for deliveries due (another replica's, retries); this
    # replica's own changes wake it at once.
    poll_interval: float = 1.0

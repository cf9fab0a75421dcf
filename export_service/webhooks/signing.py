"""Standard Webhooks signatures (standardwebhooks.com): secrets and the three headers.

A secret is ``whsec_`` and the base64 of random bytes. Each attempt is signed afresh: the
``webhook-timestamp`` is the attempt's (receivers refuse old ones), the ``webhook-signature``
``v1,`` and the base64 HMAC-SHA256, under the secret's bytes, of ``<id>.<timestamp>.<body>``;
the ``webhook-id`` is the delivery's, the same on every attempt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signed_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }

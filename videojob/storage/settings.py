"""How a process reaches the object store: endpoint, region and credentials the way AWS tools
take them (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``), the public endpoint of presigned links (``--store-public-endpoint``,
declared in ``videojob.flags``), and every timeout of a store call, in one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

ENDPOINT_VARIABLE: Final = "AWS_ENDPOINT_URL"
REGION_VARIABLE: Final = "AWS_REGION"
ACCESS_KEY_VARIABLE: Final = "AWS_ACCESS_KEY_ID"
SECRET_KEY_VARIABLE: Final = "AWS_SECRET_ACCESS_KEY"
PUBLIC_ENDPOINT_FLAG: Final = "--store-public-endpoint"
DEFAULT_REGION: Final = "us-east-1"

MIB: Final = 1024 * 1024
# S3 refuses parts under 5 MiB (all but the last), and SeaweedFS does too.
MIN_PART_BYTES: Final = 5 * MIB
MAX_PARTS: Final = 10_000
DEFAULT_PART_BYTES: Final = 16 * MIB
DEFAULT_UPLOAD_CONCURRENCY: Final = 4


@dataclass(frozen=True)
class StoreTimeouts:
    """The bounds of every store call: no call waits longer than ``connect_seconds`` for a
    connection or ``read_seconds`` for the next bytes of an answer, and a failed call is tried
    ``attempts`` times in all (botocore's standard retry mode, with its backoff) before the
    operation fails."""

    connect_seconds: float = 5.0
    read_seconds: float = 30.0
    attempts: int = 3


@dataclass(frozen=True)
class StoreSettings:
    """``endpoint`` None: AWS S3 itself (botocore's endpoint for ``region``). ``access_key``
    and ``secret_key`` None: botocore's own credential chain (an instance role, ~/.aws)."""

    endpoint: str | None = None
    region: str = DEFAULT_REGION
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    public_endpoint: str | None = None
    timeouts: StoreTimeouts = StoreTimeouts()
    part_bytes: int = DEFAULT_PART_BYTES
    upload_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY

    def __post_init__(self) -> None:
        if self.part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES} (S3's minimum part)")
        if self.upload_concurrency < 1:
            raise ValueError("upload_concurrency must be at least 1")

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        public_endpoint: str = "",
        timeouts: StoreTimeouts = StoreTimeouts(),
    ) -> StoreSettings:
        """The settings from the AWS variables (an empty one counts as unset) and the value of
        ``--store-public-endpoint`` (empty: links name the endpoint itself)."""
        environ = os.environ if environ is None else environ
        return cls(
            endpoint=environ.get(ENDPOINT_VARIABLE) or None,
            region=environ.get(REGION_VARIABLE) or DEFAULT_REGION,
            access_key=environ.get(ACCESS_KEY_VARIABLE) or None,
            secret_key=environ.get(SECRET_KEY_VARIABLE) or None,
            public_endpoint=public_endpoint or None,
            timeouts=timeouts,
        )

    @property
    def described_endpoint(self) -> str:
        """The endpoint as errors name it."""
        return self.endpoint or f"AWS S3 ({self.region})"

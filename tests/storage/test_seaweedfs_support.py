"""The tests' SeaweedFS itself: it needs its credentials, and a port taken between choosing it
and binding it costs another try, not a failed run."""

from __future__ import annotations

import itertools
import socket
import time
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.session
import pytest

from tests.support.ports import free_port
from tests.support.seaweedfs import SeaweedFS
from videojob.storage.botocore_data import sharing_data
from videojob_launcher import seaweedfs as seaweedfs_launcher

pytestmark = pytest.mark.object_store


def test_a_port_taken_at_start_costs_another_try(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        choices = itertools.count()
        s3_port_choice = seaweedfs_launcher._PORT_FLAGS.index("-s3.port")
        monkeypatch.setattr(
            seaweedfs_launcher,
            "free_port",
            lambda: taken if next(choices) == s3_port_choice else free_port(),
        )

        store = SeaweedFS.start()
        try:
            assert store.root.name == "try2"
            assert store.s3_port != taken
            assert store.process.poll() is None
        finally:
            store.stop()
    assert not store.home.exists()
    assert not any(path.exists() for path in store.grpc_sockets)


def test_the_store_refuses_anonymous_and_foreign_requests(seaweedfs: SeaweedFS) -> None:
    """Started with credentials: without them weed would accept any, and the wrong-credential
    tests would pass for nothing."""
    client: Any = sharing_data(botocore.session.get_session()).create_client(
        "s3",
        endpoint_url=seaweedfs.endpoint,
        region_name="us-east-1",
        aws_access_key_id="someone",
        aws_secret_access_key="anything",
    )
    try:
        with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
            client.list_objects_v2(Bucket=seaweedfs.bucket)
    finally:
        client.close()


def test_a_store_with_a_home_keeps_its_objects_across_starts_under_new_credentials(
    tmp_path: Path,
) -> None:
    """What ``make run-cluster STORAGE=s3`` relies on: its next run, on other ports and with
    other credentials, still has the objects the jobs in PostgreSQL name; the old credentials
    no longer open it."""
    home = tmp_path / "store"
    first = SeaweedFS.start(home, bucket="videojob")
    try:
        client = _client(first.endpoint, first.access_key, first.secret_key)
        client.put_object(Bucket="videojob", Key="renders/kept.mp4", Body=b"kept" * 100)
        client.close()
    finally:
        first.stop()
    assert first.process.returncode == 0  # terminated, not killed: nothing left unflushed
    second = SeaweedFS.start(home, bucket="videojob")
    try:
        assert second.access_key != first.access_key
        client = _client(second.endpoint, second.access_key, second.secret_key)
        body = client.get_object(Bucket="videojob", Key="renders/kept.mp4")["Body"].read()
        assert body == b"kept" * 100
        # New objects go in beside the old ones (its master, on another port, starts afresh).
        for number in range(20):
            client.put_object(Bucket="videojob", Key=f"renders/new-{number}", Body=b"new" * 100)
        listed = client.list_objects_v2(Bucket="videojob", Prefix="renders/")["Contents"]
        assert len(listed) == 21
        for number in range(20):
            new = client.get_object(Bucket="videojob", Key=f"renders/new-{number}")
            assert new["Body"].read() == b"new" * 100
        body = client.get_object(Bucket="videojob", Key="renders/kept.mp4")["Body"].read()
        assert body == b"kept" * 100
        client.close()
        stale = _client(second.endpoint, first.access_key, first.secret_key)
        with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
            stale.list_objects_v2(Bucket="videojob")
        stale.close()
    finally:
        second.stop()
    assert (home / "data").is_dir()


def test_a_store_starts_in_a_directory_too_deep_for_a_unix_socket_path(tmp_path: Path) -> None:
    """A checkout's var directory may be deeper than a unix socket's path may be long (108
    bytes): weed's sockets go elsewhere, and are gone once it stops."""
    home = tmp_path.joinpath(*["a-directory-of-the-checkout"] * 5, "seaweedfs")
    assert len(str(home)) > 120
    store = SeaweedFS.start(home, bucket="videojob")
    try:
        client = _client(store.endpoint, store.access_key, store.secret_key)
        client.put_object(Bucket="videojob", Key="deep", Body=b"deep")
        assert client.get_object(Bucket="videojob", Key="deep")["Body"].read() == b"deep"
        client.close()
        assert all(len(str(path)) < 108 for path in store.grpc_sockets)
    finally:
        store.stop()
    assert not any(path.exists() for path in store.grpc_sockets)


def _client(endpoint: str, access_key: str, secret_key: str) -> Any:
    return sharing_data(botocore.session.get_session()).create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )


def test_a_killed_store_restarts_with_its_objects_and_unfinished_uploads(
    private_seaweedfs: SeaweedFS,
) -> None:
    client: Any = sharing_data(botocore.session.get_session()).create_client(
        "s3",
        endpoint_url=private_seaweedfs.endpoint,
        region_name="us-east-1",
        aws_access_key_id=private_seaweedfs.access_key,
        aws_secret_access_key=private_seaweedfs.secret_key,
    )
    bucket = private_seaweedfs.bucket
    try:
        client.put_object(Bucket=bucket, Key="kept.mp4", Body=b"kept")
        upload = client.create_multipart_upload(Bucket=bucket, Key="half.mp4")["UploadId"]
        private_seaweedfs.kill()
        with pytest.raises(botocore.exceptions.EndpointConnectionError):
            client.list_objects_v2(Bucket=bucket)

        private_seaweedfs.restart()

        # The bucket answers first; an object's volume may take a moment to register again.
        def kept() -> bytes | None:
            try:
                body: bytes = client.get_object(Bucket=bucket, Key="kept.mp4")["Body"].read()
            except botocore.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code") != "InternalError":
                    raise
                return None
            return body

        deadline = time.monotonic() + 30
        while (body := kept()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert body == b"kept"
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert [(item["Key"], item["UploadId"]) for item in uploads] == [("half.mp4", upload)]
    finally:
        client.close()

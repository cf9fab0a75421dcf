"""The object store's domain errors on the one table of statuses (videojob.errors)."""

from __future__ import annotations

import grpc

from videojob.errors import (
    ObjectStoreFailed,
    ObjectStoreMisconfigured,
    ObjectStoreUnavailable,
    Reason,
    StoredObjectMissing,
)
from videojob.grpc_errors import rich_status


def test_a_store_that_does_not_answer_is_unavailable_with_its_endpoint() -> None:
    error = ObjectStoreUnavailable("AWS_ENDPOINT_URL: ...", endpoint="http://store:8333")

    assert (error.grpc_code, error.http_status) == (grpc.StatusCode.UNAVAILABLE, 503)
    assert error.error_reason == Reason.OBJECT_STORE_UNAVAILABLE
    assert error.error_metadata == {"endpoint": "http://store:8333"}


def test_a_missing_object_is_not_found_naming_its_location() -> None:
    error = StoredObjectMissing("s3://videojob/renders/j1.mp4")

    assert (error.grpc_code, error.http_status) == (grpc.StatusCode.NOT_FOUND, 404)
    assert error.message == "s3://videojob/renders/j1.mp4 is not in the object store"
    status = rich_status(error)
    assert status.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert len(status.details) == 1


def test_refused_settings_and_other_refusals_are_the_server_s_problem() -> None:
    refused = ObjectStoreMisconfigured("AWS_SECRET_ACCESS_KEY", "the store refused the secret key")

    assert refused.message == "AWS_SECRET_ACCESS_KEY: the store refused the secret key"
    assert refused.http_status == 500
    assert ObjectStoreFailed("the object store refused upload").http_status == 500

"""ListJobHistory over gRPC: pages of a job's committed changes, NOT_FOUND for an unknown id."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from tests.export.conftest import pattern_spec, watch
from videojob.export.v1 import export_pb2

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub


async def test_the_history_pages_through_every_version(stub: Stub) -> None:
    job = await stub.CreateExport(
        export_pb2.CreateExportRequest(request_id="history-1", spec=pattern_spec(1.0))
    )
    final = (await watch(stub, job.id))[-1]
    assert final.status == export_pb2.COMPLETED
    pages: list[list[export_pb2.JobHistoryEntry]] = []
    after = 0
    while True:
        page = await stub.ListJobHistory(
            export_pb2.ListJobHistoryRequest(id=job.id, after_version=after, page_size=2)
        )
        pages.append(list(page.entries))
        if not page.next_after_version:
            break
        assert page.next_after_version == page.entries[-1].version
        after = page.next_after_version
    entries = [entry for page in pages for entry in page]
    assert all(len(page) == 2 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 2
    assert [entry.version for entry in entries] == list(range(1, final.version + 1))
    first, last = entries[0], entries[-1]
    assert (first.change, first.status, first.attempt) == ("create", export_pb2.QUEUED, 1)
    assert (last.change, last.status, last.progress, last.stage) == (
        "complete",
        export_pb2.COMPLETED,
        100,
        "Complete",
    )
    assert last.time.ToDatetime() == final.updated_at.ToDatetime()
    # The replica that created the job owned it throughout, at lease epoch 1.
    assert last.writer and last.owner and last.lease_epoch == 1
    assert {(entry.owner, entry.lease_epoch) for entry in entries} == {(last.owner, 1)}


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        ({"id": "no-such-job"}, grpc.StatusCode.NOT_FOUND),
        ({"id": ""}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "x", "after_version": -1}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"id": "x", "page_size": -1}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_a_history_request_that_cannot_be_answered(
    stub: Stub, request_fields: dict[str, object], code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.ListJobHistory(export_pb2.ListJobHistoryRequest(**request_fields))  # type: ignore[arg-type]
    assert error.value.code() == code

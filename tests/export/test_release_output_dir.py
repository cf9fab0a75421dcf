"""The release of a render its render service no longer knows (the service restarted): the file
that render finished is removed from the shared output directory, and the release is said done
only once it is. While the directory can't be read (moved away, a regular file at its path for
a moment) nothing was removed, so the release is not done and is asked again.

Found by the chaos suite: a failed split job's finished parts (``<id>-p2-a2.mp4``) on a render
service restarted since were called released while the output directory was away (a glob of a
regular file finds nothing), and stayed for good.

Real parts: the supervisor on a real SQLite store, a real directory; the render service that
forgot the render is a stub answering NOT_FOUND, as a restarted one does.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc

from export_service.render_pool import RenderPool
from export_service.store import open_store
from export_service.store.records import RenderAttempt
from export_service.tracking.supervisor import RenderSupervisor
from tests.export.conftest import FAST_TRACKER
from videojob.render.v1 import render_pb2

if TYPE_CHECKING:
    from export_service.render_pool import RenderMember

RENDER_ID = "job-p2-a2"


class _Forgotten:
    """A render service that restarted since the render: CancelRender answers NOT_FOUND."""

    address = "127.0.0.1:1"

    def __init__(self) -> None:
        self.stub = self

    async def CancelRender(
        self, request: render_pb2.CancelRenderRequest, **_: Any
    ) -> render_pb2.RenderInfo:
        metadata = grpc.aio.Metadata()
        raise grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, metadata, metadata, "", "")


async def test_a_forgotten_render_s_file_is_released_only_once_it_is_removed(
    tmp_path: Path,
) -> None:
    output = tmp_path / "output"
    output.mkdir()
    finished = output / f"{RENDER_ID}.mp4"
    finished.write_bytes(b"a part's finished video")
    other = output / "job-p2-a3.mp4"  # another render's: kept
    other.write_bytes(b"kept")
    store = await open_store(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    supervisor = RenderSupervisor(
        store, RenderPool("127.0.0.1:1"), FAST_TRACKER, render_output_dir=output
    )
    member = cast("RenderMember", _Forgotten())
    away = output.with_name("output.away")
    try:
        output.rename(away)
        output.write_bytes(b"")  # a regular file where the directory was
        try:
            released = await supervisor._cancel_render(member, RENDER_ID, time.monotonic() + 0.5)
        finally:
            output.unlink()
            away.rename(output)
        assert not released
        assert finished.exists()
        assert await supervisor._cancel_render(member, RENDER_ID, time.monotonic() + 10)
        assert not finished.exists()
        assert other.exists()
    finally:
        await store.close()


async def test_a_lost_render_service_s_partial_file_goes_though_a_release_is_under_way(
    tmp_path: Path,
) -> None:
    """A release asked before the render service was known lost (it asks that service, which
    does not answer, to remove the file) does not keep a later ``service_lost`` release from
    removing the dead service's partial file at once."""
    output = tmp_path / "output"
    output.mkdir()
    partial = output / ".dead-instance.job-a1.partial.mp4"
    partial.write_bytes(b"half a video")
    other = output / ".live-instance.job-a2.partial.mp4"  # the next attempt's: kept
    other.write_bytes(b"the next attempt's")
    store = await open_store(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    # Nothing listens on port 1: the release's CancelRender calls fail until its budget ends.
    supervisor = RenderSupervisor(
        store, RenderPool("127.0.0.1:1"), FAST_TRACKER, render_output_dir=output
    )
    attempt = RenderAttempt(
        attempt=1,
        render_id="job-a1",
        instance_id="dead-instance",
        address="127.0.0.1:1",
        started_at=datetime.now(UTC),
    )
    try:
        supervisor.release_attempt("job", attempt, service_lost=False)
        assert supervisor.releasing == {"job-a1"}
        assert partial.exists()
        supervisor.release_attempt("job", attempt, service_lost=True)
        assert not partial.exists()
        assert other.exists()
    finally:
        await supervisor.stop()
        await store.close()

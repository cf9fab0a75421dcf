"""A WatchExports stream reads its whole view once, then only the jobs that changed: from the row
this process committed where it holds one (no read at all), else one read per changed job. Before,
every change of any job re-read the whole list and every covered job."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from export_service.config import ExportConfig
from export_service.server import ExportServer, create_server
from export_service.store import JobStore, open_store
from tests.support.ports import unused_address
from tests.support.specs import pattern_spec
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel

SPEC = pattern_spec().SerializeToString()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ExportServer]:
    # No render service: jobs written straight into the store are not tracked, and no poll
    # re-reads the view while the test runs.
    config = ExportConfig(
        listen="127.0.0.1:0",
        render_addr=unused_address(),
        database=f"sqlite:///{tmp_path / 'export.db'}",
        watch_poll_interval=3600.0,
    )
    store = await open_store(config.database)
    export = await create_server(config, store)
    try:
        yield export
    finally:
        await export.stop(0)


async def next_job(stream: Any) -> export_pb2.VideoJob:
    job = await stream.read()
    assert isinstance(job, export_pb2.VideoJob), job
    return job


def count_reads(store: JobStore) -> Counter[str]:
    reads: Counter[str] = Counter()
    for name in ("get", "list_jobs"):
        read = getattr(store, name)

        async def counted(*args: Any, _read: Any = read, _name: str = name, **kwargs: Any) -> Any:
            reads[_name] += 1
            return await _read(*args, **kwargs)

        setattr(store, name, counted)
    return reads


async def test_a_list_watch_reads_only_the_jobs_that_changed(server: ExportServer) -> None:
    store = server.store
    for index in range(20):
        await store.create(job_id=f"old-{index:02}", request_id=f"r{index}", spec=SPEC)
        await store.cancel(f"old-{index:02}")
    reads = count_reads(store)
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        stream = stub.WatchExports(export_pb2.WatchExportsRequest(page_size=50), timeout=60)
        first = [await next_job(stream) for _ in range(20)]
        assert {job.id for job in first} == {f"old-{index:02}" for index in range(20)}
        assert reads == Counter(list_jobs=1)

        await store.create(job_id="new", request_id="rnew", spec=SPEC)
        news = await next_job(stream)
        assert (news.id, news.status) == ("new", export_pb2.QUEUED)
        await store.cancel("new")
        ended = await next_job(stream)
        assert (ended.id, ended.version, ended.status) == ("new", 2, export_pb2.CANCELLED)
        # Both came from the rows this process committed: no read of the list or of any job.
        assert reads == Counter(list_jobs=1)
        stream.cancel()

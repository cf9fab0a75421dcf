"""The bare stack's export process: CreateExport and WatchExport only (see bench.bare_stack)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from videojob.endpoints import EXPORT_SERVICE
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import CHANNEL_OPTIONS, SERVER_OPTIONS, add_health_and_reflection, bind
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2
from videojob.spec_validation import normalize_spec
from videojob.stop_signals import stop_signalled

if TYPE_CHECKING:
    from videojob.render.v1.render_pb2_grpc import RenderServiceAsyncStub

SERVICE_NAME = EXPORT_SERVICE
SQLITE_PREFIX = "sqlite:///"
SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, request_id TEXT, spec BLOB, status INTEGER, stage TEXT,
    progress REAL, version INTEGER, output_path TEXT)"""
T = TypeVar("T")


class Store:
    """One sqlite3 connection on one thread; each change one transaction."""

    def __init__(self, path: Path) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bare-store")
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._synchronous = ""

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool) -> T:
        def on_thread() -> T:
            if self._db is None:
                self._db = sqlite3.connect(self._path, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(SCHEMA)
            mode = "FULL" if durable else "NORMAL"
            if mode != self._synchronous:
                self._db.execute(f"PRAGMA synchronous={mode}")
                self._synchronous = mode
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

        return await asyncio.get_running_loop().run_in_executor(self._thread, on_thread)


@dataclass
class TrackedJob:
    job: export_pb2.VideoJob
    watchers: set[asyncio.Queue[export_pb2.VideoJob]] = field(default_factory=set)

    def publish(self, job: export_pb2.VideoJob) -> None:
        self.job = job
        for queue in self.watchers:
            queue.put_nowait(job)


def _terminal(job: export_pb2.VideoJob) -> bool:
    return job.status not in (export_pb2.QUEUED, export_pb2.RUNNING)


class BareExportServicer(export_pb2_grpc.ExportServiceServicer):
    def __init__(self, store: Store, render: RenderServiceAsyncStub) -> None:
        self._store = store
        self._render = render
        self._jobs: dict[str, TrackedJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def CreateExport(
        self, request: export_pb2.CreateExportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> export_pb2.VideoJob:
        spec = normalize_spec(request.spec)
        job = export_pb2.VideoJob(
            id=str(uuid.uuid4()),
            request_id=request.request_id,
            status=export_pb2.QUEUED,
            stage="Queued",
            version=1,
            spec=spec,
        )
        row = (job.id, job.request_id, spec.SerializeToString(), job.status, job.stage, 0.0, 1, "")
        await self._store.run(
            lambda db: db.execute("INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row),
            durable=True,
        )
        self._jobs[job.id] = TrackedJob(job)
        task = asyncio.create_task(self._track(job.id, spec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def WatchExport(
        self, request: export_pb2.WatchExportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[export_pb2.VideoJob]:
        tracked = self._jobs.get(request.id)
        if tracked is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.id}")
        assert tracked is not None
        queue: asyncio.Queue[export_pb2.VideoJob] = asyncio.Queue()
        tracked.watchers.add(queue)
        try:
            job = tracked.job
            while True:
                yield job
                if _terminal(job):
                    return
                job = await queue.get()
        finally:
            tracked.watchers.discard(queue)

    async def _track(self, job_id: str, spec: spec_pb2.RenderSpec) -> None:
        tracked = self._jobs[job_id]
        call = self._render.Render(render_pb2.RenderRequest(render_id=job_id, spec=spec))
        async for event in call:
            job = export_pb2.VideoJob()
            job.CopyFrom(tracked.job)
            job.version += 1
            if event.WhichOneof("event") == "progress":
                job.status = export_pb2.RUNNING
                job.stage = event.progress.stage
                job.progress = round(max(job.progress, event.progress.percent), 2)
                durable = False
            else:  # completed: the bare stack renders nothing that fails
                path = event.completed.output_path
                job.status = export_pb2.COMPLETED
                job.stage = "Complete"
                job.progress = 100.0
                job.output_path = path
                durable = True
            await self._store.run(_writer(job, check_file=durable), durable=durable)
            tracked.publish(job)


def _writer(job: export_pb2.VideoJob, *, check_file: bool) -> Callable[[sqlite3.Connection], None]:
    def write(db: sqlite3.Connection) -> None:
        if check_file and not os.path.isfile(job.output_path):
            raise FileNotFoundError(job.output_path)
        db.execute(
            "UPDATE jobs SET status = ?, stage = ?, progress = ?, version = ?, output_path = ?"
            " WHERE id = ? AND version = ?",
            (
                job.status,
                job.stage,
                job.progress,
                job.version,
                job.output_path,
                job.id,
                job.version - 1,
            ),
        )

    return write


async def serve(listen: str, render_addr: str, database: Path) -> None:
    channel = grpc.aio.insecure_channel(render_addr, options=CHANNEL_OPTIONS)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    port = bind(server, listen)
    render: RenderServiceAsyncStub = render_pb2_grpc.RenderServiceStub(channel)
    # Only CreateExport and WatchExport: the others answer UNIMPLEMENTED (the generated base).
    servicer = BareExportServicer(Store(database), render)  # type: ignore[abstract]
    export_pb2_grpc.add_ExportServiceServicer_to_server(servicer, server)
    health = await add_health_and_reflection(server, [SERVICE_NAME])
    await server.start()
    print(f"bare export listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    await stop_signalled()
    await health.enter_graceful_shutdown()
    await server.stop(1.0)
    await channel.close(None)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_stack.export")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--render-addr", required=True)
    parser.add_argument("--database", required=True, help="sqlite:///PATH")
    args, _ = parser.parse_known_args()  # the export service's other flags are taken, unused
    if not args.database.startswith(SQLITE_PREFIX):
        parser.error("the bare stack stores in SQLite: --database sqlite:///PATH")
    database = Path(args.database[len(SQLITE_PREFIX) :])
    database.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.render_addr, database))


if __name__ == "__main__":
    main()

"""The export service over the synchronous grpcio API: one call per command, and a watch that
resumes a broken stream after the last version it saw."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import grpc

from videojob.backoff import Backoff, Retries, job_watch_resumable
from videojob.endpoints import EXPORT_SERVICE
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import (
    CHANNEL_OPTIONS,
    TlsFiles,
    channel_credentials,
    replica_channel_options,
    replica_server_name,
    replica_target,
)
from videojob.render.v1 import spec_pb2
from videojob_cli.errors import CliError, rpc_failure
from videojob_cli.exit_status import ExitStatus

logger = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({export_pb2.COMPLETED, export_pb2.FAILED, export_pb2.CANCELLED})
# A broken watch is resumed (unless its code says asking again cannot help) after a wait.
WATCH_BACKOFF = Backoff(first=0.2, cap=2.0)


def open_channel(addresses: str, tls: TlsFiles) -> grpc.Channel:
    """A channel to the export service, or to its replicas (``HOST:PORT,HOST:PORT...``): calls
    go round-robin to those serving, a call refused UNAVAILABLE is tried on another, and a
    broken watch resumes on the next one (as the gateway's channel does). ValueError when an
    address of a list does not resolve."""
    target = replica_target(addresses)
    options: list[tuple[str, int | str]] = list(CHANNEL_OPTIONS)
    if len([item for item in addresses.split(",") if item.strip()]) > 1:
        options = replica_channel_options(EXPORT_SERVICE)
        server_name = replica_server_name(addresses)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
    credentials = channel_credentials(tls)
    if credentials is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, credentials, options=options)


def is_terminal(job: export_pb2.VideoJob) -> bool:
    return job.status in TERMINAL_STATUSES


class ExportClient:
    """``timeout`` bounds each unary call; ``reconnect_seconds`` how long a broken watch keeps
    trying to resume after the last message it received."""

    def __init__(
        self,
        channel: grpc.Channel,
        address: str,
        *,
        timeout: float,
        reconnect_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stub = export_pb2_grpc.ExportServiceStub(channel)
        self.address = address
        self._timeout = timeout
        self._reconnect_seconds = reconnect_seconds
        self._sleep = sleep
        self._clock = clock

    def _failure(self, error: grpc.RpcError, job_id: str = "") -> CliError:
        return rpc_failure(error, self.address, job_id)

    def create(
        self,
        spec: spec_pb2.RenderSpec,
        request_id: str,
        notify: export_pb2.WebhookEndpoint | None = None,
    ) -> export_pb2.VideoJob:
        request = export_pb2.CreateExportRequest(request_id=request_id, spec=spec, notify=notify)
        try:
            return self._stub.CreateExport(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise self._failure(error) from None

    def get(self, job_id: str) -> export_pb2.VideoJob:
        try:
            return self._stub.GetExport(
                export_pb2.GetExportRequest(id=job_id), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise self._failure(error, job_id) from None

    def list(self, status: export_pb2.JobStatus.ValueType, limit: int) -> list[export_pb2.VideoJob]:
        request = export_pb2.ListExportsRequest(page_size=limit, status=status)
        try:
            return list(self._stub.ListExports(request, timeout=self._timeout).jobs)
        except grpc.RpcError as error:
            raise self._failure(error) from None

    def cancel(self, job_id: str) -> export_pb2.VideoJob:
        try:
            return self._stub.CancelExport(
                export_pb2.CancelExportRequest(id=job_id), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise self._failure(error, job_id) from None

    def delete(self, job_id: str) -> None:
        try:
            self._stub.DeleteExport(
                export_pb2.DeleteExportRequest(id=job_id), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise self._failure(error, job_id) from None

    def history(
        self, job_id: str, after_version: int, page_size: int
    ) -> export_pb2.ListJobHistoryResponse:
        """One page of the job's history, oldest first, after ``after_version``."""
        request = export_pb2.ListJobHistoryRequest(
            id=job_id, after_version=after_version, page_size=page_size
        )
        try:
            return self._stub.ListJobHistory(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise self._failure(error, job_id) from None

    def follow(
        self,
        job_id: str,
        on_change: Callable[[export_pb2.VideoJob], None],
        *,
        after_version: int = 0,
        reachable: bool = False,
    ) -> export_pb2.VideoJob:
        """Calls ``on_change`` with each new version of the job until it is terminal, and
        returns that terminal state. A broken stream is resumed after the last version seen;
        the first call fails at once unless ``reachable`` (the service just answered)."""
        last: export_pb2.VideoJob | None = None
        heard_at = self._clock() if reachable else None
        retries = Retries(WATCH_BACKOFF, clock=self._clock)
        while True:
            request = export_pb2.WatchExportRequest(id=job_id, after_version=after_version)
            try:
                for job in self._stub.WatchExport(request):
                    heard_at = self._clock()
                    retries.reset()
                    if job.version <= after_version:
                        continue
                    after_version = job.version
                    last = job
                    on_change(job)
                    if is_terminal(job):
                        return job
                logger.debug("the watch of %s ended before a terminal state", job_id)
                broken: grpc.RpcError | None = None
            except grpc.RpcError as error:
                if not job_watch_resumable(error.code()):
                    raise self._failure(error, job_id) from None
                broken = error
            if last is not None and is_terminal(last):
                return last
            if heard_at is None or self._clock() - heard_at >= self._reconnect_seconds:
                if broken is not None:
                    raise self._failure(broken, job_id) from None
                raise CliError(
                    ExitStatus.UNREACHABLE,
                    f"the watch of job {job_id} at {self.address} kept ending before the job "
                    "finished",
                )
            logger.debug("resuming the watch of %s after version %d", job_id, after_version)
            delay = retries.next_delay()
            assert delay is not None  # no deadline: the reconnect window is checked above
            self._sleep(delay)

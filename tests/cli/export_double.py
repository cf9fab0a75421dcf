"""The export service's side of a CLI run, played message by message with grpcio-testing: the
CLI runs in a thread on a ``grpc_testing`` channel, the test takes each call it makes and
answers it."""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from typing import Any

import grpc
import grpc_testing  # type: ignore[import-untyped]
from grpc_status import rpc_status

from tests.support.polling import poll_until
from videojob.errors import VideoJobError
from videojob.export.v1 import export_pb2
from videojob.grpc_errors import rich_status
from videojob_cli import run

SERVICE = export_pb2.DESCRIPTOR.services_by_name["ExportService"]
JOIN_SECONDS = 30.0


def method(name: str) -> Any:
    return SERVICE.methods_by_name[name]


def job(
    version: int,
    status: export_pb2.JobStatus.ValueType,
    progress: float = 0.0,
    stage: str = "",
    **fields: Any,
) -> export_pb2.VideoJob:
    return export_pb2.VideoJob(
        id="job-1", version=version, status=status, progress=progress, stage=stage, **fields
    )


def domain_error_trailers(error: VideoJobError) -> tuple[grpc.StatusCode, str, Any]:
    """What a videojob server sends for ``error``: code, message and the rich status trailer."""
    status = rpc_status.to_status(rich_status(error))
    return status.code, status.details, status.trailing_metadata


class TerminalOutput(io.StringIO):
    """Output that says it is a terminal, so the CLI draws its live bar."""

    def isatty(self) -> bool:
        return True


class CliRun:
    """One ``videojob`` command running in a thread against the test's export service."""

    def __init__(self, argv: Sequence[str], out: io.StringIO | None = None) -> None:
        self.channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
        self.out = out if out is not None else io.StringIO()
        self.err = io.StringIO()
        self.backoffs: list[float] = []
        self._status: list[int] = []
        self._thread = threading.Thread(target=self._run, args=(list(argv),), daemon=True)
        self._thread.start()

    def _run(self, argv: list[str]) -> None:
        self._status.append(
            run(
                argv,
                channel=self.channel,
                out=self.out,
                err=self.err,
                environ={},
                sleep=self.backoffs.append,
            )
        )

    def take_unary(self, name: str) -> tuple[Any, Any]:
        """The next call of a unary method: its request and the rpc to answer."""
        _metadata, request, rpc = self.channel.take_unary_unary(method(name))
        return request, rpc

    def take_watch(self) -> tuple[export_pb2.WatchExportRequest, Any]:
        _metadata, request, rpc = self.channel.take_unary_stream(method("WatchExport"))
        return request, rpc

    def exit_status(self) -> int:
        self._thread.join(JOIN_SECONDS)
        assert not self._thread.is_alive(), "the command did not end"
        assert len(self._status) == 1
        return self._status[0]

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def shown(self, count: int) -> list[str]:
        """Waits until the command has printed ``count`` lines. (A grpc_testing stream ended
        with an error drops the responses its client has not read yet, so a test reads what
        the CLI printed before it breaks the stream.)"""
        return poll_until(
            lambda: self.lines() if len(self.lines()) >= count else None,
            f"{count} lines of output",
            within=JOIN_SECONDS,
        )

"""``get``'s two outputs, ``delete``, ``history`` and ``download``'s refusal to replace a file,
against a scripted export service (grpcio-testing): the requests the CLI makes, what it prints
and its exit status."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tests.cli.export_double import CliRun, domain_error_trailers, job
from videojob.errors import FailedPrecondition
from videojob.export.v1 import export_pb2
from videojob.job_json import history_entry_to_json, job_to_json
from videojob.render.v1 import spec_pb2
from videojob_cli.exit_status import ExitStatus


def failed_job() -> export_pb2.VideoJob:
    return job(
        4,
        export_pb2.FAILED,
        30.0,
        "Failed",
        error=export_pb2.JobError(
            code="FFMPEG_ERROR", message="it broke", field="spec.output.video_codec"
        ),
        spec=spec_pb2.RenderSpec(
            source=spec_pb2.Source(
                test_pattern=spec_pb2.TestPattern(duration_seconds=2, width=160, height=120)
            ),
            output=spec_pb2.OutputSpec(container="mp4"),
        ),
        attempts=[export_pb2.RenderAttempt(attempt=1, render_id="r-1", outcome="failed")],
        retrying=False,
    )


def test_get_shows_each_value_as_json_and_never_as_a_python_repr() -> None:
    cli = CliRun(["get", "job-1"])
    request, rpc = cli.take_unary("GetExport")
    assert request.id == "job-1"
    rpc.terminate(failed_job(), (), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.OK
    fields = dict(line.split(": ", 1) for line in cli.lines())
    assert fields["id"] == "job-1" and fields["status"] == "failed"
    assert fields["retrying"] == "false"
    assert fields["awaitingOwner"] == "false"
    assert json.loads(fields["error"]) == {
        "code": "FFMPEG_ERROR",
        "message": "it broke",
        "field": "output.videoCodec",
    }
    assert json.loads(fields["attempts"])[0]["renderId"] == "r-1"
    assert json.loads(fields["spec"])["source"]["testPattern"]["width"] == 160
    assert cli.lines()[-1].startswith("spec: ")
    assert "'" not in cli.out.getvalue() and "False" not in cli.out.getvalue()


def test_get_json_is_the_http_apis_job_object() -> None:
    cli = CliRun(["get", "job-1", "--json"])
    _request, rpc = cli.take_unary("GetExport")
    rpc.terminate(failed_job(), (), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.OK
    (line,) = cli.lines()
    assert json.loads(line) == job_to_json(failed_job())


def test_delete_asks_for_the_job_and_says_it_is_gone() -> None:
    cli = CliRun(["delete", "job-1"])
    request, rpc = cli.take_unary("DeleteExport")
    assert request.id == "job-1"
    rpc.terminate(export_pb2.DeleteExportResponse(), (), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.OK
    assert cli.lines() == ["job-1 deleted"]

    as_json = CliRun(["delete", "job-1", "--json"])
    _request, rpc = as_json.take_unary("DeleteExport")
    rpc.terminate(export_pb2.DeleteExportResponse(), (), grpc.StatusCode.OK, "")
    assert as_json.exit_status() == ExitStatus.OK
    assert [json.loads(line) for line in as_json.lines()] == [{"id": "job-1", "deleted": True}]


def test_deleting_a_running_job_is_refused_and_an_unknown_one_is_not_found() -> None:
    cli = CliRun(["delete", "job-1"])
    _request, rpc = cli.take_unary("DeleteExport")
    code, details, trailers = domain_error_trailers(
        FailedPrecondition("job job-1 is RUNNING and cannot be deleted: it is not finished")
    )
    rpc.terminate(export_pb2.DeleteExportResponse(), trailers, code, details)
    assert cli.exit_status() == ExitStatus.REFUSED
    assert "cannot be deleted" in cli.err.getvalue()
    assert cli.lines() == []

    unknown = CliRun(["delete", "job-1"])
    _request, rpc = unknown.take_unary("DeleteExport")
    rpc.terminate(export_pb2.DeleteExportResponse(), (), grpc.StatusCode.NOT_FOUND, "no job")
    assert unknown.exit_status() == ExitStatus.NOT_FOUND
    assert "no job has the id 'job-1'" in unknown.err.getvalue()


def entry(
    version: int, change: str, status: export_pb2.JobStatus.ValueType
) -> export_pb2.JobHistoryEntry:
    return export_pb2.JobHistoryEntry(
        version=version,
        change=change,
        status=status,
        progress=10.0 * version,
        stage="Rendering",
        attempt=1,
        time=Timestamp(seconds=1_800_000_000 + version),
        error_code="FFMPEG_ERROR" if status == export_pb2.FAILED else "",
    )


def test_history_reads_every_page_and_prints_one_line_per_version() -> None:
    cli = CliRun(["history", "job-1"])
    request, rpc = cli.take_unary("ListJobHistory")
    assert (request.id, request.after_version) == ("job-1", 0)
    first = [entry(1, "create", export_pb2.QUEUED), entry(2, "progress", export_pb2.RUNNING)]
    page = export_pb2.ListJobHistoryResponse(entries=first, next_after_version=2)
    rpc.terminate(page, (), grpc.StatusCode.OK, "")
    request, rpc = cli.take_unary("ListJobHistory")
    assert request.after_version == 2
    last = export_pb2.ListJobHistoryResponse(entries=[entry(3, "fail", export_pb2.FAILED)])
    rpc.terminate(last, (), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.OK
    assert cli.lines() == [
        "v1 2027-01-15T08:00:01.000Z create queued 10.0% Rendering attempt 1",
        "v2 2027-01-15T08:00:02.000Z progress running 20.0% Rendering attempt 1",
        "v3 2027-01-15T08:00:03.000Z fail failed 30.0% Rendering attempt 1 error FFMPEG_ERROR",
    ]


def test_history_json_after_a_version_up_to_a_limit() -> None:
    cli = CliRun(["history", "job-1", "--after-version", "1", "--limit", "1", "--json"])
    request, rpc = cli.take_unary("ListJobHistory")
    assert (request.after_version, request.page_size) == (1, 1)
    entries = [entry(2, "progress", export_pb2.RUNNING)]
    page = export_pb2.ListJobHistoryResponse(entries=entries, next_after_version=2)
    rpc.terminate(page, (), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.OK
    assert [json.loads(line) for line in cli.lines()] == [history_entry_to_json(entries[0])]


def test_history_of_an_unknown_job_is_not_found() -> None:
    cli = CliRun(["history", "job-1"])
    _request, rpc = cli.take_unary("ListJobHistory")
    rpc.terminate(
        export_pb2.ListJobHistoryResponse(), (), grpc.StatusCode.NOT_FOUND, "job not found"
    )
    assert cli.exit_status() == ExitStatus.NOT_FOUND


def test_download_keeps_a_file_that_exists_and_asks_nothing(tmp_path: Path) -> None:
    existing = tmp_path / "out.mp4"
    existing.write_bytes(b"mine")
    cli = CliRun(["download", "job-1", "-o", str(existing)])
    assert cli.exit_status() == ExitStatus.REFUSED
    assert "exists" in cli.err.getvalue() and "--force" in cli.err.getvalue()
    assert existing.read_bytes() == b"mine"

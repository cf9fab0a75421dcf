"""The CLI against a scripted export service (grpcio-testing): resuming a broken watch with
after_version, NOT_FOUND, a failed and a cancelled job, refusals, and the exit status of each."""

from __future__ import annotations

import json
from pathlib import Path

import grpc

from tests.cli.export_double import CliRun, TerminalOutput, domain_error_trailers, job
from videojob.errors import FailedPrecondition, InvalidArgument
from videojob.export.v1 import export_pb2
from videojob_cli.exit_status import ExitStatus


def test_a_broken_watch_resumes_after_the_last_version_it_saw() -> None:
    cli = CliRun(["watch", "job-1", "--json"])
    request, stream = cli.take_watch()
    assert (request.id, request.after_version) == ("job-1", 0)
    stream.send_response(job(1, export_pb2.QUEUED, stage="Queued"))
    stream.send_response(job(2, export_pb2.RUNNING, 40.0, "Rendering", eta_seconds=3.0))
    cli.shown(2)
    stream.terminate((), grpc.StatusCode.UNAVAILABLE, "connection reset")

    request, stream = cli.take_watch()
    assert request.after_version == 2
    # Ended cleanly but before a terminal state (a server shutting down): resumed again.
    stream.send_response(job(3, export_pb2.RUNNING, 80.0, "Rendering"))
    stream.terminate((), grpc.StatusCode.OK, "")

    request, stream = cli.take_watch()
    assert request.after_version == 3
    stream.send_response(job(3, export_pb2.RUNNING, 80.0, "Rendering"))  # already shown
    stream.send_response(
        job(4, export_pb2.COMPLETED, 100.0, "Complete", output_path="/renders/job-1.mp4")
    )
    stream.terminate((), grpc.StatusCode.OK, "")

    assert cli.exit_status() == ExitStatus.OK
    shown = [json.loads(line) for line in cli.lines()]
    assert [document["version"] for document in shown] == [1, 2, 3, 4]
    assert [document["status"] for document in shown] == [
        "queued",
        "running",
        "running",
        "completed",
    ]
    assert shown[1]["etaSeconds"] == 3.0
    assert shown[-1]["outputPath"] == "/renders/job-1.mp4"
    assert len(cli.backoffs) == 2


def test_a_watch_that_cannot_resume_in_time_exits_unreachable() -> None:
    cli = CliRun(["watch", "job-1", "--reconnect-timeout", "0"])
    _request, stream = cli.take_watch()
    stream.send_response(job(1, export_pb2.RUNNING, 10.0, "Rendering"))
    cli.shown(1)
    stream.terminate((), grpc.StatusCode.UNAVAILABLE, "connection reset")
    assert cli.exit_status() == ExitStatus.UNREACHABLE
    assert "cannot be reached" in cli.err.getvalue()
    assert len(cli.lines()) == 1


def test_a_watch_of_an_unknown_job_exits_not_found_without_retrying() -> None:
    cli = CliRun(["watch", "job-1"])
    _request, stream = cli.take_watch()
    stream.terminate((), grpc.StatusCode.NOT_FOUND, "job job-1 not found")
    assert cli.exit_status() == ExitStatus.NOT_FOUND
    assert "no job has the id 'job-1'" in cli.err.getvalue()
    assert cli.backoffs == []


def test_get_of_an_unknown_job_exits_not_found() -> None:
    cli = CliRun(["get", "job-1"])
    request, rpc = cli.take_unary("GetExport")
    assert request.id == "job-1"
    rpc.terminate(export_pb2.VideoJob(), (), grpc.StatusCode.NOT_FOUND, "job job-1 not found")
    assert cli.exit_status() == ExitStatus.NOT_FOUND
    assert cli.lines() == []


def test_a_failed_job_ends_the_watch_with_its_own_status_and_its_error() -> None:
    cli = CliRun(["watch", "job-1"])
    _request, stream = cli.take_watch()
    stream.send_response(job(2, export_pb2.RUNNING, 30.0, "Rendering"))
    failed = job(
        3,
        export_pb2.FAILED,
        30.0,
        "Rendering",
        error=export_pb2.JobError(
            code="FFMPEG_FAILED",
            message="spec.output.video_codec: encoder missing",
            field="spec.output.video_codec",
        ),
    )
    stream.send_response(failed)
    stream.terminate((), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.JOB_FAILED
    # Piped: one line per change; the error in the API's words.
    assert cli.lines() == [
        "job-1 v2 running 30.0% Rendering",
        "job-1 v3 failed 30.0% Rendering error FFMPEG_FAILED: output.videoCodec: encoder missing",
    ]


def test_submit_wait_creates_the_pattern_and_exits_cancelled_when_the_job_is() -> None:
    pattern_flags = ["--duration", "1", "--width", "160", "--height", "120", "--fps", "10"]
    cli = CliRun(
        ["submit", *pattern_flags, "--preset", "ultrafast", "--request-id", "demo-7", "--wait"]
    )
    request, rpc = cli.take_unary("CreateExport")
    assert request.request_id == "demo-7"
    pattern = request.spec.source.test_pattern
    assert (pattern.duration_seconds, pattern.width, pattern.height, pattern.fps) == (
        1.0,
        160,
        120,
        10.0,
    )
    assert request.spec.output.preset == "ultrafast"
    rpc.terminate(job(1, export_pb2.QUEUED, stage="Queued"), (), grpc.StatusCode.OK, "")

    watch, stream = cli.take_watch()
    assert (watch.id, watch.after_version) == ("job-1", 0)
    stream.send_response(job(1, export_pb2.QUEUED, stage="Queued"))
    stream.send_response(job(2, export_pb2.CANCELLED, 0.0, "Queued"))
    stream.terminate((), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.JOB_CANCELLED
    assert [line.split()[1:3] for line in cli.lines()] == [["v1", "queued"], ["v2", "cancelled"]]


def test_a_spec_the_service_refuses_is_a_usage_error_naming_the_json_field(
    tmp_path: Path,
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"source": {"transcode": {"inputPath": "missing.mp4"}}}))
    cli = CliRun(["submit", "--spec", str(spec_file)])
    request, rpc = cli.take_unary("CreateExport")
    assert request.spec.source.transcode.input_path == "missing.mp4"
    code, details, trailers = domain_error_trailers(
        InvalidArgument("spec.source.transcode.input_path", "file not found: 'missing.mp4'")
    )
    rpc.terminate(export_pb2.VideoJob(), trailers, code, details)
    assert cli.exit_status() == ExitStatus.USAGE
    assert "source.transcode.inputPath: file not found" in cli.err.getvalue()


def test_cancelling_a_finished_job_is_refused() -> None:
    cli = CliRun(["cancel", "job-1"])
    request, rpc = cli.take_unary("CancelExport")
    assert request.id == "job-1"
    code, details, trailers = domain_error_trailers(
        FailedPrecondition("job job-1 is COMPLETED; only QUEUED or RUNNING jobs can be cancelled")
    )
    rpc.terminate(export_pb2.VideoJob(), trailers, code, details)
    assert cli.exit_status() == ExitStatus.REFUSED
    assert "is COMPLETED" in cli.err.getvalue()


def test_list_asks_for_the_status_and_limit_and_prints_one_job_per_line() -> None:
    cli = CliRun(["list", "--status", "running", "--limit", "2", "--json"])
    request, rpc = cli.take_unary("ListExports")
    assert (request.status, request.page_size) == (export_pb2.RUNNING, 2)
    jobs = [job(5, export_pb2.RUNNING, 10.0, "Rendering")] * 2
    rpc.terminate(export_pb2.ListExportsResponse(jobs=jobs), (), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.OK
    assert [json.loads(line)["status"] for line in cli.lines()] == ["running", "running"]


def test_on_a_terminal_the_watch_draws_a_bar_with_stage_and_eta() -> None:
    cli = CliRun(["watch", "job-1"], out=TerminalOutput())
    _request, stream = cli.take_watch()
    stream.send_response(job(2, export_pb2.RUNNING, 50.0, "Rendering", eta_seconds=75.0))
    stream.send_response(job(3, export_pb2.COMPLETED, 100.0, "Complete", output_path="/r/x.mp4"))
    stream.terminate((), grpc.StatusCode.OK, "")
    assert cli.exit_status() == ExitStatus.OK
    screen = cli.out.getvalue()
    assert "Rendering" in screen
    assert "ETA 1:15" in screen
    assert "50%" in screen
    assert "job-1 v3 completed 100.0% Complete output /r/x.mp4" in screen

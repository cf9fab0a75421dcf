"""How the CLI shows jobs: a live bar on a terminal, one line per change when piped, one JSON
object per line (the HTTP API's job object) for scripts."""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from videojob.export.v1 import export_pb2
from videojob.job_json import STATUS_NAMES, job_to_json


def status_name(job: export_pb2.VideoJob) -> str:
    return STATUS_NAMES.get(job.status, "queued")


def eta_text(job: export_pb2.VideoJob) -> str:
    if job.status != export_pb2.RUNNING or job.eta_seconds <= 0:
        return ""
    minutes, seconds = divmod(round(job.eta_seconds), 60)
    return f"ETA {minutes}:{seconds:02d}"


def job_line(job: export_pb2.VideoJob) -> str:
    """``ID vVERSION STATUS PERCENT STAGE [ETA m:ss] [output PATH | error CODE: MESSAGE]``."""
    parts = [job.id, f"v{job.version}", status_name(job), f"{job.progress:.1f}%", job.stage or "-"]
    if eta := eta_text(job):
        parts.append(eta)
    document = job_to_json(job)
    if document["outputPath"] and job.status == export_pb2.COMPLETED:
        parts.append(f"output {document['outputPath']}")
    if document["error"]:
        parts.append(f"error {document['error']['code']}: {document['error']['message']}")
    return " ".join(parts)


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def job_json_line(job: export_pb2.VideoJob) -> str:
    return compact_json(job_to_json(job))


def job_details(job: export_pb2.VideoJob) -> list[str]:
    """``get`` on a terminal or a pipe: one ``name: value`` line per field of the API's job
    object that is set (the spec last), a text as it is, any other value as JSON (``true``,
    ``null``, objects in double quotes), as ``--json`` writes it."""
    document = job_to_json(job)
    lines = []
    for name, value in document.items():
        if value in (None, "", [], {}) or name == "spec":
            continue
        text = value if isinstance(value, str) else compact_json(value)
        lines.append(f"{name}: {text}")
    lines.append(f"spec: {compact_json(document['spec'])}")
    return lines


def history_line(entry: dict[str, Any]) -> str:
    """One version of a job's history (the API's entry): ``vVERSION TIME CHANGE STATUS
    PERCENT STAGE attempt N [error CODE]``."""
    parts = [
        f"v{entry['version']}",
        entry["time"] or "-",
        entry["change"] or "-",
        entry["status"],
        f"{entry['progress']:.1f}%",
        entry["stage"] or "-",
        f"attempt {entry['attempt']}",
    ]
    if entry["errorCode"]:
        parts.append(f"error {entry['errorCode']}")
    return " ".join(parts)


class JobView(Protocol):
    """Shows each change of one job while it is followed."""

    def show(self, job: export_pb2.VideoJob) -> None: ...

    def __enter__(self) -> JobView: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


class _PlainView:
    def __init__(self, out: TextIO, *, as_json: bool) -> None:
        self._out = out
        self._format = job_json_line if as_json else job_line

    def show(self, job: export_pb2.VideoJob) -> None:
        print(self._format(job), file=self._out, flush=True)

    def __enter__(self) -> _PlainView:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        return None


class LineView(_PlainView):
    """One line per change, for a pipe or a log."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out, as_json=False)


class JsonView(_PlainView):
    """One JSON job object per line, for scripts."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out, as_json=True)


class BarView:
    """A live progress bar with the stage and the service's ETA; the final state as a line."""

    def __init__(self, out: TextIO) -> None:
        self._console = Console(file=out)
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[stage]}"),
            TextColumn("{task.fields[eta]}"),
            console=self._console,
        )
        self._task: TaskID | None = None

    def show(self, job: export_pb2.VideoJob) -> None:
        if self._task is None:
            self._task = self._progress.add_task(job.id, total=100.0, stage="", eta="")
        stage = job.stage or status_name(job)
        self._progress.update(
            self._task, completed=job.progress, stage=stage, eta=eta_text(job), refresh=True
        )
        if job.status in (export_pb2.COMPLETED, export_pb2.FAILED, export_pb2.CANCELLED):
            self._progress.stop()
            self._console.print(job_line(job), highlight=False, markup=False)

    def __enter__(self) -> BarView:
        self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._progress.stop()


def job_view(out: TextIO, *, as_json: bool) -> JobView:
    """The view for ``out``: JSON when asked, the bar on a terminal, lines otherwise."""
    if as_json:
        return JsonView(out)
    if out.isatty():
        return BarView(out)
    return LineView(out)

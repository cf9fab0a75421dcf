"""The CLI's exit statuses, written once: ``--help`` and docs/cli.md show this table."""

from __future__ import annotations

import textwrap
from enum import IntEnum

from videojob.flags import EXIT_USAGE


class ExitStatus(IntEnum):
    OK = 0
    JOB_FAILED = 1
    USAGE = EXIT_USAGE
    JOB_CANCELLED = 3
    NOT_FOUND = 4
    UNREACHABLE = 5
    REFUSED = 6
    GATEWAY = 7
    ERROR = 8
    INTERRUPTED = 130


MEANINGS: dict[ExitStatus, str] = {
    ExitStatus.OK: "done: the job completed (submit --wait, watch); the command did what was "
    "asked (the others)",
    ExitStatus.JOB_FAILED: "the job failed (submit --wait, watch)",
    ExitStatus.USAGE: "usage error: a bad flag, an unreadable or invalid spec, a file to upload "
    "that cannot be read or is not media",
    ExitStatus.JOB_CANCELLED: "the job was cancelled (submit --wait, watch)",
    ExitStatus.NOT_FOUND: "no job has this id",
    ExitStatus.UNREACHABLE: "the export service cannot be reached (or did not answer in time)",
    ExitStatus.REFUSED: "refused: the job's state forbids it (cancel a finished job, delete or "
    "download an unfinished one), the request id was used for another spec, too many active "
    "jobs, a download's file exists (without --force), an upload over the gateway's limit",
    ExitStatus.GATEWAY: "download, upload: the gateway cannot be reached or refused the file",
    ExitStatus.ERROR: "any other failure (the service's internal error, a file not writable)",
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C); a job keeps running",
}


def exit_status_table(width: int = 79) -> str:
    """The table, as ``--help`` prints it."""
    rows = [
        textwrap.fill(
            MEANINGS[status],
            width,
            initial_indent=f"  {int(status):>3}  ",
            subsequent_indent=" " * 7,
        )
        for status in ExitStatus
    ]
    return "exit statuses:\n" + "\n".join(rows)

"""``download``: the job's file over the gateway's HTTP route (``GET /api/jobs/{id}/download``,
videojob_cli.gateway_http). The file appears whole or not at all, and never replaces a file
that exists unless asked to."""

from __future__ import annotations

import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from videojob_cli.errors import CliError
from videojob_cli.exit_status import ExitStatus
from videojob_cli.gateway_http import auth_headers, open_gateway

CHUNK_BYTES = 1024 * 1024

_STATUS_OF_HTTP: dict[int, ExitStatus] = {
    404: ExitStatus.NOT_FOUND,
    409: ExitStatus.REFUSED,
    410: ExitStatus.REFUSED,
    503: ExitStatus.UNREACHABLE,
    504: ExitStatus.UNREACHABLE,
}


def refuse_existing(destination: str) -> None:
    """A CliError when ``destination`` is a file (or anything) that exists: ``--force``."""
    if destination != "-" and os.path.lexists(destination):
        raise CliError(
            ExitStatus.REFUSED, f"{destination} exists: not replaced (--force replaces it)"
        )


def _read(response: BinaryIO) -> bytes:
    try:
        return response.read(CHUNK_BYTES)
    except OSError as error:
        raise CliError(ExitStatus.GATEWAY, f"the download broke off: {error}") from None


def _copy(response: BinaryIO, target: BinaryIO, expected: int | None) -> int:
    written = 0
    while chunk := _read(response):
        target.write(chunk)
        written += len(chunk)
    if expected is not None and written != expected:
        raise CliError(
            ExitStatus.GATEWAY, f"the download ended after {written} of {expected} bytes"
        )
    return written


def download(
    base_url: str,
    job_id: str,
    destination: str,
    *,
    api_token: str | None,
    timeout: float,
    overwrite: bool = False,
) -> int:
    """Writes the job's file to ``destination`` (``-``: stdout) and returns its size. A file
    already there is kept (CliError, REFUSED) unless ``overwrite``."""
    if not overwrite:
        refuse_existing(destination)
    url = f"{base_url}/api/jobs/{urllib.parse.quote(job_id, safe='')}/download"
    request = urllib.request.Request(url, headers=auth_headers(api_token))
    response = open_gateway(request, base_url, timeout=timeout, status_of_http=_STATUS_OF_HTTP)
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if destination == "-":
            return _copy(response, sys.stdout.buffer, expected)
        return _write_whole(response, Path(destination), expected, overwrite=overwrite)


def _write_whole(response: BinaryIO, path: Path, expected: int | None, *, overwrite: bool) -> int:
    partial = path.with_name(f".{path.name}.part")
    try:
        with partial.open("wb") as target:
            written = _copy(response, target, expected)
        if overwrite:
            os.replace(partial, path)
        else:
            _move_unless_exists(partial, path)
    except OSError as error:
        raise CliError(ExitStatus.ERROR, f"cannot write {path}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return written


def _move_unless_exists(partial: Path, path: Path) -> None:
    """``partial`` renamed to ``path`` unless a file appeared there meanwhile (a hard link
    fails rather than replace it; where links cannot be made, a look just before)."""
    try:
        os.link(partial, path)
    except FileExistsError:
        refuse_existing(str(path))
    except OSError:
        refuse_existing(str(path))
        os.replace(partial, path)

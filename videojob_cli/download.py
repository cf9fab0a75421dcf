"""``download``: the job's file over the gateway's HTTP route (``GET /api/jobs/{id}/download``),
with the standard library's HTTP client. The file appears whole or not at all."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from videojob_cli.errors import CliError
from videojob_cli.exit_status import ExitStatus

CHUNK_BYTES = 1024 * 1024
HTTP_SCHEMES = ("http", "https")

_STATUS_OF_HTTP: dict[int, ExitStatus] = {
    404: ExitStatus.NOT_FOUND,
    409: ExitStatus.REFUSED,
    410: ExitStatus.REFUSED,
    503: ExitStatus.UNREACHABLE,
    504: ExitStatus.UNREACHABLE,
}


def gateway_url(value: str) -> str:
    """``http(s)://HOST[:PORT][/prefix]`` without a trailing slash; ValueError otherwise."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in HTTP_SCHEMES or not parts.netloc:
        raise ValueError(value)
    return value.rstrip("/")


def _error_message(error: urllib.error.HTTPError) -> str:
    with contextlib.suppress(ValueError, OSError):
        body = json.loads(error.read())
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])
    return f"{error.code} {error.reason}"


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
    base_url: str, job_id: str, destination: str, *, api_token: str | None, timeout: float
) -> int:
    """Writes the job's file to ``destination`` (``-``: stdout) and returns its size."""
    url = f"{base_url}/api/jobs/{urllib.parse.quote(job_id, safe='')}/download"
    headers = {"Authorization": f"Bearer {api_token}"} if api_token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        status = _STATUS_OF_HTTP.get(error.code, ExitStatus.GATEWAY)
        message = f"the gateway answered {error.code}: {_error_message(error)}"
        raise CliError(status, message) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CliError(
            ExitStatus.GATEWAY, f"the gateway at {base_url} cannot be reached ({reason})"
        ) from None
    with response:
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        if destination == "-":
            return _copy(response, sys.stdout.buffer, expected)
        return _write_whole(response, Path(destination), expected)


def _write_whole(response: BinaryIO, path: Path, expected: int | None) -> int:
    partial = path.with_name(f".{path.name}.part")
    try:
        with partial.open("wb") as target:
            written = _copy(response, target, expected)
        os.replace(partial, path)
    except OSError as error:
        raise CliError(ExitStatus.ERROR, f"cannot write {path}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return written

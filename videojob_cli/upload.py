"""``upload``: a local file into the media root over the gateway's upload route (``POST
/api/media``), streamed from disk. The gateway stores it under a name of its own and keeps the
file's name as the upload's original name; its answer (the stored ``path``, a transcode's
input path, and what ffmpeg found) is returned as it came.

http.client rather than urllib: a gateway that refuses a file (over its upload limit) answers
before it has read the body and closes the connection, so sending breaks off; its answer is
read all the same, where urllib would only report the broken pipe."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import urllib.parse
from pathlib import Path
from typing import Any, BinaryIO

from videojob_cli.errors import CliError
from videojob_cli.exit_status import ExitStatus
from videojob_cli.gateway_http import auth_headers, refusal, unreachable

CHUNK_BYTES = 1024 * 1024

_STATUS_OF_HTTP: dict[int, ExitStatus] = {
    413: ExitStatus.REFUSED,
    422: ExitStatus.USAGE,
}


def upload(
    base_url: str, path: Path, *, name: str, api_token: str | None, timeout: float
) -> dict[str, Any]:
    """Sends ``path`` as an upload named ``name``; the gateway's JSON answer."""
    try:
        source = path.open("rb")
    except OSError as error:
        raise CliError(ExitStatus.USAGE, f"cannot read {path}: {error.strerror}") from None
    with source:
        headers = {
            **auth_headers(api_token),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(os.fstat(source.fileno()).st_size),
        }
        status, reason, body = _post(base_url, {"filename": name}, headers, source, timeout)
    if status != http.client.CREATED:
        raise refusal(status, reason, body, _STATUS_OF_HTTP)
    try:
        document: Any = json.loads(body)
    except ValueError as error:
        raise CliError(
            ExitStatus.GATEWAY, f"the gateway's answer cannot be read: {error}"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("path"), str):
        raise CliError(ExitStatus.GATEWAY, "the gateway's answer names no stored path")
    return document


def _post(
    base_url: str, query: dict[str, str], headers: dict[str, str], body: BinaryIO, timeout: float
) -> tuple[int, str, bytes]:
    """POST ``body`` to the gateway's upload route: its answer's status, reason and body."""
    parts = urllib.parse.urlsplit(base_url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.netloc, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    target = f"{parts.path}/api/media?{urllib.parse.urlencode(query)}"
    try:
        try:
            connection.putrequest("POST", target)
            for header, value in headers.items():
                connection.putheader(header, value)
            connection.endheaders()
        except OSError as error:
            raise unreachable(base_url, error) from None
        try:
            while chunk := body.read(CHUNK_BYTES):
                connection.send(chunk)
        except OSError:
            pass  # the gateway stopped reading: its answer says why
        try:
            response = connection.getresponse()
            return response.status, response.reason, response.read()
        except (OSError, http.client.HTTPException) as error:
            raise CliError(
                ExitStatus.GATEWAY, f"the upload to {base_url} broke off ({error})"
            ) from None
    finally:
        connection.close()


def upload_line(document: dict[str, Any]) -> str:
    """``PATH (NAME): WxH, CODECS, DURATION, N bytes``, and whether a transcode takes it."""
    facts = []
    if document.get("width") and document.get("height"):
        facts.append(f"{document['width']}x{document['height']}")
    codecs = [document.get("videoCodec"), document.get("audioCodec")]
    if any(codecs):
        facts.append("/".join(codec for codec in codecs if codec))
    if document.get("durationSeconds"):
        facts.append(f"{document['durationSeconds']:.1f} s")
    facts.append(f"{document.get('sizeBytes')} bytes")
    named = f" ({document['originalName']})" if document.get("originalName") else ""
    use = "" if document.get("transcodable") else "; not a video: it cannot be transcoded"
    return f"{document['path']}{named}: {', '.join(facts)}{use}"

"""``upload``: a local file into the media root over the gateway's upload route (``POST
/api/media``, videojob_cli.gateway_http), streamed from disk. The gateway stores it under a name
of its own and keeps the file's name as the upload's original name; its answer (the stored
``path``, a transcode's input path, and what ffmpeg found) is returned as it came."""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from videojob_cli.errors import CliError
from videojob_cli.exit_status import ExitStatus
from videojob_cli.gateway_http import auth_headers, open_gateway

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
        size = os.fstat(source.fileno()).st_size
        query = urllib.parse.urlencode({"filename": name})
        headers = {
            **auth_headers(api_token),
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
        }
        request = urllib.request.Request(
            f"{base_url}/api/media?{query}", data=source, headers=headers, method="POST"
        )
        response = open_gateway(request, base_url, timeout=timeout, status_of_http=_STATUS_OF_HTTP)
    with response:
        try:
            document: Any = json.loads(response.read())
        except (OSError, ValueError) as error:
            raise CliError(
                ExitStatus.GATEWAY, f"the gateway's answer cannot be read: {error}"
            ) from None
    if not isinstance(document, dict) or not isinstance(document.get("path"), str):
        raise CliError(ExitStatus.GATEWAY, "the gateway's answer names no stored path")
    return document


def upload_line(document: dict[str, Any]) -> str:
    """``PATH (NAME): WxH CODECS DURATION, N bytes``, and whether a transcode takes it."""
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

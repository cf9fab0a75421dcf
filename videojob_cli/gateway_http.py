"""The gateway over HTTP, for the commands that move files (``download``, ``upload``): the
standard library's client, the API token as a bearer token, https verified as the system
verifies it, and the gateway's JSON errors turned into the CLI's exit statuses."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from http.client import HTTPResponse

from videojob_cli.errors import CliError
from videojob_cli.exit_status import ExitStatus

HTTP_SCHEMES = ("http", "https")


def gateway_url(value: str) -> str:
    """``http(s)://HOST[:PORT][/prefix]`` without a trailing slash; ValueError otherwise."""
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in HTTP_SCHEMES or not parts.netloc:
        raise ValueError(value)
    return value.rstrip("/")


def auth_headers(api_token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_token}"} if api_token else {}


def error_message(status: int, reason: str, body: bytes) -> str:
    """The ``message`` of the gateway's JSON error, else the HTTP status line."""
    with contextlib.suppress(ValueError):
        document = json.loads(body)
        if isinstance(document, dict) and isinstance(document.get("message"), str):
            return str(document["message"])
    return f"{status} {reason}"


def refusal(
    status: int, reason: str, body: bytes, status_of_http: Mapping[int, ExitStatus]
) -> CliError:
    """The CliError for the gateway's error answer: the exit status ``status_of_http`` gives
    its HTTP status (GATEWAY for the others) and the gateway's own words."""
    return CliError(
        status_of_http.get(status, ExitStatus.GATEWAY),
        f"the gateway answered {status}: {error_message(status, reason, body)}",
    )


def unreachable(base_url: str, reason: object) -> CliError:
    return CliError(ExitStatus.GATEWAY, f"the gateway at {base_url} cannot be reached ({reason})")


def open_gateway(
    request: urllib.request.Request,
    base_url: str,
    *,
    timeout: float,
    status_of_http: Mapping[int, ExitStatus],
) -> HTTPResponse:
    """The gateway's answer to ``request``; a refusal is a CliError with the exit status
    ``status_of_http`` gives its HTTP status (GATEWAY for the others), and so is a gateway
    that cannot be reached."""
    try:
        response: HTTPResponse = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        body = b""
        with contextlib.suppress(OSError):
            body = error.read()
        raise refusal(error.code, str(error.reason), body, status_of_http) from None
    except (urllib.error.URLError, OSError) as error:
        raise unreachable(base_url, getattr(error, "reason", error)) from None
    return response

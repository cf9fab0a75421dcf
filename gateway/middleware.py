"""ASGI middleware: the optional bearer token on /api routes and the request body limit."""

from __future__ import annotations

import hmac
import re
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response

# EventSource and <a download> cannot send headers: these routes also take ?access_token=.
_QUERY_TOKEN_PATHS = re.compile(r"^/api/(jobs/[^/]+/(events|download)|events)$")
_BEARER = re.compile(r"^Bearer\s+(?P<token>\S+)\s*$", re.IGNORECASE)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class BearerTokenMiddleware:
    """Requires the API token on every /api route (constant-time comparison)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _presented_token(self, scope: Scope) -> str | None:
        authorization = _header(scope, b"authorization")
        if authorization is not None:
            match = _BEARER.match(authorization)
            return match["token"] if match else None
        if _QUERY_TOKEN_PATHS.match(scope["path"]):
            query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
            values = query.get("access_token")
            return values[0] if values else None
        return None

    def _authorized(self, scope: Scope) -> bool:
        presented = self._presented_token(scope)
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode("latin-1", "replace"), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "a valid API token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="videojob"'},
        )
        await response(scope, receive, send)


class BodySizeLimitMiddleware:
    """Answers 413 for a request body over ``max_bytes``, declared or streamed. Bodies within
    the limit are read here and replayed to the app (they are small by construction). Requests
    to ``streamed_paths`` (uploads, which enforce their own limit while streaming to disk) pass
    untouched."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, streamed_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed_paths = streamed_paths

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, f"the request body must be at most {self.max_bytes} bytes", headers={}
        )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or scope["path"] in self.streamed_paths
        ):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

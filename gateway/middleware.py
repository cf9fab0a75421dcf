"""ASGI middleware: the request metrics, the optional bearer token on /api routes and the
request body limit."""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Sequence
from urllib.parse import parse_qs

from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response
from videojob import metrics

# EventSource and <a download> cannot send headers: these routes also take ?access_token=.
_QUERY_TOKEN_PATHS = re.compile(r"^/api/(jobs/[^/]+/(events|download)|events)$")
_BEARER = re.compile(r"^Bearer\s+(?P<token>\S+)\s*$", re.IGNORECASE)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


# The route label of a request no route matches (the raw path would be a label per URL).
UNMATCHED_ROUTE = "unmatched"
# The method label of any method outside these (a client may send any token as a method).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
EVENT_STREAM = b"text/event-stream"
# What Starlette's outermost middleware answers when the app raised.
UNHANDLED_ERROR_STATUS = 500


def route_template(route: BaseRoute) -> str:
    """A route's path as written in the app (``/api/jobs/{id}``), a mount's with ``{path}``."""
    if isinstance(route, Mount):
        return f"{route.path}/{{path}}"
    if isinstance(route, Route):
        return route.path
    raise TypeError(f"no template for a route of type {type(route).__name__}")


def _is_event_stream(message: Message) -> bool:
    for key, value in message.get("headers", []):
        if key.lower() == b"content-type":
            return bytes(value).split(b";")[0].strip().lower() == EVENT_STREAM
    return False


class RequestMetricsMiddleware:
    """Counts every HTTP request by method, route template and status code, and times it by
    method and route template (metrics.HTTP_REQUESTS, metrics.HTTP_REQUEST_DURATION): until
    the response's last byte, or for an event stream until its response starts, so that
    streams open for hours do not stand for the gateway's latency. The route is found as the
    router finds it (the first full match, else the first match of the path alone: a 405)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = [(route, route_template(route)) for route in routes]

    def _route_of(self, scope: Scope) -> str:
        path_only: str | None = None
        for route, template in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return template
            if match == Match.PARTIAL and path_only is None:
                path_only = template
        return path_only or UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in KNOWN_METHODS else OTHER_METHOD
        route = self._route_of(scope)
        started = time.perf_counter()
        status: int | None = None
        timed = False

        def count(code: int) -> None:
            metrics.HTTP_REQUESTS.labels(method, route, str(code)).inc()

        def time_it() -> None:
            nonlocal timed
            if not timed:
                timed = True
                elapsed = time.perf_counter() - started
                metrics.HTTP_REQUEST_DURATION.labels(method, route).observe(elapsed)

        async def measured_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                count(status)
                if _is_event_stream(message):
                    time_it()
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                time_it()

        try:
            await self.app(scope, receive, measured_send)
        except Exception:
            if status is None:
                count(UNHANDLED_ERROR_STATUS)
            raise
        finally:
            # A response cut short (the client went away, the server stopped) is timed too.
            time_it()


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

"""The gateway app in the test's own process and event loop, for the tests whose checks need no
other process: the page and its files, the documents, the health answers, the token, CORS, the
body limits, the refusals made before any call to the export service, the error JSON.

- ``app_client(settings)``: httpx's ASGI transport on ``create_app(settings)``, its lifespan run
  around the client (the transport alone does not run it). The transport hands over a response
  once the app has finished it: for plain requests and for event streams that end.
- ``served_gateway(settings)``: the app under a real uvicorn server on port 0 in a task of the
  test's loop (the gateway's own ``GatewayServer``, which ends event streams as shutdown
  begins), for what must stream or needs a socket.
- ``inprocess_export(root)``: the export service in-process on port 0 (SQLite under ``root``),
  its render address one where nothing listens: it answers every call and keeps the jobs it
  accepts queued, never rendering.

The fixtures ``gateway_alone`` (no export service behind it: a call that got past the gateway's
own checks answers 503), ``export_address`` and ``gateway_over_export`` wrap them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from export_service.config import ExportConfig
from export_service.server import create_server
from export_service.store import open_store
from gateway.__main__ import GRACEFUL_SHUTDOWN_SECONDS, GatewayServer
from gateway.app import create_app
from gateway.settings import Settings
from tests.support.polling import wait_until

__all__ = [
    "BASE_URL",
    "NOWHERE",
    "app_client",
    "export_address",
    "gateway_alone",
    "gateway_over_export",
    "gateway_settings",
    "inprocess_export",
    "served_gateway",
]

# Where nothing listens, ever: port 0 binds never get a port this low. An export service there
# answers every call UNAVAILABLE at once (connection refused).
NOWHERE = "127.0.0.1:1"
# The host the in-process client names (nothing resolves it: the transport calls the app).
BASE_URL = "http://gateway"
# As the gateway processes of these tests are started (tests.gateway.conftest).
TEST_HEARTBEAT_SECONDS = 0.2
CLIENT_TIMEOUT_SECONDS = 30.0
# Bounds the wait for uvicorn to listen; it is expected to take milliseconds.
START_TIMEOUT_SECONDS = 30.0


def gateway_settings(export_addr: str | None = None, **overrides: Any) -> Settings:
    """The gateway's settings for a test: the export service at ``export_addr`` (None:
    nowhere), the test heartbeat, and ``overrides``."""
    settings = Settings(
        export_addr=export_addr or NOWHERE, heartbeat_seconds=TEST_HEARTBEAT_SECONDS
    )
    return dataclasses.replace(settings, **overrides)


@contextlib.asynccontextmanager
async def app_client(settings: Settings, **client_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling ``create_app(settings)`` in this event loop, its lifespan
    (the export channel, the watch hubs) started before and ended after."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        options = {"timeout": CLIENT_TIMEOUT_SECONDS, **client_options}
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, **options) as client:
            yield client


@contextlib.asynccontextmanager
async def served_gateway(settings: Settings) -> AsyncIterator[str]:
    """``create_app(settings)`` served on 127.0.0.1, port 0, by the gateway's uvicorn server
    in a task of this loop; yields its URL. Stopped as the gateway stops (its event streams
    ended first), and the task awaited, whatever happened."""
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="on",
        log_config=None,
        access_log=False,
        http="httptools",
        ws="none",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )
    server = GatewayServer(config, app)
    task = asyncio.create_task(server.serve())
    try:
        # A server that cannot start ends its task (uvicorn exits): stop waiting then.
        await wait_until(
            lambda: server.started or task.done(), "uvicorn to listen", START_TIMEOUT_SECONDS
        )
        if task.done():
            await task  # raises what stopped it
            raise AssertionError("uvicorn stopped before it listened")
        port: int = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def inprocess_export(root: Path, **overrides: Any) -> AsyncIterator[str]:
    """The export service in this event loop on port 0, its jobs in SQLite under ``root``,
    pointed at a render address where nothing listens; yields its address."""
    config = ExportConfig(
        listen="127.0.0.1:0",
        render_addr=NOWHERE,
        database=f"sqlite:///{root / 'export.db'}",
        **overrides,
    )
    store = await open_store(config.database)
    server = await create_server(config, store)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


@pytest.fixture
async def gateway_alone() -> AsyncIterator[httpx.AsyncClient]:
    """The app with no export service behind it."""
    async with app_client(gateway_settings()) as client:
        yield client


@pytest.fixture
async def export_address(tmp_path: Path) -> AsyncIterator[str]:
    """An in-process export service (no render service answers it)."""
    async with inprocess_export(tmp_path) as address:
        yield address


@pytest.fixture
async def gateway_over_export(export_address: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app over the in-process export service."""
    async with app_client(gateway_settings(export_address)) as client:
        yield client

"""The render and export services' mains stop their server whatever ends them, not only after a
stop signal: an error (stdout gone, so the "listening" line cannot be printed) or a
cancellation while they serve still stops the server, in a ``finally`` as grpc's graceful
shutdown example does. The servers are stand-ins; the mains are the real ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import export_service.__main__ as export_main
import render_service.__main__ as render_main
from export_service.config import ExportConfig
from render_service.config import RenderConfig


class Server:
    """Stands in for RenderServer / ExportServer: records its stops."""

    port = 1234
    instance_id = "render-test"

    def __init__(self) -> None:
        self.stops: list[float | None] = []

    async def drain(self, within: float, cut_short: Any = None) -> None:
        raise AssertionError("drained without a stop signal")

    async def stop(self, grace: float | None = None) -> None:
        self.stops.append(grace)


class Store:
    async def close(self) -> None:
        raise AssertionError("the server closes the store")


def _print_fails(*args: object, **kwargs: object) -> None:
    raise BrokenPipeError("stdout is gone")


async def test_the_render_service_stops_its_server_when_serving_ends_in_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server = Server()

    async def create_server(config: RenderConfig) -> Server:
        return server

    async def quiet(binary: str) -> None:
        return None

    monkeypatch.setattr(render_main, "create_server", create_server)
    monkeypatch.setattr(render_main, "on_stop_signal", lambda callback: None)
    monkeypatch.setattr(render_main, "watch_children_with_pidfd", lambda: None)
    monkeypatch.setattr(render_main, "set_replica", lambda replica: None)
    monkeypatch.setattr(render_main, "log_ffmpeg_version", quiet)
    monkeypatch.setattr(render_main, "print", _print_fails, raising=False)
    config = RenderConfig(output_dir=tmp_path / "out", media_root=tmp_path / "media")
    with pytest.raises(BrokenPipeError):
        await render_main.serve_render(config)
    assert server.stops == [config.shutdown_grace]


async def test_the_export_service_stops_its_server_when_serving_ends_in_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = Server()

    async def open_store(database: str, writer: str) -> Store:
        return Store()

    async def create_server(config: ExportConfig, store: Store) -> Server:
        return server

    async def cancelled() -> None:
        raise AssertionError("never reached: the listening line fails first")

    monkeypatch.setattr(export_main, "open_store", open_store)
    monkeypatch.setattr(export_main, "create_server", create_server)
    monkeypatch.setattr(export_main, "stop_signalled", cancelled)
    monkeypatch.setattr(export_main, "print", _print_fails, raising=False)
    config = ExportConfig()
    with pytest.raises(BrokenPipeError):
        await export_main.serve(config)
    assert server.stops == [config.shutdown_grace]


async def test_both_stop_their_server_when_cancelled_while_serving(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    render_server, export_server = Server(), Server()
    serving = asyncio.Event()

    async def create_render_server(config: RenderConfig) -> Server:
        return render_server

    async def open_store(database: str, writer: str) -> Store:
        return Store()

    async def create_export_server(config: ExportConfig, store: Store) -> Server:
        return export_server

    async def log_ffmpeg_version(binary: str) -> None:
        serving.set()

    async def never_signalled() -> None:
        serving.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(render_main, "create_server", create_render_server)
    monkeypatch.setattr(render_main, "on_stop_signal", lambda callback: None)
    monkeypatch.setattr(render_main, "watch_children_with_pidfd", lambda: None)
    monkeypatch.setattr(render_main, "set_replica", lambda replica: None)
    monkeypatch.setattr(render_main, "log_ffmpeg_version", log_ffmpeg_version)
    monkeypatch.setattr(export_main, "open_store", open_store)
    monkeypatch.setattr(export_main, "create_server", create_export_server)
    monkeypatch.setattr(export_main, "stop_signalled", never_signalled)
    render_config = RenderConfig(output_dir=tmp_path / "out", media_root=tmp_path / "media")
    export_config = ExportConfig()
    services: list[tuple[Callable[[], Coroutine[Any, Any, int]], Server]] = [
        (lambda: render_main.serve_render(render_config), render_server),
        (lambda: export_main.serve(export_config), export_server),
    ]
    for serve, server in services:
        serving.clear()
        task = asyncio.create_task(serve())
        await asyncio.wait_for(serving.wait(), timeout=10)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert len(server.stops) == 1

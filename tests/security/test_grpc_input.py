"""Generated and oversized messages against the real render and export service processes.

Generated RenderSpecs (tests.contracts' strategy, plus hostile paths) are either refused with
INVALID_ARGUMENT naming a ``spec.`` field, or accepted; never another code, never a crash.
Accepted work stays cheap: the render service's only slot is held by a tiny endless render, so
accepted renders wait in its queue and are cancelled at once; the export service here points at
a render address where nothing listens, so its accepted jobs stay queued. (They are not
cancelled: CancelExport can hang while the render service is unreachable, a race reported
to the export service's owner.)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.contracts.test_spec_validation import render_specs
from tests.gateway.conftest import stop_all
from tests.security.conftest import (
    EXPORT_SERVICE,
    RENDER_SERVICE,
    SERVING,
    export_args,
    health_status,
    render_args,
    unused_address,
)
from tests.support.paced_ffmpeg import PACED_SIZE, write_paced_ffmpeg
from tests.support.processes import ServiceProcess, start_service
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import MAX_MESSAGE_BYTES
from videojob.limits import (
    AUDIO_CODECS_BY_CONTAINER,
    CONTAINERS,
    MAX_DURATION_SECONDS,
    MAX_FPS,
    MAX_HEIGHT,
    MAX_WIDTH,
    MIN_DURATION_SECONDS,
    MIN_FPS,
    PRESETS,
    VIDEO_CODECS_BY_CONTAINER,
)
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2

BLOCKER_ID = "blocker"
HOSTILE_PATHS = [
    "../outside.mp4",
    "a/../../outside.mp4",
    "/etc/passwd",
    "clip\x00.mp4",
    "x" * 5000,
    "d/" + "y" * 300 + ".mp4",
    "line\nbreak.mp4",
    "vidéo 日本.mp4",
    "sub.srt:force_style='Fontsize=90',drawbox[v];[v]null",
    "file:/etc/passwd",
    "http://127.0.0.1:1/x.mp4",
    ".",
]


@st.composite
def bounded_specs(draw: st.DrawFn) -> spec_pb2.RenderSpec:
    """Test patterns within the documented bounds with a valid output (mostly accepted)."""
    spec = spec_pb2.RenderSpec()
    pattern = spec.source.test_pattern
    pattern.duration_seconds = draw(st.floats(MIN_DURATION_SECONDS, MAX_DURATION_SECONDS))
    pattern.width = 2 * draw(st.integers(1, MAX_WIDTH // 2))
    pattern.height = 2 * draw(st.integers(1, MAX_HEIGHT // 2))
    pattern.fps = draw(st.floats(MIN_FPS, MAX_FPS))
    container = draw(st.sampled_from(CONTAINERS))
    spec.output.container = container
    spec.output.video_codec = draw(st.sampled_from(VIDEO_CODECS_BY_CONTAINER[container]))
    spec.output.audio_codec = draw(st.sampled_from(AUDIO_CODECS_BY_CONTAINER[container]))
    spec.output.preset = draw(st.sampled_from(PRESETS))
    if draw(st.booleans()):
        spec.output.crf = draw(st.integers(0, 63))
    return spec


@st.composite
def hostile_specs(draw: st.DrawFn) -> spec_pb2.RenderSpec:
    spec: spec_pb2.RenderSpec = draw(st.one_of(render_specs(), bounded_specs()))
    if draw(st.booleans()):
        path = draw(st.sampled_from(HOSTILE_PATHS))
        target = draw(st.sampled_from(["transcode", "slide", "audio", "subtitles"]))
        if target == "transcode":
            spec.source.transcode.input_path = path
        elif target == "slide":
            spec.source.slideshow.slides.add(image_path=path, duration_seconds=1.0)
        elif target == "audio":
            spec.source.slideshow.slides.add(image_path="one.png", duration_seconds=1.0)
            spec.source.slideshow.audio_path = path
        else:
            spec.source.slideshow.slides.add(image_path="one.png", duration_seconds=1.0)
            spec.source.slideshow.subtitles_path = path
    return spec


def tiny_endless_spec() -> spec_pb2.RenderSpec:
    """Rendered at the speed of playback, it holds the only render slot until the end."""
    spec = spec_pb2.RenderSpec()
    pattern = spec.source.test_pattern
    pattern.duration_seconds, pattern.fps = 3600, 1
    pattern.width, pattern.height = PACED_SIZE
    spec.output.preset = "ultrafast"
    return spec


@pytest.fixture(scope="module")
def render(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root: Path = tmp_path_factory.mktemp("grpc-render")
    output_dir, media_root = root / "out", root / "media"
    media_root.mkdir(parents=True)
    (root / "outside.mp4").write_bytes(b"not yours")
    process = start_service(
        "render_service",
        render_args(output_dir, media_root, "--max-concurrent", "1"),
        env={"FFMPEG_BINARY": str(write_paced_ffmpeg(root, 1.0))},
    )
    with grpc.insecure_channel(process.address) as channel:
        stub = render_pb2_grpc.RenderServiceStub(channel)
        stream = stub.Render(
            render_pb2.RenderRequest(render_id=BLOCKER_ID, spec=tiny_endless_spec()), timeout=30
        )
        next(iter(stream))
        stream.cancel()  # type: ignore[no-untyped-call]
    yield process
    # At once: a graceful stop would drain the endless blocker until the launcher's grace ends.
    process.stop(at_once=True)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    root: Path = tmp_path_factory.mktemp("grpc-export")
    process = start_service("export_service", export_args(unused_address(), root / "export.db"))
    yield process
    stop_all([process])


@pytest.fixture(scope="module")
def render_stub(render: ServiceProcess) -> Iterator[render_pb2_grpc.RenderServiceStub]:
    with grpc.insecure_channel(render.address) as channel:
        yield render_pb2_grpc.RenderServiceStub(channel)


@pytest.fixture(scope="module")
def export_stub(export: ServiceProcess) -> Iterator[export_pb2_grpc.ExportServiceStub]:
    with grpc.insecure_channel(export.address) as channel:
        yield export_pb2_grpc.ExportServiceStub(channel)


def assert_names_a_spec_field(error: grpc.RpcError) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert (error.details() or "").startswith("spec."), error.details()


_render_ids = itertools.count(1)
FUZZ_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ_SETTINGS
@given(spec=hostile_specs())
def test_render_refuses_by_field_or_accepts(
    render_stub: render_pb2_grpc.RenderServiceStub, spec: spec_pb2.RenderSpec
) -> None:
    render_id = f"fuzz-{next(_render_ids)}"
    stream = render_stub.Render(
        render_pb2.RenderRequest(render_id=render_id, spec=spec), timeout=10
    )
    try:
        first = next(iter(stream))
    except grpc.RpcError as error:
        assert_names_a_spec_field(error)
        event("refused")
        return
    finally:
        stream.cancel()  # type: ignore[no-untyped-call]
    event("accepted")
    assert first.render_id == render_id and first.HasField("progress")
    cancelled = render_stub.CancelRender(
        render_pb2.CancelRenderRequest(render_id=render_id), timeout=10
    )
    assert cancelled.state == render_pb2.RENDER_STATE_CANCELLED


@FUZZ_SETTINGS
@given(spec=hostile_specs())
def test_create_export_refuses_by_field_or_accepts(
    export_stub: export_pb2_grpc.ExportServiceStub, spec: spec_pb2.RenderSpec
) -> None:
    try:
        job = export_stub.CreateExport(export_pb2.CreateExportRequest(spec=spec), timeout=10)
    except grpc.RpcError as error:
        assert_names_a_spec_field(error)
        event("refused")
        return
    event("accepted")
    assert job.status == export_pb2.QUEUED and job.spec.source.WhichOneof("kind")


def test_services_survived_the_fuzzing(
    render: ServiceProcess,
    export: ServiceProcess,
    render_stub: render_pb2_grpc.RenderServiceStub,
) -> None:
    assert render.alive() and export.alive()
    assert health_status(render.address, RENDER_SERVICE) == SERVING
    assert health_status(export.address, EXPORT_SERVICE) == SERVING
    blocker = render_stub.GetRender(render_pb2.GetRenderRequest(render_id=BLOCKER_ID), timeout=10)
    assert blocker.state == render_pb2.RENDER_STATE_RUNNING, blocker


OVERSIZED = "x" * (MAX_MESSAGE_BYTES + 1024)


def oversized_slideshow() -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    for index in range(MAX_MESSAGE_BYTES // 1000 + 10):
        spec.source.slideshow.slides.add(image_path=f"{index:04d}" + "p" * 996, duration_seconds=1)
    assert spec.ByteSize() > MAX_MESSAGE_BYTES
    return spec


def test_oversized_render_requests_are_resource_exhausted(
    render: ServiceProcess, render_stub: render_pb2_grpc.RenderServiceStub
) -> None:
    for request in (
        render_pb2.RenderRequest(render_id=OVERSIZED, spec=tiny_endless_spec()),
        render_pb2.RenderRequest(render_id="huge-slideshow", spec=oversized_slideshow()),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            next(iter(render_stub.Render(request, timeout=30)))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value
    with pytest.raises(grpc.RpcError) as caught:
        render_stub.GetRender(render_pb2.GetRenderRequest(render_id=OVERSIZED), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert render.alive()
    assert health_status(render.address, RENDER_SERVICE) == SERVING


def test_oversized_export_requests_are_resource_exhausted(
    export: ServiceProcess, export_stub: export_pb2_grpc.ExportServiceStub
) -> None:
    for request in (
        export_pb2.CreateExportRequest(request_id=OVERSIZED, spec=tiny_endless_spec()),
        export_pb2.CreateExportRequest(spec=oversized_slideshow()),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            export_stub.CreateExport(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value
    assert export.alive()
    assert health_status(export.address, EXPORT_SERVICE) == SERVING
    with pytest.raises(grpc.RpcError) as caught:
        export_stub.GetExport(export_pb2.GetExportRequest(id="no-such-job"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

"""What CreateExport accepts of a split request (``output.split.parts``) and refuses, naming the
field: the internal render kinds, more parts than the operator's --split-max-parts, and N >= 2
parts of what can't be split safely, judged from the spec alone or from the source's facts a
real render service answered."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest

from export_service.__main__ import FLAGS as EXPORT_FLAGS
from export_service.__main__ import config_from_flags
from export_service.input_check import planning_facts
from export_service.split_plan import SourceFacts, SplitPolicy
from tests.export.conftest import InProcessRender, StartExport, pattern_spec
from tests.support.media import make_clip
from tests.support.render_dirs import RenderDirs
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.flags import FlagError
from videojob.grpc_errors import field_violation
from videojob.grpc_setup import create_channel
from videojob.limits import MAX_SPLIT_PARTS
from videojob.render.v1 import render_pb2_grpc, spec_pb2
from videojob.spec_validation import normalize_spec

# Nothing listens here: every job accepted stays queued, and no input check is answered.
NOWHERE = "127.0.0.1:1"
PARTS = "spec.output.split.parts"

Create = Callable[[spec_pb2.RenderSpec], Coroutine[Any, Any, export_pb2.VideoJob]]


def split(spec: spec_pb2.RenderSpec, parts: int) -> spec_pb2.RenderSpec:
    spec.output.split.parts = parts
    return spec


def slideshow(subtitles: str = "") -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.slideshow.slides.add(image_path="a.png", duration_seconds=120.0)
    spec.source.slideshow.subtitles_path = subtitles
    return spec


def transcode(input_path: str) -> spec_pb2.RenderSpec:
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = input_path
    return spec


async def refused_field(create: Create, spec: spec_pb2.RenderSpec) -> tuple[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await create(spec)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    violation = field_violation(caught.value)
    assert violation is not None, caught.value.details()
    return violation.field, violation.description


async def creator(
    start_export: StartExport, render_addr: str, **overrides: object
) -> AsyncIterator[Create]:
    server = await start_export(render_addr, **overrides)
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)

        async def create(spec: spec_pb2.RenderSpec) -> export_pb2.VideoJob:
            job: export_pb2.VideoJob = await stub.CreateExport(
                export_pb2.CreateExportRequest(spec=spec), timeout=30
            )
            await stub.CancelExport(export_pb2.CancelExportRequest(id=job.id), timeout=30)
            return job

        yield create


@pytest.fixture
async def create(start_export: StartExport) -> AsyncIterator[Create]:
    """CreateExport of an export service with no render service (at most 4 parts a job)."""
    async for made in creator(start_export, NOWHERE, split=SplitPolicy(max_parts=4)):
        yield made


async def test_a_test_pattern_asking_for_parts_is_accepted_and_keeps_its_request(
    create: Create,
) -> None:
    for parts in (0, 1, 2, 4):
        job = await create(split(pattern_spec(2.0), parts))
        assert job.spec.output.split.parts == parts


@pytest.mark.parametrize("kind", ["part", "join", "audio"])
async def test_a_client_set_internal_render_kind_is_refused_naming_it(
    create: Create, kind: str
) -> None:
    spec = pattern_spec(2.0)
    if kind == "part":
        spec.part.frame_count = 10
    elif kind == "join":
        spec.join.part_paths.append("renders/x.mp4")
    else:
        spec.audio.total_frames = 50
    field, _ = await refused_field(create, spec)
    assert field == f"spec.{kind}"


async def test_more_parts_than_the_operators_max_is_refused(create: Create) -> None:
    field, description = await refused_field(create, split(pattern_spec(2.0), 5))
    assert field == PARTS
    assert "at most 4" in description


@pytest.mark.parametrize(
    "spec",
    [
        split(slideshow(), 2),
        split(slideshow(subtitles="s.srt"), 3),
        split(pattern_spec(2.0, video_codec="hevc"), 2),
        split(pattern_spec(2.0, container="webm", video_codec="av1"), 2),
        # 0.2 s at 10 fps: two frames, not three parts.
        split(pattern_spec(0.2), 3),
    ],
    ids=["slideshow", "subtitles", "hevc", "av1", "fewer-frames-than-parts"],
)
async def test_parts_of_what_cant_be_split_are_refused_before_any_input_check(
    create: Create, spec: spec_pb2.RenderSpec
) -> None:
    field, _ = await refused_field(create, spec)
    assert field == PARTS
    spec.output.split.parts = 1
    assert (await create(spec)).spec.output.split.parts == 1


async def test_a_transcode_nobody_checked_is_accepted_and_left_to_the_planner(
    create: Create,
) -> None:
    job = await create(split(transcode("clip.mp4"), 3))
    assert job.spec.output.split.parts == 3


def make_variable_rate_clip(path: Path) -> None:
    """A clip whose frames are 0.1 s apart for its first half second, then 0.2 s apart."""
    subprocess.run(
        [
            tool_ffmpeg(),
            "-hide_banner",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=10:duration=2",
            "-vf",
            "setpts='if(lt(N,5),N*0.1,0.5+(N-5)*0.2)/TB'",
            "-fps_mode",
            "vfr",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def variable_rate_clip(render_dirs: RenderDirs) -> str:
    make_variable_rate_clip(render_dirs.media / "phone.mp4")
    return "phone.mp4"


async def test_parts_of_a_source_the_render_service_cant_vouch_for_are_refused(
    start_export: StartExport, render_service: InProcessRender, variable_rate_clip: str
) -> None:
    """A real render service answers the input check; a variable frame rate (or, from one that
    does not tell the source's facts, an unknown duration) can't be split safely."""
    async for create in creator(start_export, render_service.address):
        field, description = await refused_field(create, split(transcode(variable_rate_clip), 2))
        assert field == PARTS
        assert "can't be split safely" in description
        assert (await create(split(transcode(variable_rate_clip), 1))).id
        # The file is read: a missing one is refused naming the input, whatever the split.
        field, _ = await refused_field(create, split(transcode("missing.mp4"), 2))
        assert field == "spec.source.transcode.input_path"


def test_the_operator_flags_set_the_policy() -> None:
    assert config_from_flags(EXPORT_FLAGS.parse([], {})).split == SplitPolicy()
    flags = EXPORT_FLAGS.parse(
        ["--split-min-seconds", "90", "--split-max-parts", "3"],
        {"EXPORT_SPLIT_PART_SECONDS": "45"},
    )
    assert config_from_flags(flags).split == SplitPolicy(
        min_seconds=90.0, max_parts=3, part_seconds=45.0
    )
    for flag, bad in [
        ("--split-max-parts", "1"),
        ("--split-max-parts", str(MAX_SPLIT_PARTS + 1)),
        ("--split-min-seconds", "-1"),
        ("--split-part-seconds", "0"),
    ]:
        with pytest.raises(FlagError) as caught:
            EXPORT_FLAGS.parse([flag, bad], {})
        assert caught.value.message.startswith(f"{flag} "), caught.value.message


async def test_the_facts_a_split_is_planned_from_when_a_job_starts(
    render_service: InProcessRender, render_dirs: RenderDirs
) -> None:
    """A test pattern's come from its spec (no call); a transcode's from a render service
    that reads the file; none when nobody answers or the input is gone."""
    make_clip(render_dirs.media / "steady.mp4", seconds=2.0)
    pattern = normalize_spec(pattern_spec(2.0))
    async with (
        create_channel(render_service.address) as channel,
        create_channel(NOWHERE) as nowhere_channel,
    ):
        stub = render_pb2_grpc.RenderServiceStub(channel)
        nowhere = render_pb2_grpc.RenderServiceStub(nowhere_channel)
        assert await planning_facts(nowhere, pattern) == SourceFacts(
            2.0, 10.0, has_audio=True, video_seconds=2.0
        )
        steady = normalize_spec(transcode("steady.mp4"))
        facts = await planning_facts(stub, steady)
        assert facts is not None and not facts.variable_frame_rate
        assert await planning_facts(nowhere, steady) is None
        assert await planning_facts(stub, normalize_spec(transcode("gone.mp4"))) is None

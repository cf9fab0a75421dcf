"""A split job tracked part by part over a pool of two real render services (real ffmpeg, one
shared output directory; in the test's event loop, or processes where one is killed), the export
service in process with ``--render-addr a,b``:

- it completes with exactly the plan's frames: every part and the join rendered by a render of
  its own, each recorded on the job before it started, progress never decreasing, and no
  part's output left behind;
- a part's render service SIGKILLed mid-part: only the parts it held render again (elsewhere),
  the others keep their one attempt, and the job completes;
- cancel mid-split: every part's render stops, and no part output is left;
- a source whose audio outlasts its video: split, it completes as a whole render would, the
  last part holding the video's last frame until the audio ends;
- a part that fails for good (its attempts spent: its render service lost, or the render's
  verdict each time): the job FAILED, naming the part and the render's reason;
- a job the policy cannot split safely renders whole, and says why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from export_service.server import ExportServer
from export_service.split_plan import SplitPolicy
from export_service.store import Job, JobStore
from export_service.store.sqlite import SqliteJobStore
from tests.export.conftest import (
    FAST_TRACKER,
    TERMINAL,
    InProcessRender,
    RenderProcesses,
    StartExport,
    StartRender,
    assert_completed_with_valid_file,
    assert_monotonic,
    kill_group,
    wait_for,
    watch,
)
from tests.support.media import media_duration
from tests.support.processes import ServiceProcess
from tests.support.render_dirs import RenderDirs
from tests.support.specs import pattern_spec
from tests.support.split import PLACED, audio_seconds, decoded_frames, stored_packets
from tests.support.tool_ffmpeg import tool_ffmpeg
from videojob.export.v1 import export_pb2, export_pb2_grpc
from videojob.grpc_setup import create_channel
from videojob.render.v1 import render_pb2, render_pb2_grpc, spec_pb2

if TYPE_CHECKING:
    from videojob.export.v1.export_pb2_grpc import ExportServiceAsyncStub as Stub

SPLIT_TRACKER = dataclasses.replace(FAST_TRACKER, failover_after=3.0, retry_budget=60.0)


def split_spec(
    duration: float, parts: int, *, width: int = 160, height: int = 120, fps: float = 10.0
) -> spec_pb2.RenderSpec:
    spec = pattern_spec(duration, width=width, height=height, fps=fps)
    spec.output.split.parts = parts
    return spec


def long_split_spec() -> spec_pb2.RenderSpec:
    """Parts that take a few seconds each: long enough to break things in their middle."""
    return split_spec(30.0, 3, width=640, height=480, fps=25.0)


def part_outputs(output_dir: Path, job_id: str) -> list[Path]:
    return sorted(output_dir.glob(f"{job_id}-p*")) + sorted(output_dir.glob(f".*.{job_id}-p*"))


async def wait_no_part_output(output_dir: Path, job_id: str) -> None:
    """Parts' outputs are removed once the job is terminal (just after its terminal commit)."""

    async def no_part_output() -> bool:
        return part_outputs(output_dir, job_id) == []

    try:
        await wait_for(no_part_output, within=30)
    except AssertionError:
        raise AssertionError(f"left: {part_outputs(output_dir, job_id)}") from None


def video_parts(job: export_pb2.VideoJob) -> list[export_pb2.JobPart]:
    """The job's parts of the video, in plan order (not the audio beside them, nor the join)."""
    return [part for part in job.parts if not part.join and not part.audio]


async def get(stub: Stub, job_id: str) -> export_pb2.VideoJob:
    return await stub.GetExport(export_pb2.GetExportRequest(id=job_id))


async def wait_terminal(stub: Stub, job_id: str, within: float = 180) -> export_pb2.VideoJob:
    seen: list[export_pb2.VideoJob] = []

    async def terminal() -> bool:
        seen.append(await get(stub, job_id))
        return seen[-1].status in TERMINAL

    await wait_for(terminal, within=within)
    return seen[-1]


async def wait_parts_rendering(stub: Stub, job_id: str) -> export_pb2.VideoJob:
    """Until every part is placed and at least one reported frames."""
    seen: list[export_pb2.VideoJob] = []

    async def rendering() -> bool:
        seen.append(await get(stub, job_id))
        parts = video_parts(seen[-1])
        return (
            bool(parts)
            and all(part.state in PLACED for part in parts)
            and any(part.frames_done > 0 for part in parts)
        )

    await wait_for(rendering, within=60)
    return seen[-1]


def pool_of(processes: RenderProcesses, *names: str) -> dict[str, ServiceProcess]:
    """Render service processes, for the tests that kill one."""
    return {name: processes.start_with("--instance-id", name) for name in names}


async def in_process_pool(start_render: StartRender, *names: str) -> dict[str, InProcessRender]:
    return {name: await start_render(name) for name in names}


async def open_export(
    start_export: StartExport,
    members: Mapping[str, ServiceProcess | InProcessRender],
    output: Path,
    split: SplitPolicy | None = None,
    **tracker: object,
) -> export_pb2_grpc.ExportServiceAsyncStub:
    settings = dataclasses.replace(SPLIT_TRACKER, **tracker)  # type: ignore[arg-type]
    addresses = ",".join(member.address for member in members.values())
    policy = {} if split is None else {"split": split}
    server = await start_export(addresses, tracker=settings, render_output_dir=output, **policy)

    async def every_member_answered() -> bool:
        return server.render_pool.usable_count() == len(members)

    await wait_for(every_member_answered, within=30)
    channel = create_channel(f"127.0.0.1:{server.port}")
    return export_pb2_grpc.ExportServiceStub(channel)


async def test_a_split_job_completes_with_a_render_per_part_and_no_part_left(
    render_dirs: RenderDirs, start_render: StartRender, start_export: StartExport
) -> None:
    members = await in_process_pool(start_render, "split-a", "split-b")
    output = render_dirs.output
    stub = await open_export(start_export, members, output)
    created = await stub.CreateExport(
        export_pb2.CreateExportRequest(spec=split_spec(3.0, 3, width=320, height=240, fps=25.0))
    )
    updates = await watch(stub, created.id)
    assert_monotonic(updates)
    final = updates[-1]
    assert_completed_with_valid_file(final, 3.0)
    *parts, audio, join = final.parts
    assert join.join and audio.audio and [part.index for part in parts] == [0, 1, 2]
    assert audio.render_id == f"{created.id}-audio"  # the output's audio, beside the parts
    assert [part.render_id for part in parts] == [f"{created.id}-p{n}" for n in (1, 2, 3)]
    assert join.render_id == f"{created.id}-join"
    assert Path(final.output_path).name.startswith(f"{created.id}-join.")
    assert all(part.state == "done" and part.attempts == 1 for part in final.parts)
    assert sum(part.frame_count for part in parts) == join.frame_count == 75
    # The joined file holds exactly the plan's frames (decoded, read by ffmpeg on its own).
    assert len(decoded_frames(Path(final.output_path))) == 75
    assert [part.first_frame for part in parts] == [0, 25, 50]
    assert {part.render_service.instance_id for part in final.parts} <= set(members)
    # The parts' frames rode on progress writes: the band moved while they rendered.
    assert any(update.stage == "Rendering" and 2 <= update.progress < 95 for update in updates), [
        (u.stage, u.progress) for u in updates
    ]
    await wait_no_part_output(output, created.id)
    history = await stub.ListJobHistory(export_pb2.ListJobHistoryRequest(id=created.id))
    changes = [entry.change for entry in history.entries]
    assert changes.count("split_planned") == 1
    assert changes.count("part_placed") == 5 and changes.count("part_done") == 4


async def split_export_on(
    store: JobStore, render_dirs: RenderDirs, start_render: StartRender, start_export: StartExport
) -> ExportServer:
    """The export service on ``store`` over two render services sharing one output directory."""
    members = await in_process_pool(start_render, "split-a", "split-b")
    addresses = ",".join(member.address for member in members.values())
    output = render_dirs.output
    return await start_export(addresses, store, tracker=SPLIT_TRACKER, render_output_dir=output)


class CompletionReplyLost(SqliteJobStore):
    """A store whose ``complete`` commits and then never answers, as if its reply were lost in
    flight: the tracker waits on that write until news that the job ended stops it."""

    def __init__(self, path: Path, writer: str = "") -> None:
        super().__init__(path, writer)
        self.completed = asyncio.Event()

    async def complete(self, job_id: str, **change: Any) -> Job:
        await super().complete(job_id, **change)
        self.completed.set()
        await asyncio.Event().wait()
        raise AssertionError("a lost reply never arrives")


async def test_the_parts_go_when_news_of_the_completion_beats_the_completion_s_reply(
    render_dirs: RenderDirs, start_render: StartRender, start_export: StartExport, tmp_path: Path
) -> None:
    output = render_dirs.output
    store = await CompletionReplyLost.open(tmp_path / "reply-lost.db")
    assert isinstance(store, CompletionReplyLost)
    server = await split_export_on(store, render_dirs, start_render, start_export)
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        created = await stub.CreateExport(export_pb2.CreateExportRequest(spec=split_spec(2.0, 2)))
        await asyncio.wait_for(store.completed.wait(), timeout=120)
        # What a renewal finding the job terminal, or a progress write refused for it, tells.
        server.supervisor.job_ended(created.id)
        final = await wait_terminal(stub, created.id)
        assert_completed_with_valid_file(final, 2.0)
        await wait_no_part_output(output, created.id)


class OutputDirAwayAtCompletion(SqliteJobStore):
    """A store whose ``complete`` commits, then puts a file where the output directory was (its
    files kept aside) for a second: the removal of the parts that follows finds no directory."""

    def __init__(self, path: Path, writer: str = "") -> None:
        super().__init__(path, writer)
        self.output_dir = Path()
        # What was left of the job's parts when the directory came back.
        self.parts_when_back: list[Path] | None = None
        self._returns: set[asyncio.Task[None]] = set()

    async def complete(self, job_id: str, **change: Any) -> Job:
        job = await super().complete(job_id, **change)
        aside = self.output_dir.with_name("aside")
        await asyncio.to_thread(self._take_away, self.output_dir, aside)
        comeback = asyncio.create_task(self._come_back(job_id, aside))
        self._returns.add(comeback)
        return job

    async def _come_back(self, job_id: str, aside: Path) -> None:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(self._put_back, aside, self.output_dir)
        self.parts_when_back = part_outputs(self.output_dir, job_id)

    @staticmethod
    def _take_away(directory: Path, aside: Path) -> None:
        directory.rename(aside)
        directory.write_text("")

    @staticmethod
    def _put_back(aside: Path, directory: Path) -> None:
        directory.unlink()
        aside.rename(directory)


async def test_the_parts_go_once_the_output_directory_is_back_after_the_completion(
    render_dirs: RenderDirs, start_render: StartRender, start_export: StartExport, tmp_path: Path
) -> None:
    output = render_dirs.output
    store = await OutputDirAwayAtCompletion.open(tmp_path / "dir-away.db")
    assert isinstance(store, OutputDirAwayAtCompletion)
    store.output_dir = output
    server = await split_export_on(store, render_dirs, start_render, start_export)
    async with create_channel(f"127.0.0.1:{server.port}") as channel:
        stub = export_pb2_grpc.ExportServiceStub(channel)
        created = await stub.CreateExport(export_pb2.CreateExportRequest(spec=split_spec(2.0, 2)))
        final = await wait_terminal(stub, created.id)

        async def back() -> bool:
            return store.parts_when_back is not None

        await wait_for(back, within=30)
        # The first removal failed: the parts were all there when the directory came back.
        assert store.parts_when_back, "the parts went while the directory was away"
        await wait_no_part_output(output, created.id)
        assert_completed_with_valid_file(final, 2.0)


def make_clip(path: Path, video_seconds: float, audio_seconds: float | None) -> Path:
    """A 160x120 10 fps H.264 clip in MP4 of ``video_seconds``, with ``audio_seconds`` of AAC
    (None: no audio)."""
    inputs = ["-f", "lavfi", "-i", f"testsrc2=size=160x120:rate=10:duration={video_seconds:g}"]
    if audio_seconds is not None:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={audio_seconds:g}"]
        inputs += ["-c:a", "aac"]
    subprocess.run(
        [
            tool_ffmpeg(),
            "-hide_banner",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            *inputs,
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
    return path


# Splits outputs from 2 s, about 2 s a part: this 4 s one in two, as asking for 2 parts does.
SHORT_PARTS = SplitPolicy(min_seconds=2.0, part_seconds=2.0)


@pytest.mark.parametrize(
    ("parts", "codec", "container"),
    [(2, "h264", "mp4"), (0, "h264", "mp4"), (2, "vp9", "webm")],
    ids=["asked", "by-policy", "vp9"],
)
async def test_a_source_whose_audio_outlasts_its_video_completes_split_as_it_would_whole(
    render_dirs: RenderDirs,
    start_render: StartRender,
    start_export: StartExport,
    parts: int,
    codec: str,
    container: str,
) -> None:
    # 2 s of video, 4 s of audio: the container (and a whole render) lasts 4 s. A plan on the
    # container's word alone asked the last part for frames the video never reaches, and the
    # part fell short of them on every attempt.
    make_clip(render_dirs.media / "short-video.mp4", 2, 4)
    members = await in_process_pool(start_render, "split-a", "split-b")
    output = render_dirs.output
    stub = await open_export(start_export, members, output, SHORT_PARTS, max_attempts=2)
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = "short-video.mp4"
    spec.output.video_codec = codec
    spec.output.container = container
    spec.output.split.parts = parts
    created = await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec))
    spec.output.split.parts = 1
    whole = await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec))
    final = await wait_terminal(stub, created.id)
    assert_completed_with_valid_file(final, 4.0)
    rendered_whole = await wait_terminal(stub, whole.id)
    assert_completed_with_valid_file(rendered_whole, 4.0)
    planned = [(p.first_frame, p.frame_count, p.attempts) for p in video_parts(final)]
    # The last part starts half a second within the video (the even cut would start it at the
    # video's end): 15 frames, then 25 holding the video's last 5 and 20 repeating the last.
    assert planned == [(0, 15, 1), (15, 25, 1)]
    joined = Path(final.output_path)
    # The whole output's frames: the video's 20, then its last frame held until the audio ends
    # (as encoded: within a grey level of it, where the source's frames differ by far more).
    frames = gray_frames(joined)
    assert len(frames) == 40
    moved = [mean_difference(frames[n], frames[n + 1]) for n in range(19)]
    held = [mean_difference(frames[19], frames[n]) for n in range(20, 40)]
    assert min(moved) > 5 * max(held) and max(held) < 1.0, (moved, held)
    video_tb, video_pts, _ = stored_packets(joined)["video"]
    # Every frame a tenth of a second after the one before (WebM by FFmpeg 5.1 starts the
    # video a few milliseconds late, for the Opus pre-skip).
    start = min(video_pts)
    assert sorted(video_pts) == [start + round(n / 10 / video_tb) for n in range(40)]
    # All the audio: 4 s, within one frame; the file as long as the whole render's.
    assert abs(audio_seconds(joined) - 4.0) <= 0.1
    whole_file = Path(rendered_whole.output_path)
    assert abs(media_duration(joined) - media_duration(whole_file)) <= 0.1
    assert abs(audio_seconds(joined) - audio_seconds(whole_file)) <= 0.1
    assert not final.split_reason
    await wait_no_part_output(output, created.id)


async def test_a_source_whose_video_outlasts_its_audio_completes_split_with_silence_after_it(
    render_dirs: RenderDirs, start_render: StartRender, start_export: StartExport
) -> None:
    # 3 s of video, 1 s of audio: the container lasts as long as the video, which fills every
    # part; the audio is padded with silence to the video's end.
    make_clip(render_dirs.media / "short-audio.mp4", 3, 1)
    members = await in_process_pool(start_render, "split-a", "split-b")
    output = render_dirs.output
    stub = await open_export(start_export, members, output, max_attempts=2)
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = "short-audio.mp4"
    spec.output.split.parts = 2
    created = await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec))
    final = await wait_terminal(stub, created.id)
    assert_completed_with_valid_file(final, 3.0)
    parts = video_parts(final)
    assert [(p.first_frame, p.frame_count, p.attempts) for p in parts] == [(0, 15, 1), (15, 15, 1)]
    joined = Path(final.output_path)
    frames = gray_frames(joined)
    assert len(frames) == 30
    assert min(mean_difference(frames[n], frames[n + 1]) for n in range(29)) > 1.0
    assert abs(audio_seconds(joined) - 3.0) <= 0.1
    await wait_no_part_output(output, created.id)


def gray_frames(path: Path) -> list[bytes]:
    """Every decoded video frame of a 160x120 file, as 8-bit grey levels."""
    raw = subprocess.run(
        [
            tool_ffmpeg(),
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-pix_fmt",
            "gray",
            "-f",
            "rawvideo",
            "-",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    size = 160 * 120
    return [raw[start : start + size] for start in range(0, len(raw), size)]


def mean_difference(first: bytes, second: bytes) -> float:
    return sum(abs(a - b) for a, b in zip(first, second, strict=True)) / len(first)


def clip_whose_video_ends_broken(path: Path) -> Path:
    """2 s of video only, its last 0.6 s of frames stored but zeroed: the stream's packets reach
    2 s (what CheckInputs reads) but its frames decode only to about 1.4 s, so the last part
    falls short of its frames on every render (more than the half second it may pad)."""
    make_clip(path, 2, None)
    scanned = subprocess.run(
        [
            tool_ffmpeg(),
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-c",
            "copy",
            "-f",
            "framecrc",
            "-",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    sizes = [int(line.split(",")[4]) for line in scanned.splitlines() if line.startswith("0,")]
    data = bytearray(path.read_bytes())
    position = 0
    while True:  # the top-level boxes, to the end of the media data (video only, in order)
        size, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"mdat":
            break
        position += size
    end = position + size
    zeroed = sum(sizes[-6:])
    data[end - zeroed : end] = bytes(zeroed)
    path.write_bytes(data)
    return path


async def test_a_part_the_render_fails_each_time_fails_the_job_naming_it_and_the_reason(
    render_dirs: RenderDirs, start_render: StartRender, start_export: StartExport
) -> None:
    clip_whose_video_ends_broken(render_dirs.media / "short-video.mp4")
    members = await in_process_pool(start_render, "split-a", "split-b")
    output = render_dirs.output
    stub = await open_export(start_export, members, output, max_attempts=2)
    spec = spec_pb2.RenderSpec()
    spec.source.transcode.input_path = "short-video.mp4"
    spec.output.split.parts = 2
    created = await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec))
    final = await wait_terminal(stub, created.id)
    assert final.status == export_pb2.FAILED, final
    # The render's own verdict, named by part: its decoded frames fall short of the plan's.
    message = final.error.message
    assert message.startswith("part 2 of 2 failed (after 2 attempts): the part decodes"), message
    assert final.error.code == "VERIFICATION_FAILED", final.error
    second = video_parts(final)[1]
    assert second.attempts == 2 and second.render_id == f"{created.id}-p2-a2", second
    # It was rendered again first, and the job said so meanwhile.
    history = await stub.ListJobHistory(export_pb2.ListJobHistoryRequest(id=created.id))
    assert "Part 2 retrying" in [entry.stage for entry in history.entries]
    await wait_no_part_output(output, created.id)


async def test_a_job_that_cannot_be_split_safely_renders_whole_and_says_why(
    render_dirs: RenderDirs, start_render: StartRender, start_export: StartExport
) -> None:
    members = await in_process_pool(start_render, "split-a", "split-b")
    stub = await open_export(start_export, members, render_dirs.output)
    spec = pattern_spec(1.0, video_codec="hevc")  # the policy decides (parts 0)
    created = await stub.CreateExport(export_pb2.CreateExportRequest(spec=spec))
    final = await wait_terminal(stub, created.id)
    assert_completed_with_valid_file(final, 1.0)
    assert list(final.parts) == [] and final.attempts[0].render_id == created.id
    assert final.split_reason == "rendered whole: hevc parts are not joined (only h264 and vp9 are)"
    # A job the policy finds too short renders whole without a word.
    short = await stub.CreateExport(export_pb2.CreateExportRequest(spec=pattern_spec(1.0)))
    done = await wait_terminal(stub, short.id)
    assert done.status == export_pb2.COMPLETED and not done.parts and not done.split_reason


async def test_a_killed_render_service_costs_only_the_parts_it_held(
    render_processes: RenderProcesses, start_export: StartExport
) -> None:
    members = pool_of(render_processes, "split-a", "split-b")
    output = render_processes.dirs.output
    stub = await open_export(start_export, members, output)
    created = await stub.CreateExport(export_pb2.CreateExportRequest(spec=long_split_spec()))
    rendering = await wait_parts_rendering(stub, created.id)
    parts = video_parts(rendering)
    victim = parts[0].render_service.instance_id
    held = {part.index for part in parts if part.render_service.instance_id == victim}
    survivor = next(name for name in members if name != victim)
    before = rendering.progress
    kill_group(members[victim])

    async def retrying_elsewhere() -> bool:
        job = await get(stub, created.id)
        return any(
            part.index in held and part.attempts == 2 and part.state in PLACED for part in job.parts
        )

    await wait_for(retrying_elsewhere, within=60)
    shown = await get(stub, created.id)
    assert shown.progress >= before and "retrying" in shown.stage, shown.stage
    final = await wait_terminal(stub, created.id)
    assert_completed_with_valid_file(final, 30.0)
    for part in final.parts:
        if part.join:
            assert part.render_service.instance_id == survivor
        elif part.audio:  # short: it may have ended before the kill
            if part.attempts == 2:
                assert part.render_service.instance_id == survivor, part
                assert part.render_id == f"{created.id}-audio-a2"
        elif part.index in held:
            assert (part.attempts, part.render_service.instance_id) == (2, survivor), part
            assert part.render_id == f"{created.id}-p{part.index + 1}-a2"
        else:
            assert part.attempts == 1, part
    await wait_no_part_output(output, created.id)


async def test_cancel_mid_split_stops_every_part_and_leaves_no_part_output(
    render_dirs: RenderDirs, start_render: StartRender, start_export: StartExport
) -> None:
    members = await in_process_pool(start_render, "split-a", "split-b")
    output = render_dirs.output
    stub = await open_export(start_export, members, output)
    created = await stub.CreateExport(export_pb2.CreateExportRequest(spec=long_split_spec()))
    rendering = await wait_parts_rendering(stub, created.id)
    cancelled = await stub.CancelExport(export_pb2.CancelExportRequest(id=created.id))
    assert cancelled.status == export_pb2.CANCELLED
    parts = video_parts(rendering)
    channels = {name: create_channel(member.address) for name, member in members.items()}
    try:

        async def every_part_stopped() -> bool:
            for part in parts:
                stub_of = render_pb2_grpc.RenderServiceStub(
                    channels[part.render_service.instance_id]
                )
                info = await stub_of.GetRender(
                    render_pb2.GetRenderRequest(render_id=part.render_id)
                )
                if info.state != render_pb2.RENDER_STATE_CANCELLED:
                    return False
            return True

        await wait_for(every_part_stopped, within=30)

        await wait_no_part_output(output, created.id)
    finally:
        for channel in channels.values():
            await channel.close(None)
    final = await get(stub, created.id)
    assert final.status == export_pb2.CANCELLED


async def test_a_part_that_fails_for_good_fails_the_job_naming_it(
    render_processes: RenderProcesses, start_export: StartExport
) -> None:
    members = pool_of(render_processes, "split-a", "split-b")
    output = render_processes.dirs.output
    stub = await open_export(start_export, members, output, max_attempts=1)
    created = await stub.CreateExport(export_pb2.CreateExportRequest(spec=long_split_spec()))
    rendering = await wait_parts_rendering(stub, created.id)
    parts = video_parts(rendering)
    victim = parts[0].render_service.instance_id
    held = sorted(part.index + 1 for part in parts if part.render_service.instance_id == victim)
    kill_group(members[victim])
    final = await wait_terminal(stub, created.id)
    assert final.status == export_pb2.FAILED, final
    # Whichever render on the lost service was found lost first names the failure: a part, or
    # the output's audio rendered beside them.
    names = [f"part {n} of 3" for n in held]
    audio = [part for part in rendering.parts if part.audio and part.state in PLACED]
    if audio and audio[0].render_service.instance_id == victim:
        names.append("the output's audio")
    failed = [name for name in names if final.error.message.startswith(f"{name} failed")]
    assert failed and "(after 1 attempts)" in final.error.message, final.error.message
    await wait_no_part_output(output, created.id)

"""One render's lifecycle: wait for a slot (Queued), probe inputs and build the command
(Preparing), run FFmpeg (Rendering), wait for it to finish writing (Finalizing), check the file
(Verifying), move it into place (with an object store as the output directory: store it,
Uploading, then remove it from the scratch directory) and report ``completed``; otherwise
``failed`` with a reason.

Cancellation (CancelRender, shutdown) arrives as task cancellation: FFmpeg's process group is
killed and the partial file removed on the way out; the canceller writes the terminal event."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from render_service.config import RenderConfig
from render_service.events import RenderRecord
from render_service.failures import (
    FailureCode,
    RenderFailure,
    ffmpeg_reason,
    input_storage_failure,
    invalid_input,
    storage_failure,
)
from render_service.ffmpeg_command import (
    RenderInputs,
    available_encoders,
    build_render_argv,
    output_frame_rate,
)
from render_service.ffmpeg_process import kill_process_group, start_ffmpeg
from render_service.ffmpeg_progress import ProgressBlock, ProgressParser
from render_service.media_probe import probe_media, probe_subtitles
from render_service.output_dir import OutputDirectory, final_name, partial_name
from render_service.output_store import OutputStore
from render_service.public_paths import RelativePaths
from render_service.split_command import (
    build_audio_argv,
    build_join_argv,
    build_part_argv,
    concat_list,
)
from render_service.split_parts import find_audio, read_parts
from render_service.split_spec import split_kind
from render_service.split_verification import check_parts, verify_audio, verify_join, verify_part
from render_service.stored_inputs import StoredInputs
from render_service.verification import verify_output
from videojob import stamps, tracing
from videojob.errors import (
    InvalidArgument,
    ObjectStoreFailed,
    ObjectStoreMisconfigured,
    ObjectStoreUnavailable,
    StoredObjectMissing,
    VideoJobError,
)
from videojob.limits import MAX_DURATION_SECONDS, MAX_RUNNING_PROGRESS, bounded_log_tail
from videojob.logging_setup import bind_log_context
from videojob.render.v1 import spec_pb2
from videojob.spec_validation import resolve_media_path

logger = logging.getLogger(__name__)

PREPARING_END = 2.0
RENDERING_END = 95.0
FINALIZING = 95.0
VERIFYING = MAX_RUNNING_PROGRESS
# Verified before it is stored: the upload's own movement is its stage_progress.
UPLOADING = MAX_RUNNING_PROGRESS
# Lines of ffmpeg's log kept while it runs (more than a failure carries: ffmpeg_reason looks
# past its repetitions); a failure carries limits.bounded_log_tail of them.
LOG_TAIL_LINES = 60
READER_DRAIN_SECONDS = 5.0
# A join's scratch folders (its concat list, parts fetched from the object store).
JOINS_FOLDER = "joins"
# Of a join's stage_progress: reading its parts, then muxing them with the audio.
PARTS_READ_SHARE = 20.0


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@dataclass(frozen=True)
class ResolvedPaths:
    """The spec's input files, resolved inside the media root."""

    transcode: Path | None = None
    slides: tuple[Path, ...] = ()
    audio: Path | None = None
    subtitles: Path | None = None


def reads_media_files(spec: spec_pb2.RenderSpec) -> bool:
    """Whether the render reads files under the media root (a test pattern reads none)."""
    return spec.source.WhichOneof("kind") in ("transcode", "slideshow")


def resolve_spec_paths(media_root: Path, spec: spec_pb2.RenderSpec) -> ResolvedPaths:
    """Raises InvalidArgument naming the field of a missing or escaping file."""
    source = spec.source
    kind = source.WhichOneof("kind")
    prefix = "spec.source"
    if kind == "transcode":
        return ResolvedPaths(
            transcode=resolve_media_path(
                media_root, source.transcode.input_path, f"{prefix}.transcode.input_path"
            )
        )
    if kind != "slideshow":
        return ResolvedPaths()
    show = source.slideshow
    slides = tuple(
        resolve_media_path(
            media_root, slide.image_path, f"{prefix}.slideshow.slides[{index}].image_path"
        )
        for index, slide in enumerate(show.slides)
    )
    audio = (
        resolve_media_path(media_root, show.audio_path, f"{prefix}.slideshow.audio_path")
        if show.audio_path
        else None
    )
    subtitles = (
        resolve_media_path(media_root, show.subtitles_path, f"{prefix}.slideshow.subtitles_path")
        if show.subtitles_path
        else None
    )
    return ResolvedPaths(slides=slides, audio=audio, subtitles=subtitles)


TRANSCODE_FIELD = "spec.source.transcode.input_path"
AUDIO_FIELD = "spec.source.slideshow.audio_path"
SUBTITLES_FIELD = "spec.source.slideshow.subtitles_path"


def slide_field(index: int) -> str:
    return f"spec.source.slideshow.slides[{index}].image_path"


async def probe_inputs(
    binary: str,
    spec: spec_pb2.RenderSpec,
    paths: ResolvedPaths,
    slide_probed: Callable[[int], None] | None = None,
) -> tuple[RenderInputs, float]:
    """Reads every input's header (the transcode input, each slide, the soundtrack, the
    subtitles) and the expected duration; an input ffmpeg cannot use is an INVALID_INPUT
    failure naming its field. The check Render makes before starting, and CheckInputs answers
    with."""
    source = spec.source
    kind = source.WhichOneof("kind")
    if kind == "test_pattern":
        return RenderInputs(), source.test_pattern.duration_seconds
    if kind == "transcode":
        assert paths.transcode is not None
        info = await probe_media(binary, paths.transcode, TRANSCODE_FIELD)
        if not info.has_video:
            raise invalid_input(TRANSCODE_FIELD, "has no video stream")
        duration = info.duration_seconds
        if duration is None or duration <= 0:
            raise invalid_input(TRANSCODE_FIELD, "the input's duration cannot be read")
        if duration > MAX_DURATION_SECONDS:
            raise invalid_input(
                TRANSCODE_FIELD, f"the input is longer than {MAX_DURATION_SECONDS:.0f} seconds"
            )
        return RenderInputs(
            transcode_path=paths.transcode, transcode_has_audio=info.has_audio
        ), duration
    show = source.slideshow
    slide_size: tuple[int, int] | None = None
    for index, path in enumerate(paths.slides):
        field = slide_field(index)
        info = await probe_media(binary, path, field)
        if not info.has_video or info.width is None or info.height is None:
            raise invalid_input(field, "is not an image")
        if slide_size is None:
            slide_size = (_even(info.width), _even(info.height))
        if slide_probed is not None:
            slide_probed(index)
    if paths.audio is not None:
        info = await probe_media(binary, paths.audio, AUDIO_FIELD)
        if not info.has_audio:
            raise invalid_input(AUDIO_FIELD, "has no audio stream")
    if paths.subtitles is not None:
        await probe_subtitles(binary, paths.subtitles, SUBTITLES_FIELD)
    inputs = RenderInputs(
        slide_paths=paths.slides,
        slide_size=slide_size,
        audio_path=paths.audio,
        subtitles_path=paths.subtitles,
    )
    return inputs, sum(slide.duration_seconds for slide in show.slides)


def _fetch_failure(error: VideoJobError) -> RenderFailure:
    """What a render that could not fetch its inputs from the object store reports: a missing
    object as a missing file, the store's failures as STORAGE_UNAVAILABLE (worth another
    attempt: the store may answer again)."""
    if isinstance(error, InvalidArgument):
        return invalid_input(error.field, error.problem)
    return input_storage_failure(error)


def _even(value: int) -> int:
    return max(value - value % 2, 2)


def cpu_ticks(pid: int) -> int:
    """The process's user + system CPU time in clock ticks (all its threads), -1 if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # The command name in parentheses may hold spaces and ')': fields follow the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # fields 14 (utime) and 15 (stime)
    except (OSError, IndexError, ValueError):
        return -1


def _activity_signature(pid: int, path: Path) -> tuple[int, int, int]:
    """The output's size, the bytes FFmpeg has read and the CPU time it has used: any of them
    moving means it is working (an encoder buffering frames shows nothing but CPU time; a
    stopped FFmpeg uses none)."""
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    read_bytes = -1
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("rchar:"):
                read_bytes = int(line.split()[1])
    return size, read_bytes, cpu_ticks(pid)


class RenderJob:
    def __init__(
        self,
        record: RenderRecord,
        paths: ResolvedPaths,
        config: RenderConfig,
        slots: asyncio.Semaphore,
        binary: str,
        public: RelativePaths | None = None,
        output_store: OutputStore | None = None,
        stored_inputs: StoredInputs | None = None,
    ) -> None:
        self._record = record
        self._output_store = output_store
        # With an object store for a media root: the inputs are fetched before FFmpeg runs.
        self._stored_inputs = stored_inputs
        self._spec = record.spec
        self._paths = paths
        self._config = config
        self._slots = slots
        self._binary = binary
        self._output_dir = config.output_dir.resolve()
        # What the client is shown of a failure: no path of this machine (the log keeps them).
        self._public = public or RelativePaths(config.media_root, config.output_dir)
        container = self._spec.output.container
        self._partial_name = partial_name(config.instance_id, record.render_id, container)
        self._final_name = final_name(record.render_id, container)
        self._partial = self._output_dir / self._partial_name
        self._log_tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._last_alive = time.monotonic()
        self._finalizing = False
        self._last_block_key: tuple[float | None, int | None, int | None] | None = None
        self._frame_rate = output_frame_rate(self._spec)
        if split_kind(self._spec) == "part":
            self._frame_rate = self._spec.part.fps
        self._media_written = 0.0
        # A join reports its FFmpeg's progress as Joining, not Rendering.
        self._joining = split_kind(self._spec) == "join"

    async def run(self) -> None:
        record = self._record
        bind_log_context(render_id=record.render_id)
        try:
            async with self._slots:
                self._timing("slot")
                record.mark_running()
                with tracing.tracer().start_as_current_span(
                    "ffmpeg render", attributes={tracing.RENDER_ID_ATTRIBUTE: record.render_id}
                ):
                    await self._render()
        except RenderFailure as failure:
            logger.info(
                "render %s failed: %s",
                record.render_id,
                failure,
                extra={"log_tail": failure.log_tail} if failure.log_tail else None,
            )
            record.fail(
                failure.code,
                self._public(failure.message),
                self._public(failure.log_tail),
                field=failure.field,
            )
        except Exception:  # a bug: every expected failure is a RenderFailure
            logger.exception("render %s failed unexpectedly", record.render_id)
            record.fail(
                FailureCode.INTERNAL,
                "internal error in the render service",
                self._public(self._tail()),
            )

    def _tail(self) -> str:
        return bounded_log_tail("\n".join(self._log_tail))

    def _timing(self, step: str) -> None:
        """A wall-clock stamp (comparable with other processes' clocks) of a completion step."""
        stamps.stamp(f"render.{step}", self._record.render_id)

    async def _render(self) -> None:
        self._record.progress("Preparing", 0.0)
        if self._stored_inputs is None:
            await self._render_inputs()
            return
        async with contextlib.AsyncExitStack() as fetched:
            try:
                folder = await fetched.enter_async_context(
                    self._stored_inputs.fetched(self._spec, self._record.render_id)
                )
                self._paths = await asyncio.to_thread(resolve_spec_paths, folder, self._spec)
            except VideoJobError as error:
                raise _fetch_failure(error) from None
            # The client is shown the inputs' paths relative to this render's own media root.
            self._public = RelativePaths(folder, self._config.output_dir)
            await self._render_inputs()

    async def _render_inputs(self) -> None:
        record = self._record
        inputs, expected = await self._prepare()
        if self._spec.output.video_codec == "av1":  # fills the encoder cache off the event loop
            try:
                await asyncio.to_thread(available_encoders, self._binary)
            except (OSError, subprocess.SubprocessError) as exc:
                raise RenderFailure(
                    FailureCode.FFMPEG_ERROR, f"cannot list ffmpeg's encoders: {exc}"
                ) from None
        kind = split_kind(self._spec)
        if kind == "join":
            await self._join(inputs)
            return
        if kind == "audio":
            await self._audio(inputs)
            return
        if kind == "part":
            expected = self._part_seconds(expected)
            argv = build_part_argv(self._binary, self._spec, inputs, self._partial, expected)
        else:
            argv = build_render_argv(self._binary, self._spec, inputs, self._partial, expected)
        self._timing("argv_built")

        async def render() -> tuple[int, float]:
            await self._run_ffmpeg(argv, expected)
            if not self._finalizing:
                record.progress("Finalizing", FINALIZING)
            record.progress("Verifying", VERIFYING)
            self._timing("verify_start")
            if kind == "part":
                part = self._spec.part
                await verify_part(self._binary, self._partial, part.frame_count, part.first_frame)
            checked = await verify_output(self._partial, expected)
            self._timing("verify_end")
            return checked

        await self._produce(render)

    def _part_seconds(self, source_seconds: float) -> float:
        """A part's own duration; INVALID_INPUT when the source ends before the part starts."""
        part = self._spec.part
        start = part.first_frame / part.fps
        if start >= source_seconds:
            raise invalid_input(
                "spec.part.first_frame",
                f"frame {part.first_frame} starts at {start:.3f} s, past the source's end "
                f"({source_seconds:.3f} s)",
            )
        return part.frame_count / part.fps

    async def _audio(self, inputs: RenderInputs) -> None:
        """Encodes the whole output's audio of a split job, then verifies its length."""
        record = self._record
        audio = self._spec.audio
        seconds = audio.total_frames / audio.fps
        argv = build_audio_argv(self._binary, self._spec, inputs, self._partial)
        if argv is None:
            raise invalid_input("spec.audio", "the source has no audio to render")
        self._timing("argv_built")

        async def render() -> tuple[int, float]:
            await self._run_ffmpeg(argv, seconds)
            if not self._finalizing:
                record.progress("Finalizing", FINALIZING)
            record.progress("Verifying", VERIFYING)
            self._timing("verify_start")
            checked = await verify_audio(self._binary, self._partial, audio.total_frames, audio.fps)
            self._timing("verify_end")
            return checked

        await self._produce(render)

    async def _join(self, inputs: RenderInputs) -> None:
        """Puts the parts together (Joining: the parts read, then the muxing, as its
        stage_progress), then verifies the joined file."""
        record = self._record
        join = self._spec.join
        seconds = join.total_frames / join.fps
        count = len(join.part_paths)
        folder = self._scratch_dir() / JOINS_FOLDER / self._record.render_id

        def read(index: int) -> None:
            record.progress("Joining", FINALIZING, stage_progress=PARTS_READ_SHARE * index / count)

        try:
            read(0)
            parts = await read_parts(
                self._binary,
                join.part_paths,
                self._output_dir,
                self._output_store,
                folder,
                read,
            )
            check_parts(parts, join.total_frames)
            audio_file = None
            if join.audio_path:
                audio_file = await find_audio(
                    join.audio_path, self._output_dir, self._output_store, folder
                )
            list_path = folder / "parts.ffconcat"
            listing = concat_list([(part.path, part.frames) for part in parts], join.fps)
            await asyncio.to_thread(_write_file, list_path, listing)
            argv = build_join_argv(
                self._binary, self._spec, inputs, list_path, self._partial, audio_file
            )
            self._timing("argv_built")

            async def render() -> tuple[int, float]:
                await self._run_ffmpeg(argv, seconds)
                record.progress("Verifying", VERIFYING)
                self._timing("verify_start")
                checked = await verify_output(self._partial, seconds)
                await verify_join(
                    self._binary,
                    self._partial,
                    join.total_frames,
                    join.fps,
                    [part.frames for part in parts],
                )
                self._timing("verify_end")
                return checked

            await self._produce(render)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)

    def _scratch_dir(self) -> Path:
        return self._config.scratch_dir or self._output_dir

    async def _produce(self, render: Callable[[], Awaitable[tuple[int, float]]]) -> None:
        """Runs ``render`` into the partial file, then publishes it (and stores it with an
        object store as the output directory) and reports ``completed``."""
        record = self._record
        # Synchronous on purpose (small calls): a file created by a thread after a cancellation
        # would escape the cleanup below.
        output = OutputDirectory.open(self._output_dir)
        completed = False
        try:
            output.create_empty(self._partial_name)
            if not self._joining:
                record.progress("Preparing", PREPARING_END)
            try:
                size, duration = await render()
            except RenderFailure as failure:
                raise self._blame_unreachable_output(output, failure) from None
            final = output.publish(self._partial_name, self._final_name)
            self._timing("published")
            completed = True
            if self._output_store is None:
                record.complete(str(final), size, duration)
            else:
                try:
                    await self._store(final, size, duration)
                finally:
                    output.remove(self._final_name)
            self._timing("completed_appended")
        finally:
            if not completed:
                output.remove(self._partial_name)
            output.close()

    async def _store(self, final: Path, size: int, duration: float) -> None:
        """Uploads the verified file and reports ``completed`` once the store has all of it; a
        failure or a cancellation aborts the upload (no object, no unfinished upload)."""
        assert self._output_store is not None
        record = self._record
        record.progress("Uploading", UPLOADING)

        def uploaded(acknowledged: int) -> None:
            share = 100.0 * acknowledged / size if size else 100.0
            record.progress("Uploading", UPLOADING, stage_progress=share)

        try:
            stored = await self._output_store.upload(final, self._final_name, uploaded)
        except (
            ObjectStoreUnavailable,
            ObjectStoreMisconfigured,
            ObjectStoreFailed,
            StoredObjectMissing,
        ) as error:
            raise storage_failure(error) from None
        self._timing("uploaded")
        logger.info(
            "render %s stored as %s (%d bytes, sha256 %s)",
            record.render_id,
            stored.url,
            stored.size,
            stored.sha256_hex,
        )
        record.complete(
            stored.url,
            stored.size,
            duration,
            sha256=stored.sha256_hex,
            store_checksum=stored.composite_sha256,
        )

    def _blame_unreachable_output(
        self, output: OutputDirectory, failure: RenderFailure
    ) -> RenderFailure:
        """FFmpeg and the verification read and write the output by path: when that path no
        longer leads to the output directory, that is the cause, whatever they reported."""
        if failure.code not in (FailureCode.FFMPEG_ERROR, FailureCode.VERIFICATION_FAILED):
            return failure
        if output.reachable():
            return failure
        logger.warning("the output directory %s became unreachable", self._output_dir)
        return RenderFailure(
            FailureCode.OUTPUT_UNWRITABLE,
            f"the output directory became unreachable during the render ({failure.message})",
            failure.log_tail,
        )

    async def _prepare(self) -> tuple[RenderInputs, float]:
        def slide_probed(index: int) -> None:
            done = (index + 1) / (len(self._paths.slides) + 1)
            self._record.progress("Preparing", PREPARING_END * done)

        return await probe_inputs(self._binary, self._spec, self._paths, slide_probed)

    async def _run_ffmpeg(self, argv: list[str], expected: float) -> None:
        logger.info("render %s: %s", self._record.render_id, " ".join(argv))
        self._timing("spawning")
        try:
            process = await start_ffmpeg(argv)
        except OSError as exc:
            raise RenderFailure(FailureCode.FFMPEG_ERROR, f"cannot start ffmpeg: {exc}") from None
        self._timing("spawned")
        if not self._joining:
            self._record.progress("Rendering", PREPARING_END)
        assert process.stdout is not None and process.stderr is not None
        readers = [
            asyncio.create_task(self._read_progress(process.stdout, expected)),
            asyncio.create_task(self._read_log(process.stderr)),
        ]
        waiter = asyncio.create_task(process.wait())
        watchdog = asyncio.create_task(self._watch_for_stall(process.pid))
        try:
            await asyncio.wait({waiter, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                self._timing("exit_seen")
            if not waiter.done():
                await kill_process_group(process)
                raise RenderFailure(
                    FailureCode.STALLED,
                    f"ffmpeg made no progress for {self._config.stall_timeout:g} s and was killed",
                    self._tail(),
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*readers), READER_DRAIN_SECONDS)
            self._timing("drained")
        finally:
            for task in (*readers, waiter, watchdog):
                task.cancel()
            await asyncio.shield(kill_process_group(process))
        if process.returncode != 0:
            message = f"ffmpeg exited with code {process.returncode}"
            reason = ffmpeg_reason("\n".join(self._log_tail))
            raise RenderFailure(
                FailureCode.FFMPEG_ERROR,
                f"{message}: {reason}" if reason else message,
                self._tail(),
            )

    async def _read_log(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._log_tail.append(line)

    async def _read_progress(self, stream: asyncio.StreamReader, expected: float) -> None:
        parser = ProgressParser()
        async for raw in stream:
            block = parser.feed(raw.decode(errors="replace"))
            if block is not None:
                self._on_progress(block, expected)

    def _on_progress(self, block: ProgressBlock, expected: float) -> None:
        key = (block.out_time_seconds, block.frame, block.total_size)
        moved = key != self._last_block_key
        self._last_block_key = key
        if moved:
            self._last_alive = time.monotonic()
        if self._finalizing:
            return
        if self._joining:
            if moved and block.out_time_seconds is not None and expected > 0:
                muxed = min(block.out_time_seconds / expected, 1.0)
                share = PARTS_READ_SHARE + (100.0 - PARTS_READ_SHARE) * muxed
                self._record.progress(
                    "Joining",
                    FINALIZING,
                    frame=block.frame or 0,
                    out_time_seconds=min(block.out_time_seconds, expected),
                    stage_progress=share,
                )
            return
        out_time = min(self._media_written_by(block), expected)
        frame, fps, speed = block.frame or 0, block.fps or 0.0, block.speed or 0.0
        if block.ended or out_time >= expected:
            self._finalizing = True
            self._record.progress(
                "Finalizing",
                FINALIZING,
                frame=frame,
                fps=fps,
                speed=speed,
                out_time_seconds=out_time,
            )
            return
        if not moved:
            return
        self._record.progress(
            "Rendering",
            PREPARING_END + (RENDERING_END - PREPARING_END) * out_time / expected,
            frame=frame,
            fps=fps,
            speed=speed,
            out_time_seconds=out_time,
            eta_seconds=(expected - out_time) / speed if speed > 0 else 0.0,
        )
        stamps.stamp("render.block", self._record.render_id, frame)

    def _media_written_by(self, block: ProgressBlock) -> float:
        """Seconds of the output written so far. Frames count where the frame rate is constant:
        FFmpeg's out_time is the furthest of all streams (once the audio ends it runs ahead of a
        video encoder that holds frames back, SVT-AV1 by about a second) and N/A on the last
        blocks."""
        if self._frame_rate and block.frame is not None:
            written = block.frame / self._frame_rate
        elif block.out_time_seconds is not None:
            written = block.out_time_seconds
        else:
            written = self._media_written
        self._media_written = max(self._media_written, written)
        return self._media_written

    async def _watch_for_stall(self, pid: int) -> None:
        """Returns once FFmpeg has reported nothing new, grown its output by nothing and read
        nothing for the stall timeout."""
        timeout = self._config.stall_timeout
        interval = min(0.25, timeout / 4)
        signature: tuple[int, int, int] | None = None
        while True:
            await asyncio.sleep(interval)
            current = await asyncio.to_thread(_activity_signature, pid, self._partial)
            if current != signature:
                signature = current
                self._last_alive = time.monotonic()
            if time.monotonic() - self._last_alive >= timeout:
                return

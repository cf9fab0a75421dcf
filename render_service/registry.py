"""The table of renders this process knows: submission (validation, idempotency, queue limit),
watching, cancellation, heartbeats, retention of finished renders, capacity, draining and
shutdown."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable

from render_service.config import RenderConfig
from render_service.events import RenderRecord
from render_service.failures import FailureCode, RenderFailure
from render_service.output_dir import partial_names, remove_partials
from render_service.output_store import OutputStore
from render_service.public_paths import RelativePaths
from render_service.render_job import (
    RenderJob,
    ResolvedPaths,
    probe_inputs,
    reads_media_files,
    resolve_spec_paths,
)
from render_service.source_facts import SourceFacts, spec_facts, transcode_facts
from render_service.split_spec import check_split_spec
from render_service.stored_inputs import StoredInputs
from videojob import metrics
from videojob.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    Reason,
    ResourceExhausted,
    Unavailable,
)
from videojob.limits import MAX_RENDER_ID_LENGTH
from videojob.render.v1 import render_pb2, spec_pb2
from videojob.spec_validation import normalize_spec

logger = logging.getLogger(__name__)

RENDER_ID = re.compile(f"[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_RENDER_ID_LENGTH - 1}}}")
HEARTBEAT_TICK_SECONDS = 0.2
# CheckInputs calls probing files at the same time (each runs ffmpeg on every input).
MAX_CONCURRENT_INPUT_CHECKS = 4

_TerminalWriter = Callable[[], None]


def check_render_id(render_id: str) -> None:
    if not render_id:
        raise InvalidArgument("render_id", "is required")
    if RENDER_ID.fullmatch(render_id) is None:
        raise InvalidArgument(
            "render_id",
            f"must be 1-{MAX_RENDER_ID_LENGTH} letters, digits, '_' or '-', "
            "starting with a letter or digit",
        )


class RenderRegistry:
    def __init__(
        self,
        config: RenderConfig,
        output_store: OutputStore | None = None,
        stored_inputs: StoredInputs | None = None,
    ) -> None:
        self._config = config
        self._output_store = output_store
        # With an object store for a media root: where inputs are checked and fetched from.
        self._stored_inputs = stored_inputs
        self._records: dict[str, RenderRecord] = {}
        self._slots = asyncio.Semaphore(max(config.max_concurrent, 1))
        self._forget_handles: dict[str, asyncio.TimerHandle] = {}
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._sweeps: set[asyncio.Task[None]] = set()
        self._accepting = True
        self._draining = False
        self._render_finished = asyncio.Event()
        self._input_checks = asyncio.Semaphore(MAX_CONCURRENT_INPUT_CHECKS)
        # What a client is shown of a failure: paths relative to the media root (or the output
        # directory); the log keeps them whole.
        self._public = RelativePaths(config.media_root, config.output_dir)

    def start(self) -> None:
        self._heartbeat_task = asyncio.create_task(self._send_heartbeats())
        self._export_gauges()

    def _export_gauges(self) -> None:
        """The metrics read this registry's state when scraped (the process has one), from
        the scraping thread: one copy of the records, taken at once, is all they read."""

        def count(queued: bool) -> int:
            records = list(self._records.values())
            return sum(
                not record.finished and (record.state == render_pb2.RENDER_STATE_QUEUED) == queued
                for record in records
            )

        metrics.RENDERS.labels("running").set_function(lambda: count(queued=False))
        metrics.RENDERS.labels("queued").set_function(lambda: count(queued=True))
        metrics.RENDER_MAX_CONCURRENT.set(self._config.max_concurrent)
        metrics.RENDER_MAX_QUEUE.set(self._config.max_queue)
        metrics.RENDER_DRAINING.set_function(lambda: 1 if self._draining else 0)

    def get(self, render_id: str) -> RenderRecord:
        check_render_id(render_id)
        record = self._records.get(render_id)
        if record is None:
            raise NotFound(f"render {render_id!r} not found")
        return record

    def active_records(self) -> list[RenderRecord]:
        return [record for record in self._records.values() if not record.finished]

    def capacity(self) -> render_pb2.Capacity:
        active = self.active_records()
        queued = sum(record.state == render_pb2.RENDER_STATE_QUEUED for record in active)
        return render_pb2.Capacity(
            running=len(active) - queued,
            queued=queued,
            max_concurrent=self._config.max_concurrent,
            max_queue=self._config.max_queue,
            instance_id=self._config.instance_id,
            draining=self._draining,
        )

    def _refusal(self) -> Unavailable:
        return Unavailable(
            "the render service is draining and takes no new renders; use another one",
            reason=Reason.DRAINING,
            metadata={"instance_id": self._config.instance_id},
        )

    async def submit(
        self, render_id: str, spec: spec_pb2.RenderSpec
    ) -> AsyncIterator[render_pb2.RenderEvent]:
        """Validates and starts a render, or attaches to the known one with that id. Every
        rejection is raised here, before the caller streams any event."""
        check_render_id(render_id)
        normalized = normalize_spec(spec)
        check_split_spec(normalized)
        known = self._records.get(render_id)
        if known is None:
            if not self._accepting:
                raise self._refusal()
            paths = ResolvedPaths()
            if reads_media_files(normalized) and self._stored_inputs is not None:
                # Fetched by the render itself, once it has a slot.
                await self._stored_inputs.check_exist(normalized)
            elif reads_media_files(normalized):
                paths = await asyncio.to_thread(
                    resolve_spec_paths, self._config.media_root, normalized
                )
            known = self._records.get(render_id)  # another call may have started it meanwhile
            if known is None and not self._accepting:
                raise self._refusal()
        if known is not None:
            if known.spec != normalized:
                raise AlreadyExists(f"render_id: {render_id!r} is already used by another spec")
            return known.watch(0)
        active = len(self.active_records())
        if active >= self._config.max_concurrent + self._config.max_queue:
            raise ResourceExhausted(
                f"the render queue is full ({self._config.max_queue} waiting); retry later"
            )
        record = RenderRecord(
            render_id,
            normalized,
            max_events=self._config.max_retained_events,
            max_pending_per_watcher=self._config.max_pending_per_watcher,
            on_finished=self._on_finished,
        )
        self._records[render_id] = record
        record.progress("Queued", 0.0)
        stream = record.watch(0)
        job = RenderJob(
            record,
            paths,
            self._config,
            self._slots,
            self._config.ffmpeg,
            self._public,
            self._output_store,
            self._stored_inputs,
        )
        record.task = asyncio.create_task(job.run(), name=f"render-{render_id}")
        return stream

    async def check_inputs(self, spec: spec_pb2.RenderSpec) -> SourceFacts:
        """What Render checks before starting, without rendering: the spec, each input file
        under the media root (symlinks resolved; in an object store: its object, fetched into
        the scratch directory for the probe), and that ffmpeg can use it. InvalidArgument
        naming the field otherwise, ObjectStoreUnavailable when the store does not answer; a
        probe that cannot run (ffmpeg missing, too slow) decides nothing, the render's own
        check will. Answers the source's facts (unknown ones 0)."""
        normalized = normalize_spec(spec)
        check_split_spec(normalized)
        if self._stored_inputs is None:
            paths = await asyncio.to_thread(resolve_spec_paths, self._config.media_root, normalized)
            async with self._input_checks:
                return await self._probe_inputs(normalized, paths, self._public)
        if not reads_media_files(normalized):
            return await self._probe_inputs(normalized, ResolvedPaths(), self._public)
        await self._stored_inputs.check_exist(normalized)
        async with (
            self._input_checks,
            # Named as no render id can be (those start with a letter or digit).
            self._stored_inputs.fetched(normalized, f".check-{uuid.uuid4().hex}") as folder,
        ):
            paths = await asyncio.to_thread(resolve_spec_paths, folder, normalized)
            return await self._probe_inputs(
                normalized, paths, RelativePaths(folder, self._config.output_dir)
            )

    async def _probe_inputs(
        self, spec: spec_pb2.RenderSpec, paths: ResolvedPaths, public: RelativePaths
    ) -> SourceFacts:
        """Under one of the input check slots."""
        binary = self._config.ffmpeg
        try:
            inputs, duration = await probe_inputs(binary, spec, paths)
            if inputs.transcode_path is None:
                return spec_facts(spec, duration)
            return await transcode_facts(
                binary, inputs.transcode_path, duration, inputs.transcode_has_audio
            )
        except RenderFailure as failure:
            if failure.code != FailureCode.INVALID_INPUT or not failure.field:
                logger.warning("input check undecided: %s", failure)
                return SourceFacts()
            logger.info("input check refused: %s", failure)
            prefix = f"{failure.field}: "
            problem = public(failure.message.removeprefix(prefix))
            raise InvalidArgument(failure.field, problem) from None

    def watch(self, render_id: str, after_seq: int) -> AsyncIterator[render_pb2.RenderEvent]:
        return self.get(render_id).watch(after_seq)

    async def cancel(self, render_id: str) -> render_pb2.RenderInfo:
        record = self.get(render_id)
        await self._stop(record, lambda: record.cancel("cancelled by request"))
        return record.info()

    async def _stop(self, record: RenderRecord, write_terminal: _TerminalWriter) -> None:
        """Cancels the render's task (which kills FFmpeg and removes the partial file), then
        writes the terminal event, unless the render finished first."""
        if record.finished:
            return
        if record.stop_task is None:

            async def stop() -> None:
                if record.task is not None and not record.task.done():
                    record.task.cancel()
                    await asyncio.wait({record.task})
                write_terminal()

            record.stop_task = asyncio.create_task(stop())
        await asyncio.shield(record.stop_task)

    def _on_finished(self, record: RenderRecord) -> None:
        self._render_finished.set()
        loop = asyncio.get_running_loop()
        self._forget_handles[record.render_id] = loop.call_later(
            self._config.retention, self._forget, record
        )
        sweep = asyncio.create_task(self._sweep_partials())
        self._sweeps.add(sweep)
        sweep.add_done_callback(self._sweeps.discard)

    def _is_active(self, render_id: str) -> bool:
        record = self._records.get(render_id)
        return record is not None and not record.finished

    async def _sweep_partials(self) -> None:
        """Removes partial files of renders that are not running: normally each render removes
        its own, this covers any it could not."""
        output_dir, instance_id = self._config.output_dir, self._config.instance_id
        names = await asyncio.to_thread(partial_names, output_dir, instance_id)
        # Checked and removed on the event loop (a few unlinks at most), so no render can start
        # and create its partial file between the check and the removal.
        removed = remove_partials(output_dir, instance_id, names, keep=self._is_active)
        if removed:
            logger.info("removed %d partial file(s) of ended renders", removed)

    def _forget(self, record: RenderRecord) -> None:
        self._forget_handles.pop(record.render_id, None)
        if self._records.get(record.render_id) is record:
            del self._records[record.render_id]

    async def _send_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_TICK_SECONDS)
            now = time.monotonic()
            for record in self.active_records():
                if now - record.last_event_at >= self._config.heartbeat_after:
                    record.heartbeat()

    def refuse_new(self) -> None:
        """From now on a Render for an unknown render id is refused with UNAVAILABLE, reason
        DRAINING; the known ones keep being answered."""
        self._accepting = False
        self._draining = True

    async def hand_back_queued(self) -> int:
        """Ends every render still waiting for a slot with ``failed{SHUTDOWN, never_started}``:
        nothing of it ran, so its client submits it to another render service at no cost.

        Handed back rather than kept: a queued render would wait for the running ones (a drain
        of up to the drain timeout) and then be cut short itself."""
        queued = [
            record
            for record in self.active_records()
            if record.state == render_pb2.RENDER_STATE_QUEUED
        ]

        def hand_back(record: RenderRecord) -> _TerminalWriter:
            return lambda: record.fail(
                FailureCode.SHUTDOWN,
                "the render service is draining; the render had not started: "
                "submit it to another render service",
                never_started=True,
            )

        for record in queued:
            # At once, before any await: a render woken for a slot meanwhile must not start.
            if record.task is not None:
                record.task.cancel()
        await asyncio.gather(*(self._stop(record, hand_back(record)) for record in queued))
        return len(queued)

    async def wait_idle(self) -> None:
        """Returns once no render is queued or running."""
        while self.active_records():
            self._render_finished.clear()
            await self._render_finished.wait()

    async def shutdown(self) -> None:
        """Stops every active render with ``failed{SHUTDOWN}``; no FFmpeg survives this."""
        self._accepting = False
        active = self.active_records()
        if active:
            logger.info("shutting down: stopping %d active render(s)", len(active))

        def shutdown_writer(record: RenderRecord) -> _TerminalWriter:
            return lambda: record.fail(
                FailureCode.SHUTDOWN, "the render service shut down before the render finished"
            )

        await asyncio.gather(*(self._stop(record, shutdown_writer(record)) for record in active))
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.wait({self._heartbeat_task})
        for sweep in list(self._sweeps):
            sweep.cancel()
        if self._sweeps:
            await asyncio.wait(self._sweeps)
        for handle in self._forget_handles.values():
            handle.cancel()
        self._forget_handles.clear()

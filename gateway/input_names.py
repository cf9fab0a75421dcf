"""The original names of a job's uploaded inputs, as every view of the job shows them
(``inputNames``: GET, list, create, cancel, and both event streams): read from the uploads'
records (gateway.upload_record) in a thread, and remembered, since a record never changes once
its file has its name (a path without a record never gets one)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.upload_record import original_names
from videojob.export.v1 import export_pb2
from videojob.job_json import job_to_json
from videojob.render.v1 import spec_pb2

if TYPE_CHECKING:
    from gateway.stored_media import StoredMedia

# Input paths remembered (with their name, or with none): the least recently used go first.
MAX_REMEMBERED_PATHS = 4096


def input_paths(spec: spec_pb2.RenderSpec) -> set[str]:
    """Every input file ``spec`` names (relative to the media root)."""
    source = spec.source
    kind = source.WhichOneof("kind")
    if kind == "transcode":
        return {source.transcode.input_path}
    if kind == "slideshow":
        show = source.slideshow
        paths = {slide.image_path for slide in show.slides}
        return {path for path in (*paths, show.audio_path, show.subtitles_path) if path}
    return set()


def named_job_json(job: export_pb2.VideoJob, input_names: dict[str, str]) -> dict[str, Any]:
    """The API's job object as the gateway serves it in every view: with ``inputNames``."""
    document = job_to_json(job)
    document["inputNames"] = input_names
    return document


class InputNames:
    """Input path -> the upload's original name, for one media root (None: no names, as for
    a gateway without a media root of its own)."""

    def __init__(
        self,
        media_root: Path | None,
        capacity: int = MAX_REMEMBERED_PATHS,
        *,
        stored_media: StoredMedia | None = None,
    ) -> None:
        self._media_root = media_root
        # The media root in an object store: the records are read from there.
        self._stored_media = stored_media
        self._capacity = capacity
        self._known: OrderedDict[str, str | None] = OrderedDict()

    async def of_jobs(self, jobs: list[export_pb2.VideoJob]) -> list[dict[str, str]]:
        """Each job's ``inputNames``: the original names of its inputs that are uploads."""
        wanted = [input_paths(job.spec) for job in jobs]
        every: set[str] = set().union(*wanted)
        known = {path: self._known[path] for path in every if path in self._known}
        unknown = every - known.keys()
        if unknown and self._stored_media is not None:
            # Only what the store answered for: the rest is asked for again next time.
            known.update(await self._stored_media.original_names(unknown))
        elif unknown and self._media_root is not None:
            found = await asyncio.to_thread(original_names, self._media_root, unknown)
            known.update({path: found.get(path) for path in unknown})
        for path in sorted(known):
            self._remember(path, known[path])
        return [
            {path: name for path in sorted(paths) if (name := known.get(path))} for paths in wanted
        ]

    def _remember(self, path: str, name: str | None) -> None:
        self._known[path] = name
        self._known.move_to_end(path)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

    async def jobs_json(self, jobs: list[export_pb2.VideoJob]) -> list[dict[str, Any]]:
        """The jobs' JSON, each with its ``inputNames``."""
        names = await self.of_jobs(jobs)
        return [named_job_json(job, of_job) for job, of_job in zip(jobs, names, strict=True)]

    async def job_json(self, job: export_pb2.VideoJob) -> dict[str, Any]:
        (document,) = await self.jobs_json([job])
        return document

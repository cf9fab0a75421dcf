"""Which stored objects and unfinished uploads are orphans: decided from the job records alone,
never by age, and without I/O (export_service.orphan_sweep lists the store, reads the records and
removes what this module names).

Under the render services' output location every object is ``<prefix>/<render id>.<container>``
and the render id names a job's attempt (``<job id>`` or ``<job id>-a<N>``,
store.records.render_id_for), or a split job's part or join (``<job id>-p<N>``, ``<job id>-join``,
each with ``-a<N>`` after its first attempt: store.split_record.part_render_id). A split job's
parts are live while it runs, and orphans once it is terminal (the join's output, the job's,
claimed as any output is). For each object or unfinished upload there:

- its job has no record (never created, or deleted): an orphan. A render id exists only after
  the record that placed its attempt was committed (the placement is written before Render is
  called), and the sweep reads the records after it listed the store, so a record it does not
  find is gone, not "not yet visible";
- its job is QUEUED or RUNNING: live, whatever the attempt. The current attempt (or one that may
  be current by the time the listing is judged: a later attempt's upload) is still working, and a
  superseded attempt is its owner's to release while the job runs
  (tracking.supervisor.release_attempt); the sweep takes what is left once the job is terminal;
- its job is terminal: the object the job's record names as its output (COMPLETED) is claimed;
  every other object of the job, and every unfinished upload of it (the completed one's
  included: a completed object has no upload in flight), is an orphan. A terminal record never
  changes, so no later write can make that object claimed.

A key under the output location that names no render (another shape, another folder) is no
one's to judge: it is left alone, whoever put it there.

A local output directory (``--render-output-dir DIR``, shared by the render services of a pool)
is judged by the same rule, from the names of the files directly in it (``local_orphans``): a
file ``<render id>.<container>`` is claimed only by its COMPLETED job whose output is a file of
that name (the render services report the path as they see it, which may be another mount of
the same directory, so the name is compared). A render writes its output under a hidden name
(``.<instance id>.<render id>.partial.<container>``) and renames it into place when done, so a
file named like a render's output is a finished one; hidden files (the render services'
partial files), folders (their ``joins`` scratch folder), symlinks and every other name are
left alone.

Under the media root only the gateway's uploads (``uploads/<stored name>``) are judged, and only
their unfinished multipart uploads: an upload is no job's, and what the gateway stores records
itself in the store (gateway.stored_media): its record (``uploads/.<stored name>.json``) before
the upload begins, removed only after the upload ended. So an unfinished upload whose record is
gone, or whose name is already a stored object (names are fresh per upload: its creation was
asked for twice and the other one completed), is an orphan; one with its record and no object
yet may be live (no record says which gateway uploads it, nor whether that gateway still runs),
so it stays. Objects under the media root are the users' media: never removed here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath

from export_service.store.records import Job, JobStatus
from videojob.storage.location import S3Location, is_stored_object, parse_location

# A job id is a UUID's 32 hex digits (server.CreateExport); a split job's part, join or audio
# adds "-p<N>", "-join" or "-audio" (store.split_record.part_render_id); the render id of
# attempt N > 1 adds "-a<N>"; the container is the output's extension.
_RENDER_OUTPUT = re.compile(
    r"(?P<job>[0-9a-f]{32})(?P<part>-p[1-9][0-9]{0,4}|-join|-audio)?"
    r"(?:-a(?P<attempt>[1-9][0-9]{0,8}))?\.[a-z0-9]+"
)
# The gateway's stored names (gateway.upload_record) and their records.
_UPLOAD = re.compile(r"uploads/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,99})")


class StoredKind(enum.StrEnum):
    OBJECT = "object"
    UPLOAD = "upload"  # an unfinished multipart upload
    FILE = "file"  # a file in a local output directory (its key: the file's name)


class Root(enum.StrEnum):
    """Which location a stored thing was listed under."""

    OUTPUT = "output"
    MEDIA = "media"


@dataclass(frozen=True)
class Stored:
    """An object, or an unfinished upload (with its id), as the store listed it."""

    kind: StoredKind
    key: str
    upload_id: str = ""


@dataclass(frozen=True)
class Orphan:
    stored: Stored
    root: Root
    why: str

    @property
    def label(self) -> str:
        """The metric's kind: ``output_object``, ``output_upload``, ``output_file``,
        ``media_upload``."""
        return f"{self.root.value}_{self.stored.kind.value}"


@dataclass(frozen=True)
class RenderOutput:
    """What an output key names: a job's attempt."""

    job_id: str
    attempt: int
    # A split job's part or join ("-p2", "-join"); "" for a whole job's render.
    part: str = ""

    @property
    def render_id(self) -> str:
        base = f"{self.job_id}{self.part}"
        return base if self.attempt <= 1 else f"{base}-a{self.attempt}"


def render_output_of(key: str, location: S3Location) -> RenderOutput | None:
    """The attempt whose output ``key`` is (``<prefix>/<render id>.<container>``, directly under
    ``location``), None for any other key."""
    prefix = location.key_prefix
    if not key.startswith(prefix):
        return None
    return render_output_named(key[len(prefix) :])


def render_output_named(name: str) -> RenderOutput | None:
    """The attempt whose output a file or key named ``name`` (``<render id>.<container>``)
    is, None for any other name."""
    match = _RENDER_OUTPUT.fullmatch(name)
    if match is None:
        return None
    attempt = match.group("attempt")
    return RenderOutput(
        match.group("job"), int(attempt) if attempt else 1, match.group("part") or ""
    )


def jobs_named(listed: Iterable[Stored], location: S3Location) -> set[str]:
    """The job ids the output keys of ``listed`` name: the records to read before judging."""
    return {
        output.job_id
        for stored in listed
        if (output := render_output_of(stored.key, location)) is not None
    }


def output_orphans(
    listed: Iterable[Stored], location: S3Location, records: Mapping[str, Job]
) -> list[Orphan]:
    """The orphans among what was listed under the output ``location``; ``records``: the jobs
    that exist among those ``jobs_named``, read after the listing, by id."""
    orphans: list[Orphan] = []
    for stored in listed:
        output = render_output_of(stored.key, location)
        if output is None:
            continue  # not a render's output: no one's to judge here
        job = records.get(output.job_id)
        claimed = (
            job is not None
            and stored.kind is StoredKind.OBJECT
            and job.status is JobStatus.COMPLETED
            and output_key_of(job, location) == stored.key
        )
        why = _output_orphan(stored, output, job, claimed=claimed)
        if why is not None:
            orphans.append(Orphan(stored, Root.OUTPUT, why))
    return orphans


def files_named(names: Iterable[str]) -> set[str]:
    """The job ids the file names of a local output directory name: the records to read
    before judging."""
    return {output.job_id for name in names if (output := render_output_named(name)) is not None}


def local_orphans(names: Iterable[str], records: Mapping[str, Job]) -> list[Orphan]:
    """The orphans among the files ``names`` listed directly in a local output directory;
    ``records``: the jobs that exist among those ``files_named``, read after the listing, by
    id. The same rule as ``output_orphans``; a COMPLETED job claims the file of its output's
    name."""
    orphans: list[Orphan] = []
    for name in names:
        output = render_output_named(name)
        if output is None:
            continue  # hidden (a partial file, being written), or no render's: left alone
        stored = Stored(StoredKind.FILE, name)
        job = records.get(output.job_id)
        claimed = (
            job is not None
            and job.status is JobStatus.COMPLETED
            and output_file_name_of(job) == name
        )
        why = _output_orphan(stored, output, job, claimed=claimed)
        if why is not None:
            orphans.append(Orphan(stored, Root.OUTPUT, why))
    return orphans


def output_file_name_of(job: Job) -> str | None:
    """The name of the job's output when it is a file (not an object in a store)."""
    if not job.output_path or is_stored_object(job.output_path):
        return None
    return PurePath(job.output_path).name


def _output_orphan(
    stored: Stored, output: RenderOutput, job: Job | None, *, claimed: bool
) -> str | None:
    """Why ``stored`` is an orphan, or None when its job's record claims it (``claimed``) or
    it may be live."""
    if job is None:
        return f"job {output.job_id} has no record (never created, or deleted)"
    if not job.terminal or claimed:
        return None
    if stored.kind is StoredKind.UPLOAD:
        return f"an unfinished upload of render {output.render_id} of {job.status.lower()} job"
    if output.part:
        return f"render {output.render_id} is a part of {job.status.lower()} split job"
    if output.attempt != job.attempt:
        return f"render {output.render_id} is not the final attempt of {job.status.lower()} job"
    return f"render {output.render_id} is not the output of {job.status.lower()} job"


def output_key_of(job: Job, location: S3Location) -> str | None:
    """The key of the job's output when it is an object in ``location``'s bucket."""
    if not is_stored_object(job.output_path):
        return None
    parsed = parse_location(job.output_path)
    if not isinstance(parsed, S3Location) or parsed.bucket != location.bucket:
        return None
    return parsed.prefix


def media_orphans(listed: Collection[Stored], location: S3Location) -> list[Orphan]:
    """The orphans among what was listed under the media root ``location``: the gateway's
    unfinished uploads whose record is gone or whose name is stored already. ``listed`` must
    hold the unfinished uploads as listed BEFORE the objects: a live upload's record was stored
    before the upload began, so a listing of objects made after it sees that record."""
    objects = {stored.key for stored in listed if stored.kind is StoredKind.OBJECT}
    prefix = location.key_prefix
    orphans: list[Orphan] = []
    for stored in listed:
        if stored.kind is not StoredKind.UPLOAD or not stored.key.startswith(prefix):
            continue
        match = _UPLOAD.fullmatch(stored.key[len(prefix) :])
        if match is None:
            continue  # not the gateway's upload
        name = match.group("name")
        record_key = location.key_for(f"uploads/.{name}.json")
        if stored.key in objects:
            orphans.append(Orphan(stored, Root.MEDIA, f"upload {name} is stored already"))
        elif record_key not in objects:
            orphans.append(Orphan(stored, Root.MEDIA, f"upload {name} has no record"))
    return orphans

"""The orphan sweep's decision (export_service.orphans), without I/O: from the job records alone,
never by age, what under the output location and the media root is an orphan."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from export_service.orphans import (
    RenderOutput,
    Root,
    Stored,
    StoredKind,
    files_named,
    jobs_named,
    local_orphans,
    media_orphans,
    output_orphans,
    render_output_named,
    render_output_of,
)
from export_service.store.records import Job, JobStatus
from videojob.metrics import ORPHAN_KINDS
from videojob.storage.location import S3Location

JOB = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def location() -> S3Location:
    return S3Location("videojob", "renders")


def job(status: JobStatus, attempt: int = 1, output_key: str = "", job_id: str = JOB) -> Job:
    return Job(
        id=job_id,
        request_id=f"req-{job_id}",
        status=status,
        progress=100 if status is JobStatus.COMPLETED else 40,
        stage="",
        output_path=f"s3://videojob/{output_key}" if output_key else "",
        error_code="",
        error_message="",
        error_field="",
        attempt=attempt,
        version=3,
        spec=b"",
        created_at=EPOCH,
        updated_at=EPOCH,
        started_at=EPOCH,
        finished_at=EPOCH if status not in (JobStatus.QUEUED, JobStatus.RUNNING) else None,
        last_render_seq=9,
        eta_seconds=0,
        output_size_bytes=0,
        output_duration_seconds=0,
        cancel_requested=False,
    )


def obj(name: str) -> Stored:
    return Stored(StoredKind.OBJECT, f"renders/{name}")


def upload(name: str, upload_id: str = "u1") -> Stored:
    return Stored(StoredKind.UPLOAD, f"renders/{name}", upload_id)


def orphan_keys(listed: list[Stored], *records: Job) -> list[tuple[str, str]]:
    found = output_orphans(listed, location(), {record.id: record for record in records})
    return [(orphan.stored.kind.value, orphan.stored.key) for orphan in found]


def test_an_output_key_names_a_job_s_attempt() -> None:
    where = location()
    assert render_output_of(f"renders/{JOB}.mp4", where) == RenderOutput(JOB, 1)
    assert render_output_of(f"renders/{JOB}-a3.webm", where) == RenderOutput(JOB, 3)
    assert RenderOutput(JOB, 3).render_id == f"{JOB}-a3"
    for foreign in (
        f"other/{JOB}.mp4",  # not under the location
        f"renders/sub/{JOB}.mp4",  # not directly under it
        f"renders/{JOB}",  # no container
        f"renders/{JOB}-a0.mp4",
        "renders/notes.txt",
        f"renders/{JOB.upper()}.mp4",
        f"renders/x{JOB}.mp4",
    ):
        assert render_output_of(foreign, where) is None, foreign
    listed = [obj(f"{JOB}.mp4"), upload(f"{OTHER}-a2.mp4"), obj("notes.txt")]
    assert jobs_named(listed, where) == {JOB, OTHER}


def test_what_no_record_claims_is_an_orphan_object_and_upload_alike() -> None:
    listed = [obj(f"{JOB}.mp4"), upload(f"{JOB}-a2.mp4")]
    assert orphan_keys(listed) == [
        ("object", f"renders/{JOB}.mp4"),
        ("upload", f"renders/{JOB}-a2.mp4"),
    ]
    found = output_orphans(listed, location(), {})
    assert "no record" in found[0].why and found[0].root is Root.OUTPUT
    assert [orphan.label for orphan in found] == ["output_object", "output_upload"]
    assert set(ORPHAN_KINDS) >= {orphan.label for orphan in found}


def test_everything_of_an_active_job_is_live_however_old_or_whichever_attempt() -> None:
    listed = [
        upload(f"{JOB}-a2.mp4"),  # the current attempt's slow upload
        upload(f"{JOB}-a3.mp4"),  # a later attempt than the record read shows: may be current
        obj(f"{JOB}.mp4"),  # a superseded attempt: its owner's to release while the job runs
        upload(f"{JOB}.mp4", "u-old"),
    ]
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        assert orphan_keys(listed, job(status, attempt=2)) == []


def test_a_completed_job_claims_its_output_and_nothing_else() -> None:
    final = f"renders/{JOB}-a2.mp4"
    done = job(JobStatus.COMPLETED, attempt=2, output_key=final)
    listed = [
        obj(f"{JOB}-a2.mp4"),
        obj(f"{JOB}.mp4"),  # the superseded attempt's upload finished after all
        upload(f"{JOB}-a2.mp4", "u-twice"),  # a second creation of the final key's upload
        upload(f"{JOB}.mp4"),
        obj(f"{JOB}-a2.webm"),
    ]
    assert orphan_keys(listed, done) == [
        ("object", f"renders/{JOB}.mp4"),
        ("upload", f"renders/{JOB}-a2.mp4"),
        ("upload", f"renders/{JOB}.mp4"),
        ("object", f"renders/{JOB}-a2.webm"),
    ]
    whys = [orphan.why for orphan in output_orphans(listed, location(), {JOB: done})]
    assert "not the final attempt of completed job" in whys[0]
    assert "not the output of completed job" in whys[3]


def test_a_failed_or_cancelled_job_claims_nothing() -> None:
    listed = [obj(f"{JOB}.mp4"), upload(f"{JOB}-a2.mp4"), obj(f"{JOB}-a2.mp4")]
    for status in (JobStatus.FAILED, JobStatus.CANCELLED):
        assert len(orphan_keys(listed, job(status, attempt=2))) == 3


def test_a_completed_job_s_output_elsewhere_claims_nothing_here() -> None:
    """An output in another bucket (the location moved) names no key here."""
    done = job(JobStatus.COMPLETED, output_key=f"renders/{JOB}.mp4")
    moved = replace(done, output_path=f"s3://elsewhere/renders/{JOB}.mp4")
    assert orphan_keys([obj(f"{JOB}.mp4")], done) == []
    assert orphan_keys([obj(f"{JOB}.mp4")], moved) == [("object", f"renders/{JOB}.mp4")]


def test_a_split_job_s_parts_are_live_while_it_runs_and_orphans_once_it_ended() -> None:
    where = location()
    assert render_output_of(f"renders/{JOB}-p2-a3.mp4", where) == RenderOutput(JOB, 3, "-p2")
    assert RenderOutput(JOB, 3, "-p2").render_id == f"{JOB}-p2-a3"
    assert render_output_of(f"renders/{JOB}-join.mp4", where) == RenderOutput(JOB, 1, "-join")
    assert render_output_of(f"renders/{JOB}-p0.mp4", where) is None
    listed = [obj(f"{JOB}-p1.mp4"), obj(f"{JOB}-p2-a2.mp4"), upload(f"{JOB}-join.mp4")]
    assert orphan_keys(listed, job(JobStatus.RUNNING)) == []
    done = job(JobStatus.COMPLETED, output_key=f"renders/{JOB}-join.mp4")
    assert orphan_keys([*listed, obj(f"{JOB}-join.mp4")], done) == [
        ("object", f"renders/{JOB}-p1.mp4"),
        ("object", f"renders/{JOB}-p2-a2.mp4"),
        ("upload", f"renders/{JOB}-join.mp4"),
    ]
    whys = [orphan.why for orphan in output_orphans(listed, where, {JOB: done})]
    assert whys[0] == f"render {JOB}-p1 is a part of completed split job"


def test_keys_that_name_no_render_are_left_alone() -> None:
    listed = [obj("notes.txt"), upload("uploads/clip.mp4"), obj(f"sub/{JOB}.mp4")]
    assert orphan_keys(listed) == []


def test_each_job_is_judged_by_its_own_record() -> None:
    listed = [obj(f"{JOB}.mp4"), obj(f"{OTHER}.mp4")]
    running = job(JobStatus.RUNNING)
    failed = job(JobStatus.FAILED, job_id=OTHER)
    assert orphan_keys(listed, running, failed) == [("object", f"renders/{OTHER}.mp4")]


# A local output directory: the same rule, from the files' names.


def local_names(names: list[str], *records: Job) -> list[str]:
    found = local_orphans(names, {record.id: record for record in records})
    assert all(orphan.label == "output_file" for orphan in found)
    return [orphan.stored.key for orphan in found]


def file_job(status: JobStatus, attempt: int = 1, output_name: str = "") -> Job:
    """A job whose output (when COMPLETED) is a file, at the path its render service reports."""
    done = job(status, attempt=attempt)
    return replace(done, output_path=f"/srv/renders/{output_name}" if output_name else "")


def test_a_file_names_a_render_as_a_key_does() -> None:
    assert render_output_named(f"{JOB}-p2-a3.mp4") == RenderOutput(JOB, 3, "-p2")
    assert render_output_named(f"{JOB}-audio.mka") == RenderOutput(JOB, 1, "-audio")
    for foreign in (
        f".render-1.{JOB}-p1.partial.mp4",  # a render service's partial file, being written
        f".render-1.{JOB}.partial.mp4",
        ".joins",  # a render service's scratch folder
        f"{JOB}.mp4.tmp",
        f"{JOB}",
        "notes.txt",
    ):
        assert render_output_named(foreign) is None, foreign
    names = [f"{JOB}-p1.mp4", f".render-1.{OTHER}.partial.mp4", "notes.txt"]
    assert files_named(names) == {JOB}


def test_a_completed_split_job_s_part_files_are_orphans_its_output_stays() -> None:
    done = file_job(JobStatus.COMPLETED, output_name=f"{JOB}-join.mp4")
    names = [
        f"{JOB}-join.mp4",
        f"{JOB}-p1.mp4",
        f"{JOB}-p2-a2.mp4",
        f"{JOB}-audio.mka",
        f".render-1.{JOB}-p3.partial.mp4",  # partial files are the render services' own
    ]
    assert local_names(names, done) == [f"{JOB}-p1.mp4", f"{JOB}-p2-a2.mp4", f"{JOB}-audio.mka"]
    whys = [orphan.why for orphan in local_orphans(names, {JOB: done})]
    assert whys[0] == f"render {JOB}-p1 is a part of completed split job"


def test_the_output_is_claimed_by_its_name_wherever_the_directory_is_mounted() -> None:
    done = file_job(JobStatus.COMPLETED, attempt=2, output_name=f"{JOB}-a2.mp4")
    names = [f"{JOB}-a2.mp4", f"{JOB}.mp4", f"{JOB}-a2.webm"]
    assert local_names(names, done) == [f"{JOB}.mp4", f"{JOB}-a2.webm"]
    # An output in a store claims no file of the same name here.
    stored = replace(done, output_path=f"s3://videojob/renders/{JOB}-a2.mp4")
    assert local_names(names, stored) == names


def test_every_file_of_an_active_job_is_live_and_nothing_of_an_ended_one_is() -> None:
    names = [f"{JOB}.mp4", f"{JOB}-a2.mp4", f"{JOB}-p1.mp4", f"{JOB}-join.mp4"]
    for status in (JobStatus.QUEUED, JobStatus.RUNNING):
        assert local_names(names, file_job(status, attempt=2)) == []
    for status in (JobStatus.FAILED, JobStatus.CANCELLED):
        assert local_names(names, file_job(status, attempt=2)) == names
    assert local_names(names) == names  # no record: never created, or deleted
    assert "no record" in local_orphans(names, {})[0].why


def test_files_that_name_no_render_are_left_alone() -> None:
    names = ["notes.txt", "clip.mp4", f"{JOB.upper()}.mp4", f"x{JOB}.mp4", f"{JOB}-a0.mp4"]
    assert local_names(names) == []


# The media root: only the gateway's unfinished uploads, judged by its own records in the store.

MEDIA = S3Location("videojob", "media")


def media(kind: StoredKind, name: str) -> Stored:
    return Stored(kind, f"media/{name}", "u1" if kind is StoredKind.UPLOAD else "")


def test_an_upload_with_its_record_and_no_object_yet_may_be_live() -> None:
    listed = [
        media(StoredKind.UPLOAD, "uploads/abc.mp4"),
        media(StoredKind.OBJECT, "uploads/.abc.mp4.json"),
    ]
    assert media_orphans(listed, MEDIA) == []


def test_an_upload_whose_record_is_gone_or_whose_name_is_stored_is_an_orphan() -> None:
    listed = [
        media(StoredKind.UPLOAD, "uploads/gone.mp4"),  # the gateway removed its record
        media(StoredKind.UPLOAD, "uploads/done.mp4"),  # created twice; the other one completed
        media(StoredKind.OBJECT, "uploads/done.mp4"),
        media(StoredKind.OBJECT, "uploads/.done.mp4.json"),
    ]
    found = media_orphans(listed, MEDIA)
    assert [(orphan.stored.key, orphan.label) for orphan in found] == [
        ("media/uploads/gone.mp4", "media_upload"),
        ("media/uploads/done.mp4", "media_upload"),
    ]
    assert "no record" in found[0].why and "stored already" in found[1].why


def test_the_users_media_and_uploads_elsewhere_are_never_orphans() -> None:
    listed = [
        media(StoredKind.OBJECT, "uploads/abc.mp4"),  # an upload without a record (older)
        media(StoredKind.OBJECT, "uploads/.lonely.mp4.json"),  # a record without its file
        media(StoredKind.OBJECT, "clips/a.mp4"),
        media(StoredKind.UPLOAD, "clips/b.mp4"),  # put by other means: not the gateway's
        media(StoredKind.UPLOAD, "uploads/.x.json"),
    ]
    assert media_orphans(listed, MEDIA) == []

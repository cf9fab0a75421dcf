"""gateway.input_names: a job's uploaded inputs named from their records on real files, each
path read once and remembered within a bound."""

from __future__ import annotations

from pathlib import Path

from gateway.input_names import InputNames
from gateway.upload_record import UploadRecord, write_record
from videojob.export.v1 import export_pb2
from videojob.media_header import MediaHeader
from videojob.render.v1 import spec_pb2

CLIP = MediaHeader("mov,mp4,m4a,3gp,3g2,mj2", 1.0, 160, 120, "h264", "aac")


def stored_upload(media_root: Path, name: str, original_name: str) -> str:
    folder = media_root / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"")
    write_record(folder / name, UploadRecord(original_name, CLIP))
    return f"uploads/{name}"


def transcode(path: str) -> export_pb2.VideoJob:
    source = spec_pb2.Source(transcode=spec_pb2.Transcode(input_path=path))
    return export_pb2.VideoJob(id=path, spec=spec_pb2.RenderSpec(source=source))


def slideshow(*paths: str, audio: str = "") -> export_pb2.VideoJob:
    slides = [spec_pb2.Slide(image_path=path, duration_seconds=1) for path in paths]
    show = spec_pb2.Slideshow(slides=slides, audio_path=audio)
    return export_pb2.VideoJob(
        id="show", spec=spec_pb2.RenderSpec(source=spec_pb2.Source(slideshow=show))
    )


async def test_every_uploaded_input_is_named_and_others_are_not(tmp_path: Path) -> None:
    clip = stored_upload(tmp_path, "a1.mp4", "Holiday.mp4")
    image = stored_upload(tmp_path, "b2.png", "cover.png")
    names = InputNames(tmp_path)
    documents = await names.jobs_json(
        [transcode(clip), slideshow(image, "by-hand.png", audio="uploads/none.mp3")]
    )
    assert [document["inputNames"] for document in documents] == [
        {clip: "Holiday.mp4"},
        {image: "cover.png"},
    ]
    # A path that is no upload's is never read: not even one reaching out of the folder.
    outside = await names.of_jobs([transcode("uploads/../secret.mp4"), transcode("/etc/passwd")])
    assert outside == [{}, {}]


async def test_a_path_is_read_once_and_the_least_recent_is_forgotten(tmp_path: Path) -> None:
    first = stored_upload(tmp_path, "a1.mp4", "first.mp4")
    second = stored_upload(tmp_path, "b2.mp4", "second.mp4")
    third = stored_upload(tmp_path, "c3.mp4", "third.mp4")
    names = InputNames(tmp_path, capacity=2)
    assert await names.of_jobs([transcode(first), transcode(second)]) == [
        {first: "first.mp4"},
        {second: "second.mp4"},
    ]
    # Remembered: its record is not read again.
    (tmp_path / "uploads" / ".a1.mp4.json").unlink()
    assert await names.of_jobs([transcode(first)]) == [{first: "first.mp4"}]
    # A third path pushes out the least recently used (second), not the one just asked for.
    assert await names.of_jobs([transcode(third)]) == [{third: "third.mp4"}]
    (tmp_path / "uploads" / ".b2.mp4.json").unlink()
    assert await names.of_jobs([transcode(first), transcode(second)]) == [
        {first: "first.mp4"},
        {},
    ]

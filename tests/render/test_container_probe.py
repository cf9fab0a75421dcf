"""The in-process container probe on real files written by FFmpeg, and on damaged copies of them."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from render_service.container_probe import InvalidContainer, probe_container
from render_service.failures import FailureCode, RenderFailure
from render_service.verification import verify_output
from tests.support.media import media_duration
from tests.support.tool_ffmpeg import tool_ffmpeg

SECONDS = 1.5
SOURCES = [
    "-f",
    "lavfi",
    "-i",
    f"testsrc2=size=160x120:rate=10:duration={SECONDS}",
    "-f",
    "lavfi",
    "-i",
    f"sine=duration={SECONDS}",
]
ENCODINGS: dict[str, list[str]] = {
    "h264.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"],
    "h264-faststart.mp4": [
        *("-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"),
        *("-movflags", "+faststart"),
    ],
    "hevc.mp4": [
        *("-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=none"),
        *("-tag:v", "hvc1", "-c:a", "aac"),
    ],
    "vp9.webm": [
        *("-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"),
    ],
    "av1.webm": ["-c:v", "libsvtav1", "-preset", "12", "-c:a", "libopus"],
}


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        [tool_ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("containers")
    files: dict[str, Path] = {}
    for name, encoding in ENCODINGS.items():
        files[name] = directory / name
        _ffmpeg(*SOURCES, *encoding, str(files[name]))
    files["audio-only.mp4"] = directory / "audio-only.mp4"
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"sine=duration={SECONDS}",
        "-c:a",
        "aac",
        str(directory / "audio-only.mp4"),
    )
    return files


def _top_level_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """(type, offset, size) of an MP4's top-level boxes, read independently of the probe."""
    boxes = []
    offset = 0
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", data[offset + 8 : offset + 16])
        elif size == 0:
            size = len(data) - offset
        boxes.append((kind.decode(), offset, size))
        offset += size
    return boxes


def _box(data: bytes, kind: str) -> tuple[int, int]:
    return next((offset, size) for name, offset, size in _top_level_boxes(data) if name == kind)


def _variant(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _rejected(path: Path, container: str) -> str:
    with pytest.raises(InvalidContainer) as caught:
        probe_container(path, container)
    return caught.value.reason


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_duration_matches_ffmpeg(media: dict[str, Path], name: str) -> None:
    path = media[name]
    info = probe_container(path, path.suffix[1:])
    assert info.has_video
    assert info.duration_seconds == pytest.approx(media_duration(path), abs=0.05)
    assert info.duration_seconds == pytest.approx(SECONDS, abs=0.1)


def test_both_box_orders_are_read(media: dict[str, Path]) -> None:
    plain = [kind for kind, _, _ in _top_level_boxes(media["h264.mp4"].read_bytes())]
    fast = [kind for kind, _, _ in _top_level_boxes(media["h264-faststart.mp4"].read_bytes())]
    assert plain.index("mdat") < plain.index("moov")
    assert fast.index("moov") < fast.index("mdat")


def test_largesize_and_size_zero_boxes(media: dict[str, Path], tmp_path: Path) -> None:
    # FFmpeg writes an 8-byte 'free' box before 'mdat' so that a large file's 'mdat' header can
    # grow to 16 bytes (largesize) in place: do that here, nothing else moves.
    data = bytearray(media["h264.mp4"].read_bytes())
    free_offset, free_size = _box(bytes(data), "free")
    mdat_offset, mdat_size = _box(bytes(data), "mdat")
    assert (free_size, mdat_offset) == (8, free_offset + 8)
    data[free_offset : free_offset + 16] = struct.pack(">I4sQ", 1, b"mdat", mdat_size + 8)
    large = _variant(tmp_path, "large.mp4", bytes(data))
    assert probe_container(large, "mp4").duration_seconds == pytest.approx(SECONDS, abs=0.05)

    data = bytearray(media["h264-faststart.mp4"].read_bytes())
    mdat_offset, mdat_size = _box(bytes(data), "mdat")
    assert mdat_offset + mdat_size == len(data)
    data[mdat_offset : mdat_offset + 4] = b"\0\0\0\0"
    to_eof = _variant(tmp_path, "to-eof.mp4", bytes(data))
    assert probe_container(to_eof, "mp4").duration_seconds == pytest.approx(SECONDS, abs=0.05)


def test_webm_segment_of_unknown_size(media: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(media["vp9.webm"].read_bytes())
    segment = data.index(bytes.fromhex("18538067"))
    assert data[segment + 4] == 0x01  # FFmpeg writes the Segment's size as an 8-byte number
    data[segment + 4 : segment + 12] = bytes.fromhex("01ffffffffffffff")
    path = _variant(tmp_path, "unknown-size.webm", bytes(data))
    assert probe_container(path, "webm").duration_seconds == pytest.approx(SECONDS, abs=0.05)


def test_mp4_cut_in_mdat(media: dict[str, Path], tmp_path: Path) -> None:
    data = media["h264.mp4"].read_bytes()
    offset, size = _box(data, "mdat")
    reason = _rejected(_variant(tmp_path, "cut.mp4", data[: offset + size // 2]), "mp4")
    assert "'mdat'" in reason and "truncated" in reason


@pytest.mark.parametrize("name", ["h264.mp4", "h264-faststart.mp4"])
def test_mp4_cut_in_moov(media: dict[str, Path], tmp_path: Path, name: str) -> None:
    data = media[name].read_bytes()
    offset, size = _box(data, "moov")
    reason = _rejected(_variant(tmp_path, name, data[: offset + size // 2]), "mp4")
    assert "'moov'" in reason and "truncated" in reason


def test_webm_cut_in_a_cluster(media: dict[str, Path], tmp_path: Path) -> None:
    data = media["vp9.webm"].read_bytes()
    cluster = data.index(bytes.fromhex("1f43b675"))
    reason = _rejected(_variant(tmp_path, "cut.webm", data[: cluster + 100]), "webm")
    assert reason.startswith(f"Cluster at offset {cluster} ") and "truncated" in reason


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm"])
def test_garbage_appended(media: dict[str, Path], tmp_path: Path, name: str) -> None:
    data = media[name].read_bytes() + b"garbage after the end of the file\n"
    reason = _rejected(_variant(tmp_path, name, data), name.rsplit(".", 1)[1])
    assert "trailing" in reason


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm"])
def test_zeroed_first_bytes(media: dict[str, Path], tmp_path: Path, name: str) -> None:
    data = bytes(16) + media[name].read_bytes()[16:]
    container = name.rsplit(".", 1)[1]
    reason = _rejected(_variant(tmp_path, name, data), container)
    assert "ftyp" in reason if container == "mp4" else "EBML" in reason


def test_text_file_named_mp4(tmp_path: Path) -> None:
    path = _variant(tmp_path, "notes.mp4", b"this is a text file, not a video\n" * 20)
    assert "ftyp" in _rejected(path, "mp4")


def test_mp4_without_mdat(media: dict[str, Path], tmp_path: Path) -> None:
    data = media["h264.mp4"].read_bytes()
    offset, size = _box(data, "mdat")
    path = _variant(tmp_path, "no-mdat.mp4", data[:offset] + data[offset + size :])
    assert _rejected(path, "mp4") == "no 'mdat' box"


def test_mp4_chunk_offset_outside_mdat(media: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(media["h264-faststart.mp4"].read_bytes())
    stco = data.index(b"stco")
    data[stco + 12 : stco + 16] = struct.pack(">I", len(data) + 1000)  # the first chunk's offset
    path = _variant(tmp_path, "bad-offset.mp4", bytes(data))
    assert "points outside every 'mdat'" in _rejected(path, "mp4")


def test_webm_without_duration(media: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(media["vp9.webm"].read_bytes())
    duration = data.index(bytes.fromhex("448988"))  # Duration, 8-byte float
    data[duration : duration + 11] = bytes.fromhex("ec89") + bytes(9)  # a Void of equal length
    path = _variant(tmp_path, "no-duration.webm", bytes(data))
    assert "no Duration" in _rejected(path, "webm")


def test_webm_is_not_mp4(media: dict[str, Path]) -> None:
    assert "ftyp" in _rejected(media["vp9.webm"], "mp4")
    assert "EBML" in _rejected(media["h264.mp4"], "webm")


async def test_verification_reports_the_reason(media: dict[str, Path], tmp_path: Path) -> None:
    size, duration = await verify_output(media["vp9.webm"], SECONDS)
    assert size == media["vp9.webm"].stat().st_size
    assert duration == pytest.approx(SECONDS, abs=0.05)

    cut = _variant(tmp_path, "cut.mp4", media["h264.mp4"].read_bytes()[:1000])
    failures = {
        cut: "not a valid mp4 file: ",
        _variant(tmp_path, "empty.mp4", b""): "the output file is empty",
        tmp_path / "missing.mp4": "no output file was written",
        media["audio-only.mp4"]: "no video stream",
    }
    for path, message in failures.items():
        with pytest.raises(RenderFailure) as caught:
            await verify_output(path, SECONDS)
        assert caught.value.code == FailureCode.VERIFICATION_FAILED
        assert message in caught.value.message

    with pytest.raises(RenderFailure) as caught:
        await verify_output(media["h264.mp4"], SECONDS + 1)
    assert caught.value.code == FailureCode.VERIFICATION_FAILED
    assert "lasts 1.50 s, expected 2.50 s" in caught.value.message

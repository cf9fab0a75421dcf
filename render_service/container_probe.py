"""Reading a rendered container's structure and duration in-process: MP4 (ISO BMFF) boxes and
WebM (Matroska/EBML) elements. Only headers and a few small metadata payloads are read; media
data is skipped by seeking, so the cost grows with the number of boxes/clusters, not the bytes.

A file is accepted only when its top-level structure tiles the file exactly (no overrun, no
trailing bytes) and holds what a player needs: MP4 ``ftyp`` + ``moov`` + non-empty ``mdat``;
WebM an EBML header with DocType ``webm`` and a Segment with Info (Duration) and a Cluster."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from videojob.limits import CONTAINERS as CONTAINERS


class InvalidContainer(Exception):
    """The file is not a well-formed file of the container; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ContainerInfo:
    duration_seconds: float
    has_video: bool


def probe_container(path: str | os.PathLike[str], container: str) -> ContainerInfo:
    """Raises InvalidContainer when the file is not a well-formed ``container`` file, OSError
    when it cannot be read."""
    if container not in CONTAINERS:
        raise ValueError(f"unknown container {container!r}")
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if container == "mp4":
            return _Mp4Reader(file, size).read()
        return _WebmReader(file, size).read()


def _read_exact(file: BinaryIO, offset: int, length: int, what: str) -> bytes:
    file.seek(offset)
    data = file.read(length)
    if len(data) != length:
        raise InvalidContainer(f"{what} at offset {offset} is cut short by the end of the file")
    return data


# --- MP4 (ISO/IEC 14496-12) -------------------------------------------------------------------


# Boxes FFmpeg's mov/mp4 muxer writes (anything else overrunning its parent is not a cut box).
_KNOWN_BOXES = frozenset(
    {"ftyp", "free", "skip", "wide", "mdat", "moov", "moof", "mfra", "sidx", "styp", "uuid"}
    | {"mvhd", "trak", "udta", "meta", "iods", "mvex", "tkhd", "edts", "mdia", "mdhd", "hdlr"}
    | {"minf", "stbl", "elst", "dinf", "vmhd", "smhd", "stsd", "stts", "stss", "ctts", "stsc"}
    | {"stsz", "stco", "co64", "sgpd", "sbgp", "ilst", "tfra", "mfro"}
)


@dataclass(frozen=True)
class _Box:
    type: str
    offset: int
    header: int
    end: int

    @property
    def payload_offset(self) -> int:
        return self.offset + self.header

    @property
    def payload_size(self) -> int:
        return self.end - self.payload_offset


def _box_type(raw: bytes) -> str | None:
    """The four-character code, or None when it is not printable (not a box header)."""
    if all(0x20 <= byte <= 0x7E for byte in raw):
        return raw.decode("ascii")
    return None


class _Mp4Reader:
    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size
        self._media_ranges: list[tuple[int, int]] = []

    def _boxes(self, start: int, end: int, parent: str) -> list[_Box]:
        """The boxes tiling ``[start, end)`` exactly."""
        boxes: list[_Box] = []
        offset = start
        while offset < end:
            if end - offset < 8:
                raise InvalidContainer(
                    f"{end - offset} stray byte(s) at offset {offset} in {parent}, "
                    "too few for a box header"
                )
            raw = _read_exact(self._file, offset, 8, "a box header")
            size, kind_raw = struct.unpack(">I4s", raw)
            kind = _box_type(kind_raw)
            if kind is None:
                raise InvalidContainer(
                    f"no valid box at offset {offset} in {parent} (type bytes {kind_raw.hex()})"
                )
            header = 8
            if size == 1:
                (size,) = struct.unpack(">Q", _read_exact(self._file, offset + 8, 8, "a box size"))
                header = 16
            elif size == 0:
                size = end - offset
            if size < header:
                raise InvalidContainer(f"box '{kind}' at offset {offset} has invalid size {size}")
            if offset + size > end:
                hint = "truncated?" if kind in _KNOWN_BOXES else "trailing garbage?"
                raise InvalidContainer(
                    f"box '{kind}' at offset {offset} ({size} bytes) runs past the end of "
                    f"{parent} at {end} ({hint})"
                )
            boxes.append(_Box(kind, offset, header, offset + size))
            offset += size
        return boxes

    def _payload(self, box: _Box, length: int) -> bytes:
        if box.payload_size < length:
            raise InvalidContainer(f"box '{box.type}' at offset {box.offset} is too small")
        return _read_exact(self._file, box.payload_offset, length, f"box '{box.type}'")

    def _time_header(self, box: _Box) -> tuple[int, int]:
        """(timescale, duration) of an ``mvhd`` or ``mdhd`` box; duration 0 when unknown."""
        version = self._payload(box, 1)[0]
        if version == 1:
            timescale, duration = struct.unpack(">IQ", self._payload(box, 32)[20:32])
            unknown = 0xFFFFFFFFFFFFFFFF
        elif version == 0:
            timescale, duration = struct.unpack(">II", self._payload(box, 20)[12:20])
            unknown = 0xFFFFFFFF
        else:
            raise InvalidContainer(f"box '{box.type}' has unknown version {version}")
        if timescale == 0:
            raise InvalidContainer(f"box '{box.type}' has timescale 0")
        return timescale, 0 if duration == unknown else duration

    def read(self) -> ContainerInfo:
        if self._size < 8 or _read_exact(self._file, 0, 8, "the first box")[4:] != b"ftyp":
            raise InvalidContainer("the file does not start with an 'ftyp' box")
        top = self._boxes(0, self._size, "the file")
        by_type: dict[str, list[_Box]] = {}
        for box in top:
            by_type.setdefault(box.type, []).append(box)
        if "moov" not in by_type:
            raise InvalidContainer("no 'moov' box")
        if "mdat" not in by_type:
            raise InvalidContainer("no 'mdat' box")
        if all(box.payload_size == 0 for box in by_type["mdat"]):
            raise InvalidContainer("the 'mdat' box is empty")
        if len(by_type["moov"]) > 1:
            raise InvalidContainer("more than one 'moov' box")
        self._media_ranges = [(box.payload_offset, box.end) for box in by_type["mdat"]]
        return self._read_moov(by_type["moov"][0])

    def _read_moov(self, moov: _Box) -> ContainerInfo:
        children = self._boxes(moov.payload_offset, moov.end, "'moov'")
        mvhd = [box for box in children if box.type == "mvhd"]
        if not mvhd:
            raise InvalidContainer("no 'mvhd' box in 'moov'")
        timescale, duration = self._time_header(mvhd[0])
        seconds = duration / timescale
        has_video = False
        longest_track = 0.0
        for trak in (box for box in children if box.type == "trak"):
            track_seconds, is_video = self._read_trak(trak)
            longest_track = max(longest_track, track_seconds)
            has_video = has_video or is_video
        if seconds == 0:
            seconds = longest_track
        return ContainerInfo(duration_seconds=seconds, has_video=has_video)

    def _read_trak(self, trak: _Box) -> tuple[float, bool]:
        children = self._boxes(trak.payload_offset, trak.end, "'trak'")
        mdia = [box for box in children if box.type == "mdia"]
        if not mdia:
            raise InvalidContainer(f"no 'mdia' box in the 'trak' at offset {trak.offset}")
        seconds = 0.0
        is_video = False
        for box in self._boxes(mdia[0].payload_offset, mdia[0].end, "'mdia'"):
            if box.type == "mdhd":
                timescale, duration = self._time_header(box)
                seconds = duration / timescale
            elif box.type == "hdlr":
                is_video = self._payload(box, 12)[8:12] == b"vide"
            elif box.type == "minf":
                self._check_chunk_offsets(box)
        return seconds, is_video

    def _check_chunk_offsets(self, minf: _Box) -> None:
        """Every chunk the track's sample table names starts inside an 'mdat' box."""
        for stbl in self._boxes(minf.payload_offset, minf.end, "'minf'"):
            if stbl.type != "stbl":
                continue
            for table in self._boxes(stbl.payload_offset, stbl.end, "'stbl'"):
                if table.type not in ("stco", "co64"):
                    continue
                (count,) = struct.unpack(">I", self._payload(table, 8)[4:8])
                width = 4 if table.type == "stco" else 8
                if 8 + count * width > table.payload_size:
                    raise InvalidContainer(f"'{table.type}' holds fewer entries than it counts")
                raw = _read_exact(
                    self._file, table.payload_offset + 8, count * width, f"'{table.type}'"
                )
                offsets = struct.unpack(f">{count}{'I' if width == 4 else 'Q'}", raw)
                for offset in (min(offsets), max(offsets)) if offsets else ():
                    if not any(start <= offset < end for start, end in self._media_ranges):
                        raise InvalidContainer(
                            f"a chunk offset ({offset}) points outside every 'mdat' box"
                        )


# --- WebM (Matroska / EBML) -------------------------------------------------------------------

_EBML = 0x1A45DFA3
_DOC_TYPE = 0x4282
_SEGMENT = 0x18538067
_INFO = 0x1549A966
_TIMESTAMP_SCALE = 0x2AD7B1
_DURATION = 0x4489
_TRACKS = 0x1654AE6B
_TRACK_ENTRY = 0xAE
_TRACK_TYPE = 0x83
_CLUSTER = 0x1F43B675
_VIDEO_TRACK = 1
_DEFAULT_TIMESTAMP_SCALE = 1_000_000
# Children of a Segment: an element of unknown size (a live Cluster) ends where one begins.
_SEGMENT_CHILDREN = frozenset(
    {
        0x114D9B74,  # SeekHead
        _INFO,
        _TRACKS,
        _CLUSTER,
        0x1C53BB6B,  # Cues
        0x1941A469,  # Attachments
        0x1043A770,  # Chapters
        0x1254C367,  # Tags
    }
)
_MAX_METADATA_BYTES = 1 << 20
_NO_END = 1 << 64
_NAMES = {
    _EBML: "EBML header",
    _SEGMENT: "Segment",
    _INFO: "Info",
    _TRACKS: "Tracks",
    _CLUSTER: "Cluster",
    0x1C53BB6B: "Cues",
    0x114D9B74: "SeekHead",
    0x1254C367: "Tags",
    0xEC: "Void",
}


def _name(element_id: int) -> str:
    return _NAMES.get(element_id, f"element {element_id:#x}")


@dataclass(frozen=True)
class _Element:
    id: int
    offset: int
    data_offset: int
    size: int | None  # None: unknown size

    @property
    def end(self) -> int | None:
        return None if self.size is None else self.data_offset + self.size


def _vint_length(first: int, max_length: int, what: str, offset: int) -> int:
    for length in range(1, max_length + 1):
        if first & (0x80 >> (length - 1)):
            return length
    raise InvalidContainer(f"invalid {what} at offset {offset} (byte {first:#04x})")


class _WebmReader:
    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size

    def _element(self, offset: int, end: int, parent: str) -> _Element:
        head = _read_exact(self._file, offset, min(12, end - offset), "an element header")
        id_length = _vint_length(head[0], 4, "element id", offset)
        if len(head) < id_length + 1:
            raise InvalidContainer(f"element header at offset {offset} is cut short in {parent}")
        element_id = int.from_bytes(head[:id_length], "big")
        size_length = _vint_length(head[id_length], 8, "element size", offset + id_length)
        if len(head) < id_length + size_length:
            raise InvalidContainer(f"element header at offset {offset} is cut short in {parent}")
        raw = head[id_length : id_length + size_length]
        value = int.from_bytes(raw, "big") & ((1 << (7 * size_length)) - 1)
        unknown = value == (1 << (7 * size_length)) - 1
        data_offset = offset + id_length + size_length
        element = _Element(element_id, offset, data_offset, None if unknown else value)
        if element.end is not None and element.end > end:
            raise InvalidContainer(
                f"{_name(element_id)} at offset {offset} ({value} bytes) runs past the end "
                f"of {parent} at {end} (truncated?)"
            )
        return element

    def _children(self, start: int, end: int, parent: str) -> list[_Element]:
        """The elements tiling ``[start, end)``; only Segment children may have unknown size."""
        children: list[_Element] = []
        offset = start
        while offset < end:
            element = self._element(offset, end, parent)
            children.append(element)
            if element.end is None:
                if element.id != _CLUSTER:
                    raise InvalidContainer(
                        f"{_name(element.id)} at offset {offset} has an unknown size"
                    )
                offset = self._unknown_cluster_end(element, end)
            else:
                offset = element.end
        return children

    def _unknown_cluster_end(self, cluster: _Element, end: int) -> int:
        """A Cluster of unknown size ends at the next Segment child or at ``end``."""
        offset = cluster.data_offset
        while offset < end:
            element = self._element(offset, end, "a Cluster")
            if element.id in _SEGMENT_CHILDREN:
                return offset
            if element.end is None:
                raise InvalidContainer(
                    f"element {element.id:#x} at offset {offset} has an unknown size"
                )
            offset = element.end
        return end

    def _data(self, element: _Element, what: str) -> bytes:
        assert element.size is not None
        if element.size > _MAX_METADATA_BYTES:
            raise InvalidContainer(f"{what} at offset {element.offset} is implausibly large")
        return _read_exact(self._file, element.data_offset, element.size, what)

    def read(self) -> ContainerInfo:
        magic = _EBML.to_bytes(4, "big")
        if self._size < 4 or _read_exact(self._file, 0, 4, "the EBML header") != magic:
            raise InvalidContainer("the file does not start with an EBML header")
        header = self._element(0, self._size, "the file")
        if header.end is None:
            raise InvalidContainer("the EBML header has an unknown size")
        doc_type = b""
        for child in self._children(header.data_offset, header.end, "the EBML header"):
            if child.id == _DOC_TYPE:
                doc_type = self._data(child, "DocType").rstrip(b"\0")
        if doc_type != b"webm":
            raise InvalidContainer(f"DocType is {doc_type.decode(errors='replace')!r}, not 'webm'")
        if header.end >= self._size:
            raise InvalidContainer("no Segment after the EBML header")
        # Read without an end, so that a cut file is reported at the element that was cut.
        segment = self._element(header.end, _NO_END, "the file")
        if segment.id != _SEGMENT:
            raise InvalidContainer(f"{_name(segment.id)} after the EBML header is no Segment")
        segment_end = self._size if segment.end is None else segment.end
        if segment_end > self._size:
            self._children(segment.data_offset, self._size, "the file")
            raise InvalidContainer(
                f"the Segment at offset {segment.offset} ({segment.size} bytes) runs past the "
                f"end of the file at {self._size} (truncated?)"
            )
        if segment_end < self._size:
            raise InvalidContainer(
                f"{self._size - segment_end} byte(s) of trailing data after the Segment"
            )
        return self._read_segment(self._children(segment.data_offset, segment_end, "the Segment"))

    def _read_segment(self, children: list[_Element]) -> ContainerInfo:
        info = [element for element in children if element.id == _INFO]
        if not info:
            raise InvalidContainer("no Info element in the Segment")
        if not any(element.id == _CLUSTER for element in children):
            raise InvalidContainer("no Cluster in the Segment")
        seconds = self._read_info(info[0])
        has_video = any(self._has_video(element) for element in children if element.id == _TRACKS)
        return ContainerInfo(duration_seconds=seconds, has_video=has_video)

    def _known_children(self, element: _Element, what: str) -> list[_Element]:
        assert element.end is not None
        return self._children(element.data_offset, element.end, what)

    def _read_info(self, info: _Element) -> float:
        scale = _DEFAULT_TIMESTAMP_SCALE
        duration: float | None = None
        for child in self._known_children(info, "Info"):
            if child.id == _TIMESTAMP_SCALE:
                scale = int.from_bytes(self._data(child, "TimestampScale"), "big")
            elif child.id == _DURATION:
                data = self._data(child, "Duration")
                if len(data) not in (4, 8):
                    raise InvalidContainer(f"Duration has {len(data)} bytes, not 4 or 8")
                (duration,) = struct.unpack(">f" if len(data) == 4 else ">d", data)
        if scale == 0:
            raise InvalidContainer("TimestampScale is 0")
        if duration is None:
            raise InvalidContainer("no Duration in the Segment's Info")
        if not duration >= 0:  # also rejects NaN
            raise InvalidContainer(f"Duration is {duration}")
        return duration * scale / 1e9

    def _has_video(self, tracks: _Element) -> bool:
        for entry in self._known_children(tracks, "Tracks"):
            if entry.id != _TRACK_ENTRY:
                continue
            for child in self._known_children(entry, "TrackEntry"):
                if child.id == _TRACK_TYPE:
                    track_type = int.from_bytes(self._data(child, "TrackType"), "big")
                    if track_type == _VIDEO_TRACK:
                        return True
        return False

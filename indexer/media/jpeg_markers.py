"""A JPEG's size, EXIF orientation and date from its markers, without Pillow.

Why: on a CUDA machine the decode workers only read, hash and parse each JPEG's header
(`indexer.media.gpu_jpeg.jpeg_header`), and Pillow's Python-level header parsing (its marker loop, DQT
tables, getexif) holds the GIL for 27 us (no EXIF) to 220 us (a phone's EXIF) per photo
(`bench/bench_index_overhead.py header`): a ceiling of a few thousand files/s however many cores
there are. This reader walks the markers from SOI to the first SOS with struct on
offsets into the bytes (never the entropy-coded data, no copies of large slices) and reads the few
EXIF tags we use.

What it covers: what cameras, phones and Pillow/libjpeg/ImageMagick writers normally produce:
baseline, extended or progressive Huffman (SOF0/1/2), 8-bit, greyscale or 3-component, JFIF or
Exif, any subsampling, with ICC profiles, comments, XMP, Photoshop image resources and other APP
segments.

None means "ask Pillow": `read_jpeg_facts` returns None for anything it is not certain Pillow reads
the same way (CMYK, an Adobe APP14 segment, MPF/MPO, other SOF types, 12-bit, junk between
segments, irregular EXIF, truncated or garbage data) and never raises.
When it returns facts, they are exactly what the Pillow path gives (tests/test_jpeg_markers.py
checks this against Pillow). `gpu_decode.jpeg_header` asks it first and Pillow when it says None.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from datetime import datetime

from indexer.media.image import (
    EXIF_DATETIME,
    EXIF_DATETIME_ORIGINAL,
    EXIF_IFD,
    EXIF_OFFSET_TIME_ORIGINAL,
    EXIF_ORIENTATION,
    _taken_at,
)

EXIF_X_RESOLUTION = 0x011A
PILLOW_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # PIL.Image.MAX_IMAGE_PIXELS by default
_SOF = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive (Huffman)
_EXIF = b"Exif\x00\x00"
_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # Image.getexif's fallback
_SEGMENT = struct.Struct(">BBH")  # 0xFF, marker code, length
_FRAME = struct.Struct(">BHHB")  # precision, height, width, components
_BIG_SHORT, _BIG_LONG = struct.Struct(">H"), struct.Struct(">L")
# big-endian? -> (SHORT, LONG, IFD entry: tag, type, count, value or offset)
_TIFF_STRUCTS = {big_endian: (struct.Struct(order + "H"), struct.Struct(order + "L"), struct.Struct(order + "HHLL"))
                 for big_endian, order in ((False, "<"), (True, ">"))}
_USUAL_DATE = re.compile(r"[0-9]{4}:(0[1-9]|1[0-2]):(0[1-9]|[12][0-9]|3[01]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]")
# bytes per value of the TIFF types Pillow reads (TiffImagePlugin._load_dispatch); it skips others
_TIFF_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}
_ASCII, _SHORT, _LONG, _RATIONAL = 2, 3, 4, 5
# tag -> type of the tags we read (one value, or ASCII text); another type or count: ask Pillow.
# XResolution because Pillow's DPI fallback raises IndexError (the file fails to open) on odd types.
_IFD0_TAGS = {EXIF_ORIENTATION: _SHORT, EXIF_DATETIME: _ASCII, EXIF_IFD: _LONG, EXIF_X_RESOLUTION: _RATIONAL}
_EXIF_IFD_TAGS = {EXIF_DATETIME_ORIGINAL: _ASCII, EXIF_OFFSET_TIME_ORIGINAL: _ASCII}


@dataclass(frozen=True)
class JpegFacts:
    width: int  # as stored in SOF (before EXIF orientation)
    height: int
    components: int  # 1 or 3
    orientation: int  # EXIF orientation 1..8; 1 when absent or out of range (jpeg_header's rule)
    taken_at: float | None  # what indexer.media.image._taken_at gives for this file's EXIF


_new_object = object.__new__


class _Unsure(Exception):
    """Internal: Pillow might read this file differently; let it decide."""


class _ExifView(dict):
    """The date tags, shaped like the PIL.Image.Exif that indexer.media.image._taken_at reads."""

    def __init__(self, tags: dict[int, int | str]):
        super().__init__({tag: tags[tag] for tag in (EXIF_DATETIME,) if tag in tags})
        self.exif_ifd = {tag: tags[tag] for tag in _EXIF_IFD_TAGS if tag in tags}

    def get_ifd(self, tag: int) -> dict[int, int | str]:
        return self.exif_ifd if tag == EXIF_IFD else {}


def read_jpeg_facts(data: bytes) -> JpegFacts | None:
    """Size, components, orientation and capture time from a JPEG's header; None: ask Pillow."""
    if not data.startswith(b"\xff\xd8\xff"):
        return None
    try:
        end = len(data)
        frame = None  # (width, height, components)
        exif = None  # (start, stop) of the TIFF block in the Exif APP1 segment
        xmp = None  # (start, stop) of the packet in the last XMP APP1 segment: the one Pillow keeps
        unpack_segment = _SEGMENT.unpack_from
        pos = 2
        while True:
            fill, marker, length = unpack_segment(data, pos)
            stop = pos + 2 + length
            if fill != 0xFF or marker == 0xFF or length < 2 or stop > end:
                if fill == marker == 0xFF:  # a fill byte before the marker code
                    pos += 1
                    continue
                raise _Unsure  # junk between segments (Pillow skips it, libjpeg warns), a bad length
            if marker == 0xC4 or marker == 0xDD or marker == 0xFE:  # DHT, DRI, COM: Pillow skips them
                pos = stop
                continue
            start = pos + 4
            if marker == 0xDB:  # DQT: Pillow refuses a table that does not fit
                table = start
                while table < stop:
                    table += 65 if data[table] < 16 else 129
                if table != stop:
                    raise _Unsure
            elif marker == 0xDA:  # SOS: the header ends here
                break
            elif 0xE0 <= marker <= 0xEF:
                if marker == 0xE1:
                    if data.startswith(_EXIF, start, stop):
                        if exif is not None:
                            raise _Unsure  # Pillow concatenates several Exif segments
                        exif = start + 6, stop
                    elif data.startswith(_XMP, start, stop):
                        xmp = start + len(_XMP), stop
                elif marker == 0xE0:
                    if length < 9 and data.startswith(b"JFIF", start, stop):
                        raise _Unsure  # Pillow cannot read the JFIF version: the file fails to open
                elif marker == 0xE2:
                    if data.startswith(b"MPF\x00", start, stop):
                        raise _Unsure  # Pillow may open it as an MPO
                    if length < 16 and data.startswith(b"ICC_PROFILE\x00", start, stop):
                        raise _Unsure  # Pillow indexes byte 13 of the first chunk
                elif marker == 0xED:
                    if data.startswith(b"Photoshop 3.0\x00", start, stop) and _photoshop_fails(data, start, stop):
                        raise _Unsure  # Pillow raises IndexError: the file fails to open
                elif marker == 0xEE and data.startswith(b"Adobe", start, stop):
                    raise _Unsure  # colour transform questions
            elif marker in _SOF:
                precision, height, width, components = _FRAME.unpack_from(data, start)
                if (frame is not None or precision != 8 or components not in (1, 3) or not width or not height
                        or length != 8 + 3 * components):
                    raise _Unsure
                frame = width, height, components
            else:
                raise _Unsure  # another SOF, DNL, DHP, RSTn, a stray SOI/EOI, FF00, an unknown marker
            pos = stop
        if frame is None:
            raise _Unsure
        orientation, taken_at = _exif_facts(data, *exif) if exif is not None else (None, None)
    except (_Unsure, struct.error, IndexError):
        return None
    if orientation is None and xmp is not None:
        match = _XMP_ORIENTATION.search(data, *xmp)
        if match:
            orientation = int(match[2])
    if orientation is None or not 1 <= orientation <= 8:
        orientation = 1
    # JpegFacts(...) without the frozen dataclass's __init__ (its five object.__setattr__ calls are a
    # noticeable share of a no-EXIF read); the same object, as the tests check
    facts = _new_object(JpegFacts)
    facts.__dict__.update(width=frame[0], height=frame[1], components=frame[2], orientation=orientation,
                          taken_at=taken_at)
    return facts


def _photoshop_fails(data: bytes, start: int, stop: int) -> bool:
    """True where Pillow's walk over the image resources of the Photoshop APP13 segment at
    data[start:stop] raises IndexError; struct.error, which it catches, only ends the walk."""
    length = stop - start
    offset = 14  # counted from the segment's start, as Pillow does: its word alignment depends on it
    while data.startswith(b"8BIM", start + offset, stop):
        offset += 4
        if offset + 2 > length:
            return False  # no resource code: struct.error
        (code,) = _BIG_SHORT.unpack_from(data, start + offset)
        offset += 2
        if offset >= length:
            return True  # no byte for the length of the resource's name: IndexError
        offset += 1 + data[start + offset]
        offset += offset & 1
        if offset + 4 > length:
            return False  # no size: struct.error
        (size,) = _BIG_LONG.unpack_from(data, start + offset)
        offset += 4
        if code == 0x03ED and min(size, length - offset) < 14:
            return False  # a short ResolutionInfo: struct.error
        offset += size
        offset += offset & 1
    return False


def _exif_facts(data: bytes, start: int, stop: int) -> tuple[int | None, float | None]:
    """(orientation, None when absent; capture time) from the TIFF block at data[start:stop]."""
    size = stop - start
    big_endian = data.startswith(b"MM\x00*", start)
    if size < 8 or not (big_endian or data.startswith(b"II*\x00", start)):
        raise _Unsure
    (ifd0_offset,) = _TIFF_STRUCTS[big_endian][1].unpack_from(data, start + 4)
    tags: dict[int, int | str] = {}
    _read_ifd(data, start, size, ifd0_offset, big_endian, _IFD0_TAGS, tags)
    exif_offset = tags.pop(EXIF_IFD, None)
    if exif_offset is not None:
        if exif_offset == ifd0_offset:
            raise _Unsure
        _read_ifd(data, start, size, exif_offset, big_endian, _EXIF_IFD_TAGS, tags)
    return tags.get(EXIF_ORIENTATION), _capture_time(tags)


def _read_ifd(data: bytes, base: int, size: int, offset: int, big_endian: bool, wanted: dict[int, int],
              tags: dict[int, int | str]) -> None:
    """Adds the wanted tags of the IFD at `offset` of the TIFF block at data[base:base+size] to
    `tags`: SHORT and LONG as int, ASCII as str (as Pillow decodes them). Checks every entry the
    way Pillow's ImageFileDirectory_v2.load reads it: where Pillow would skip a wanted tag or stop
    early (a value past the block), _Unsure."""
    short, _, entry = _TIFF_STRUCTS[big_endian]
    if offset < 8 or offset + 2 > size:
        raise _Unsure
    (entries,) = short.unpack_from(data, base + offset)
    first = base + offset + 2
    if offset + 6 + 12 * entries > size:
        raise _Unsure
    total = 0  # Pillow skips tags once the out-of-line values add up to more than the block
    unit = _TIFF_UNIT.get
    for tag, kind, count, value in entry.iter_unpack(data[first:first + 12 * entries]):
        nbytes = count * unit(kind, 0)
        if nbytes > 4:
            total += nbytes
            if value + nbytes > size:
                raise _Unsure  # Pillow stops reading the IFD here
        if tag in wanted:
            if tag in tags or kind != wanted[tag] or count == 0 or (count != 1 and kind != _ASCII):
                raise _Unsure  # Pillow ignores types it does not know and empty values, keeps the first
            if kind == _ASCII:  # Pillow drops one trailing NUL and decodes latin-1
                if nbytes > 4:
                    raw = data[base + value:base + value + count]
                else:  # in the value field itself
                    raw = value.to_bytes(4, "big" if big_endian else "little")[:count]
                tags[tag] = str(raw[:-1] if raw[-1] == 0 else raw, "latin-1")
            elif kind == _SHORT:  # in the first two bytes of the value field
                tags[tag] = value >> 16 if big_endian else value & 0xFFFF
            else:
                tags[tag] = value
    if total > size:
        raise _Unsure


def _capture_time(tags: dict[int, int | str]) -> float | None:
    """indexer.media.image._taken_at for these tags: _taken_at itself, except on the usual
    "YYYY:MM:DD HH:MM:SS", where fromisoformat stands in for its strptime (most of its cost; on
    such text both give the same datetime, or both raise ValueError) and the rest is its own steps."""
    raw = tags.get(EXIF_DATETIME_ORIGINAL) or tags.get(EXIF_DATETIME)
    if raw is None:
        return None
    text = raw.strip("\x00 ")[:19]
    if not _USUAL_DATE.fullmatch(text):
        return _taken_at(_ExifView(tags))
    iso = text.replace(":", "-", 2).replace(" ", "T")  # what _taken_at's moment.isoformat() gives
    offset = tags.get(EXIF_OFFSET_TIME_ORIGINAL)
    offset = offset.strip("\x00 ") if offset is not None else ""
    try:
        return datetime.fromisoformat(iso + offset).timestamp()
    except (ValueError, OverflowError, OSError):
        return None

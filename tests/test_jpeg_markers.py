"""indexer.media.jpeg_markers against the Pillow path it stands in for (indexer.media.gpu_jpeg.pillow_jpeg_header),
and jpeg_header (the fast reader first, Pillow behind it) against the Pillow path alone.

On generated JPEGs the fast reader either answers None ("ask Pillow") or agrees exactly with Pillow
on size, mode, EXIF orientation and capture time; it answers for the ordinary files (baseline and
progressive, RGB and greyscale, with or without EXIF), and it never raises, also on truncated and
corrupted copies.
"""
from __future__ import annotations

import io
import random
import struct
from dataclasses import FrozenInstanceError

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import ImageFileDirectory_v2

import indexer.media.jpeg_markers as jpeg_markers
from indexer.errors import DecodeError
from indexer.media.gpu_jpeg import jpeg_header, pillow_jpeg_header
from indexer.media.image import EXIF_ORIENTATION, DecodeOptions, _read_exif, _taken_at, open_header
from indexer.media.jpeg_markers import JpegFacts, read_jpeg_facts

OPTIONS = DecodeOptions()
ORIENTATION, DATETIME, EXIF_IFD, DATETIME_ORIGINAL, OFFSET_TIME_ORIGINAL = 0x0112, 0x0132, 0x8769, 0x9003, 0x9011
SHORT, ASCII, LONG, UNDEFINED = 3, 2, 4, 7


def picture(mode: str = "RGB", size=(64, 48), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BILINEAR).convert(mode)


def jpeg(image: Image.Image | None = None, **save) -> bytes:
    out = io.BytesIO()
    (image or picture()).save(out, "JPEG", **save)
    return out.getvalue()


def exif(orientation: int | None = None, datetime: str | None = None, original: str | None = None,
         offset: str | None = None) -> Image.Exif:
    tags = Image.Exif()
    if orientation is not None:
        tags[ORIENTATION] = orientation
    if datetime is not None:
        tags[DATETIME] = datetime
    if original is not None:
        tags.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = original
    if offset is not None:
        tags.get_ifd(EXIF_IFD)[OFFSET_TIME_ORIGINAL] = offset
    return tags


def exif_with_resolution(orientation: int) -> Image.Exif:
    """EXIF with XResolution and ResolutionUnit: Pillow reads its DPI from them while opening."""
    tags = exif(orientation)
    tags[0x011A] = 72.0
    tags[0x0128] = 2
    return tags


def photoshop(*resources: tuple[int, bytes, bytes], tail: bytes = b"") -> bytes:
    """A Photoshop APP13 segment with these (code, name, data) image resources."""
    payload = b"Photoshop 3.0\x00"
    for code, name, data in resources:
        pascal = bytes([len(name)]) + name
        payload += b"8BIM" + struct.pack(">H", code) + pascal + b"\x00" * (len(pascal) % 2)
        payload += struct.pack(">L", len(data)) + data + b"\x00" * (len(data) % 2)
    return segment(0xED, payload + tail)


def segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def with_segments(data: bytes, *segments: bytes) -> bytes:
    """`data` with the segments inserted right after SOI."""
    return data[:2] + b"".join(segments) + data[2:]


def find_segment(data: bytes, marker: int) -> int:
    """Offset of the first segment with this marker (walking the markers, not searching)."""
    pos = 2
    while data[pos + 1] != marker:
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return pos


def ifd(order: str, entries: list[tuple[int, int, int, bytes]], at: int, next_ifd: int = 0) -> bytes:
    """An IFD placed at offset `at` of the TIFF block, its out-of-line values right after it."""
    table, extra = b"", b""
    data_at = at + 2 + 12 * len(entries) + 4
    for tag, kind, count, value in entries:
        if len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            field = struct.pack(order + "L", data_at + len(extra))
            extra += value + b"\x00" * (len(value) % 2)
        table += struct.pack(order + "HHL", tag, kind, count) + field
    return struct.pack(order + "H", len(entries)) + table + struct.pack(order + "L", next_ifd) + extra


def tiff(order: str = "<", ifd0=(), exif_ifd=None, thumbnail: bytes | None = None) -> bytes:
    """A hand-made EXIF TIFF block: IFD0, an optional Exif IFD and an optional IFD1 with a JPEG thumbnail."""
    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "L", 8)
    ifd0 = list(ifd0) + ([(EXIF_IFD, LONG, 1, b"\x00" * 4)] if exif_ifd is not None else [])
    size0 = len(ifd(order, ifd0, 8))
    sub = ifd(order, list(exif_ifd), 8 + size0) if exif_ifd is not None else b""
    ifd1_at = 8 + size0 + len(sub)
    ifd0 = [(tag, kind, count, struct.pack(order + "L", 8 + size0) if tag == EXIF_IFD else value)
            for tag, kind, count, value in ifd0]
    ifd1 = b""
    if thumbnail is not None:
        thumb_at = ifd1_at + len(ifd(order, [(0x0201, LONG, 1, b""), (0x0202, LONG, 1, b"")], 0))
        ifd1 = ifd(order, [(0x0201, LONG, 1, struct.pack(order + "L", thumb_at)),
                           (0x0202, LONG, 1, struct.pack(order + "L", len(thumbnail)))], ifd1_at) + thumbnail
    return head + ifd(order, ifd0, 8, ifd1_at if thumbnail is not None else 0) + sub + ifd1


def short(order: str, value: int) -> bytes:
    return struct.pack(order + "H", value)


def text(value: str) -> bytes:
    return value.encode("latin-1") + b"\x00"


def exif_app1(block: bytes) -> bytes:
    return segment(0xE1, b"Exif\x00\x00" + block)


def pillow_reads(data: bytes):
    """What the Pillow path reads from the header (pillow_jpeg_header without its EOI check): the stored
    size, mode, orientation and date; "refused" where it raises; None where it leaves the file to the CPU."""
    try:
        image = open_header(data, OPTIONS)
    except DecodeError:
        return "refused"
    if image.format != "JPEG" or image.mode not in ("L", "RGB"):
        return None
    tags = _read_exif(image)
    orientation = tags.get(EXIF_ORIENTATION, 1) if tags is not None else 1
    return image.size, image.mode, orientation if orientation in range(1, 9) else 1, _taken_at(tags)


def read_by_pillow(facts: JpegFacts):
    """What pillow_reads should give for a file with these facts: "refused" over the pixel budget."""
    if facts.width * facts.height / 1e6 > OPTIONS.max_megapixels:
        return "refused"
    return (facts.width, facts.height), {1: "L", 3: "RGB"}[facts.components], facts.orientation, facts.taken_at


def agrees(data: bytes) -> JpegFacts | None:
    """read_jpeg_facts(data), after checking that, when it answers, Pillow says the same."""
    facts = read_jpeg_facts(data)
    if facts is None:
        return None
    assert pillow_reads(data) == read_by_pillow(facts)
    header = pillow_jpeg_header(data, OPTIONS)
    assert header is not None
    shown = (facts.height, facts.width) if facts.orientation in (5, 6, 7, 8) else (facts.width, facts.height)
    expected = (*shown, facts.orientation, facts.taken_at)
    assert (header.width, header.height, header.orientation, header.taken_at) == expected
    assert jpeg_header(data, OPTIONS) == header
    return facts


RESOLUTION_INFO = struct.pack(">LHHLHH", 300 << 16, 1, 1, 300 << 16, 1, 1)  # 300 dpi, Photoshop resource 0x03ED
ORDINARY = {
    "rgb": jpeg(),
    "rgb q50": jpeg(quality=50),
    "rgb q95 4:4:4": jpeg(quality=95, subsampling=0),
    "rgb 4:2:2": jpeg(subsampling=1),
    "rgb 4:2:0": jpeg(subsampling=2),
    "rgb optimized": jpeg(optimize=True),
    "rgb progressive": jpeg(progressive=True),
    "rgb progressive optimized": jpeg(progressive=True, optimize=True, quality=80),
    "grey": jpeg(picture("L")),
    "grey progressive": jpeg(picture("L"), progressive=True),
    "odd size": jpeg(picture(size=(33, 17))),
    "dpi": jpeg(dpi=(300, 300)),
    "comment": jpeg(comment=b"a comment"),
    "icc": jpeg(icc_profile=b"\x00" * 300),
    "icc in chunks": jpeg(icc_profile=bytes(range(256)) * 400),
    "xmp": jpeg(xmp=b'<x:xmpmeta><rdf:Description dc:format="image/jpeg"/></x:xmpmeta>'),
    "restart markers": jpeg(restart_marker_blocks=2),
    "16-bit quantisation": jpeg(qtables=[[300] * 64, [400] * 64]),
    "date": jpeg(exif=exif(datetime="2020:01:02 03:04:05")),
    "date original": jpeg(exif=exif(original="2021:05:06 07:08:09")),
    "both dates": jpeg(exif=exif(datetime="2020:01:02 03:04:05", original="2021:05:06 07:08:09")),
    "date with offset": jpeg(exif=exif(6, original="2021:05:06 07:08:09", offset="+02:00")),
    "date, negative offset": jpeg(exif=exif(original="2021:12:31 23:59:59", offset="-05:30")),
    "grey with date": jpeg(picture("L"), progressive=True, exif=exif(8, original="2019:07:04 12:00:00")),
    "resolution in exif": jpeg(exif=exif_with_resolution(3)),
    "photoshop": with_segments(jpeg(), photoshop((0x03ED, b"", RESOLUTION_INFO), (0x0404, b"", b"\x1c\x02\x00\x00"),
                                                 (0x0BB7, b"odd", b"abc"))),
    "photoshop, short resolution info": with_segments(jpeg(), photoshop((0x03ED, b"", b"\x00" * 4))),
    "photoshop, cut after the signature": with_segments(jpeg(), photoshop((0x0404, b"", b"x"), tail=b"8BIM\x04")),
    "photoshop, cut before the size": with_segments(jpeg(), photoshop(tail=b"8BIM\x04\x04\x00\x00\x00")),
    **{f"orientation {n}": jpeg(exif=exif(n)) for n in range(0, 10)},
    **{f"progressive orientation {n}": jpeg(progressive=True, exif=exif(n, datetime="2022:02:02 02:02:02"))
       for n in (3, 6)},
}


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_jpegs_are_read_as_pillow_reads_them(name):
    facts = agrees(ORDINARY[name])
    assert facts is not None, "the fast path should cover this file"


def test_the_facts_are_the_expected_ones():
    grey = agrees(ORDINARY["grey"])
    assert grey == JpegFacts(64, 48, 1, 1, None)
    assert hash(grey) == hash(JpegFacts(64, 48, 1, 1, None)) and repr(grey) == repr(JpegFacts(64, 48, 1, 1, None))
    with pytest.raises(FrozenInstanceError):
        grey.width = 1
    for n in range(1, 9):
        assert agrees(ORDINARY[f"orientation {n}"]).orientation == n
    assert agrees(ORDINARY["orientation 0"]).orientation == 1
    assert agrees(ORDINARY["orientation 9"]).orientation == 1
    assert agrees(ORDINARY["date with offset"]).taken_at == 1620277689.0  # 05:08:09 UTC
    assert agrees(ORDINARY["date"]).taken_at is not None  # local time: only that it is read
    original = agrees(ORDINARY["date original"]).taken_at
    assert agrees(ORDINARY["both dates"]).taken_at == original  # DateTimeOriginal wins


@pytest.mark.parametrize("order", ["<", ">"])
def test_hand_made_exif_in_both_byte_orders(order):
    block = tiff(order, [(0x010F, ASCII, 6, text("Maker")), (ORIENTATION, SHORT, 1, short(order, 6)),
                         (DATETIME, ASCII, 20, text("2020:01:02 03:04:05"))],
                 [(DATETIME_ORIGINAL, ASCII, 20, text("2021:05:06 07:08:09")),
                  (OFFSET_TIME_ORIGINAL, ASCII, 7, text("+02:00"))])
    facts = agrees(with_segments(jpeg(), exif_app1(block)))
    assert facts == JpegFacts(64, 48, 3, 6, 1620277689.0)


def test_exif_thumbnail_xmp_fill_bytes_and_other_segments():
    thumbnail = jpeg(picture(size=(16, 12)))  # a whole JPEG (SOI, SOF, SOS...) inside the APP1 segment
    block = tiff("<", [(ORIENTATION, SHORT, 1, short("<", 5))], thumbnail=thumbnail)
    assert agrees(with_segments(jpeg(), exif_app1(block))).orientation == 5
    xmp = segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta tiff:Orientation=\"6\"/>")
    assert agrees(with_segments(jpeg(), xmp)).orientation == 6  # Pillow's fallback without EXIF orientation
    exif_app = exif_app1(tiff("<", [(ORIENTATION, SHORT, 1, short("<", 3))]))
    assert agrees(with_segments(jpeg(), xmp, exif_app)).orientation == 3  # EXIF wins
    later = segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00<tiff:Orientation>8</tiff:Orientation>")
    assert agrees(with_segments(jpeg(), xmp, later)).orientation == 8  # Pillow keeps the last packet
    data = jpeg()
    sof = find_segment(data, 0xC0)
    assert agrees(data[:sof] + b"\xff\xff" + data[sof:]) is not None  # fill bytes before a marker
    others = (segment(0xE0, b"JFXX\x00\x10"), segment(0xE3, b"x" * 40), segment(0xEC, b"Ducky"),
              segment(0xFE, b""), segment(0xE2, b"FPXR\x00\x00"))
    assert agrees(with_segments(data, *others)) is not None


@pytest.mark.parametrize("raw, offset", [
    ("2021:05:06 07:08:09", None), ("2021:05:06 07:08:09", "+02:00"), ("2021:05:06 07:08:09", "-05:30"),
    ("2021:05:06 07:08:09", "Z"), ("2021:05:06 07:08:09", "+0200"), ("2021:05:06 07:08:09", "+24:00"),
    ("2021:05:06 07:08:09", "bogus"), ("2021:05:06 07:08:09", ""), ("2021:05:06 07:08:09", " \x00"),
    ("2021:05:06 07:08:09", "+02:00\x00 "), ("2021:05:06 07:08:09\x00", "+02:00"),
    (" 2021:05:06 07:08:09 ", None), ("2021:05:06 07:08:09.123", "+01:00"), ("2021:5:6 7:8:9", None),
    ("2021-05-06 07:08:09", None), ("2021:02:29 00:00:00", None), ("2020:02:29 00:00:00", "+00:00"),
    ("2021:13:01 00:00:00", None), ("2021:00:10 00:00:00", None), ("2021:04:31 00:00:00", None),
    ("0000:01:01 00:00:00", None), ("9999:12:31 23:59:59", "-12:00"), ("2021:01:01 24:00:00", None),
    ("2021:01:01 23:60:00", None), ("2021:01:01 23:59:60", None), ("2021:01:01 23:59:61", None),
    ("    :  :     :  :  ", None), ("", None), ("\x00", "+01:00"), ("2021:05:06", None),
    ("１２３４:05:06 07:08:09", None), ("2021:05:06\t07:08:09", None),
])
def test_capture_time_is_exactly_decodes_taken_at(raw, offset):
    """The fast date parse against indexer.media.image._taken_at on a real PIL.Image.Exif."""
    for tag in (DATETIME, DATETIME_ORIGINAL):
        reference = Image.Exif()
        tags = {tag: raw}
        if tag == DATETIME:
            reference[DATETIME] = raw
        else:
            reference.get_ifd(EXIF_IFD)[DATETIME_ORIGINAL] = raw
        if offset is not None:
            reference.get_ifd(EXIF_IFD)[OFFSET_TIME_ORIGINAL] = offset
            tags[OFFSET_TIME_ORIGINAL] = offset
        assert jpeg_markers._capture_time(tags) == _taken_at(reference)


def test_capture_time_falls_back_from_an_empty_original_to_datetime():
    tags = {DATETIME_ORIGINAL: "", DATETIME: "2020:01:02 03:04:05", OFFSET_TIME_ORIGINAL: "+01:00"}
    reference = exif(datetime="2020:01:02 03:04:05", original="", offset="+01:00")
    assert jpeg_markers._capture_time(tags) == _taken_at(reference) == 1577930645.0


def test_tiff_value_sizes_are_pillows():
    assert jpeg_markers._TIFF_UNIT == {kind: size for kind, (size, _) in ImageFileDirectory_v2._load_dispatch.items()}


def patched(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value):]


def unusual_files() -> dict[str, bytes]:
    data = jpeg()
    sof = find_segment(data, 0xC0)
    app0 = find_segment(data, 0xE0)
    png = io.BytesIO()
    picture().save(png, "PNG")

    def with_exif(ifd0, exif_ifd=None) -> bytes:
        return with_segments(data, exif_app1(tiff("<", ifd0, exif_ifd)))

    six = (ORIENTATION, SHORT, 1, short("<", 6))
    long_value = struct.Struct("<L").pack
    return {
        "empty": b"",
        "soi only": b"\xff\xd8",
        "garbage": b"\xff\xd8\xff" + b"garbage" * 10,
        "random bytes": bytes(random.Random(1).randrange(256) for _ in range(500)),
        "png": png.getvalue(),
        "cmyk": jpeg(picture("CMYK")),
        "rgb kept as rgb (Adobe APP14)": jpeg(keep_rgb=True),
        "adobe app14": with_segments(data, segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01")),
        "photoshop app13 cut after a resource code": with_segments(data, photoshop(tail=b"8BIM\x04\x04")),
        "mpf app2": with_segments(data, segment(0xE2, b"MPF\x00II*\x00\x08" + b"\x00" * 9)),
        "12-bit": patched(data, sof + 4, b"\x0c"),
        "lossless sof3": patched(data, sof + 1, b"\xc3"),
        "arithmetic sof9": patched(data, sof + 1, b"\xc9"),
        "height 0": patched(data, sof + 5, b"\x00\x00"),
        "two components": patched(data, sof + 9, b"\x02"),
        "two frames": data[:sof] + data[sof:sof + 19] + data[sof:],
        "truncated before sof": data[:sof],
        "truncated in sof": data[:sof + 8],
        "bad segment length": patched(data, app0 + 2, b"\xff\xf0"),
        "segment length 1": patched(data, app0 + 2, b"\x00\x01"),
        "junk between segments": data[:sof] + b"\x00" + data[sof:],
        "stray EOI in the header": data[:sof] + b"\xff\xd9" + data[sof:],
        "no sof": data[:sof] + data[sof + 19:],
        "short jfif": with_segments(data[:app0] + data[app0 + 18:], segment(0xE0, b"JFIF\x00")),
        "short icc chunk": with_segments(data, segment(0xE2, b"ICC_PROFILE\x00")),
        "two exif segments": with_segments(data, exif_app1(tiff("<", [six])), exif_app1(tiff("<", []))),
        "exif not tiff": with_segments(data, exif_app1(b"JUNKJUNKJUNK")),
        "exif ifd past the end": with_segments(data, exif_app1(b"II*\x00" + long_value(10_000) + b"\x00" * 8)),
        "exif ifd runs past the end": with_segments(data, exif_app1(tiff("<", [six])[:20])),
        "exif sub-ifd past the end": with_exif([(EXIF_IFD, LONG, 1, long_value(4000))]),
        "exif sub-ifd is ifd0": with_exif([(EXIF_IFD, LONG, 1, long_value(8))]),
        "orientation as LONG": with_exif([(ORIENTATION, LONG, 1, long_value(6))]),
        "orientation twice": with_exif([six, (ORIENTATION, SHORT, 1, short("<", 3))]),
        "orientation count 2": with_exif([(ORIENTATION, SHORT, 2, short("<", 6) * 2)]),
        "orientation of unknown type": with_exif([(ORIENTATION, 99, 1, short("<", 6))]),
        "date as UNDEFINED": with_exif([], [(DATETIME_ORIGINAL, UNDEFINED, 20, text("2021:05:06 07:08:09"))]),
        "empty date": with_exif([(DATETIME, ASCII, 0, b"")]),
        # Pillow stops reading IFD0 at a value past the end (the orientation after it is lost) ...
        "value past the end before orientation": with_exif([(0x010F, ASCII, 10, long_value(5000)), six]),
        # ... and skips values that add up to more than the block
        "value larger than the block": with_exif([(0x010F, ASCII, 2000, long_value(8)), six]),
        "x resolution as BYTE": with_exif([(0x011A, 1, 1, b"\x48"), (0x0128, SHORT, 1, short("<", 2))]),
    }


UNUSUAL = unusual_files()


@pytest.mark.parametrize("name", UNUSUAL)
def test_unusual_files_are_left_to_pillow(name):
    assert read_jpeg_facts(UNUSUAL[name]) is None


@pytest.mark.filterwarnings("ignore:Truncated File Read")
def test_why_odd_segments_are_left_to_pillow():
    """An odd entry anywhere in IFD0, or an odd APP13, can change what Pillow reads, even the file's fate."""
    assert pillow_reads(UNUSUAL["value past the end before orientation"])[2] == 1  # Pillow stopped before it
    assert pillow_reads(UNUSUAL["x resolution as BYTE"]) == "refused"  # its DPI fallback raised IndexError
    assert pillow_reads(UNUSUAL["photoshop app13 cut after a resource code"]) == "refused"  # IndexError too


def test_fast_header_keeps_the_pixel_budget_and_the_eoi_rule():
    data = ORDINARY["date with offset"]
    with pytest.raises(DecodeError, match="megapixels"):
        jpeg_header(data, DecodeOptions(max_megapixels=0.001))
    assert jpeg_header(data[:-2], OPTIONS) is None  # no EOI: the CPU decides, as in pillow_jpeg_header
    assert jpeg_header(data + b"\x00" * 8, OPTIONS) == pillow_jpeg_header(data + b"\x00" * 8, OPTIONS)
    huge = patched(data, find_segment(data, 0xC0) + 5, struct.pack(">HH", 60000, 60000))  # 3,600 MP
    assert read_jpeg_facts(huge).width == 60000  # header facts; the budget is the caller's
    with pytest.raises(DecodeError, match="too many pixels"):
        jpeg_header(huge, DecodeOptions(max_megapixels=10_000))  # Pillow's own limit, as in pillow_jpeg_header
    assert jpeg_header(UNUSUAL["cmyk"], OPTIONS) is None
    with pytest.raises(DecodeError):
        jpeg_header(UNUSUAL["garbage"], OPTIONS)


def outcome(read, data: bytes):
    try:
        return read(data, OPTIONS)
    except DecodeError as exc:
        return f"DecodeError: {exc}"


def test_truncated_and_corrupted_copies_never_raise_and_never_disagree():
    rng = random.Random(20240506)
    sources = [ORDINARY["date with offset"], ORDINARY["grey progressive"], ORDINARY["icc"], ORDINARY["photoshop"],
               with_segments(jpeg(), exif_app1(tiff("<", [(ORIENTATION, SHORT, 1, short("<", 7)),
                                                          (DATETIME, ASCII, 20, text("2020:01:02 03:04:05"))],
                                                    thumbnail=jpeg(picture(size=(16, 12))))))]
    covered = 0
    for n in range(300):
        data = sources[n % len(sources)]
        header_end = find_segment(data, 0xDA) + 14
        at = rng.randrange(header_end) if rng.random() < 0.9 else rng.randrange(len(data))
        if n % 3 == 0:
            mutated = data[:at]
        else:
            mutated = data[:at] + bytes([rng.randrange(256)]) + data[at + 1:]
        facts = read_jpeg_facts(mutated)  # must not raise
        if facts is None:
            continue
        covered += 1
        assert pillow_reads(mutated) == read_by_pillow(facts), f"mutation {n} at {at}"
        assert outcome(jpeg_header, mutated) == outcome(pillow_jpeg_header, mutated)
    assert covered > 100  # the comparison above was not vacuous


def test_an_older_pillow_reads_every_header_itself(monkeypatch):
    """The marker reader is checked against Pillow 13; with an older Pillow, Pillow decides."""
    import PIL

    from indexer.media import gpu_jpeg as gpu_decode

    data = _plain_jpeg()
    monkeypatch.setattr(PIL, "__version__", "11.3.0")
    monkeypatch.setattr(jpeg_markers, "read_jpeg_facts", lambda data: pytest.fail("the marker reader was used"))
    gpu_decode.marker_reader_matches_pillow.cache_clear()
    try:
        assert jpeg_header(data, OPTIONS) == pillow_jpeg_header(data, OPTIONS)
    finally:
        gpu_decode.marker_reader_matches_pillow.cache_clear()


def _plain_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()

"""Hostile files: each one is reported with a reason and costs only itself, never the run.

Real files in tmp_path, a real database, the tiny model. Tests run as root in CI, where chmod 000
does not stop a read: the permission cases then fail the same system calls with a monkeypatched
PermissionError (the code path after the call is the same), and the real chmod variants run only
for an ordinary user.
"""
from __future__ import annotations

import datetime
import errno
import io
import json
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_reliability_support import assert_database_consistent
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from indexer.media.image import DecodeOptions, decode_image
from indexer.media.preprocess import to_model_input
from indexer.pipeline.embed import PipelineConfig
from indexer.pipeline.sync import IndexConfig, index_folders
from indexer.store.database import connect_read_only
from indexer.store.library import Library
from retrieval.media import media_for

ROOT = os.geteuid() == 0
runner = CliRunner()


def png_claiming(width: int, height: int) -> bytes:
    """A valid PNG header for width x height pixels followed by almost no pixel data (a pixel bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")


def _index(library, model, root, **pipeline):
    errors: dict[str, str] = {}
    config = IndexConfig(roots=(str(root),), pipeline=PipelineConfig(batch_size=4, workers=2, **pipeline))
    report = index_folders(library, media_for(model), config, on_file_error=lambda path, reason: errors.setdefault(path, reason))
    return report, errors


def _rows(library) -> dict[str, tuple]:
    with connect_read_only(library.db_path) as connection:
        return {path: tuple(rest) for path, *rest in connection.execute(
            "SELECT path, width, height, format, error, taken_at, (SELECT count(*) FROM vectors WHERE item_id = items.id) "
            "FROM items")}


def test_broken_files_are_each_reported_with_a_reason(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    good = write_image(pics / "good.png", seed=1, size=(40, 30))
    jpeg = write_image(pics / "photo.jpg", seed=2, size=(120, 90), fmt="JPEG")
    hostile = {
        "zero.jpg": (b"", "empty file"),
        "garbage.png": (np.random.default_rng(0).bytes(5000), "not an image"),
        "text.webp": (b"hello, I am not a picture", "not an image"),
        "truncated.png": (good.read_bytes()[:120], "cannot"),
        "truncated.jpg": (jpeg.read_bytes()[:400], "cannot"),
        "bomb-30k.png": (png_claiming(30_000, 30_000), "pixels"),
        "bomb-12k.png": (png_claiming(12_000, 12_000), "over the 100 MP limit"),
        "huge-width.png": (png_claiming(2**31 - 1, 1), ""),
    }
    for name, (data, _) in hostile.items():
        (pics / name).write_bytes(data)
    os.mkfifo(pics / "fifo.jpg")  # a reader would block forever on it
    os.symlink(pics / "loop-b.jpg", pics / "loop-a.jpg")
    os.symlink(pics / "loop-a.jpg", pics / "loop-b.jpg")
    os.symlink(pics / "gone.jpg", pics / "dangling.jpg")
    library = Library(tmp_path / "db")
    started = time.monotonic()
    report, errors = _index(library, tiny_model, pics)
    assert time.monotonic() - started < 60
    assert report.embedded == 2
    by_name = {Path(path).name: reason for path, reason in errors.items()}
    for name, (_, expected) in hostile.items():
        assert expected in by_name.pop(name), (name, errors)
    assert "named pipe" in by_name.pop("fifo.jpg")
    assert "symbolic links" in by_name.pop("loop-a.jpg") and "symbolic links" in by_name.pop("loop-b.jpg")
    assert "broken symbolic link" in by_name.pop("dangling.jpg")
    assert by_name == {}
    assert (report.failed, report.skipped) == (len(hostile), 4)  # failed ones have a row; skipped ones cannot
    assert_database_consistent(library.folder, dim=64)
    again, _ = _index(library, tiny_model, pics)  # failed files are remembered, not retried
    assert (again.embedded, again.failed, again.unchanged) == (0, 0, 2 + len(hostile))


def _cmyk_jpeg(path):
    Image.new("CMYK", (30, 20), (0, 200, 255, 10)).save(path)


def _sixteen_bit_png(path):
    gradient = (np.linspace(0, 65535, 48 * 32).reshape(32, 48)).astype(np.uint16)
    Image.fromarray(gradient).save(path)


def _palette_with_transparency(path):
    image = Image.new("P", (24, 24), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (0, 0, 12, 24))
    image.save(path, transparency=0)


def _animated(path, fmt):
    frames = [Image.new("RGB", (30, 20), colour) for colour in ("red", "green", "blue")]
    frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=80, loop=0)


@pytest.mark.parametrize("name, make, size, fmt", [
    ("cmyk.jpg", _cmyk_jpeg, (30, 20), "JPEG"),
    ("gray16.png", _sixteen_bit_png, (48, 32), "PNG"),
    ("palette.png", _palette_with_transparency, (24, 24), "PNG"),
    ("animated.gif", lambda path: _animated(path, "GIF"), (30, 20), "GIF"),
    ("animated.webp", lambda path: _animated(path, "WEBP"), (30, 20), "WEBP"),
    ("la.png", lambda path: Image.new("LA", (10, 12), (90, 128)).save(path), (10, 12), "PNG"),
    ("bilevel.tiff", lambda path: Image.new("1", (16, 8), 1).save(path), (16, 8), "TIFF"),
])
def test_unusual_but_valid_images_are_indexed(tmp_path, tiny_model, name, make, size, fmt):
    pics = tmp_path / "pics"
    pics.mkdir()
    make(pics / name)
    library = Library(tmp_path / "db")
    report, errors = _index(library, tiny_model, pics)
    assert (report.embedded, errors) == (1, {})
    width, height, stored_format, error, _, vectors = _rows(library)[str(pics / name)]
    assert ((width, height), stored_format, error, vectors) == (size, fmt, None, 1)


def test_sixteen_bit_pixels_are_scaled_not_clipped(tmp_path, tiny_model):
    _sixteen_bit_png(tmp_path / "gray16.png")
    decoded = decode_image((tmp_path / "gray16.png").read_bytes(), tiny_model.preprocess)
    gradient8 = (np.linspace(0, 65535, 48 * 32).reshape(32, 48) / 257).astype(np.uint8)
    expected = to_model_input(Image.fromarray(gradient8).convert("RGB"), tiny_model.preprocess)
    np.testing.assert_allclose(decoded.pixels, expected, atol=0.05)  # Pillow's convert() would give all white


def _oriented(path, fmt):
    image = Image.new("RGB", (40, 20), "red")
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue: a rotation is visible
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    exif.get_ifd(0x8769).update({0x9003: "2019:07:14 12:30:00", 0x9011: "+02:00"})
    image.save(path, format=fmt, exif=exif)
    return image


@pytest.mark.parametrize("name, fmt", [("rotated.jpg", "JPEG"), ("rotated.png", "PNG")])
def test_exif_orientation_is_applied_and_sizes_are_the_displayed_ones(tmp_path, tiny_model, name, fmt):
    pics = tmp_path / "pics"
    pics.mkdir()
    stored = _oriented(pics / name, fmt)
    decoded = decode_image((pics / name).read_bytes(), tiny_model.preprocess, DecodeOptions(draft=False))
    assert (decoded.width, decoded.height) == (20, 40)
    displayed = to_model_input(stored.transpose(Image.Transpose.ROTATE_270), tiny_model.preprocess)
    unrotated = to_model_input(stored, tiny_model.preprocess)
    assert np.abs(decoded.pixels - displayed).mean() < np.abs(decoded.pixels - unrotated).mean() / 4
    assert decoded.taken_at == datetime.datetime(2019, 7, 14, 10, 30, tzinfo=datetime.timezone.utc).timestamp()
    library = Library(tmp_path / "db")
    _index(library, tiny_model, pics)
    width, height, _, _, taken_at, _ = _rows(library)[str(pics / name)]
    assert (width, height, taken_at) == (20, 40, decoded.taken_at)


def test_broken_exif_costs_the_rotation_not_the_image(tmp_path, tiny_model):
    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), "green").save(buffer, format="JPEG", exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff")
    decoded = decode_image(buffer.getvalue(), tiny_model.preprocess)
    assert (decoded.width, decoded.height, decoded.taken_at) == (30, 20, None)


def _deny(monkeypatch, denied: set[str], function: str = "open"):
    """As root chmod cannot deny: make os.open / os.scandir fail like EACCES for these paths."""
    real = getattr(os, function)

    def guarded(path, *args, **kwargs):
        if not isinstance(path, int) and os.fsdecode(path) in denied:  # an int: a descriptor (scandir of an open folder)
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, function, guarded)


def test_unreadable_file_and_folder_are_reported(tmp_path, tiny_model, monkeypatch):
    pics = tmp_path / "pics"
    write_image(pics / "ok.png", seed=1)
    secret = write_image(pics / "secret.png", seed=2)
    write_image(pics / "locked" / "inside.png", seed=3)
    if ROOT:
        _deny(monkeypatch, {str(secret)}, "open")
        _deny(monkeypatch, {str(pics / "locked")}, "scandir")
        _deny(monkeypatch, {str(pics / "locked")}, "open")  # the walk opens each folder, then lists it
    else:
        secret.chmod(0)
        (pics / "locked").chmod(0)
    try:
        library = Library(tmp_path / "db")
        report, errors = _index(library, tiny_model, pics)
    finally:
        secret.chmod(0o644)
        (pics / "locked").chmod(0o755)
    assert report.embedded == 1
    assert "Permission denied" in errors[str(secret)]
    assert "Permission denied" in errors[str(pics / "locked")]
    assert_database_consistent(library.folder, dim=64)


@pytest.mark.skipif(ROOT, reason="root reads through chmod 000; covered by the monkeypatched variant above")
def test_unreadable_file_with_real_permissions(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    secret = write_image(pics / "secret.png", seed=2)
    secret.chmod(0)
    try:
        report, errors = _index(Library(tmp_path / "db"), tiny_model, pics)
    finally:
        secret.chmod(0o644)
    assert report.failed == 1 and "Permission denied" in errors[str(secret)]


def test_files_that_vanish_or_change_during_the_scan(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    for number in range(4):
        write_image(pics / f"img{number}.png", seed=number, size=(32, 32))

    def meddle(event):
        if event.phase == "scan":  # after the walk, before any file is read
            (pics / "img0.png").unlink()
            write_image(pics / "img1.png", seed=99, size=(50, 40))  # new size and content
            (pics / "img2.png").unlink()
            os.mkfifo(pics / "img2.png")  # replaced by something that would block a reader

    library = Library(tmp_path / "db")
    errors = {}
    report = index_folders(library, media_for(tiny_model), IndexConfig(roots=(str(pics),), pipeline=PipelineConfig(batch_size=2)),
                           on_progress=meddle, on_file_error=lambda path, reason: errors.setdefault(path, reason))
    assert "vanished" in errors.pop(str(pics / "img0.png"))
    assert "not a regular file" in errors.pop(str(pics / "img2.png"))
    assert errors == {}
    assert (report.embedded, report.skipped, report.failed) == (2, 1, 1)
    rows = _rows(library)
    assert str(pics / "img0.png") not in rows  # nothing to remember about a file that is gone
    assert rows[str(pics / "img1.png")][:2] == (50, 40)  # the content that was read
    assert (pics / "img1.png").stat().st_size == next(
        size for path, size in connect_read_only(library.db_path).execute("SELECT path, size FROM items")
        if path == str(pics / "img1.png"))  # and the size of that content: the next run sees it unchanged
    os.unlink(pics / "img2.png")
    again, _ = _index(library, tiny_model, pics)
    assert (again.embedded, again.unchanged, again.removed) == (0, 2, 1)


def test_names_that_are_not_utf8_are_stored_losslessly(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    folder = os.path.join(os.fsencode(pics), b"dossier-\xff")  # a Latin-1 era folder name
    os.makedirs(folder)
    names = [b"caf\xe9.png", b"\x80\x81.png", "plain-\u00e9t\u00e9.png".encode()]
    for number, name in enumerate(names):
        write_image(Path(os.fsdecode(os.path.join(folder, name))), seed=number, size=(24, 24))
    with open(os.path.join(folder, b"bad-\xfe.jpg"), "wb") as handle:
        handle.write(b"not an image")
    library = Library(tmp_path / "db")
    report, errors = _index(library, tiny_model, pics)
    assert (report.embedded, report.failed) == (3, 1)
    expected = {os.fsdecode(os.path.join(folder, name)) for name in names}
    assert expected <= set(_rows(library))
    with connect_read_only(library.db_path) as connection:  # the exact bytes, not a lossy replacement
        raw = {bytes(row[0]) for row in connection.execute("SELECT CAST(path AS BLOB) FROM items")}
    assert os.path.join(folder, b"caf\xe9.png") in raw
    assert "not an image" in errors[os.fsdecode(os.path.join(folder, b"bad-\xfe.jpg"))]
    again, _ = _index(library, tiny_model, pics)  # the stored names match the walked ones exactly
    assert (again.embedded, again.unchanged) == (0, 4)
    os.rename(os.path.join(folder, names[0]), os.path.join(folder, b"renamed-\xe9.png"))
    moved, _ = _index(library, tiny_model, pics)
    assert (moved.embedded, moved.reused, moved.removed) == (0, 1, 1)
    assert_database_consistent(library.folder, dim=64)
    from retrieval.query.search import rank

    renamed = os.fsdecode(os.path.join(folder, b"renamed-\xe9.png"))
    query = tiny_model.image.embed_images([Image.open(renamed)])
    assert rank(library, query, top=1)[0][0].path == renamed  # `open(hit.path)` works as is
    check = runner.invoke(app, ["check", "--db", str(library.folder), "--json", "--no-model"])
    assert json.loads(check.stdout)["healthy"], check.stdout


def test_search_prints_names_that_are_not_utf8(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    pics.mkdir()
    write_image(Path(os.fsdecode(os.path.join(os.fsencode(pics), b"caf\xe9.png"))), seed=1, size=(24, 24))
    library = Library(tmp_path / "db")
    _index(library, tiny_model, pics)
    result = runner.invoke(app, ["search", "a picture", "--db", str(library.folder), "--json"])
    assert result.exit_code == 0, result.output
    path = json.loads(result.stdout)[0]["path"]
    assert os.fsencode(path).endswith(b"caf\xe9.png")  # the exact bytes come back
    plain = runner.invoke(app, ["search", "a picture", "--db", str(library.folder)])
    assert plain.exit_code == 0 and plain.stdout_bytes.rstrip().endswith(b"caf\xe9.png")


def test_very_long_names_and_paths(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    longest_name = "n" * 251 + ".png"  # 255 bytes: the most a name may have
    write_image(pics / longest_name, seed=1, size=(20, 20))
    png = (pics / longest_name).read_bytes()
    # a chain of folders deeper than PATH_MAX (4096), built relative to open folders
    depth_fd = os.open(pics, os.O_RDONLY)
    path_length, level = len(str(pics)), 0
    deepest_indexable = None
    try:
        while path_length < 4400:
            os.mkdir("d" * 200, dir_fd=depth_fd)
            next_fd = os.open("d" * 200, os.O_RDONLY, dir_fd=depth_fd)
            os.close(depth_fd)
            depth_fd, path_length, level = next_fd, path_length + 201, level + 1
            image_fd = os.open(f"level{level}.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=depth_fd)
            os.write(image_fd, png)  # same bytes: one vector, reused at every level
            os.close(image_fd)
            if path_length + len(f"/level{level}.png") < 4096:
                deepest_indexable = level
    finally:
        os.close(depth_fd)
    library = Library(tmp_path / "db")
    report, errors = _index(library, tiny_model, pics)
    assert report.embedded + report.reused == 1 + deepest_indexable  # every level below PATH_MAX is indexed
    assert errors and all("too long" in reason for reason in errors.values())
    stored = [path for path in _rows(library) if path.endswith(f"level{deepest_indexable}.png")]
    assert stored and len(stored[0]) > 3800
    assert_database_consistent(library.folder, dim=64)


def test_a_hung_decode_is_given_up_after_its_time_budget(tmp_path, tiny_model, monkeypatch):
    import indexer.media.image_reader

    pics = tmp_path / "pics"
    for number in range(5):
        write_image(pics / f"img{number}.png", seed=number, size=(24, 24))
    release = threading.Event()
    real_decode = indexer.media.image_reader.decode_image

    def decode(data, preprocess, options, **kwargs):
        if data == (pics / "img2.png").read_bytes():
            release.wait(60)  # a decoder stuck in C code: nothing can interrupt it
        return real_decode(data, preprocess, options, **kwargs)

    monkeypatch.setattr(indexer.media.image_reader, "decode_image", decode)
    library = Library(tmp_path / "db")
    started = time.monotonic()
    try:
        result = runner.invoke(app, ["index", str(pics), "--db", str(library.folder), "--model",
                                     str(tiny_model.card.spec.path), "--decode-timeout", "0.5", "--workers", "2",
                                     "--batch-size", "2", "--json"])
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["embedded"], summary["failed"]) == (4, 1)
    assert "longer than 0.5 s" in summary["failures"][0]["reason"]
    assert f"skipping {pics / 'img2.png'}: reading and decoding took longer than 0.5 s" in result.stderr
    assert elapsed < 30
    assert_database_consistent(library.folder, dim=64)


def test_a_stalled_drive_stops_the_run_instead_of_piling_up_threads(tmp_path, tiny_model, monkeypatch):
    import indexer.pipeline.embed
    import indexer.pipeline.workers

    pics = tmp_path / "pics"
    for number in range(8):
        write_image(pics / f"img{number}.png", seed=number, size=(24, 24))
    release = threading.Event()
    monkeypatch.setattr(indexer.pipeline.embed, "read_file_checked", lambda path: release.wait(60))  # every read hangs
    monkeypatch.setattr(indexer.pipeline.workers.WorkerThreads, "max_stuck", 2)
    library = Library(tmp_path / "db")
    try:
        with pytest.raises(indexer.pipeline.workers.WorkersStalledError, match="network drive stalled"):
            _index(library, tiny_model, pics, decode_timeout_s=0.2)
    finally:
        release.set()
    assert_database_consistent(library.folder, dim=64)


def _many_empty_files(tmp_path, tiny_model_config, count: int, monkeypatch) -> None:
    """Each empty .jpg is reported without being opened (100k files of 0 bytes cost seconds, not a
    read each), stderr names the first 100 and counts the rest."""
    import indexer.pipeline.embed

    pics = tmp_path / "pics"
    pics.mkdir()
    for number in range(count):
        os.close(os.open(pics / f"empty{number:06d}.jpg", os.O_WRONLY | os.O_CREAT, 0o644))
    reads = []
    real_read = indexer.pipeline.embed.read_file_checked
    monkeypatch.setattr(indexer.pipeline.embed, "read_file_checked", lambda path: reads.append(path) or real_read(path))
    result = runner.invoke(app, ["index", str(pics), "--db", str(tmp_path / "db"), "--model", str(tiny_model_config),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert reads == []
    summary = json.loads(result.stdout)
    assert (summary["failed"], summary["embedded"], len(summary["failures"])) == (count, 0, count)
    assert all(failure["reason"] == "empty file (0 bytes)" for failure in summary["failures"])
    assert result.stderr.count("skipping ") == 100 and f"and {count - 100} more skipped files" in result.stderr
    again = runner.invoke(app, ["index", str(pics), "--db", str(tmp_path / "db"), "--json"])
    assert json.loads(again.stdout)["unchanged"] == count


def test_ten_thousand_empty_files(tmp_path, tiny_model_config, monkeypatch):
    _many_empty_files(tmp_path, tiny_model_config, 10_000, monkeypatch)


@pytest.mark.slow
def test_a_hundred_thousand_empty_files(tmp_path, tiny_model_config, monkeypatch):
    _many_empty_files(tmp_path, tiny_model_config, 100_000, monkeypatch)

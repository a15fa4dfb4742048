import os

from indexer.media.scan import ScanOptions, walk


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_walk_finds_images_recursively_sorted(tmp_path):
    for name in ["b.JPG", "a.png", "sub/c.webp", "sub/deeper/d.gif", "notes.txt", "x.tiff", "y.bmp", "z.jpeg"]:
        _touch(tmp_path / name)
    found = [os.path.relpath(f.path, tmp_path) for f in walk(tmp_path)]
    assert found == ["a.png", "b.JPG", "x.tiff", "y.bmp", "z.jpeg", "sub/c.webp", "sub/deeper/d.gif"]


def test_hidden_skipped_unless_asked(tmp_path):
    _touch(tmp_path / ".hidden.png")
    _touch(tmp_path / ".cache" / "a.png")
    _touch(tmp_path / "seen.png")
    assert [os.path.basename(f.path) for f in walk(tmp_path)] == ["seen.png"]
    assert len(list(walk(tmp_path, ScanOptions(include_hidden=True)))) == 3


def test_exclude_globs_match_names_and_paths(tmp_path):
    _touch(tmp_path / "keep.png")
    _touch(tmp_path / "thumbs" / "t.png")
    _touch(tmp_path / "raw_1.png")
    options = ScanOptions(exclude=("raw_*", "*/thumbs"))
    assert [os.path.basename(f.path) for f in walk(tmp_path, options)] == ["keep.png"]


def test_symlink_loops_walked_once(tmp_path):
    _touch(tmp_path / "pics" / "a.png")
    os.symlink(tmp_path / "pics", tmp_path / "pics" / "loop")
    os.symlink(tmp_path / "missing.png", tmp_path / "pics" / "dangling.png")
    skipped = []
    found = list(walk(tmp_path / "pics", on_skip=lambda path, reason: skipped.append(path)))
    assert [os.path.basename(f.path) for f in found] == ["a.png"]
    assert skipped == [str(tmp_path / "pics" / "dangling.png")]


def test_a_single_file_root(tmp_path):
    image = _touch(tmp_path / "one.png")
    assert [f.path for f in walk(image)] == [str(image)]
    assert list(walk(_touch(tmp_path / "note.txt"))) == []


def test_folders_named_like_files_are_walked_and_other_files_ignored(tmp_path):
    _touch(tmp_path / "2024.trip" / "a.png")  # a folder whose name has a (non-media) extension
    _touch(tmp_path / "photos.jpg" / "b.png")  # even one named like a picture
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / "README")
    found = [os.path.relpath(f.path, tmp_path) for f in walk(tmp_path)]
    assert found == ["2024.trip/a.png", "photos.jpg/b.png"]


def test_found_files_carry_size_and_mtime_through_symlinked_folders(tmp_path):
    image = _touch(tmp_path / "real" / "a.png", b"12345")
    os.symlink(tmp_path / "real", tmp_path / "link")
    found = list(walk(tmp_path / "link"))
    assert [(f.path, f.size, f.mtime) for f in found] == [(str(tmp_path / "link" / "a.png"), 5, image.stat().st_mtime)]

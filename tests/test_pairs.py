"""Pairs files: separators, column names, relative paths, bad rows, unicode, JSONL; splits and image decoding."""
import json

import numpy as np
import pytest

from conftest import write_image
from indexer.media.preprocess import PreprocessConfig, to_model_input
from retrieval.finetune.errors import PairsError
from retrieval.finetune.images import AUGMENT, EVAL, PairImages
from retrieval.finetune.pairs import (
    detect_format,
    drop_failed_images,
    duplicates_message,
    index_pairs,
    read_pairs,
    split_pairs,
)


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "imgs"
    for i in range(4):
        write_image(folder / f"p{i}.png", seed=i)
    return folder


def test_csv_relative_paths_resolve_against_the_pairs_folder(tmp_path, images):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text('image,caption\nimgs/p0.png,"a dog, running"\nimgs/p1.png,a cat\n', encoding="utf-8")
    parsed = read_pairs(pairs)
    assert parsed.format == "csv" and (parsed.image_column, parsed.caption_column) == ("image", "caption")
    assert [p.image for p in parsed.pairs] == [images / "p0.png", images / "p1.png"]
    assert [p.caption for p in parsed.pairs] == ["a dog, running", "a cat"]
    assert parsed.skipped == () and len(parsed.sha256) == 64


def test_tab_separated_detected_in_a_csv_file_and_tsv_suffix(tmp_path, images):
    body = "filepath\ttitle\textra\nimgs/p0.png\tone, two\tx\nimgs/p1.png\tthree\ty\n"
    for name in ("tabs.csv", "tabs.tsv", "tabs.txt"):
        (tmp_path / name).write_text(body, encoding="utf-8")
        parsed = read_pairs(tmp_path / name)
        assert parsed.format == "tsv"
        assert [p.caption for p in parsed.pairs] == ["one, two", "three"]
        assert parsed.image_column == "filepath" and parsed.caption_column == "title"


def test_column_flags_and_case_insensitive_defaults(tmp_path, images):
    pairs = tmp_path / "p.csv"
    pairs.write_text("Path,Text,alt\nimgs/p0.png,first,other\n", encoding="utf-8")
    assert read_pairs(pairs).pairs[0].caption == "first"
    assert read_pairs(pairs, caption_column="alt").pairs[0].caption == "other"
    with pytest.raises(PairsError, match="no caption column 'nope'"):
        read_pairs(pairs, caption_column="nope")


def test_no_usable_columns_is_a_clear_error(tmp_path):
    pairs = tmp_path / "p.csv"
    pairs.write_text("foo,bar\n1,2\n", encoding="utf-8")
    with pytest.raises(PairsError, match=r"no image column among 'foo', 'bar'.*--image-column"):
        read_pairs(pairs)


def test_headerless_csv_when_the_first_row_is_data(tmp_path, images):
    pairs = tmp_path / "p.csv"
    pairs.write_text(f"{images / 'p0.png'},first\n{images / 'p1.png'},second\n", encoding="utf-8")
    assert [p.caption for p in read_pairs(pairs).pairs] == ["first", "second"]


def test_missing_files_and_bad_rows_are_skipped_and_reported(tmp_path, images):
    pairs = tmp_path / "p.csv"
    pairs.write_text(
        "image,caption\n"
        "imgs/p0.png,good\n"
        "imgs/missing.png,gone\n"
        "imgs/p1.png,\n"
        ",no image\n"
        "imgs/p2.png\n"
        "\n"
        "imgs/p3.png,also good\n",
        encoding="utf-8",
    )
    reported = []
    parsed = read_pairs(pairs, on_skip=reported.append)
    assert [p.caption for p in parsed.pairs] == ["good", "also good"]
    assert [p.row for p in parsed.pairs] == [2, 8]
    assert list(parsed.skipped) == reported
    assert [row.row for row in reported] == [3, 4, 5, 6]
    assert "image not found" in reported[0].reason and "missing.png" in reported[0].reason
    assert "empty caption" in reported[1].reason
    assert str(reported[0]).startswith("line 3: ")


def test_a_file_with_only_bad_rows_is_an_error(tmp_path):
    pairs = tmp_path / "p.csv"
    pairs.write_text("image,caption\nnope.png,x\n", encoding="utf-8")
    with pytest.raises(PairsError, match="no usable pairs.*image not found"):
        read_pairs(pairs)


def test_unicode_captions_and_byte_order_mark(tmp_path, images):
    pairs = tmp_path / "p.csv"
    captions = ["ein Hund läuft 🐕", "猫が寝ている", "café  au\tlait"]
    rows = "".join(f'imgs/p{i}.png,"{caption}"\n' for i, caption in enumerate(captions))
    pairs.write_bytes(("\ufeffimage,caption\n" + rows).encode("utf-8"))
    parsed = read_pairs(pairs)
    assert [p.caption for p in parsed.pairs] == ["ein Hund läuft 🐕", "猫が寝ている", "café au lait"]


def test_non_utf8_file_is_a_clear_error(tmp_path):
    pairs = tmp_path / "p.csv"
    pairs.write_bytes("image,caption\na.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(PairsError, match="not UTF-8"):
        read_pairs(pairs)


def test_jsonl_with_bad_lines(tmp_path, images):
    pairs = tmp_path / "p.jsonl"
    lines = [
        json.dumps({"filepath": "imgs/p0.png", "text": "zero"}),
        "{not json",
        json.dumps(["a", "list"]),
        "",
        json.dumps({"filepath": str(images / "p1.png"), "text": "eins ✓"}, ensure_ascii=False),
        json.dumps({"filepath": "imgs/p2.png"}),
    ]
    pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
    reported = []
    parsed = read_pairs(pairs, on_skip=reported.append)
    assert parsed.format == "jsonl"
    assert [(p.image.name, p.caption) for p in parsed.pairs] == [("p0.png", "zero"), ("p1.png", "eins ✓")]
    assert [row.row for row in reported] == [2, 3, 6]
    assert "not valid JSON" in reported[0].reason and "not a JSON object" in reported[1].reason


def test_json_array_and_format_detection(tmp_path, images):
    pairs = tmp_path / "p.json"
    pairs.write_text(json.dumps([{"image": "imgs/p0.png", "caption": "a"}]), encoding="utf-8")
    assert read_pairs(pairs).pairs[0].caption == "a"
    assert detect_format(tmp_path / "x.data", '{"image": 1}\n') == "jsonl"
    assert detect_format(tmp_path / "x.csv", "image,caption\n") == "csv"


def test_jsonl_without_known_keys(tmp_path):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(json.dumps({"url": "x", "alt": "y"}) + "\n", encoding="utf-8")
    with pytest.raises(PairsError, match="no image column among 'url', 'alt'"):
        read_pairs(pairs)


def test_split_by_image_is_seeded_and_keeps_shared_images_together(tmp_path, images):
    pairs = tmp_path / "p.csv"
    rows = [f"imgs/p{i % 4}.png,caption {i}" for i in range(12)]
    pairs.write_text("image,caption\n" + "\n".join(rows) + "\n", encoding="utf-8")
    parsed = read_pairs(pairs).pairs
    train, held = split_pairs(parsed, 0.25, seed=3)
    assert len({p.image for p in held}) == 1 and len(held) == 3
    assert not {p.image for p in train} & {p.image for p in held}
    assert split_pairs(parsed, 0.25, seed=3) == (train, held)
    assert split_pairs(parsed, 0.0, seed=3) == (list(parsed), [])


def test_index_pairs_deduplicates_images_and_captions(tmp_path, images):
    pairs = tmp_path / "p.csv"
    pairs.write_text("image,caption\nimgs/p0.png,a\nimgs/p0.png,b\nimgs/p1.png,a\n", encoding="utf-8")
    index = index_pairs(read_pairs(pairs).pairs)
    assert len(index.images) == 2 and index.captions == ("a", "b")
    assert index.image_ids.tolist() == [0, 0, 1] and index.caption_ids.tolist() == [0, 1, 0]


def test_unreadable_image_costs_its_rows_only(tmp_path, images):
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    pairs = tmp_path / "p.csv"
    pairs.write_text("image,caption\nimgs/p0.png,a\nimgs/broken.png,b\nimgs/broken.png,c\n", encoding="utf-8")
    parsed = read_pairs(pairs)
    assert len(parsed.pairs) == 3  # it exists; decoding finds it unreadable
    paths = [images / "p0.png", images / "broken.png"]
    store = PairImages(paths, PreprocessConfig(image_size=32))
    failures = store.load(workers=2)
    assert list(failures) == [1] and "image" in failures[1]
    kept, skipped = drop_failed_images(parsed.pairs, {paths[i]: reason for i, reason in failures.items()})
    assert [p.caption for p in kept] == ["a"] and [row.row for row in skipped] == [3, 4]


def test_eval_pixels_equal_the_model_input_and_augment_is_seeded(images):
    from PIL import Image

    preprocess = PreprocessConfig(image_size=32)
    paths = [images / "p0.png", images / "p1.png"]
    store = PairImages(paths, preprocess, mode=EVAL)
    store.load()
    expected = np.stack([to_model_input(Image.open(path), preprocess) for path in paths])
    np.testing.assert_allclose(store.pixels([0, 1]), expected, atol=1e-6)
    augmented = PairImages(paths, preprocess, mode=AUGMENT)
    augmented.load()
    first = augmented.pixels([0, 1], np.random.default_rng(5))
    assert first.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(first, augmented.pixels([0, 1], np.random.default_rng(5)))
    assert not np.array_equal(first, augmented.pixels([0, 1], np.random.default_rng(6)))


def test_repeated_rows_are_left_out_and_listed(tmp_path, images):
    pairs = tmp_path / "p.csv"
    pairs.write_text("image,caption\nimgs/p0.png,a cat\nimgs/p1.png,a cat\nimgs/p0.png,a  cat\n"
                     "imgs/p0.png,a dog\nimgs/../imgs/p0.png,a cat\n", encoding="utf-8")
    parsed = read_pairs(pairs)
    assert [(p.image.name, p.caption) for p in parsed.pairs] == [("p0.png", "a cat"), ("p1.png", "a cat"),
                                                                 ("p0.png", "a dog")]
    assert [(d.row, d.first_row) for d in parsed.duplicates] == [(4, 2), (6, 2)] and parsed.skipped == ()
    message = duplicates_message(parsed)
    assert message.startswith("p.csv: 2 rows repeat") and "line 4 repeats line 2 (p0.png, 'a cat')" in message
    assert duplicates_message(read_pairs(tmp_path / "p.csv", caption_column="caption")) == message
    clean = tmp_path / "clean.csv"
    clean.write_text("image,caption\nimgs/p0.png,a cat\n", encoding="utf-8")
    assert read_pairs(clean).duplicates == () and duplicates_message(read_pairs(clean)) is None

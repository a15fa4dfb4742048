"""Near-duplicates: range search against brute force, grouping, the suggested original, the perceptual
hash, the command (JSON, --move-to) and the review page's API."""
from __future__ import annotations

import json
import os
from itertools import combinations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance
from typer.testing import CliRunner

from cli.app import app
from conftest import clustered_vectors, vector_chunks
from indexer.media.perceptual_hash import hamming, phash_file, phash_image
from indexer.store.library import Library
from indexer.store.vectors import VectorIndex
from retrieval.duplicates import (
    DuplicateItem,
    DuplicateOptions,
    DuplicatesError,
    find_duplicates,
    group_pairs,
    move_duplicates,
    range_pairs,
    suggest_keep,
)

runner = CliRunner()


def brute_force_pairs(vectors: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    scores = vectors @ vectors.T
    return {(a, b) for a, b in zip(*np.nonzero(scores >= threshold)) if a < b}


@pytest.mark.parametrize("spec", ["Flat", "IVF16,Flat"])
def test_range_pairs_match_brute_force(spec):
    vectors = clustered_vectors(3000, 32, clusters=40, spread=0.15, seed=0)
    index = VectorIndex.build(32, spec, vector_chunks(vectors)(), generation=1)
    found = set()
    for a, b, scores in range_pairs(index, vector_chunks(vectors, 700)(), 0.97, nprobe=16):  # every list: exact
        assert np.all(scores >= 0.97) and np.all(a < b)
        found |= set(zip(a.tolist(), b.tolist()))
    truth = brute_force_pairs(vectors, 0.97)
    assert len(truth) > 100 and found == truth


def test_range_pairs_on_an_index_without_range_search_cut_its_top_at_the_threshold():
    vectors = clustered_vectors(500, 16, clusters=10, spread=0.1, seed=1)
    index = VectorIndex.build(16, "HNSW32", vector_chunks(vectors)(), generation=1)
    found = {pair for a, b, _ in range_pairs(index, vector_chunks(vectors)(), 0.995) for pair in zip(a.tolist(), b.tolist())}
    truth = brute_force_pairs(vectors, 0.995)
    assert found <= truth and len(found) >= 0.9 * len(truth)


def test_groups_are_connected_components_with_their_weakest_link():
    groups = sorted(group_pairs([(1, 2, 0.99), (2, 3, 0.95), (7, 8, 0.97), (3, 1, 0.98)]))
    assert groups == [([1, 2, 3], 0.95), ([7, 8], 0.97)]


def test_keep_is_the_largest_then_the_oldest_then_the_heaviest():
    small_old = DuplicateItem(1, "/a/small.jpg", 100, 100, 9_000, 10.0)
    big_new = DuplicateItem(2, "/a/big_new.jpg", 200, 200, 5_000, 30.0)
    big_old = DuplicateItem(3, "/a/big_old.jpg", 200, 200, 5_000, 20.0)
    big_heavy_newer = DuplicateItem(4, "/a/big_heavy.png", 200, 200, 50_000, 40.0)
    big_heavy_as_old = DuplicateItem(5, "/a/big_old.png", 200, 200, 60_000, 20.0)
    assert suggest_keep([small_old, big_new, big_old]).id == 3  # pixels first: the older small one loses
    assert suggest_keep([small_old, big_new, big_old, big_heavy_newer]).id == 3  # a heavier re-encode is newer
    assert suggest_keep([big_old, big_heavy_as_old, big_new]).id == 5  # same age: the heavier


def scene(seed: int, size=(320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        r = int(rng.integers(15, 70))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def test_perceptual_hash_keeps_copies_close_and_other_pictures_far(tmp_path):
    original = scene(0)
    copies = [original.resize((160, 120)), ImageEnhance.Brightness(original).enhance(1.3)]
    original.save(tmp_path / "q30.jpg", quality=30)
    copies.append(Image.open(tmp_path / "q30.jpg"))
    base = phash_image(original)
    assert all(hamming(base, phash_image(copy)) <= 8 for copy in copies)
    others = [phash_image(scene(seed)) for seed in range(1, 9)]
    assert min(hamming(base, other) for other in others) >= 16
    (tmp_path / "broken.jpg").write_bytes(b"nope")
    assert phash_file(str(tmp_path / "broken.jpg")) is None


@pytest.fixture()
def collection(tmp_path, tiny_model_config):
    """Three pictures with copies (a PNG re-encode of a JPEG, a byte-for-byte copy, a brighter copy,
    a smaller copy) and four single pictures, indexed with the tiny model."""
    pics = tmp_path / "pics"
    (pics / "copies").mkdir(parents=True)
    scene(1).save(pics / "one.jpg", quality=95)
    Image.open(pics / "one.jpg").save(pics / "copies" / "one.png")  # heavier, same pixels, a day newer
    os.utime(pics / "copies" / "one.png", (os.stat(pics / "one.jpg").st_mtime + 86400,) * 2)
    scene(2).save(pics / "two.png")
    (pics / "copies" / "two-copy.png").write_bytes((pics / "two.png").read_bytes())
    ImageEnhance.Brightness(scene(2)).enhance(1.2).save(pics / "copies" / "two-bright.png")
    scene(3).save(pics / "three.png")
    scene(3).resize((160, 120)).save(pics / "copies" / "three-small.png")
    for seed in range(10, 14):
        scene(seed).save(pics / f"single{seed}.png")
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config)])
    assert result.exit_code == 0, result.output
    expected = [{str(pics / "one.jpg"), str(pics / "copies" / "one.png")},
                {str(pics / "two.png"), str(pics / "copies" / "two-copy.png"), str(pics / "copies" / "two-bright.png")},
                {str(pics / "three.png"), str(pics / "copies" / "three-small.png")}]
    return pics, db, expected


# every pair is a candidate (a threshold the test controls), the hash alone decides: the random model's
# cosines say nothing here
HASH_DECIDES = DuplicateOptions(threshold=0.01, hash_distance=10, sure_threshold=1.01)


def test_find_duplicates_groups_the_copies_and_suggests_the_original(collection):
    pics, db, expected = collection
    with Library(db, create=False, read_only=True) as library:
        report = find_duplicates(library, HASH_DECIDES)
    assert sorted(({item.path for item in group.items} for group in report.groups), key=sorted) == \
        sorted(expected, key=sorted)
    assert report.pictures == 11 and report.candidate_pairs == 55  # all pairs: 11 * 10 / 2
    keeps = {os.path.basename(next(item.path for item in group.items if item.id == group.keep)) for group in report.groups}
    # one.png and one.jpg have the same pixels: the older (the heavier PNG re-encode is a day newer);
    # two.png and its byte copy: the older (or, written within the clock's resolution, the shorter path);
    # three.png has more pixels than its copy
    assert os.stat(pics / "copies" / "one.png").st_size > os.stat(pics / "one.jpg").st_size
    assert keeps == {"one.jpg", "three.png", "two.png"}
    assert all(group.items[0].id == group.keep for group in report.groups)


def test_an_exact_copy_needs_no_hash_and_vectors_alone_group_every_candidate(collection):
    pics, db, _ = collection
    with Library(db, create=False, read_only=True) as library:
        sure = find_duplicates(library, DuplicateOptions(threshold=0.999999, hash_distance=0, sure_threshold=0.999999))
        loose = find_duplicates(library, DuplicateOptions(threshold=0.01, hash_distance=None))
    same_bytes = {str(pics / "two.png"), str(pics / "copies" / "two-copy.png")}
    assert any({item.path for item in group.items} >= same_bytes for group in sure.groups)
    assert len(loose.groups) == 1 and len(loose.groups[0].items) == 11


def test_bad_options_are_refused(collection):
    _, db, _ = collection
    with Library(db, create=False, read_only=True) as library:
        with pytest.raises(DuplicatesError):
            find_duplicates(library, DuplicateOptions(threshold=1.5))


def test_cli_json_lists_groups_with_keep(collection):
    pics, db, expected = collection
    result = runner.invoke(app, ["duplicates", "--db", str(db), "--json", "--threshold", "0.01", "--hash-distance", "10"])
    assert result.exit_code == 0, result.output
    groups = json.loads(result.stdout)
    for group in groups:
        assert set(group) >= {"items", "keep"}
        assert group["keep"] in {item["id"] for item in group["items"]}
        for item in group["items"]:
            assert set(item) >= {"path", "id", "width", "height", "size", "mtime"}
    found = [{item["path"] for item in group["items"]} for group in groups]
    # with the sure threshold at its default, a random model may join more than the hash would: only check
    # that every real group is inside one found group
    assert all(any(real <= group for group in found) for real in expected)


def test_move_to_moves_the_extra_copies_logs_them_and_never_overwrites(collection, tmp_path):
    pics, db, expected = collection
    target = tmp_path / "review"
    with Library(db, create=False, read_only=True) as library:
        report = find_duplicates(library, HASH_DECIDES)
    blocker = target / "pics" / "copies" / "three-small.png"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"someone else's file")
    moves = move_duplicates(report.groups, target, roots=[str(pics)])
    keeps = {next(item.path for item in group.items if item.id == group.keep) for group in report.groups}
    extra = set().union(*expected) - keeps
    moved_from = {source for source, _ in moves.moved}
    assert moved_from == extra - {str(pics / "copies" / "three-small.png")}
    assert [path for path, _ in moves.skipped] == [str(pics / "copies" / "three-small.png")]
    assert blocker.read_bytes() == b"someone else's file" and (pics / "copies" / "three-small.png").exists()
    for source, destination in moves.moved:
        assert not os.path.exists(source) and os.path.exists(destination)
        assert destination.startswith(str(target / "pics"))
    log = [json.loads(line) for line in moves.log_path.read_text().splitlines()]
    assert {entry["from"] for entry in log} == moved_from and all(entry["kept"] in keeps for entry in log)
    assert all(os.path.exists(path) for path in keeps)


def test_cli_move_to_then_the_next_index_run_drops_the_moved_files(collection, tmp_path, tiny_model_config):
    pics, db, expected = collection
    target = tmp_path / "moved"
    result = runner.invoke(app, ["duplicates", "--db", str(db), "--threshold", "0.01", "--hash-distance", "10",
                                 "--move-to", str(target)])
    assert result.exit_code == 0, result.output
    assert "moved" in result.stderr and (target / "mmsearch-moves.jsonl").exists()
    moved = [json.loads(line)["from"] for line in (target / "mmsearch-moves.jsonl").read_text().splitlines()]
    assert moved and not any(os.path.exists(path) for path in moved)
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config)])
    assert result.exit_code == 0, result.output
    with Library(db, create=False) as library:
        assert library.reads.counts()["items"] == 11 - len(moved)


def test_the_review_page_and_its_api(collection, tiny_model):
    from fastapi.testclient import TestClient

    from retrieval.server import ServerConfig, create_app
    from retrieval.server.engine import SearchEngine, WarmLibrary

    _, db, expected = collection
    engine = SearchEngine(WarmLibrary(db), tiny_model, ServerConfig(db=db))
    try:
        with TestClient(create_app(ServerConfig(db=db), engine=engine), base_url="http://127.0.0.1:8000") as client:
            body = client.get("/api/duplicates", params={"threshold": 0.01, "hash_distance": 10}).json()
            assert body["pictures"] == 11 and body["total_groups"] >= 1
            for group in body["groups"]:
                assert group["items"][0]["id"] == group["keep"] and group["items"][0]["thumb_url"].startswith("/api/items/")
            page = client.get("/duplicates")
            assert page.status_code == 200 and "duplicates.js" in page.text
            assert client.get("/api/duplicates", params={"threshold": 2}).status_code == 422
    finally:
        engine.close()


def test_pairs_are_counted_once(collection):
    _, db, _ = collection
    with Library(db, create=False, read_only=True) as library:
        index = library.vectors_for_search()
        pairs = [pair for a, b, _ in range_pairs(index, library.reads.iter_vectors(index.dim), 0.01)
                 for pair in zip(a.tolist(), b.tolist())]
    assert len(pairs) == len(set(pairs)) == len(list(combinations(range(11), 2)))

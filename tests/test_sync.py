"""Index runs on real files, a real SQLite database and a real FAISS index, with the tiny model.

The tests taking `backend` run twice: on SQLite and on a real PostgreSQL (conftest.postgres_server)."""
import os
import sqlite3

import numpy as np
import pytest

from conftest import open_library, write_image
from indexer.errors import IndexLockedError, ModelMismatchError
from indexer.pipeline.embed import PipelineConfig
from indexer.pipeline.sync import IndexConfig, forget_paths, index_folders
from indexer.store.library import Library
from indexer.store.vectors import VectorIndex
from retrieval.media import media_for


def _index(library, model, *roots, **kwargs):
    return index_folders(library, media_for(model), IndexConfig(roots=tuple(str(r) for r in roots),
                                                     pipeline=PipelineConfig(batch_size=2, workers=2), **kwargs))


def _live_rows(library):
    with library.db.reading() as session:
        return session.connection().exec_driver_sql(
            "select count(*) from items join vectors on vectors.item_id = items.id").scalar()


def _paths(library):
    with library.db.reading() as session:
        return [path for path, in session.connection().exec_driver_sql("select path from items")]


def _assert_consistent(library):
    saved = VectorIndex.load(library.vectors_path())
    assert saved is not None and saved.generation == library.generation
    assert saved.ntotal == _live_rows(library)


def test_rename_touch_delete_add(tmp_path, tiny_model, backend):
    pics = tmp_path / "pics"
    for i in range(3):
        write_image(pics / f"img{i}.png", seed=i)
    library = open_library(tmp_path / "db", backend)
    first = _index(library, tiny_model, pics)
    assert (first.embedded, first.reused, first.removed, first.failed) == (3, 0, 0, 0)
    _assert_consistent(library)

    second = _index(library, tiny_model, pics)
    assert (second.embedded, second.unchanged) == (0, 3)

    os.rename(pics / "img0.png", pics / "renamed.png")  # same bytes, new path: reuse the vector
    write_image(pics / "img1.png", seed=101)  # changed content: re-embed
    os.utime(pics / "img1.png", (1, 1))
    os.remove(pics / "img2.png")  # gone: leaves the index
    write_image(pics / "new.png", seed=7)  # new: embed
    third = _index(library, tiny_model, pics)
    assert (third.embedded, third.reused, third.removed, third.unchanged, third.failed) == (2, 1, 2, 0, 0)
    paths = sorted(os.path.basename(p) for p in _paths(library))
    assert paths == ["img1.png", "new.png", "renamed.png"]
    _assert_consistent(library)


def test_renamed_file_keeps_its_vector_and_search_finds_new_path(tmp_path, tiny_model, backend):
    from retrieval.query.search import rank

    pics = tmp_path / "pics"
    for i in range(3):
        write_image(pics / f"img{i}.png", seed=i)
    library = open_library(tmp_path / "db", backend)
    _index(library, tiny_model, pics)
    query = tiny_model.image.embed_images([__import__("PIL.Image").Image.open(pics / "img1.png")])
    os.rename(pics / "img1.png", pics / "moved.png")
    report = _index(library, tiny_model, pics)
    assert report.embedded == 0 and report.reused == 1
    best = rank(library, query, top=1)[0][0]
    assert best.path == str(pics / "moved.png")
    assert best.score == pytest.approx(1.0, abs=1e-5)


def test_bad_files_are_reported_and_skipped(tmp_path, tiny_model, backend):
    pics = tmp_path / "pics"
    write_image(pics / "good.png", seed=1)
    write_image(pics / "good2.jpg", seed=2, fmt="JPEG")
    (pics / "zero.jpg").write_bytes(b"")
    (pics / "text.png").write_text("this is not an image")
    truncated = (pics / "good2.jpg").read_bytes()[:200]
    (pics / "truncated.jpg").write_bytes(truncated)
    errors = []
    library = open_library(tmp_path / "db", backend)
    report = index_folders(library, media_for(tiny_model), IndexConfig(roots=(str(pics),)),
                           on_file_error=lambda p, r: errors.append((os.path.basename(p), r)))
    assert report.embedded == 2 and report.failed == 3
    reasons = dict(errors)
    assert set(reasons) == {"zero.jpg", "text.png", "truncated.jpg"}
    assert "empty" in reasons["zero.jpg"] and "not an image" in reasons["text.png"]
    assert library.reads.counts() == {"rows": 5, "items": 2, "vectors": 2, "failed": 3}
    _assert_consistent(library)
    # an unchanged bad file is not retried; a fixed one is
    write_image(pics / "zero.jpg", seed=3, fmt="JPEG")
    again = _index(library, tiny_model, pics)
    assert (again.embedded, again.failed, again.unchanged) == (1, 0, 4)
    assert library.reads.counts()["failed"] == 2


def test_interrupted_run_keeps_finished_batches_and_resumes(tmp_path, tiny_model, backend):
    pics = tmp_path / "pics"
    for i in range(10):
        write_image(pics / f"img{i:02d}.png", seed=i)

    class Stop(Exception):
        pass

    def stop_after_two_batches(event):
        if event.phase == "embed" and event.done >= 4:
            raise Stop

    library = open_library(tmp_path / "db", backend)
    with pytest.raises(Stop):
        index_folders(library, media_for(tiny_model),
                      IndexConfig(roots=(str(pics),), pipeline=PipelineConfig(batch_size=2, workers=1)),
                      on_progress=stop_after_two_batches)
    # the two reported batches survive, plus the one being written when the run stopped (written
    # behind the embedding: it is finished, never left half done)
    committed = library.reads.counts()["items"]
    assert committed in (4, 6)
    resumed = _index(library, tiny_model, pics)
    assert (resumed.embedded, resumed.unchanged, resumed.removed) == (10 - committed, committed, 0)
    _assert_consistent(library)


def test_stale_vector_file_is_rebuilt_for_search(tmp_path, tiny_model, backend):
    from retrieval.query.search import rank

    pics = tmp_path / "pics"
    for i in range(4):
        write_image(pics / f"img{i}.png", seed=i)
    library = open_library(tmp_path / "db", backend)
    _index(library, tiny_model, pics)
    library.vectors_path().write_bytes(b"corrupt")
    hits = rank(library, tiny_model.text.embed_texts(["anything"]), top=10)[0]
    assert len(hits) == 4


def test_forget_folder(tmp_path, tiny_model, backend):
    pics = tmp_path / "pics"
    write_image(pics / "keep.png", seed=1)
    write_image(pics / "old" / "a.png", seed=2)
    write_image(pics / "old" / "b.png", seed=3)
    write_image(pics / "older.png", seed=4)  # shares a prefix with "old", must stay
    library = open_library(tmp_path / "db", backend)
    _index(library, tiny_model, pics)
    assert forget_paths(library, [str(pics / "old")]) == 2
    assert library.reads.counts()["items"] == 2
    _assert_consistent(library)


def test_model_mismatch_is_refused(tmp_path, tiny_model, tiny_model_config):
    import json

    from retrieval.models.encoders import load_model

    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    library = Library(tmp_path / "db")
    _index(library, tiny_model, pics)
    other_cfg = json.loads(tiny_model_config.read_text())
    other_cfg["seed"] = 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps(other_cfg))
    with pytest.raises(ModelMismatchError, match="reindex"):
        _index(library, load_model(str(other), device="cpu"), pics)


def test_second_writer_is_refused(tmp_path):
    library = Library(tmp_path / "db")
    with library.lock():
        with pytest.raises(IndexLockedError, match="--wait"):
            with Library(tmp_path / "db").lock(wait_s=0.3):
                pass
    with library.lock():  # released after the block
        pass


def test_index_type_switches_with_setting(tmp_path, tiny_model):
    pics = tmp_path / "pics"
    for i in range(50):
        write_image(pics / f"img{i:02d}.png", seed=i, size=(32, 32))
    library = Library(tmp_path / "db")
    _index(library, tiny_model, pics, index_type="hnsw")
    assert VectorIndex.load(library.vectors_path()).spec == "HNSW32"
    os.remove(pics / "img00.png")
    _index(library, tiny_model, pics)  # HNSW cannot remove: rebuilt, still consistent
    _assert_consistent(library)
    _index(library, tiny_model, pics, index_type="flat")
    assert VectorIndex.load(library.vectors_path()).spec == "Flat"
    _assert_consistent(library)


def test_write_behind_keeps_order_and_finishes_the_write_in_flight():
    import threading
    import time

    from indexer.pipeline.embed import write_behind

    written, writer_threads = [], set()

    def write(batch):
        time.sleep(0.01)
        writer_threads.add(threading.current_thread().name)
        written.append(batch)
        return sum(batch)

    assert list(write_behind(([n, n] for n in range(5)), write)) == [([n, n], 2 * n) for n in range(5)]
    assert writer_threads and threading.current_thread().name not in writer_threads

    class Stop(Exception):
        pass

    def producer():
        yield [1]
        yield [2]
        raise Stop

    written.clear()
    with pytest.raises(Stop):
        for _ in write_behind(producer(), write):
            pass
    assert written == [[1], [2]]  # the batch in flight was written, not dropped

    def failing_write(batch):
        if batch == [2]:
            raise OSError("disk full")
        return 0

    with pytest.raises(OSError, match="disk full"):
        list(write_behind(([n] for n in range(4)), failing_write))


def test_copies_met_in_later_batches_of_one_run_reuse_the_first_vector(tmp_path, tiny_model):
    """Batches of 2: most copies of a.png are read after its batch was written (the look-ahead and
    the write one batch behind read a few before and embed them too), and are not embedded again."""
    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    write_image(pics / "b.png", seed=2)
    copies = 20
    for n in range(copies):
        (pics / f"z{n:02d}.png").write_bytes((pics / "a.png").read_bytes())
    library = Library(tmp_path / "db")
    report = index_folders(library, media_for(tiny_model), IndexConfig(roots=(str(pics),),
                                                            pipeline=PipelineConfig(batch_size=2, workers=1)))
    assert report.embedded + report.reused == copies + 2 and report.reused >= copies // 2, report
    with sqlite3.connect(tmp_path / "db" / "mmsearch.db") as connection:
        blobs = dict(connection.execute("select path, vector from items join vectors on vectors.item_id = items.id"))
    assert len(blobs) == copies + 2
    first = np.frombuffer(blobs[str(pics / "a.png")], dtype=np.float32)
    same = [np.array_equal(np.frombuffer(blobs[str(pics / f"z{n:02d}.png")], dtype=np.float32), first) for n in range(copies)]
    assert sum(same) >= report.reused  # a reused vector is the very bytes; a copy embedded again is within rounding
    assert all(np.allclose(np.frombuffer(blobs[str(pics / f"z{n:02d}.png")], dtype=np.float32), first, atol=1e-5)
               for n in range(copies))

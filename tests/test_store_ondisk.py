"""The on-disk IVF-PQ index against numpy brute force on seeded data; crash-safe writes; reopening.

Specs use 4-bit PQ (16 centroids per sub-quantizer) so that a few thousand vectors train it; every
path (OPQ, an HNSW coarse quantizer, two-level k-means, several shards, the delta, merges) is
checked with all lists probed and every candidate re-ranked, where the answer must be exact: the
same ids as brute force over the float16-rounded vectors the index re-ranks with.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.store import ivf_training, ondisk
from indexer.store.ondisk import OnDiskIndex
from indexer.store.vectors import SearchTuning

SPEC = "IVF16,PQ8x4"
DIM = 32


def _data(n, seed=0, dim=DIM, centres=40):
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dim)).astype(np.float32)
    vectors = means[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _chunks(ids, vectors, size=700):
    return [(ids[start:start + size], vectors[start:start + size]) for start in range(0, len(ids), size)]


def _exact(ids, vectors, queries, k):
    """Brute force over the vectors as the index stores them for re-ranking (float16)."""
    rounded = vectors.astype(np.float16).astype(np.float32)
    scores = queries @ rounded.T
    order = np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :k]
    return ids[order], np.take_along_axis(scores, order, axis=1)


def _full(index):
    import faiss

    return SearchTuning(nprobe=faiss.extract_index_ivf(index.index).nlist, rerank=100_000)


def _build(tmp_path, n=3000, spec=SPEC, seed=0, **kwargs):
    vectors = _data(n, seed)
    ids = np.arange(n, dtype=np.int64) * 3 + 5  # item ids are not positions
    index = OnDiskIndex.build(DIM, spec, _chunks(ids, vectors), generation=4, folder=tmp_path / "od", **kwargs)
    index.save()
    return index, ids, vectors


@pytest.mark.parametrize("spec, kwargs", [
    ("IVF16,PQ8x4", {}),
    ("IVF16,PQ8x4", {"shard_size": 1000}),  # three shards merged
    ("OPQ8_16,IVF16,PQ8x4", {}),  # rotated and reduced
    ("IVF32_HNSW32,PQ8x4", {}),  # lists found through an HNSW graph
])
def test_search_matches_brute_force(tmp_path, monkeypatch, spec, kwargs):
    monkeypatch.setattr(ivf_training, "OPQ_ITERATIONS", 5)  # faiss's 50 take minutes on a few thousand vectors here
    index, ids, vectors = _build(tmp_path, spec=spec, **kwargs)
    queries = _data(40, seed=9)
    assert index.ntotal == len(ids)
    scores, labels = index.search(queries, 10, tuning=_full(index))
    truth, truth_scores = _exact(ids, vectors, queries, 10)
    np.testing.assert_array_equal(labels, truth)
    np.testing.assert_allclose(scores, truth_scores, atol=1e-5)
    # re-ranking is what recovers the neighbours that coarse 4-bit codes misorder
    def recall(rerank):
        labels = index.search(queries, 10, tuning=SearchTuning(nprobe=_full(index).nprobe, rerank=rerank))[1]
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(labels, truth)])

    assert recall(10) < 0.9 and recall(500) >= 0.95


def test_two_level_kmeans_for_many_lists(tmp_path, monkeypatch):
    monkeypatch.setattr(ivf_training, "TWO_LEVEL_FROM", 64)
    index, ids, vectors = _build(tmp_path, n=4000, spec="IVF64,PQ8x4")
    centroids = index._ivf.quantizer.reconstruct_n(0, 64)
    assert len(np.unique(centroids.round(4), axis=0)) == 64
    queries = _data(30, seed=3)
    _, labels = index.search(queries, 5, tuning=_full(index))
    np.testing.assert_array_equal(labels, _exact(ids, vectors, queries, 5)[0])


def test_allowed_ids_restrict_results(tmp_path):
    index, ids, vectors = _build(tmp_path)
    queries = _data(20, seed=4)
    allowed = ids[::7]
    _, labels = index.search(queries, 10, allowed_ids=allowed, tuning=_full(index))
    np.testing.assert_array_equal(labels, _exact(allowed, vectors[::7], queries, 10)[0])


def test_fewer_candidates_than_k_pad_with_minus_one(tmp_path):
    index, ids, _ = _build(tmp_path)
    _, labels = index.search(_data(3, seed=5), 10, allowed_ids=ids[:4], tuning=_full(index))
    assert (labels[:, :4] >= 0).all() and (labels[:, 4:] == -1).all()


@pytest.mark.parametrize("compact", [False, True])
def test_add_remove_replace_then_reopen(tmp_path, monkeypatch, compact):
    """Updates go to the delta (or, past its limit, into new lists); answers stay exact and survive a reopen."""
    if compact:
        monkeypatch.setattr(ondisk, "COMPACT_MIN", 10)
        monkeypatch.setattr(ondisk, "COMPACT_SHARE", 0.0)
    index, ids, vectors = _build(tmp_path)
    current = dict(zip(ids.tolist(), vectors))
    fresh = _data(300, seed=11)
    removed = ids[100:400]
    index.remove(removed)
    for item_id in removed.tolist():
        del current[item_id]
    new_ids = np.arange(100_000, 100_200, dtype=np.int64)
    index.add(new_ids, fresh[:200])
    changed = ids[[0, 5, 2000]]  # replaced vectors of items still in the lists
    index.add(changed, fresh[200:203])
    current.update(zip(new_ids.tolist(), fresh[:200]))
    current.update(zip(changed.tolist(), fresh[200:203]))
    readded = removed[:2]  # an id removed, then given again (SQLite may reuse the highest id)
    index.add(readded, fresh[203:205])
    current.update(zip(readded.tolist(), fresh[203:205]))
    index.generation = 5
    index.save()
    assert bool(index.delta_size) is not compact
    for opened in (index, OnDiskIndex.load(tmp_path / "od")):
        assert opened.ntotal == len(current) and opened.generation == 5
        assert sorted(opened.ids().tolist()) == sorted(current)
        live_ids = np.array(sorted(current), dtype=np.int64)
        live = np.stack([current[item_id] for item_id in live_ids.tolist()])
        queries = np.concatenate([_data(20, seed=12), fresh[198:205]])
        _, labels = opened.search(queries, 10, tuning=_full(opened))
        np.testing.assert_array_equal(labels, _exact(live_ids, live, queries, 10)[0])
    # and once more through a merge (a removed id re-added after its lists were rewritten)
    monkeypatch.setattr(ondisk, "COMPACT_MIN", 1)
    monkeypatch.setattr(ondisk, "COMPACT_SHARE", 0.0)
    opened.remove(new_ids[:50])
    opened.add(new_ids[:1], fresh[250:251])
    for item_id in new_ids[1:50].tolist():
        del current[item_id]
    current[int(new_ids[0])] = fresh[250]
    opened.save()
    again = OnDiskIndex.load(tmp_path / "od")
    live_ids = np.array(sorted(current), dtype=np.int64)
    live = np.stack([current[item_id] for item_id in live_ids.tolist()])
    assert again.ntotal == len(current) and again.delta_size == 0
    queries = np.concatenate([_data(10, seed=13), fresh[250:251]])
    _, labels = again.search(queries, 10, tuning=_full(again))
    np.testing.assert_array_equal(labels, _exact(live_ids, live, queries, 10)[0])


def test_segments_are_merged_past_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(ondisk, "COMPACT_MIN", 1)
    monkeypatch.setattr(ondisk, "COMPACT_SHARE", 0.0)
    monkeypatch.setattr(ondisk, "MAX_SEGMENTS", 2)
    index, ids, vectors = _build(tmp_path)
    current = dict(zip(ids.tolist(), vectors))
    for round_number in range(3):
        fresh = _data(20, seed=20 + round_number)
        index.remove(ids[round_number * 10:round_number * 10 + 5])
        for item_id in ids[round_number * 10:round_number * 10 + 5].tolist():
            current.pop(item_id, None)
        new_ids = np.arange(50_000 + 100 * round_number, 50_000 + 100 * round_number + 20, dtype=np.int64)
        index.add(new_ids, fresh)
        current.update(zip(new_ids.tolist(), fresh))
        index.save()
        assert len(index.files.segments) <= 2
    reopened = OnDiskIndex.load(tmp_path / "od")
    live_ids = np.array(sorted(current), dtype=np.int64)
    live = np.stack([current[item_id] for item_id in live_ids.tolist()])
    queries = _data(20, seed=30)
    _, labels = reopened.search(queries, 10, tuning=_full(reopened))
    np.testing.assert_array_equal(labels, _exact(live_ids, live, queries, 10)[0])
    names = {path.name for path in (tmp_path / "od").iterdir()}
    assert names == reopened.files.names() | {ondisk.MANIFEST}  # nothing left over


def test_reopens_in_a_fresh_process_and_from_a_moved_folder(tmp_path):
    index, ids, vectors = _build(tmp_path)
    queries = _data(5, seed=6)
    expected = index.search(queries, 10, tuning=_full(index))[1]
    index.close()
    moved = tmp_path / "elsewhere"
    (tmp_path / "od").rename(moved)  # the lists' path recorded inside the index file no longer exists
    np.save(tmp_path / "queries.npy", queries)
    code = (
        "import sys, numpy as np\n"
        "from indexer.store.ondisk import OnDiskIndex\n"
        "from indexer.store.vectors import SearchTuning\n"
        f"index = OnDiskIndex.load({str(moved)!r})\n"
        f"queries = np.load({str(tmp_path / 'queries.npy')!r})\n"
        "labels = index.search(queries, 10, tuning=SearchTuning(nprobe=16, rerank=100000))[1]\n"
        "np.save(sys.argv[1], labels)\n"
    )
    out = tmp_path / "labels.npy"
    completed = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parent.parent)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == ""  # faiss's printf()s stay out of stdout
    np.testing.assert_array_equal(np.load(out), expected)


def test_build_and_merge_print_nothing_on_stdout(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(ondisk, "COMPACT_MIN", 1)
    monkeypatch.setattr(ondisk, "COMPACT_SHARE", 0.0)
    index, ids, vectors = _build(tmp_path, shard_size=1000)
    index.add(np.array([10**6]), vectors[:1])
    index.save()
    assert capfd.readouterr().out == ""


def test_an_interrupted_save_leaves_the_previous_state(tmp_path, monkeypatch):
    index, ids, vectors = _build(tmp_path)
    before = json.loads((tmp_path / "od" / ondisk.MANIFEST).read_text())
    index.remove(ids[:10])
    index.generation = 5
    real_replace = os.replace

    def crash_on_manifest(src, dst):
        if str(dst).endswith(ondisk.MANIFEST):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(ondisk.StoreError, match="No space left"):
        index.save()
    monkeypatch.setattr(os, "replace", real_replace)
    reopened = OnDiskIndex.load(tmp_path / "od")
    assert json.loads((tmp_path / "od" / ondisk.MANIFEST).read_text()) == before
    assert (reopened.generation, reopened.ntotal) == (4, len(ids))
    reopened.save()  # the next save clears what the interrupted one left
    names = {path.name for path in (tmp_path / "od").iterdir()}
    assert names == reopened.files.names() | {ondisk.MANIFEST}


def test_a_failed_build_leaves_the_committed_index_alone(tmp_path):
    index, ids, vectors = _build(tmp_path)
    files_before = sorted(path.name for path in (tmp_path / "od").iterdir())

    def broken_chunks():
        yield ids[:2000], vectors[:2000]
        raise OSError(5, "Input/output error")

    with pytest.raises(OSError):
        OnDiskIndex.build(DIM, SPEC, broken_chunks(), generation=9, folder=tmp_path / "od")
    assert sorted(path.name for path in (tmp_path / "od").iterdir()) == files_before
    assert OnDiskIndex.load(tmp_path / "od").generation == 4


def test_unreadable_folders_load_as_none(tmp_path):
    assert OnDiskIndex.load(tmp_path / "missing") is None
    index, _, _ = _build(tmp_path)
    index.close()
    (tmp_path / "od" / index.files.segments[0][1]).write_bytes(b"short")  # exact rows truncated
    assert OnDiskIndex.load(tmp_path / "od") is None
    (tmp_path / "od" / ondisk.MANIFEST).write_text("{not json")
    assert OnDiskIndex.load(tmp_path / "od") is None


def test_out_of_order_chunks_are_refused(tmp_path):
    vectors = _data(3000)
    ids = np.arange(3000, dtype=np.int64)[::-1].copy()
    with pytest.raises(ValueError, match="ascending"):
        OnDiskIndex.build(DIM, SPEC, _chunks(ids, vectors), generation=1, folder=tmp_path / "od")
    assert not list((tmp_path / "od").iterdir())


def test_ondisk_spec_by_size():
    assert ondisk.ondisk_spec(10_000_000, 512) == "OPQ64_256,IVF16384,PQ64"
    assert ondisk.ondisk_spec(1_000_000, 512) == "OPQ64_256,IVF4096,PQ64"
    assert ondisk.ondisk_spec(1_000_000_000, 768) == "OPQ64_256,IVF131072_HNSW32,PQ64"
    assert ondisk.ondisk_spec(200_000, 64) == "OPQ16_64,IVF2048,PQ16"


def test_autotune_deepens_the_rerank_where_nprobe_alone_cannot_reach_the_target(tmp_path):
    """With codes too coarse to rank the neighbours (1 byte a vector), recall is bound by the re-rank
    depth, not nprobe: the tuner raises the depth with nprobe, cheapest pair first, skips pairs no
    larger than one that failed, and the index keeps and uses what it chose."""
    from indexer.store.autotune import TuneConfig, recall_at_k, tune_index

    index, ids, vectors = _build(tmp_path, n=8000, spec="IVF16,PQ2x4")
    config = TuneConfig(queries=200, timed_queries=5, target_latency_ms=None)
    result = tune_index(index, lambda: _chunks(ids, vectors), config)
    assert result.reached and result.rerank > 100, result.trials
    pairs = [(trial["nprobe"], trial["rerank"]) for trial in result.trials]
    assert pairs[0][1] == 100 and all(trial["recall"] < 0.965 for trial in result.trials[:-1])
    failed = pairs[:-1]
    for number, (nprobe, rerank) in enumerate(pairs):  # never a pair no larger in both than an earlier miss
        assert not any(nprobe <= a and rerank <= b for a, b in failed[:number]), pairs
    assert "rerank=" in result.status_line() and index.tuning.rerank == result.rerank
    index.save()
    reopened = OnDiskIndex.load(tmp_path / "od")
    assert reopened.tuning == index.tuning
    queries = vectors[:200] + 0.02
    truth, _ = _exact(ids, vectors, queries, 10)
    assert recall_at_k(reopened.search(queries, 10)[1], truth) >= 0.94  # fresh queries, the stored setting
    assert recall_at_k(reopened.search(queries, 10, tuning=SearchTuning(nprobe=16, rerank=100))[1], truth) < 0.9

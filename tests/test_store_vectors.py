"""Every index type against numpy brute force on seeded unit vectors (faiss contrib's habit)."""
import json

import numpy as np
import pytest

from indexer.store.vectors import SearchTuning, VectorIndex, choose_index_spec, sidecar_path


def _unit(rng, n, dim):
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _clustered(rng, n, dim, centres=50):
    """Unit vectors around a few centres: closer to real embeddings than uniform noise."""
    means = _unit(rng, centres, dim)
    vectors = means[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32) / np.sqrt(dim)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _brute_force(data, queries, k):
    scores = queries @ data.T
    return np.argsort(-scores, axis=1)[:, :k]


def _recall_at_k(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


def test_choose_index_spec_by_size():
    assert choose_index_spec(10) == "Flat"
    assert choose_index_spec(99_999) == "Flat"
    assert choose_index_spec(100_000) == "IVF1024,SQfp16"
    assert choose_index_spec(1_000_000) == "IVF4096,SQfp16"  # fp16 storage: half the memory, same recall
    assert choose_index_spec(5000, "hnsw") == "HNSW32"
    assert choose_index_spec(5000, "ivf") == "IVF128,SQfp16"
    assert choose_index_spec(5000, "flat") == "Flat"
    assert choose_index_spec(5000, "IVF64,SQ8") == "IVF64,SQ8"


@pytest.mark.parametrize("spec, min_recall", [("Flat", 1.0), ("IVF64,Flat", 0.9), ("HNSW32", 0.9),
                                               ("IVF64,SQfp16", 0.9), ("IVF64,SQ8", 0.9)])
def test_index_types_match_brute_force(spec, min_recall):
    rng = np.random.default_rng(0)
    dim, k = 64, 10
    both = _clustered(rng, 6100, dim)  # queries come from the same distribution as the data
    data, queries = both[:6000], both[6000:]
    ids = np.arange(1000, 1000 + len(data), dtype=np.int64)  # item ids are not positions
    chunks = [(ids[i:i + 2000], data[i:i + 2000]) for i in range(0, len(data), 2000)]
    index = VectorIndex.build(dim, spec, chunks, generation=7)
    assert index.ntotal == len(data)
    scores, labels = index.search(queries, k)
    truth = ids[_brute_force(data, queries, k)]
    recall = _recall_at_k(labels, truth)
    print(f"{spec}: recall@{k} = {recall:.3f}")
    assert recall >= min_recall
    if spec == "Flat":
        np.testing.assert_array_equal(labels, truth)
        np.testing.assert_allclose(scores, np.sort(queries @ data.T, axis=1)[:, ::-1][:, :k], atol=1e-5)


@pytest.mark.parametrize("spec", ["Flat", "IVF16,Flat", "HNSW32"])
def test_selector_restricts_results(spec):
    rng = np.random.default_rng(2)
    data = _unit(rng, 2000, 32)
    ids = np.arange(len(data), dtype=np.int64)
    index = VectorIndex.build(32, spec, [(ids, data)], generation=1)
    allowed = ids[::7]
    _, labels = index.search(data[:5], 5, allowed_ids=allowed)
    assert set(labels[labels >= 0].ravel()) <= set(allowed.tolist())


@pytest.mark.parametrize("spec", ["Flat", "IVF8,Flat", "IVF8,SQfp16"])
def test_remove_and_add_keep_ids(tmp_path, spec):
    """After removals and additions every vector still answers with its own id (an id map over IVF
    lost the alignment of its ids on removal: each later hit named another item)."""
    rng = np.random.default_rng(3)
    data = _unit(rng, 500, 16)
    ids = np.arange(10, 510, dtype=np.int64)
    index = VectorIndex.build(16, spec, [(ids, data)], generation=1)
    index.remove([10, 11, 12])
    assert index.ntotal == 497
    _, labels = index.search(data[0], 1)
    assert labels[0, 0] != 10
    tuning = SearchTuning(nprobe=8)  # every list: exact apart from fp16 rounding
    _, labels = index.search(data[3:], 1, tuning=tuning)
    np.testing.assert_array_equal(labels[:, 0], ids[3:])
    index.add(np.array([10], dtype=np.int64), data[:1])
    index.remove([400])
    _, labels = index.search(data, 1, tuning=tuning)
    expected = ids.copy()
    expected[[1, 2, 390]] = -1
    keep = expected >= 0
    np.testing.assert_array_equal(labels[keep, 0], expected[keep])
    assert sorted(index.ids().tolist()) == sorted(expected[keep].tolist())
    index.save(tmp_path / "v.faiss")
    for mmap in (False, True):
        _, labels = VectorIndex.load(tmp_path / "v.faiss", mmap=mmap).search(data, 1, tuning=tuning)
        np.testing.assert_array_equal(labels[keep, 0], expected[keep])


def test_an_id_map_over_ivf_from_an_older_version_is_converted_or_rebuilt(tmp_path):
    """Files written with an id map over IVF: used (ids moved into the lists) while no removal ever
    misaligned them; rebuilt (load answers None) once one has."""
    import faiss

    rng = np.random.default_rng(5)
    data = _unit(rng, 400, 16)
    ids = np.arange(100, 500, dtype=np.int64)

    def old_file(name, remove):
        old = faiss.IndexIDMap2(faiss.index_factory(16, "IVF4,Flat", faiss.METRIC_INNER_PRODUCT))
        old.train(data)
        old.add_with_ids(data, ids)
        if remove:
            old.remove_ids(np.array([100, 101], dtype=np.int64))
        path = tmp_path / name
        faiss.write_index(old, str(path))
        sidecar_path(path).write_text(json.dumps({"spec": "IVF4,Flat", "generation": 3, "ntotal": int(old.ntotal), "dim": 16}))
        return path

    consistent = old_file("ok.faiss", remove=False)
    for mmap in (False, True):
        loaded = VectorIndex.load(consistent, mmap=mmap)
        _, labels = loaded.search(data, 1, tuning=SearchTuning(nprobe=4))
        np.testing.assert_array_equal(labels[:, 0], ids)
    loaded = VectorIndex.load(consistent)
    loaded.remove([100])
    _, labels = loaded.search(data[1:], 1, tuning=SearchTuning(nprobe=4))
    np.testing.assert_array_equal(labels[:, 0], ids[1:])
    assert VectorIndex.load(old_file("misaligned.faiss", remove=True)) is None


def test_save_is_atomic_and_loads_back(tmp_path):
    rng = np.random.default_rng(4)
    data = _unit(rng, 100, 8)
    index = VectorIndex.build(8, "Flat", [(np.arange(100, dtype=np.int64), data)], generation=5)
    path = tmp_path / "vectors.faiss"
    index.save(path)
    assert not list(tmp_path.glob("*.tmp"))
    loaded = VectorIndex.load(path)
    assert (loaded.ntotal, loaded.generation, loaded.spec) == (100, 5, "Flat")
    path.write_bytes(b"truncated")
    assert VectorIndex.load(path) is None  # unreadable -> rebuilt by the caller, never trusted


@pytest.mark.parametrize("spec", ["IVF32,SQfp16", "IVF32,SQ8"])
def test_scalar_quantized_storage_round_trips_through_save_and_load(tmp_path, spec):
    """SQ storage saves, reads and maps back to the same index: same results, same tuning, smaller file."""
    from indexer.store.vectors import SearchTuning

    rng = np.random.default_rng(6)
    data = _clustered(rng, 3000, 64, centres=30)
    ids = np.arange(500, 3500, dtype=np.int64)
    index = VectorIndex.build(64, spec, [(ids[:1500], data[:1500]), (ids[1500:], data[1500:])], generation=9)
    index.tuning = SearchTuning(nprobe=8)
    index.tuning_report = {"value": 8, "status": "nprobe=8: ..."}
    path = tmp_path / "vectors.faiss"
    index.save(path)
    flat = tmp_path / "flat.faiss"
    VectorIndex.build(64, "IVF32,Flat", [(ids, data)], generation=9).save(flat)
    assert path.stat().st_size < (0.6 if spec.endswith("fp16") else 0.35) * flat.stat().st_size
    expected = index.search(data[:40], 10)
    for mmap in (False, True):
        loaded = VectorIndex.load(path, mmap=mmap)
        assert (loaded.spec, loaded.generation, loaded.ntotal, loaded.dim) == (spec, 9, 3000, 64)
        assert loaded.tuning == SearchTuning(nprobe=8) and loaded.tuning_report == index.tuning_report
        for got, want in zip(loaded.search(data[:40], 10), expected):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.sort(loaded.ids()), ids)


def test_ivf_trains_on_a_sample_of_the_whole_collection_not_its_first_folders(tmp_path):
    """Items stored folder by folder: the IVF lists must cover the last folder's look too."""
    from indexer.store.library import Library
    from indexer.store.records import ModelInfo, NewItem, single_vector
    from indexer.store.vectors import training_sample_size

    rng = np.random.default_rng(3)
    dim, per_folder = 16, 1500
    first = _clustered(rng, per_folder, dim, centres=8) + 0.0
    second = -first[rng.permutation(per_folder)]  # the opposite half of the sphere
    rows = [NewItem(path=f"/a/{n}.jpg" if n < per_folder else f"/b/{n}.jpg", size=1, mtime=1.0, content_hash=str(n),
                    width=1, height=1, format="JPEG", vectors=single_vector(vector), reuse_from=None, error=None, taken_at=None)
            for n, vector in enumerate(np.concatenate([first, second]))]
    with Library(tmp_path / "db") as library:
        library.db.bind_model(ModelInfo("m", "w", dim, "f"))
        run_id = library.runs.start("index", ["/a", "/b"])
        for start in range(0, len(rows), 500):
            library.items.write_batch(rows[start:start + 500], run_id)
        library.set_index_type("IVF32,Flat")
        stream = library.reads.iter_vectors  # read in small chunks, as a big collection is: 20k of 1M
        library.reads.iter_vectors = lambda dim, encoder="image": stream(dim, encoder, chunk=500)
        assert 0 < training_sample_size("IVF32,Flat", len(rows)) < per_folder  # trains on fewer than one folder
        index = library.update_vector_file(base_generation=library.generation, rebuild=True)
    import faiss

    centroids = faiss.extract_index_ivf(index.index).quantizer
    centres = centroids.reconstruct_n(0, centroids.ntotal)
    nearest = (second @ centres.T).max(axis=1)
    assert np.median(nearest) > 0.5  # lists near the second folder's vectors exist
    assert (centres @ first.mean(axis=0) > 0).any() and (centres @ second.mean(axis=0) > 0).any()

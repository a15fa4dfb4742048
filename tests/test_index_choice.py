"""The memory budget picks the vector index's kind; a library with an on-disk index indexes,
searches, updates, reports and checks it like the in-memory one (real SQLite, real FAISS)."""
import numpy as np
import pytest

from indexer.store import index_choice, ivf_training, ondisk
from indexer.store.index_choice import choose_index, estimated_memory, parse_size
from indexer.store.vectors import SearchTuning


def test_parse_size():
    assert parse_size("4GB") == 4 * 10**9
    assert parse_size("4g") == 4 * 10**9
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size("1000") == 1000
    for bad in ("", "GB", "4 parsecs", "-1GB", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_the_budget_decides_the_kind():
    budget = 4 * 10**9
    small = choose_index(1_000_000, 512, "auto", budget)
    assert (small.kind, small.spec) == ("memory", "IVF4096,SQfp16")
    assert small.estimated_bytes == estimated_memory("IVF4096,SQfp16", 1_000_000, 512) < budget
    big = choose_index(10_000_000, 512, "auto", budget)
    assert big.kind == "ondisk" and big.spec == "OPQ64_256,IVF16384,PQ64"
    assert big.estimated_bytes < budget / 4 and "over the 4.0 GB budget" in big.reason
    assert choose_index(10_000_000, 512, "auto", 20 * 10**9).kind == "memory"  # a bigger budget: in memory
    assert choose_index(10_000_000, 512, "ivf", budget).kind == "memory"  # asked for: honoured at any size
    assert choose_index(5000, 512, "ondisk", budget).kind == "ondisk"
    assert choose_index(5000, 512, "auto", 1000).kind == "memory"  # too few vectors to train PQ codebooks
    # the delta an on-disk index keeps in memory is held to a quarter of the budget
    huge = choose_index(1_000_000_000, 512, "auto", budget)
    assert huge.delta_limit * (512 * 4 + 100) <= budget // 4
    assert huge.estimated_bytes < budget


def _library_with_vectors(tmp_path, count, dim, seed=0):
    from indexer.store.library import Library
    from indexer.store.records import ModelInfo, NewItem, single_vector

    rng = np.random.default_rng(seed)
    means = rng.standard_normal((30, dim)).astype(np.float32)
    vectors = means[rng.integers(0, 30, count)] + 0.5 * rng.standard_normal((count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    library = Library(tmp_path / "db")
    library.bind_encoder("image", ModelInfo("m", "w", dim, "f"))
    run_id = library.runs.start("index", ["/a"])
    rows = [NewItem(path=f"/a/{n // 1000:03d}/{n:06d}.jpg", size=1, mtime=1.0, content_hash=str(n), width=1, height=1,
                    format="JPEG", vectors=single_vector(vector)) for n, vector in enumerate(vectors)]
    for start in range(0, len(rows), 2000):
        library.items.write_batch(rows[start:start + 2000], run_id)
    return library, vectors


def _exact_ids(library, queries, k):
    ids, vectors = library.reads.vectors_for(library.reads.vector_ids().tolist(), queries.shape[1])
    rounded = vectors.astype(np.float16).astype(np.float32)
    scores = queries @ rounded.T
    return ids[np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :k]]


def test_a_library_over_its_budget_goes_on_disk_and_stays_correct(tmp_path, monkeypatch):
    """Index, search, remove, search again, reopen, status, check: the whole life of an on-disk index."""
    monkeypatch.setattr(ivf_training, "OPQ_ITERATIONS", 5)
    from indexer.integrity import check_index
    from indexer.status import read_status
    from indexer.store.library import Library

    dim = 32
    library, vectors = _library_with_vectors(tmp_path, 21_000, dim)
    library.set_max_index_memory(1_000_000)  # the in-memory index would take ~2.9 MB
    index = library.update_vector_file(base_generation=library.generation, rebuild=True)
    assert index_choice.index_kind(index) == "ondisk"
    assert (tmp_path / "db" / "vectors.ondisk" / ondisk.MANIFEST).exists()
    assert not (tmp_path / "db" / "vectors.faiss").exists()
    assert index.tuning is not None and index.tuning_report["parameter"] == "nprobe"  # autotuned like an in-memory IVF
    queries = vectors[:20] + 0.01
    import faiss

    full = SearchTuning(nprobe=faiss.extract_index_ivf(index.index).nlist, rerank=10**6)
    searched = library.vectors_for_search()
    np.testing.assert_array_equal(searched.search(queries, 10, tuning=full)[1], _exact_ids(library, queries, 10))
    # a later run removes a folder's worth: an incremental update (the delta), not a rebuild
    base_generation = library.generation
    removed = library.items.forget("/a/000").removed  # /a/000/000000.jpg ... /a/000/000999.jpg
    assert len(removed) == 1000
    before = index.files.index
    index = library.update_vector_file(base_generation=base_generation, removed=removed)
    assert index.files.index == before and index.ntotal == 20_000
    library.close()
    with Library(tmp_path / "db") as reopened:
        searched = reopened.vectors_for_search()
        assert searched.generation == reopened.generation and searched.ntotal == 20_000
        np.testing.assert_array_equal(searched.search(queries, 10, tuning=full)[1], _exact_ids(reopened, queries, 10))
        status = read_status(reopened)
        assert status["index_kind"] == "ondisk" and status["max_index_memory"] == 1_000_000
        assert status["index_up_to_date"] and status["vectors_in_index"] == 20_000
        assert "over the 1.0 MB budget" in status["index_choice"]
    report = check_index(tmp_path / "db", files=False)  # the items are rows only, no files
    assert not report.problems, report.problems


def test_raising_the_budget_moves_the_index_back_into_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(ivf_training, "OPQ_ITERATIONS", 5)
    library, vectors = _library_with_vectors(tmp_path, 21_000, 32, seed=1)
    library.set_max_index_memory(1_000_000)
    assert index_choice.index_kind(library.update_vector_file(base_generation=0, rebuild=True)) == "ondisk"
    library.set_max_index_memory(10**9)
    index = library.update_vector_file(base_generation=library.generation)  # unchanged data, new budget: rebuilt
    assert index_choice.index_kind(index) == "memory" and index.spec == "Flat"
    assert not (tmp_path / "db" / "vectors.ondisk").exists()
    assert index_choice.index_kind(library.vectors_for_search()) == "memory"
    library.close()


def test_cli_records_the_budget_and_status_names_the_kind(tmp_path, tiny_model_config):
    import json

    from typer.testing import CliRunner

    from cli.app import app
    from conftest import write_image

    runner = CliRunner()
    pics = tmp_path / "pics"
    for i in range(3):
        write_image(pics / f"img{i}.png", seed=i)
    db = tmp_path / "db"
    bad = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config),
                              "--max-index-memory", "lots"])
    assert bad.exit_code == 2 and "not a size" in bad.output
    done = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config),
                               "--max-index-memory", "2MB", "--json"])
    assert done.exit_code == 0, done.output
    status = json.loads(runner.invoke(app, ["status", "--db", str(db), "--json"]).stdout)
    assert status["max_index_memory"] == 2_000_000 and status["max_index_memory_setting"] == 2_000_000
    assert status["index_kind"] == "memory" and "within the 2.0 MB budget" in status["index_choice"]
    shown = runner.invoke(app, ["status", "--db", str(db)], env={"COLUMNS": "250"})
    assert "vector index" in shown.stdout and "Flat in memory: about" in shown.stdout


def test_each_encoder_gets_its_own_index_of_the_kind_its_size_calls_for(tmp_path, monkeypatch):
    """Two encoders in one library: the big one (many moments per item) goes on disk in its own folder
    (vectors-<encoder>.ondisk/), the small one stays in memory, each searched against its own exact
    answer; check, status and a reopen see both."""
    monkeypatch.setattr(ivf_training, "OPQ_ITERATIONS", 5)
    from indexer.integrity import check_index
    from indexer.store.library import Library
    from indexer.store.records import Embedded, ModelInfo, NewItem

    rng = np.random.default_rng(3)
    library = Library(tmp_path / "db")
    library.bind_encoder("image", ModelInfo("m", "w", 16, "f"))
    library.bind_encoder("clap", ModelInfo("sound", "w", 32, "g"))
    means = rng.standard_normal((30, 32)).astype(np.float32)

    def unit(matrix):
        return (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(np.float32)

    run_id = library.runs.start("index", ["/a"])
    rows = []
    for n in range(3000):  # one picture vector and seven sound windows an item
        moments = unit(means[rng.integers(0, 30, 7)] + 0.5 * rng.standard_normal((7, 32)).astype(np.float32))
        vectors = [Embedded("image", None, unit(rng.standard_normal((1, 16)).astype(np.float32))[0])]
        vectors += [Embedded("clap", float(second), moment) for second, moment in enumerate(moments)]
        rows.append(NewItem(path=f"/a/{n // 1000:03d}/{n:06d}.wav", size=1, mtime=1.0, content_hash=str(n), width=1,
                            height=1, format="WAV", vectors=vectors))
    for start in range(0, len(rows), 1000):
        library.items.write_batch(rows[start:start + 1000], run_id)
    library.set_max_index_memory(1_000_000)  # 21,000 sound vectors of 32-d exceed it; 3,000 of 16-d do not
    library.update_vectors(base_generation=library.generation, rebuild=True)
    assert (tmp_path / "db" / "vectors-clap.ondisk" / ondisk.MANIFEST).exists()
    assert not (tmp_path / "db" / "vectors-clap.faiss").exists()
    assert (tmp_path / "db" / "vectors.faiss").exists() and not (tmp_path / "db" / "vectors.ondisk").exists()
    library.close()
    import faiss

    with Library(tmp_path / "db") as reopened:
        for encoder, dim, kind in (("image", 16, "memory"), ("clap", 32, "ondisk")):
            searched = reopened.vectors_for_search(encoder)
            assert index_choice.index_kind(searched) == kind and searched.generation == reopened.generation
            ids, stored = reopened.reads.vectors_for(reopened.reads.vector_ids(encoder).tolist(), dim, encoder)
            assert searched.ntotal == len(ids) == (3000 if encoder == "image" else 21_000)
            queries = stored[:10] + 0.01
            scores = queries @ stored.astype(np.float16).astype(np.float32).T
            exact = ids[np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :10]]
            tuning = SearchTuning(nprobe=faiss.extract_index_ivf(searched.index).nlist, rerank=10**6) \
                if kind == "ondisk" else SearchTuning()
            found = searched.search(queries, 10, tuning=tuning)[1]
            if kind == "ondisk":  # re-ranked by the exact float16 rows: the exact answer
                np.testing.assert_array_equal(found, exact)
            else:  # Flat over float32 (ties aside, the same set)
                assert np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]) >= 0.99
    report = check_index(tmp_path / "db", files=False)
    assert not report.problems, report.problems

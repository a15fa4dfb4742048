"""The tuner's decisions: cheapest setting reaching the recall target, its latency checked against a
latency target, and what it reports (and stores with the index) when a target is missed."""
from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest

from conftest import clustered_vectors as clustered
from conftest import vector_chunks as chunks_of
from indexer.store.autotune import TuneConfig, tune_index
from indexer.store.vectors import VectorIndex


@pytest.fixture(scope="module")
def vectors():
    return clustered(6000, 32, 48, 0.6, seed=11)


def build(vectors, spec="IVF64,SQfp16"):
    return VectorIndex.build(vectors.shape[1], spec, [(np.arange(len(vectors)), vectors)], generation=1)


def test_generous_latency_target_is_met_at_the_cheapest_setting(vectors):
    index = build(vectors)
    result = tune_index(index, chunks_of(vectors), TuneConfig(target_latency_ms=1e6, queries=100, timed_queries=5))
    assert result.reached and result.latency_met is True
    assert "within the 1e+06 ms target" in result.status_line()
    recalls = [trial["recall"] for trial in result.trials]
    assert recalls[-1] >= 0.965 and all(recall < 0.965 for recall in recalls[:-1])  # the first reaching 0.95 + margin
    assert [("latency_ms" in trial) for trial in result.trials] == [False] * (len(recalls) - 1) + [True]  # only it is timed


def test_unreachable_latency_target_keeps_recall_and_says_so(vectors, caplog):
    index = build(vectors)
    relaxed = tune_index(index, chunks_of(vectors), TuneConfig(target_latency_ms=1e6, queries=100, timed_queries=5))
    with caplog.at_level(logging.WARNING, logger="indexer.store.autotune"):
        strict = tune_index(index, chunks_of(vectors), TuneConfig(target_latency_ms=1e-9, queries=100, timed_queries=5))
    assert strict.value == relaxed.value and strict.reached  # recall is not traded away
    assert strict.latency_met is False
    assert "over the 1e-09 ms latency target even at the cheapest setting" in strict.status_line()
    assert any("over the 1e-09 ms latency target" in record.getMessage() for record in caplog.records)
    assert index.tuning_report["latency_met"] is False and index.tuning_report["status"] == strict.status_line()


def test_unreachable_recall_target_keeps_the_best_setting(vectors):
    index = build(vectors, "IVF16,Flat")
    result = tune_index(index, chunks_of(vectors), TuneConfig(target_recall=1.01, target_latency_ms=None,
                                                               queries=100, timed_queries=5))
    assert not result.reached and result.latency_met is None
    assert [trial["nprobe"] for trial in result.trials] == [1, 2, 4, 6, 8, 12, 16]  # every setting tried
    best = max(trial["recall"] for trial in result.trials)
    cheapest_best = min(trial["nprobe"] for trial in result.trials if trial["recall"] == best)
    assert (result.value, round(result.recall, 4)) == (cheapest_best, best)  # the best, and the cheapest of equals
    assert "not reached by any setting" in result.status_line()


def test_timing_uses_one_thread_and_restores_the_setting(vectors, monkeypatch):
    index = build(vectors)
    seen = []
    search = index.search

    def spying_search(queries, k, **kwargs):
        if len(np.atleast_2d(queries)) == 1:
            seen.append(faiss.omp_get_max_threads())
        return search(queries, k, **kwargs)

    monkeypatch.setattr(index, "search", spying_search)
    before = faiss.omp_get_max_threads()
    tune_index(index, chunks_of(vectors), TuneConfig(queries=50, timed_queries=5))
    assert seen and set(seen) == {1}
    assert faiss.omp_get_max_threads() == before


def test_tuning_report_is_saved_with_the_index(vectors, tmp_path):
    index = build(vectors)
    result = tune_index(index, chunks_of(vectors), TuneConfig(queries=50, timed_queries=5))
    index.save(tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss", mmap=True)
    assert loaded.tuning == result.tuning
    assert loaded.tuning_report["status"] == result.status_line()
    assert loaded.tuning_report["value"] == result.value


def test_exact_index_has_nothing_to_tune(vectors):
    result = tune_index(build(vectors, "Flat"), chunks_of(vectors))
    assert result.parameter == "" and result.latency_met is None
    assert result.status_line() == "exact index: nothing to tune"


def test_default_ivf_type_tuned_reaches_recall_on_fresh_queries():
    """The default IVF path (choose_index_spec's fp16 storage, autotuned) against numpy brute force."""
    from indexer.store.vectors import choose_index_spec

    both = clustered(8200, 48, 60, 0.7, seed=12)
    data, fresh = both[:8000], both[8000:]  # fresh queries: not in the index
    spec = choose_index_spec(len(data), "ivf")
    assert spec.endswith(",SQfp16")
    index = build(data, spec)
    result = tune_index(index, chunks_of(data), TuneConfig(timed_queries=5))
    assert result.reached and result.parameter == "nprobe" and result.value < int(spec[3:].split(",")[0])
    _, found = index.search(fresh, 10)
    truth = np.argsort(-(fresh @ data.T), axis=1, kind="stable")[:, :10]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= 0.93, recall  # 0.95 + margin on the sample; 200 fresh queries vary by ~0.01


def test_status_shows_the_last_tuning(tmp_path, vectors):
    from indexer.status import read_status
    from indexer.store.library import Library
    from indexer.store.records import ModelInfo, NewItem, single_vector

    rows = [NewItem(path=f"/p/{n}.jpg", size=1, mtime=1.0, content_hash=str(n), width=1, height=1, format="JPEG",
                    vectors=single_vector(vector), reuse_from=None, error=None, taken_at=None)
            for n, vector in enumerate(vectors[:3000])]
    with Library(tmp_path / "db") as library:
        library.db.bind_model(ModelInfo("m", "w", vectors.shape[1], "f"))
        run_id = library.runs.start("index", ["/p"])
        library.items.write_batch(rows, run_id)
        library.set_index_type("IVF32,SQfp16")
        library.update_vectors(base_generation=library.generation, rebuild=True)
    with Library(tmp_path / "db", create=False) as library:
        status = read_status(library)
    assert status["index_type"] == "IVF32,SQfp16"
    assert status["search_tuning"].startswith("nprobe=") and "recall@10" in status["search_tuning"]

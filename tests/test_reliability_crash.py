"""Crash safety: `mmsearch index` and `mmsearch reindex` SIGKILLed at seeded random moments, then resumed.

After every kill the database must be intact and consistent, and nothing committed before the
kill may be redone; the resumed run must embed exactly what was not committed (so at most the one
batch in flight is ever embedded twice) and leave an index `mmsearch check` calls healthy.
(`mmsearch finetune` kill/resume is the fine-tuning suite's.)
"""
from __future__ import annotations

import json
import random
import shutil
import time

import numpy as np
import pytest
from test_reliability_support import (
    CliProcess,
    assert_database_consistent,
    committed_rows,
    connect,
    count,
    write_model,
    write_tiny_pngs,
)
from typer.testing import CliRunner

from cli.app import app
from indexer.store.library import Library
from retrieval.media import media_for

IMAGES = 2000
BATCH = 16
VECTORS = "SELECT count(*) FROM vectors"
STAGED = "SELECT count(*) FROM staged_vectors"
runner = CliRunner()


@pytest.fixture(scope="session")
def image_pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool") / "pics"
    write_tiny_pngs(folder, IMAGES)
    return folder


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash-models")
    return write_model(folder, "fast.json"), write_model(folder, "other.json", embed_dim=32, seed=1)


def _kill_at_random_moment(process: CliProcess, db, rng: random.Random, progress_sql: str) -> bool:
    """Kill during start-up and scanning (1 in 4), else after a random number of newly committed rows
    with sub-batch jitter, so the kill lands anywhere in decode / embed / commit. True if it was a real kill."""
    done = count(db, progress_sql)
    target = min(done + rng.randint(1, 12) * BATCH, IMAGES - 2 * BATCH)
    if rng.random() < 0.25 or target <= done:
        process.wait_until(lambda: "indexing" in process.stderr or count(db, progress_sql) > done, what="start")
        time.sleep(rng.uniform(0.0, 0.3))
    else:
        process.wait_until(lambda: count(db, progress_sql) >= target, what=f"{target} committed rows")
        time.sleep(rng.uniform(0.0, 0.06))
    return process.kill()


def _check_json(db, *extra) -> dict:
    result = runner.invoke(app, ["check", "--db", str(db), "--json", *extra])
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["healthy"] else 1)
    return report


def test_index_killed_at_random_moments_resumes_without_redoing_work(tmp_path, image_pool, models):
    fast_model, _ = models
    pics = tmp_path / "pics"
    shutil.copytree(image_pool, pics)
    files = {str(path) for path in pics.iterdir()}
    db = tmp_path / "db"
    args = ["index", pics, "--db", db, "--model", fast_model, "--batch-size", BATCH, "--json"]
    rng = random.Random(1128)
    committed: dict[str, tuple] = {}
    kills = 0
    for trial in range(8):
        process = CliProcess(args, tmp_path / f"run{trial}")
        kills += _kill_at_random_moment(process, db, rng, VECTORS)
        if not (db / "mmsearch.db").exists():
            continue  # killed before it created the database
        assert_database_consistent(db, dim=64)
        now = committed_rows(db)
        assert set(now) <= files
        redone = [path for path, row in committed.items() if now.get(path) != row]
        assert not redone, f"trial {trial}: committed rows were rewritten or lost: {redone[:3]}"
        committed = now
        problems = _check_json(db, "--no-model")["problem_counts"]
        assert set(problems) <= {"vector_index_stale", "vector_index_missing"}, problems  # only the derived file lags
    assert kills >= 6, "most trials must kill a running process"

    final = CliProcess(args, tmp_path / "final")
    assert final.wait() == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["embedded"] == IMAGES - len(committed)  # nothing committed is embedded again
    assert (summary["unchanged"], summary["failed"], summary["removed"]) == (len(committed), 0, 0)
    rows = committed_rows(db)
    assert set(rows) == files  # every file indexed exactly once (paths are unique)
    assert all(rows[path] == row for path, row in committed.items())
    assert_database_consistent(db, dim=64)
    report = _check_json(db)
    assert report["healthy"], report["problems"]
    assert report["vector_index"]["ntotal"] == IMAGES == report["counts"]["vectors"]


def _synthetic_index(db, pics, fast_model) -> None:
    """An index of `pics` built straight through the store (random unit vectors, no inference)."""
    from indexer.media.files import content_hash
    from indexer.store.records import NewItem, single_vector
    from retrieval.models.encoders import load_model

    info = load_model(str(fast_model), device="cpu").info
    rng = np.random.default_rng(0)
    with Library(db) as library:
        library.db.bind_model(info)
        run_id = library.runs.start("index", [str(pics)])
        rows = []
        for path in sorted(pics.iterdir()):
            vector = rng.normal(size=info.dim).astype(np.float32)
            stat = path.stat()
            rows.append(NewItem(path=str(path), size=stat.st_size, mtime=stat.st_mtime,
                                content_hash=content_hash(path.read_bytes()), width=16, height=16, format="PNG",
                                vectors=single_vector(vector / np.linalg.norm(vector))))
        library.items.write_batch(rows, run_id)
        library.runs.finish(run_id)
        library.update_vectors(base_generation=0)


def _staged_rows(db) -> dict[int, bytes]:
    with connect(db) as connection:
        return dict(connection.execute("SELECT item_id, vector FROM staged_vectors"))


def _model_dim(db) -> int:
    with connect(db) as connection:
        return connection.execute("SELECT dim FROM models ORDER BY id DESC LIMIT 1").fetchone()[0]


def test_reindex_killed_at_random_moments_resumes_without_redoing_work(tmp_path, image_pool, models):
    fast_model, other_model = models
    pics = tmp_path / "pics"
    shutil.copytree(image_pool, pics)
    db = tmp_path / "db"
    _synthetic_index(db, pics, fast_model)
    args = ["reindex", "--model", other_model, "--db", db, "--batch-size", BATCH, "--json"]
    rng = random.Random(2811)
    staged: dict[int, bytes] = {}
    kills = 0
    swapped = False
    for trial in range(5):
        process = CliProcess(args, tmp_path / f"run{trial}")
        kills += _kill_at_random_moment(process, db, rng, STAGED)
        swapped = _model_dim(db) == 32
        assert_database_consistent(db, dim=32 if swapped else 64)
        if swapped:  # killed after the swap committed (rare): the resumed run only writes the vector file
            break
        assert count(db, VECTORS) == IMAGES  # the old model's vectors all stay live: search never has a gap
        now = _staged_rows(db)
        assert all(now.get(item_id) == blob for item_id, blob in staged.items()), "staged work was redone or lost"
        staged = now
    assert kills >= 4, "most trials must kill a running process"

    final = CliProcess(args, tmp_path / "final")
    assert final.wait() == 0, final.stderr
    summary = json.loads(final.stdout)
    expected = 0 if swapped else IMAGES - len(staged)
    assert summary["embedded"] == expected
    assert summary["already_staged"] == IMAGES - expected
    assert _model_dim(db) == 32 and count(db, VECTORS) == IMAGES and count(db, STAGED) == 0
    assert_database_consistent(db, dim=32)
    report = _check_json(db)
    assert report["healthy"], report["problems"]
    assert report["vector_index"]["dim"] == 32


# --- every crash window, deterministically (in-process: an exception where the kill would land) ----
class Crash(Exception):
    pass


def _crash_on(monkeypatch, owner, name):
    def crash(*args, **kwargs):
        raise Crash(name)

    monkeypatch.setattr(owner, name, crash)


@pytest.mark.parametrize("window", ["before_sweep", "before_vector_file", "before_sidecar", "before_finish"])
def test_index_crash_windows_after_the_last_batch(tmp_path, tiny_model, window, monkeypatch):
    """Dying after the batches but before the run's end leaves a consistent database; the next run
    redoes nothing and repairs the derived vector file."""
    import indexer.store.items
    import indexer.store.runs
    import indexer.store.vectors
    from conftest import write_image
    from indexer.pipeline.embed import PipelineConfig
    from indexer.pipeline.sync import IndexConfig, index_folders

    pics = tmp_path / "pics"
    for number in range(6):
        write_image(pics / f"img{number}.png", seed=number, size=(24, 24))
    config = IndexConfig(roots=(str(pics),), pipeline=PipelineConfig(batch_size=2, workers=1))
    library = Library(tmp_path / "db")
    index_folders(library, media_for(tiny_model), config)
    (pics / "img0.png").unlink()  # something to sweep
    write_image(pics / "new.png", seed=42, size=(24, 24))  # something to embed
    with monkeypatch.context() as patch:
        owner, name = {"before_sweep": (indexer.store.items.ItemStore, "sweep"),
                       "before_vector_file": (indexer.store.vectors.VectorIndex, "save"),
                       "before_sidecar": (indexer.store.vectors, "_write_json_atomic"),
                       "before_finish": (indexer.store.runs.RunLog, "finish")}[window]
        _crash_on(patch, owner, name)
        with pytest.raises(Crash):
            index_folders(library, media_for(tiny_model), config)
    assert_database_consistent(library.folder, dim=64)
    resumed = index_folders(library, media_for(tiny_model), config)
    assert resumed.embedded == 0 and resumed.unchanged == 6  # new.png was committed before the crash
    assert resumed.removed == (1 if window == "before_sweep" else 0)
    report = _check_json(library.folder, "--no-model")
    assert report["healthy"], report["problems"]
    assert report["counts"]["vectors"] == 6


def test_reindex_killed_after_its_swap_only_writes_the_vector_file(tmp_path, tiny_model, monkeypatch):
    from conftest import TINY_CONFIG, write_image
    from indexer.pipeline.embed import PipelineConfig
    from indexer.pipeline.reindex import reindex
    from indexer.pipeline.sync import IndexConfig, index_folders
    from retrieval.models.encoders import load_model

    pics = tmp_path / "pics"
    for number in range(5):
        write_image(pics / f"img{number}.png", seed=number, size=(24, 24))
    library = Library(tmp_path / "db")
    index_folders(library, media_for(tiny_model), IndexConfig(roots=(str(pics),)))
    (tmp_path / "other.json").write_text(json.dumps({**TINY_CONFIG, "seed": 3, "embed_dim": 32}))
    other = load_model(str(tmp_path / "other.json"), device="cpu")
    with monkeypatch.context() as patch:
        _crash_on(patch, Library, "update_vectors")
        with pytest.raises(Crash):
            reindex(library, media_for(other), PipelineConfig(batch_size=2))
    assert library.model().dim == 32  # the swap committed
    resumed = reindex(library, media_for(other), PipelineConfig(batch_size=2))
    assert (resumed.embedded, resumed.already_staged) == (0, 5)
    report = _check_json(library.folder, "--no-model")
    assert report["healthy"], report["problems"]
    again = reindex(library, media_for(other), PipelineConfig(batch_size=2))  # a deliberate same-model reindex still re-embeds
    assert again.embedded == 5

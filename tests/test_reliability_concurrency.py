"""Concurrency: one writer at a time (the second waits or says why not), and readers that never fail.

Writers are real processes (forked from a warm forkserver, plus one exec of the installed
`mmsearch` script); readers are `mmsearch search` / `check` through CliRunner in this process.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_reliability_support import (
    CliProcess,
    assert_database_consistent,
    connect,
    count,
    write_model,
    write_tiny_pngs,
)
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()
MMSEARCH = Path(sys.executable).with_name("mmsearch")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("concurrency-pool")
    return write_tiny_pngs(folder / "pics", 1000, seed=7), write_model(folder)


def _copy(paths, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        shutil.copy2(path, folder / path.name)
    return [str(folder / path.name) for path in paths]


def test_second_writer_is_refused_or_waits_its_turn(tmp_path, pool):
    images, model = pool
    pics = tmp_path / "pics"
    _copy(images, pics)
    db = tmp_path / "db"
    args = ["index", pics, "--db", db, "--model", model, "--batch-size", "2"]  # small batches: a long first run
    first = CliProcess(args + ["--json"], tmp_path / "first")
    first.wait_until(lambda: "indexing" in first.stderr, what="the first indexer to hold the lock")

    refused = subprocess.run([str(MMSEARCH), *map(str, args)], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "MMSEARCH_CONFIG": str(tmp_path / "none.toml")})
    assert first.alive(), "the first indexer finished too early for this test to mean anything"
    assert refused.returncode == 1
    assert f"another mmsearch process (pid {first.pid}) is writing to this index" in refused.stderr
    assert "--wait" in refused.stderr and "Traceback" not in refused.stderr

    waiting = CliProcess(args + ["--wait", "120", "--json"], tmp_path / "waiting")
    waiting_started = time.time()
    assert first.wait() == 0, first.stderr
    assert waiting.wait() == 0, waiting.stderr
    summary = json.loads(waiting.stdout)
    assert summary["embedded"] == 0 and summary["unchanged"] == len(images)  # it ran after the first, not beside it
    with connect(db) as connection:
        (first_end, _), (_, second_start) = connection.execute("SELECT finished_at, started_at FROM runs ORDER BY id")
    assert waiting_started < first_end <= second_start
    assert_database_consistent(db, dim=64)


def test_searches_during_indexing_see_committed_state_and_never_fail(tmp_path, pool):
    images, model = pool
    pics = tmp_path / "pics"
    db = tmp_path / "db"
    initial = _copy(images[:200], pics)
    assert CliProcess(["index", pics, "--db", db, "--model", model], tmp_path / "initial").wait() == 0
    deleted = set(initial[:40])
    for path in deleted:
        os.remove(path)
    added = _copy(images[200:800], pics)
    ever_indexed = set(initial) | set(added)
    warm = runner.invoke(app, ["search", "a noisy picture", "--db", str(db), "--json"])  # imports, model: not timed
    assert warm.exit_code == 0 and len(json.loads(warm.stdout)) == 10

    writer = CliProcess(["index", pics, "--db", db, "--model", model, "--batch-size", "4"], tmp_path / "writer")
    searches, sizes_seen = 0, set()
    while writer.alive() or searches < 3:
        with connect(db) as connection:  # what is committed as this round of searches starts
            sizes_seen.add(connection.execute("SELECT count(*) FROM vectors").fetchone()[0])
        result = runner.invoke(app, ["search", "a noisy picture", "--db", str(db), "--json", "--top", "25"])
        assert result.exit_code == 0, result.output
        hits = json.loads(result.stdout)
        assert 1 <= len(hits) <= 25
        assert {hit["path"] for hit in hits} <= ever_indexed
        assert [hit["score"] for hit in hits] == sorted((hit["score"] for hit in hits), reverse=True)
        filtered = runner.invoke(app, ["search", "red", "--db", str(db), "--json", "--path", "*/img0002*"])
        assert filtered.exit_code == 0, filtered.output
        assert all("/img0002" in hit["path"] for hit in json.loads(filtered.stdout))
        checked = runner.invoke(app, ["check", "--db", str(db), "--json", "--no-model"])
        report = json.loads(checked.stdout)
        assert set(report["problem_counts"]) <= {"vector_index_stale", "missing_file"}, report["problems"][:5]
        searches += 1
    assert writer.wait() == 0, writer.stderr
    assert len(sizes_seen) >= 2, f"no search ran while the index was growing ({searches} searches)"

    result = runner.invoke(app, ["search", "a noisy picture", "--db", str(db), "--json", "--top", "2000"])
    paths = {hit["path"] for hit in json.loads(result.stdout)}
    assert paths == ever_indexed - deleted
    assert count(db, "SELECT count(*) FROM vectors") == len(ever_indexed - deleted)
    assert_database_consistent(db, dim=64)

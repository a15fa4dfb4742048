"""Resource faults and schema versions: a clear message, nothing corrupted, the last state searchable.

Tests run as root in CI, so a full disk and a read-only folder are simulated in-process where the
failure really happens: SQLite's own `max_page_count` (it then fails exactly like a full disk,
SQLITE_FULL), SQLite's `query_only` (SQLITE_READONLY, as for a read-only file), and ENOSPC from
the fsync of the vector file. The chmod variant runs for an ordinary user only.
"""
from __future__ import annotations

import errno
import json
import os
import sqlite3

import numpy as np
import pytest
from test_reliability_support import assert_database_consistent, committed_rows
from typer.testing import CliRunner

import indexer.store.database
import indexer.store.vectors
from cli.app import app
from conftest import write_image
from indexer.errors import StoreError
from indexer.store.database import Database
from indexer.store.library import Library
from indexer.store.version import SCHEMA_VERSION
from retrieval.media import media_for

runner = CliRunner()


@pytest.fixture()
def indexed(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    for number in range(4):
        write_image(pics / f"old{number}.png", seed=number, size=(32, 32))
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config)])
    assert result.exit_code == 0, result.output
    for number in range(40):
        write_image(pics / f"new{number:02d}.png", seed=100 + number, size=(32, 32))
    return pics, db


def _search_paths(db) -> list[str]:
    result = runner.invoke(app, ["search", "a picture", "--db", str(db), "--json", "--top", "100"])
    assert result.exit_code == 0, result.output
    return sorted(hit["path"] for hit in json.loads(result.stdout))


def _with_pragma(monkeypatch, statement: str) -> None:
    """Every new SQLite connection of the code under test runs `statement` after its usual pragmas."""
    usual = indexer.store.database._sqlite_pragmas

    def pragmas(connection, record):
        usual(connection, record)
        connection.execute(statement)

    monkeypatch.setattr(indexer.store.database, "_sqlite_pragmas", pragmas)


def test_database_disk_full_is_a_clear_error_and_keeps_the_last_state(indexed, monkeypatch):
    pics, db = indexed
    before, vector_file = committed_rows(db), (db / "vectors.faiss").read_bytes()
    with sqlite3.connect(db / "mmsearch.db") as connection:
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    with monkeypatch.context() as patch:
        _with_pragma(patch, f"PRAGMA max_page_count = {pages}")  # the file may not grow: SQLITE_FULL
        result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--batch-size", "40"])
    assert result.exit_code == 1
    assert "Error:" in result.stderr and "is full" in result.stderr and "Traceback" not in result.output
    assert_database_consistent(db, dim=64)
    assert committed_rows(db) == before  # the failed batch left nothing behind
    assert (db / "vectors.faiss").read_bytes() == vector_file
    assert _search_paths(db) == sorted(before)
    assert runner.invoke(app, ["check", "--db", str(db), "--no-model"]).exit_code == 0
    again = runner.invoke(app, ["index", str(pics), "--db", str(db), "--json"])  # space is back: it just works
    assert json.loads(again.stdout)["embedded"] == 40


def test_read_only_database_is_a_clear_error_and_keeps_the_last_state(indexed, monkeypatch):
    pics, db = indexed
    before = committed_rows(db)
    with monkeypatch.context() as patch:
        _with_pragma(patch, "PRAGMA query_only = 1")  # SQLITE_READONLY, as for a read-only file
        result = runner.invoke(app, ["index", str(pics), "--db", str(db)])
        assert result.exit_code == 1
        assert "read-only" in result.stderr and "Traceback" not in result.output
        assert _search_paths(db) == sorted(before)  # readers are fine with a read-only database
    assert committed_rows(db) == before
    assert_database_consistent(db, dim=64)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; the query_only variant covers this")
def test_read_only_folder_for_real(indexed):
    pics, db = indexed
    before = committed_rows(db)
    os.chmod(db, 0o555)
    try:
        result = runner.invoke(app, ["index", str(pics), "--db", str(db)])
    finally:
        os.chmod(db, 0o755)
    assert result.exit_code == 1 and "Error:" in result.stderr and "Traceback" not in result.output
    assert committed_rows(db) == before


def test_disk_full_while_writing_the_vector_file(indexed, monkeypatch):
    pics, db = indexed
    vector_file = (db / "vectors.faiss").read_bytes()

    def no_space(path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    with monkeypatch.context() as patch:
        patch.setattr(indexer.store.vectors, "_fsync_file", no_space)
        result = runner.invoke(app, ["index", str(pics), "--db", str(db)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "No space left on device" in result.stderr and "database is intact" in result.stderr
    assert (db / "vectors.faiss").read_bytes() == vector_file  # the old file, untouched
    assert not list(db.glob("*.tmp"))
    assert_database_consistent(db, dim=64)
    assert len(_search_paths(db)) == 44  # the database has everything; search rebuilds the index in memory
    report = json.loads(runner.invoke(app, ["check", "--db", str(db), "--json", "--no-model"]).stdout)
    assert set(report["problem_counts"]) == {"vector_index_stale"}
    assert runner.invoke(app, ["repair", "--db", str(db)]).exit_code == 0
    assert json.loads(runner.invoke(app, ["check", "--db", str(db), "--json"]).stdout)["healthy"]


def test_a_database_from_a_newer_mmsearch_is_refused(tmp_path, indexed):
    _, db = indexed
    with sqlite3.connect(db / "mmsearch.db") as connection:
        connection.execute("UPDATE schema_info SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match="newer mmsearch"):
        Library(db)
    result = runner.invoke(app, ["search", "cats", "--db", str(db)])
    assert result.exit_code == 1 and "newer mmsearch" in result.stderr and "upgrade" in result.stderr
    check = runner.invoke(app, ["check", "--db", str(db), "--json"])
    assert check.exit_code == 1 and json.loads(check.stdout)["problems"][0]["kind"] == "schema"


# The schema exactly as mmsearch 0.1 (schema version 1) wrote it: frozen, never edit.
V1_SCHEMA = """
CREATE TABLE schema_info ("key" VARCHAR NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE models (id INTEGER NOT NULL, name TEXT NOT NULL, weights TEXT NOT NULL, dim INTEGER NOT NULL,
    fingerprint VARCHAR NOT NULL, created_at FLOAT NOT NULL, PRIMARY KEY (id));
CREATE TABLE items (id INTEGER NOT NULL, path TEXT NOT NULL, modality VARCHAR NOT NULL, size INTEGER NOT NULL,
    mtime FLOAT NOT NULL, content_hash VARCHAR, width INTEGER, height INTEGER, format VARCHAR, indexed_at FLOAT NOT NULL,
    error TEXT, seen_run INTEGER NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_items_mtime ON items (mtime);
CREATE UNIQUE INDEX ix_items_path ON items (path);
CREATE INDEX ix_items_content_hash ON items (content_hash);
CREATE TABLE runs (id INTEGER NOT NULL, command VARCHAR NOT NULL, roots TEXT NOT NULL, started_at FLOAT NOT NULL,
    finished_at FLOAT, embedded INTEGER NOT NULL, reused INTEGER NOT NULL, removed INTEGER NOT NULL,
    failed INTEGER NOT NULL, unchanged INTEGER NOT NULL, seconds FLOAT, PRIMARY KEY (id));
CREATE TABLE vectors (item_id INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (item_id),
    FOREIGN KEY(item_id) REFERENCES items (id) ON DELETE CASCADE);
CREATE TABLE staged_vectors (item_id INTEGER NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (item_id),
    FOREIGN KEY(item_id) REFERENCES items (id) ON DELETE CASCADE);
"""


def _v1_database(db, pics, model) -> None:
    """An index folder as mmsearch 0.1 left it: v1 tables, 3 items with vectors, 1 failed file."""
    db.mkdir()
    rng = np.random.default_rng(0)
    with sqlite3.connect(db / "mmsearch.db") as connection:
        connection.executescript(V1_SCHEMA)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executemany("INSERT INTO schema_info VALUES (?, ?)", [("schema_version", "1"), ("generation", "2")])
        info = model.info
        connection.execute("INSERT INTO models VALUES (1, ?, ?, ?, ?, 0)", (info.name, info.weights, info.dim, info.fingerprint))
        for number in range(4):
            path = pics / f"img{number}.png"
            if number < 3:
                write_image(path, seed=number, size=(32, 32))
            else:
                path.write_bytes(b"broken")
            stat = path.stat()
            connection.execute("INSERT INTO items VALUES (?, ?, 'image', ?, ?, NULL, 32, 32, 'PNG', 0, ?, 1)",
                               (number + 1, str(path), stat.st_size, stat.st_mtime, None if number < 3 else "not an image"))
            if number < 3:
                vector = rng.normal(size=info.dim).astype(np.float32)
                connection.execute("INSERT INTO vectors VALUES (?, ?)", (number + 1, (vector / np.linalg.norm(vector)).tobytes()))


def test_a_v1_database_is_migrated_in_one_transaction(tmp_path, tiny_model):
    from indexer.pipeline.embed import PipelineConfig
    from indexer.pipeline.sync import IndexConfig, index_folders

    pics, db = tmp_path / "pics", tmp_path / "db"
    _v1_database(db, pics, tiny_model)
    with Library(db) as library:
        assert library.db.schema_version == SCHEMA_VERSION
        assert library.reads.counts() == {"rows": 4, "items": 3, "vectors": 3, "failed": 1}  # every row kept
        assert library.generation == 2
        report = index_folders(library, media_for(tiny_model),
                               IndexConfig(roots=(str(pics),), pipeline=PipelineConfig(batch_size=2)))
    assert (report.embedded, report.unchanged) == (0, 4)  # the migrated rows are recognised, nothing redone
    with sqlite3.connect(db / "mmsearch.db") as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(items)")}
        indexes = {row[1] for row in connection.execute("PRAGMA index_list(items)")}
    assert "taken_at" in columns and "ix_items_taken_at" in indexes
    with sqlite3.connect(db / "mmsearch.db") as connection:  # schema 3: a picture's vector keeps its item's id
        assert connection.execute("SELECT id, item_id, encoder, start_s FROM vectors ORDER BY id").fetchall() == [
            (1, 1, "image", None), (2, 2, "image", None), (3, 3, "image", None)]
    assert_database_consistent(db, dim=64)
    assert json.loads(runner.invoke(app, ["check", "--db", str(db), "--json", "--no-model"]).stdout)["healthy"]


def test_a_failed_migration_leaves_the_v1_database_untouched(tmp_path, tiny_model, monkeypatch):
    import indexer.store.migrations

    pics, db = tmp_path / "pics", tmp_path / "db"
    _v1_database(db, pics, tiny_model)

    def half_done(connection):
        connection.exec_driver_sql("ALTER TABLE items ADD COLUMN taken_at FLOAT")
        raise RuntimeError("killed half-way")

    monkeypatch.setitem(indexer.store.migrations.MIGRATIONS, 2, half_done)
    with pytest.raises(RuntimeError, match="half-way"):
        Database(db / "mmsearch.db")
    with sqlite3.connect(db / "mmsearch.db") as connection:
        assert connection.execute("SELECT value FROM schema_info WHERE key = 'schema_version'").fetchone() == ("1",)
        assert "taken_at" not in {row[1] for row in connection.execute("PRAGMA table_info(items)")}
        assert connection.execute("SELECT count(*) FROM items").fetchone() == (4,)
    monkeypatch.undo()
    assert Database(db / "mmsearch.db").schema_version == SCHEMA_VERSION  # the real migrations then succeed


def test_the_write_lock_in_an_unwritable_place_is_a_clear_error(tmp_path):
    from indexer.store.lock import write_lock

    missing = tmp_path / "no-such-folder" / "write.lock"
    with pytest.raises(StoreError, match="cannot take the write lock"):
        with write_lock(missing):
            pass

"""`mmsearch check` finds each kind of damage; `mmsearch repair` fixes what the database can.

Each test breaks a real index the way a crash, a disk or a person would, then runs the commands.
The `indexed` index is made twice: on SQLite and on a real PostgreSQL (conftest.postgres_server).
"""
from __future__ import annotations

import json
import os
import sqlite3

import numpy as np
import pytest
from test_reliability_support import assert_database_consistent
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from indexer.store.vectors import VectorIndex

runner = CliRunner()


@pytest.fixture()
def indexed(tmp_path, tiny_model_config, backend):
    pics = tmp_path / "pics"
    for number in range(6):
        write_image(pics / f"img{number}.png", seed=number, size=(32, 32))
    (pics / "broken.png").write_bytes(b"broken")
    model = tmp_path / "model.json"
    model.write_text(tiny_model_config.read_text())
    db = tmp_path / "db"
    on_postgres = ["--db-url", backend] if backend else []
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(model), *on_postgres])
    assert result.exit_code == 0, result.output
    return pics, db, model


def check(db, *options) -> tuple[int, dict]:
    result = runner.invoke(app, ["check", "--db", str(db), "--json", *options])
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def repair(db, *options) -> tuple[int, dict]:
    result = runner.invoke(app, ["repair", "--db", str(db), "--json", *options])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


def test_a_fresh_index_is_healthy(indexed):
    _, db, _ = indexed
    code, report = check(db)
    assert code == 0 and report["healthy"] and report["problems"] == []
    assert report["counts"] == {"rows": 7, "vectors": 6, "failed": 1, "staged": 0}
    assert report["vector_index"]["ntotal"] == 6 and report["checked"] == {"files": True, "model": True, "quick": False}
    human = runner.invoke(app, ["check", "--db", str(db)])
    assert human.exit_code == 0 and "healthy" in human.stdout


def _sql(db, *statements, foreign_keys=True):
    """Run (statement, params) pairs (or bare statements, `?` placeholders) on the index's database
    behind mmsearch's back, as a person with a SQL shell would."""
    from indexer.store.location import database_url_of

    steps = [statement if isinstance(statement, tuple) else (statement, ()) for statement in statements]
    url = database_url_of(db)
    if url is None:
        with sqlite3.connect(db / "mmsearch.db") as connection:
            connection.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            for statement, params in steps:
                connection.execute(statement, params)
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    with psycopg.connect(host=parsed.host, port=parsed.port, user=parsed.username, dbname=parsed.database) as connection:
        if not foreign_keys:  # as PRAGMA foreign_keys = OFF: no constraint triggers (a superuser may)
            connection.execute("SET session_replication_role = replica")
        for statement, params in steps:
            connection.execute(statement.replace("?", "%s"), params or None)


FAULTS = {
    "vector_index_missing": lambda db: (db / "vectors.faiss").unlink(),
    "vector_index_unreadable": lambda db: (db / "vectors.faiss").write_bytes(b"not faiss"),
    "vector_index_stale": lambda db: _sql(db, "UPDATE schema_info SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) "
                                              "WHERE key = 'generation'"),
    "orphan_vector": lambda db: _sql(db, "INSERT INTO vectors (item_id, encoder, start_s, vector) "
                                         "SELECT 9999, encoder, start_s, vector FROM vectors LIMIT 1", foreign_keys=False),
    "row_without_vector": lambda db: _sql(db, "DELETE FROM vectors WHERE item_id = (SELECT min(item_id) FROM vectors)"),
    "bad_vector": lambda db: _sql(db, ("UPDATE vectors SET vector = ? WHERE id = (SELECT max(id) FROM vectors)",
                                       (b"\0\0\0\0",))),
    "orphan_staged_vector": lambda db: _sql(db, "INSERT INTO staged_vectors (item_id, encoder, start_s, vector) "
                                                "SELECT item_id, encoder, start_s, vector FROM vectors"),
}


@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_check_finds_each_fault_and_repair_fixes_it(indexed, kind):
    _, db, _ = indexed
    FAULTS[kind](db)
    code, report = check(db, "--no-model")
    assert code == 1 and not report["healthy"]
    assert kind in report["problem_counts"], report["problems"]
    code, repaired = repair(db)
    assert code == 0 and repaired["healthy"], repaired
    assert_database_consistent(db, dim=64)
    code, report = check(db)
    assert code == 0 and report["healthy"], report["problems"]
    live = report["counts"]["vectors"]
    assert report["vector_index"]["ntotal"] == live == (5 if kind in ("row_without_vector", "bad_vector") else 6)
    search = runner.invoke(app, ["search", "a picture", "--db", str(db), "--json", "--top", "50"])
    assert search.exit_code == 0 and len(json.loads(search.stdout)) == live


def test_a_vector_file_with_the_right_generation_but_wrong_contents(indexed):
    _, db, _ = indexed
    saved = VectorIndex.load(db / "vectors.faiss")
    wrong = VectorIndex.build(64, "Flat", [(np.arange(100, 106, dtype=np.int64), np.eye(6, 64, dtype=np.float32))],
                              saved.generation)
    wrong.save(db / "vectors.faiss")
    code, report = check(db, "--no-model", "--no-files")
    assert code == 1 and set(report["problem_counts"]) == {"vector_index_ids"}
    assert repair(db)[0] == 0


def test_missing_files_are_kept_unless_asked(indexed):
    pics, db, _ = indexed
    (pics / "img1.png").unlink()
    (pics / "broken.png").unlink()
    code, report = check(db, "--no-model")
    assert code == 1 and report["problem_counts"] == {"missing_file": 2} and report["missing_files"] == 2
    assert {problem["path"] for problem in report["problems"]} == {str(pics / "img1.png"), str(pics / "broken.png")}
    assert check(db, "--no-model", "--no-files")[0] == 0  # --no-files does not look
    code, repaired = repair(db)  # a drive may just be unmounted: nothing forgotten by default
    assert code == 1 and repaired["check"]["problem_counts"] == {"missing_file": 2}
    code, repaired = repair(db, "--drop-missing")
    assert code == 0 and repaired["repaired"]["dropped"]["missing"] == 2
    assert check(db)[1]["counts"] == {"rows": 5, "vectors": 5, "failed": 0, "staged": 0}


def test_leftover_temp_files_are_noted_and_removed(indexed):
    _, db, _ = indexed
    (db / "vectors.faiss.tmp").write_bytes(b"half a file")
    code, report = check(db, "--no-model")
    assert code == 0 and any("leftover" in note for note in report["notes"])
    code, repaired = repair(db)
    assert code == 0 and str(db / "vectors.faiss.tmp") in repaired["repaired"]["removed_files"]
    assert not (db / "vectors.faiss.tmp").exists()


def test_model_that_changed_or_vanished(indexed):
    _, db, model = indexed
    config = json.loads(model.read_text())
    model.write_text(json.dumps({**config, "seed": 7}))  # same name, different weights
    code, report = check(db)
    assert code == 1 and set(report["problem_counts"]) == {"model_changed"}
    assert "reindex" in report["problems"][0]["detail"]
    assert check(db, "--no-model")[0] == 0  # loading skipped: nothing to compare
    model.unlink()
    code, report = check(db)
    assert code == 1 and set(report["problem_counts"]) == {"model_unavailable"}


def test_a_damaged_database_is_reported_and_repair_refuses_it(indexed, backend):
    if backend:
        pytest.skip("scribbles over SQLite's file; a PostgreSQL server guards its own pages")
    _, db, _ = indexed
    runner.invoke(app, ["status", "--db", str(db)])  # checkpoints the WAL into the main file
    data = bytearray((db / "mmsearch.db").read_bytes())
    for offset in range(4096 * 2, len(data) - 100, 4096):  # scribble over every page header but the first two
        data[offset:offset + 100] = os.urandom(100)
    for name in ("mmsearch.db-wal", "mmsearch.db-shm"):
        if (db / name).exists():
            (db / name).unlink()
    (db / "mmsearch.db").write_bytes(bytes(data))
    code, report = check(db, "--no-model", "--no-files")
    assert code == 1 and set(report["problem_counts"]) & {"integrity", "database_unreadable"}
    result = runner.invoke(app, ["repair", "--db", str(db)])
    assert result.exit_code == 1 and "Error:" in result.stderr and "Traceback" not in result.output
    search = runner.invoke(app, ["search", "a picture", "--db", str(db)])
    assert search.exit_code == 1 and "Error:" in search.stderr and "Traceback" not in search.output


def test_check_is_read_only(indexed, backend):
    _, db, _ = indexed
    if backend:  # the server refuses any write in check's READ ONLY transaction; the folder is untouched too
        (db / "vectors.faiss").unlink()
        before = {path.name: path.stat().st_mtime_ns for path in db.iterdir()}
        assert check(db)[0] == 1
        assert {path.name: path.stat().st_mtime_ns for path in db.iterdir()} == before
        return
    (db / "vectors.faiss").unlink()
    runner.invoke(app, ["status", "--db", str(db)])  # last connection closed: WAL checkpointed and removed

    def stamps():
        return {path.name: (path.stat().st_mtime_ns, path.stat().st_size) for path in db.iterdir()
                if not path.name.endswith(("-wal", "-shm"))}  # SQLite's own housekeeping files

    before = stamps()
    assert check(db)[0] == 1
    assert stamps() == before
    wal = db / "mmsearch.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # opened read-only: no page was written


def test_check_and_repair_have_help_and_refuse_a_missing_index(tmp_path):
    for command in ("check", "repair"):
        result = runner.invoke(app, [command, "--db", str(tmp_path / "nowhere")])
        assert result.exit_code == 1 and "no index at" in result.stderr

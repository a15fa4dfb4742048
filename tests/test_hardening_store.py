"""The store's half of issue 14: what a power cut, flipped bytes and edited values did to an index."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from indexer.store.library import Library

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


@pytest.fixture()
def indexed(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    for seed in range(6):
        write_image(pics / f"p{seed}.png", seed)
    db = tmp_path / "db"
    assert run("index", pics, "--db", db, "--model", tiny_model_config).exit_code == 0
    return pics, db


def _check(db, *flags) -> dict:
    return json.loads(run("check", "--db", db, "--json", "--no-model", *flags).stdout)


def test_lost_commits_never_leave_a_vector_file_that_looks_current(indexed, tmp_path):
    """A power cut loses the last commits but keeps the vector file written after them; the next
    commits must not land on the generation that file carries (with +1 steps they did: 5 = 5)."""
    pics, db = indexed
    before = tmp_path / "before"
    shutil.copytree(db, before)  # the database as the power cut will leave it
    for seed in range(6, 9):
        write_image(pics / f"q{seed}.png", seed)
    assert run("index", pics, "--db", db).exit_code == 0  # commits, then a vector file for them
    written = json.loads((db / "vectors.json").read_text())["generation"]
    for name in ("mmsearch.db", "mmsearch.db-wal", "mmsearch.db-shm"):  # those commits are lost; the file stays
        (db / name).unlink(missing_ok=True)
        if (before / name).exists():
            shutil.copy2(before / name, db / name)
    for seed in range(6, 9):  # other files come, as many commits as before
        (pics / f"q{seed}.png").unlink()
        write_image(pics / f"r{seed}.png", 100 + seed)
    with Library(db) as library:
        start = library.generation
    assert start != written
    assert run("index", pics, "--db", db).exit_code == 0
    with Library(db, create=False) as library:
        assert library.generation != written
    report = _check(db, "--no-files")
    assert report["healthy"], report["problems"]
    hits = json.loads(run("search", "a thing", "--db", db, "--json", "--top", "20").stdout)
    assert sorted(hit["path"].rsplit("/", 1)[1] for hit in hits) == sorted(
        [f"p{n}.png" for n in range(6)] + [f"r{n}.png" for n in range(6, 9)])
    # the vectors searched are the new files' own (a stale file would hold the lost files' vectors
    # under the same ids: the paths above would still read right)
    found = json.loads(run("search", "--image", pics / "r7.png", "--db", db, "--json", "--top", "1").stdout)[0]
    assert found["path"].endswith("r7.png") and found["score"] > 0.999


def test_generations_move_by_random_steps(tmp_path):
    from indexer.store.database import Database

    first, second = Database(tmp_path / "a.db"), Database(tmp_path / "b.db")
    steps = []
    for database in (first, second):
        with database.transaction() as session:
            steps.append(database.bump_generation(session))
    assert steps[0] != steps[1] and min(steps) >= 1  # two copies of one state part ways at their next commit


def test_flipped_bytes_in_the_vector_file_are_found_and_repaired(indexed):
    _, db = indexed
    path = db / "vectors.faiss"
    data = bytearray(path.read_bytes())
    for offset in range(len(data) - 600, len(data) - 536):  # 64 bytes inside the stored vectors
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    report = _check(db, "--no-files")
    assert not report["healthy"] and report["problem_counts"] == {"vector_index_corrupt": 1}
    for hit in json.loads(run("search", "a thing", "--db", db, "--json").stdout):
        assert -1.0 <= hit["score"] <= 1.0  # never a cosine outside [-1, 1], whatever the file holds
    assert run("repair", "--db", db).exit_code == 0
    assert _check(db, "--no-files")["healthy"]


@pytest.mark.parametrize("key, value, expected", [
    ("generation", "abc", "generation"), ("schema_version", "0", "schema_version"),
    ("schema_version", "-1", "schema_version"), ("schema_version", "x", "schema_version")])
def test_garbage_in_schema_info_is_one_error_line_and_check_finds_it(indexed, key, value, expected):
    _, db = indexed
    with sqlite3.connect(db / "mmsearch.db") as connection:
        connection.execute("UPDATE schema_info SET value = ? WHERE key = ?", (value, key))
    for command in (["status"], ["search", "a thing"], ["index"], ["repair"]):
        result = run(*command, "--db", db)
        assert result.exit_code == 1, (command, result.output)
        assert "Error:" in result.stderr and expected in result.stderr and "Traceback" not in result.output
    report = _check(db)
    assert not report["healthy"] and expected in json.dumps(report["problems"])


def test_leftovers_of_an_interrupted_export_are_noted_and_repair_removes_them(indexed):
    _, db = indexed
    leftover = db / "text_encoder.tmp-4242"
    leftover.mkdir()
    (leftover / "text.onnx").write_bytes(b"\0" * 1000)
    report = _check(db, "--no-files")
    assert report["healthy"] and any("text_encoder.tmp-4242" in note for note in report["notes"])
    repaired = json.loads(run("repair", "--db", db, "--json").stdout)
    assert str(leftover) in repaired["repaired"]["removed_files"] and not leftover.exists()


def test_a_file_changed_since_it_was_indexed_is_noted(indexed):
    pics, db = indexed
    write_image(pics / "p2.png", 77, size=(50, 40))  # another picture under an indexed name
    report = _check(db)
    assert report["healthy"] and report["changed_files"] == 1
    assert any("changed since they were indexed" in note for note in report["notes"])


def _damage_pages(db_file, start_page: int = 2) -> None:
    """Garbage over every page after the first (the header stays, so SQLite opens the file)."""
    with sqlite3.connect(db_file) as connection:
        page = connection.execute("PRAGMA page_size").fetchone()[0]
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db_file.read_bytes())
    for offset in range(page * (start_page - 1), len(data), page):
        data[offset + 8:offset + page] = bytes((offset // page * 37 + i) % 251 for i in range(page - 8))
    db_file.write_bytes(bytes(data))


@pytest.mark.parametrize("command", [("repair",), ("repair", "--drop-missing"), ("status",), ("search", "a red heart"),
                                     ("check", "--no-model")])
def test_a_damaged_database_is_one_error_line_for_every_command(indexed, command):
    _, db = indexed
    _damage_pages(db / "mmsearch.db")
    result = run(*command, "--db", db)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "DatabaseError" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if command[0] != "check":
        assert lines[0].startswith("Error:") and "backup" in result.stderr, result.stderr


def test_repair_forgets_rows_whose_file_holds_other_content_than_was_indexed(indexed):
    pics, db = indexed
    with sqlite3.connect(db / "mmsearch.db") as connection:  # a stored path rewritten to another existing file
        connection.execute("UPDATE items SET path = ? WHERE path = ?", (str(pics / "elsewhere.png"), str(pics / "p1.png")))
    write_image(pics / "elsewhere.png", 91, size=(70, 30))
    repaired = json.loads(run("repair", "--db", db, "--json").stdout)
    assert repaired["repaired"]["changed_files"] == [str(pics / "elsewhere.png")]
    hits = json.loads(run("search", "--image", pics / "p1.png", "--db", db, "--json", "--top", "6").stdout)
    assert str(pics / "elsewhere.png") not in [hit["path"] for hit in hits]
    again = json.loads(run("index", pics, "--db", db, "--json").stdout)
    assert again["embedded"] == 2  # p1.png (no longer named by any row) and elsewhere.png, each for what it holds


def test_repair_keeps_a_file_only_touched_since_it_was_indexed(indexed):
    pics, db = indexed
    target = pics / "p3.png"
    stat = target.stat()
    os.utime(target, (stat.st_atime + 100, stat.st_mtime + 100))
    repaired = json.loads(run("repair", "--db", db, "--json").stdout)
    assert repaired["repaired"]["changed_files"] == [] and repaired["healthy"]
    hits = json.loads(run("search", "--image", target, "--db", db, "--json", "--top", "1").stdout)
    assert hits[0]["path"] == str(target)

"""An index whose metadata lives in a real PostgreSQL 15 (conftest.postgres_server): the same answers as
SQLite through the CLI, the words in pictures through pg_trgm, the URL remembered without its password,
and clear errors for a server that cannot be reached or a URL that cannot be used."""
from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import open_library, write_image
from indexer.errors import DatabaseUnreachableError, DatabaseURLError, StoreError
from indexer.pipeline.sync import IndexConfig, index_folders
from indexer.store.location import URL_FILE, database_url_of, remember_database_url
from indexer.store.words import WordsRow
from retrieval.media import media_for

runner = CliRunner()


def _pictures(folder):
    for number in range(5):
        write_image(folder / f"img{number}.png", seed=number)
    write_image(folder / "trip" / "beach.jpg", seed=11, fmt="JPEG")
    write_image(folder / "trip" / "dunes.png", seed=12)
    write_image(folder / "tripod.png", seed=13)  # shares a prefix with "trip": must survive its forget
    (folder / "broken.png").write_bytes(b"\x89PNG not really")


def _cli(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _search(db, *args):
    hits = json.loads(_cli("search", *args, "--db", str(db), "--json", "--top", "20").stdout)
    return [(hit["path"], round(hit["score"], 4)) for hit in hits]


def test_index_search_status_forget_give_the_same_answers_on_postgresql(tmp_path, tiny_model_config, postgres_server):
    pics = tmp_path / "pics"
    _pictures(pics)
    lite, pg = tmp_path / "lite", tmp_path / "pg"
    url = postgres_server.new_database().replace("postgres@", "postgres:s3cret-word@")  # trust auth ignores it
    for db, extra in ((lite, []), (pg, ["--db-url", url])):
        summary = json.loads(_cli("index", str(pics), "--db", str(db), "--model", str(tiny_model_config), "--json",
                                  *extra).stdout)
        assert (summary["embedded"], summary["failed"]) == (8, 1)
    assert not (pg / "mmsearch.db").exists()
    assert json.loads((pg / URL_FILE).read_text())["url"] == url.replace(":s3cret-word", "")
    assert not any("s3cret" in path.read_bytes().decode("latin-1") for path in pg.rglob("*") if path.is_file())

    for query in (["a colourful picture"], ["--image", str(pics / "img2.png")], ["a picture", "--ext", "jpg"],
                  ["a picture", "--path", "*/trip/*"], ["picture + colour - dark"]):
        assert _search(pg, *query) == _search(lite, *query), query
    assert _search(pg, "--image", str(pics / "img2.png"))[0][0] == str(pics / "img2.png")

    status = {db: json.loads(_cli("status", "--db", str(db), "--json").stdout) for db in (lite, pg)}
    assert status[pg]["database"] == "postgresql" and status[lite]["database"] == "sqlite"
    assert "s3cret" not in status[pg]["database_at"] and str(postgres_server.port) in status[pg]["database_at"]
    for key in ("items", "rows", "vectors", "failed", "modalities", "index_type", "vectors_in_index", "index_up_to_date"):
        assert status[pg][key] == status[lite][key], key
    assert "PostgreSQL at" in _cli("status", "--db", str(pg)).stdout

    for db in (lite, pg):
        _cli("forget", str(pics / "trip"), "--db", str(db))
    assert json.loads(_cli("status", "--db", str(pg), "--json").stdout)["items"] == 6
    assert _search(pg, "a colourful picture") == _search(lite, "a colourful picture")
    again = json.loads(_cli("index", str(pics), "--db", str(pg), "--json").stdout)  # remembered: no --db-url
    assert again["unchanged"] == 7 and again["embedded"] == 0  # trip/ stays forgotten, as on SQLite


TEXTS = ["CORNER CAFE\ncoffee 3.50\nTOTAL 9.10", "Quarterly review\n- harbor 4821", "INVOICE 2041\nDue 30 days",
         "nothing here", "harbour tours 4812", "inv0lce 2014"]
QUERIES = ["harbr 4821", "coffee", "invoice 2041", "zebra", "harbor", "2041", "tours", "ab", "INVOICE"]


def test_words_in_pictures_give_the_same_answers_through_pg_trgm(tmp_path, tiny_model, postgres_server):
    pics = tmp_path / "pics"
    for number in range(len(TEXTS)):
        write_image(pics / f"img{number}.png", seed=number)
    answers = {}
    for name, url in (("sqlite", None), ("postgresql", postgres_server.new_database())):
        with open_library(tmp_path / name, url) as library:
            index_folders(library, media_for(tiny_model), IndexConfig(roots=(str(pics),)))
            pending = library.words.pending("eng")
            library.words.write([WordsRow(p.item_id, p.content_hash, "eng", "read", text)
                                 for p, text in zip(pending, TEXTS)])
            assert library.words.pending("eng") == [] and len(library.words.pending("deu")) == len(TEXTS)
            answers[name] = {query: [(match.item_id, match.score, match.snippet, match.matched)
                                     for match in library.words.search(query, 5)] for query in QUERIES}
            hashes = [p.content_hash for p in pending[:2]] + ["0" * 64]  # copies looked up by hash (index seeks)
            answers[name]["by hash"] = library.words.known_by_hash("eng", hashes)
            assert answers[name]["by hash"] == {h: v for h, v in library.words.known_by_hash("eng").items() if h in hashes}
    assert answers["postgresql"] == answers["sqlite"]
    assert answers["postgresql"]["harbr 4821"][0][2] == "- harbor 4821"  # a letter lost, still found first
    assert answers["postgresql"]["zebra"] == []
    with open_library(tmp_path / "postgresql") as library:  # a deleted item takes its words along
        (pics / "img0.png").unlink()
        index_folders(library, media_for(tiny_model), IndexConfig(roots=(str(pics),)))
        assert library.words.search("coffee", 5) == []
        assert library.words.counts() == {"read": len(TEXTS) - 1}
        indexes = library.words._rows("SELECT indexdef FROM pg_indexes WHERE tablename = 'item_words'", ())
        assert any("gin_trgm_ops" in row[0] for row in indexes)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_an_unreachable_server_is_one_error_line_and_changes_nothing(tmp_path, postgres_server):
    url = f"postgresql+psycopg://nobody@127.0.0.1:{_closed_port()}/nothing"
    with pytest.raises(DatabaseUnreachableError, match="cannot reach"):
        remember_database_url(tmp_path / "db", url)
    assert not (tmp_path / "db" / URL_FILE).exists()
    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    result = runner.invoke(app, ["index", str(pics), "--db", str(tmp_path / "db"), "--db-url", url])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("Error: cannot reach the index's PostgreSQL database")
    assert not (tmp_path / "db" / URL_FILE).exists()
    # a folder that remembers a server which has gone: every command says so the same way
    db = tmp_path / "gone"
    db.mkdir()
    (db / URL_FILE).write_text(json.dumps({"url": url}))
    for command in (["status"], ["search", "a picture"], ["check"]):
        result = runner.invoke(app, [*command, "--db", str(db)])
        assert result.exit_code == 1 and "cannot reach" in result.stderr and "Traceback" not in result.output, command


@pytest.mark.parametrize(("url", "message"), [
    ("not a url at all", "is not a database URL"),
    ("mysql://me@localhost/db", "only PostgreSQL"),
    ("postgresql+psycopg2://me@localhost/db", "driver must be psycopg"),
    ("postgresql+psycopg://me@localhost", "names no database"),
])
def test_a_url_mmsearch_cannot_use_is_refused(tmp_path, url, message):
    with pytest.raises(DatabaseURLError, match=message):
        remember_database_url(tmp_path / "db", url)
    result = runner.invoke(app, ["index", str(tmp_path), "--db", str(tmp_path / "db"), "--db-url", url])
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output
    assert database_url_of(tmp_path / "db") is None


def test_one_folder_holds_one_index(tmp_path, tiny_model, postgres_server):
    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    with open_library(tmp_path / "lite") as library:
        index_folders(library, media_for(tiny_model), IndexConfig(roots=(str(pics),)))
    with pytest.raises(StoreError, match="keeps its metadata in SQLite"):
        remember_database_url(tmp_path / "lite", postgres_server.new_database())
    first = postgres_server.new_database()
    remember_database_url(tmp_path / "pg", first)
    remember_database_url(tmp_path / "pg", first)  # the same again: fine
    with pytest.raises(StoreError, match="keeps its metadata at"):
        remember_database_url(tmp_path / "pg", postgres_server.new_database())

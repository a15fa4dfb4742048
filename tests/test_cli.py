"""The CLI through typer's CliRunner: exit codes, JSON on stdout, errors on stderr."""
import json

import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image

runner = CliRunner()


@pytest.fixture()
def indexed(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    for i in range(4):
        write_image(pics / f"img{i}.png", seed=i)
    write_image(pics / "sub" / "photo.jpg", seed=9, fmt="JPEG")
    (pics / "broken.png").write_bytes(b"\x89PNG garbage")
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config), "--json"])
    assert result.exit_code == 0, result.output
    return pics, db, json.loads(result.stdout)


def test_index_reports_summary_and_bad_file(indexed):
    _, _, summary = indexed
    assert summary["embedded"] == 5 and summary["failed"] == 1


def test_index_stderr_names_bad_file(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    write_image(pics / "ok.png", seed=1)
    (pics / "bad.jpg").write_bytes(b"nope")
    result = runner.invoke(app, ["index", str(pics), "--db", str(tmp_path / "db"), "--model", str(tiny_model_config)])
    assert result.exit_code == 0
    assert f"skipping {pics / 'bad.jpg'}" in result.stderr
    assert "indexed 1" in result.stderr and "failed 1" in result.stderr


def test_search_json_uses_index_model(indexed):
    pics, db, _ = indexed
    result = runner.invoke(app, ["search", "a colourful picture", "--db", str(db), "--json", "--top", "3"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert len(hits) == 3
    assert all({"path", "score"} <= set(hit) for hit in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_search_by_image_finds_itself_first(indexed):
    pics, db, _ = indexed
    result = runner.invoke(app, ["search", "--image", str(pics / "img2.png"), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["path"] == str(pics / "img2.png")


def test_combined_query_and_filters(indexed):
    pics, db, _ = indexed
    result = runner.invoke(app, ["search", "picture + colour - dark", "--db", str(db), "--json", "--ext", "jpg"])
    assert result.exit_code == 0, result.output
    assert [h["path"] for h in json.loads(result.stdout)] == [str(pics / "sub" / "photo.jpg")]
    result = runner.invoke(app, ["search", "x", "--db", str(db), "--json", "--path", "*/sub/*"])
    assert [h["path"] for h in json.loads(result.stdout)] == [str(pics / "sub" / "photo.jpg")]
    result = runner.invoke(app, ["search", "x", "--db", str(db), "--json", "--after", "2999-01-01"])
    assert json.loads(result.stdout) == []
    result = runner.invoke(app, ["search", "x", "--db", str(db), "--json", "--before", "2999-01-01"])
    assert len(json.loads(result.stdout)) == 5


def test_batch_queries_one_json_line_each_in_order(indexed, tmp_path):
    _, db, _ = indexed
    queries = tmp_path / "queries.txt"
    queries.write_text("a dog\n\nsunset + beach\nzebra\n", encoding="utf-8")
    result = runner.invoke(app, ["search", "--queries", str(queries), "--db", str(db), "--json", "--top", "2"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["query"] for line in lines] == ["a dog", "sunset + beach", "zebra"]
    assert all(len(line["results"]) == 2 for line in lines)


def test_search_threads_one_for_a_single_query_else_as_asked(indexed, tmp_path):
    import faiss

    _, db, _ = indexed
    queries = tmp_path / "queries.txt"
    queries.write_text("a dog\nzebra\n", encoding="utf-8")
    before = faiss.omp_get_max_threads()
    try:
        expected = runner.invoke(app, ["search", "a dog", "--db", str(db), "--json"]).stdout
        assert faiss.omp_get_max_threads() == 1
        result = runner.invoke(app, ["search", "a dog", "--db", str(db), "--json", "--search-threads", "2"])
        assert result.exit_code == 0 and result.stdout == expected and faiss.omp_get_max_threads() == 2
        result = runner.invoke(app, ["search", "a dog", "--db", str(db), "--json"], env={"MMSEARCH_SEARCH_THREADS": "3"})
        assert result.exit_code == 0 and result.stdout == expected and faiss.omp_get_max_threads() == 3
        faiss.omp_set_num_threads(before)
        result = runner.invoke(app, ["search", "--queries", str(queries), "--db", str(db), "--json"])
        assert result.exit_code == 0 and faiss.omp_get_max_threads() == before  # a batch keeps FAISS's default
        result = runner.invoke(app, ["search", "a dog", "--db", str(db), "--search-threads", "0"])
        assert result.exit_code == 2 and "search-threads" in result.output
    finally:
        faiss.omp_set_num_threads(before)


def test_status_json(indexed):
    _, db, _ = indexed
    result = runner.invoke(app, ["status", "--db", str(db), "--json"])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["items"] == 5 and info["failed"] == 1 and info["index_type"] == "Flat"
    assert info["model"]["dim"] == 64 and info["failures"][0]["path"].endswith("broken.png")


def test_forget_then_status(indexed):
    pics, db, _ = indexed
    result = runner.invoke(app, ["forget", str(pics / "sub"), "--db", str(db)])
    assert result.exit_code == 0 and "forgot 1 item" in result.stderr
    info = json.loads(runner.invoke(app, ["status", "--db", str(db), "--json"]).stdout)
    assert info["items"] == 4


@pytest.mark.parametrize("args, message", [
    (["search", "cats", "--db", "{missing}"], "no index at"),
    (["status", "--db", "{missing}"], "no index at"),
    (["search", "--db", "{db}"], "nothing to search for"),
    (["search", " - dog", "--db", "{db}"], "no positive term"),
    (["search", "cats", "--db", "{db}", "--after", "yesterday"], "--after"),
])
def test_errors_go_to_stderr_with_exit_1(indexed, tmp_path, args, message):
    _, db, _ = indexed
    args = [a.format(missing=tmp_path / "nowhere", db=db) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "Error:" in result.stderr and message in result.stderr
    assert result.stdout == ""


def test_query_image_that_is_not_an_image(indexed, tmp_path):
    _, db, _ = indexed
    fake = tmp_path / "fake.png"
    fake.write_text("hello")
    result = runner.invoke(app, ["search", "--image", str(fake), "--db", str(db)])
    assert result.exit_code == 1 and "not an image" in result.stderr


def test_other_model_refused_with_reindex_hint(indexed, tmp_path, tiny_model_config):
    _, db, _ = indexed
    other = tmp_path / "other.json"
    other.write_text(tiny_model_config.read_text().replace('"seed": 0', '"seed": 5'))
    result = runner.invoke(app, ["search", "cats", "--db", str(db), "--model", str(other)])
    assert result.exit_code == 1 and "reindex" in result.stderr


def test_db_from_environment(indexed):
    _, db, _ = indexed
    result = runner.invoke(app, ["status", "--json"], env={"MMSEARCH_DB": str(db)})
    assert result.exit_code == 0 and json.loads(result.stdout)["items"] == 5


def _command_paths():
    """Every command and sub-command as an argv prefix, found the way `mmsearch --help` finds them."""
    import click
    import typer.main

    def walk(group, prefix):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, f"`mmsearch {' '.join(prefix + [name])}` is listed but cannot be built"
            yield prefix + [name], command
            if hasattr(command, "list_commands"):
                yield from walk(command, prefix + [name])

    return list(walk(typer.main.get_command(app), []))


def test_every_command_module_is_registered():
    from pathlib import Path

    from cli.app import COMMANDS

    modules = {path.stem for path in (Path(__file__).parents[1] / "cli").glob("*_cmd.py")}
    assert modules == {target.split(":")[0].split(".")[1] for target in COMMANDS.values()}


def test_every_command_has_help_with_an_example():
    paths = _command_paths()
    assert len(paths) >= 14  # 12 commands + `models list` / `models pull`
    listing = runner.invoke(app, ["--help"])
    assert listing.exit_code == 0
    for argv, command in paths:
        name = " ".join(argv)
        if len(argv) == 1:
            assert argv[0] in listing.stdout, f"`mmsearch --help` does not list {name}"
        assert (command.get_short_help_str() or "").strip(), f"`mmsearch {name}` has no help line"
        result = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "250"})
        assert result.exit_code == 0, name
        assert "Example" in result.stdout, f"`mmsearch {name} --help` has no example"
        for param in command.params:  # the page is complete: every option is on it
            if param.opts[0].startswith("-") and not getattr(param, "hidden", False):
                assert param.opts[0] in result.stdout, f"`mmsearch {name} --help` does not show {param.opts[0]}"


def test_unknown_command_suggests_the_nearest():
    result = runner.invoke(app, ["serch", "a cat"])
    assert result.exit_code == 2
    assert "Did you mean 'search'" in result.output


def test_unchanged_rerun_replaces_an_old_text_export(tmp_path, tiny_model_config):
    pics, db = tmp_path / "pics", tmp_path / "db"
    write_image(pics / "a.png", seed=1)
    args = ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config)]
    assert runner.invoke(app, args).exit_code == 0
    meta_path = db / "text_encoder" / "text_encoder.json"
    meta = json.loads(meta_path.read_text())
    assert meta.pop("sequence", None) is not None  # now it looks like an export by an older version
    meta_path.write_text(json.dumps(meta))
    again = runner.invoke(app, args + ["--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["unchanged"] == 1
    assert "sequence" in json.loads(meta_path.read_text())

"""What a new user tripped over (issue 13), each as the command they ran: a clear `Error:` line and
exit 1 instead of a traceback, a note on stderr instead of a silent empty list, settings that stay."""
from __future__ import annotations

import json
import os
import time

import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from retrieval.query.parse import parse_query
from retrieval.query.text import emoji_to_words

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(arg) for arg in args], env=env)


@pytest.fixture()
def indexed(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    for seed in range(3):
        write_image(pics / f"p{seed}.png", seed)
    write_image(pics / "photo.jpeg", 7, fmt="JPEG")
    db = tmp_path / "db"
    result = run("index", pics, "--db", db, "--model", tiny_model_config, "--json")
    assert result.exit_code == 0, result.output
    return pics, db, json.loads(result.stdout)


# --- crashes that became one Error: line ------------------------------------------------------------
def test_a_bad_index_type_is_refused_before_any_work(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    write_image(pics / "a.png", 1)
    result = run("index", pics, "--db", tmp_path / "db", "--model", tiny_model_config, "--index-type", "bogus")
    assert result.exit_code == 1 and "Error:" in result.stderr and "index_factory" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "db").exists()  # refused before the index folder was made


def test_an_ivf_type_too_big_for_a_small_folder_leaves_a_usable_index(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    for seed in range(5):
        write_image(pics / f"p{seed}.png", seed)
    db = tmp_path / "db"
    assert run("index", pics, "--db", db, "--model", tiny_model_config, "--index-type", "IVF64,Flat").exit_code == 0
    searched = run("search", "a thing", "--db", db, "--json")
    assert searched.exit_code == 0 and len(json.loads(searched.stdout)) == 5
    assert run("repair", "--db", db).exit_code == 0
    assert json.loads(run("status", "--db", db, "--json").stdout)["index_type"] == "Flat"


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="this machine has a GPU")
def test_cuda_asked_for_on_a_machine_without_one(indexed, tmp_path, tiny_model_config):
    pics, db, _ = indexed
    result = run("index", pics, "--db", db, "--device", "cuda")
    assert result.exit_code == 1 and "no CUDA GPU is usable" in result.stderr and "Traceback" not in result.output
    searched = run("search", "a thing", "--db", db, "--device", "cuda", "--json")
    assert searched.exit_code == 0 and json.loads(searched.stdout)
    assert "no CUDA GPU is usable on this machine; using the CPU" in searched.stderr


def test_a_queries_file_skips_blanks_and_comments_and_an_empty_one_is_an_error(indexed, tmp_path):
    _, db, _ = indexed
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n# only a comment\n")
    result = run("search", "--queries", empty, "--db", db)
    assert result.exit_code == 1 and "holds no query" in result.stderr and "Traceback" not in result.output
    queries = tmp_path / "q.txt"
    queries.write_text("# my searches\n\na red thing\n\n# more\na dog\n")
    lines = run("search", "--queries", queries, "--db", db, "--json").stdout.splitlines()
    assert [json.loads(line)["query"] for line in lines] == ["a red thing", "a dog"]


# --- silently wrong ---------------------------------------------------------------------------------
def test_emoji_become_their_names():
    assert emoji_to_words("🐱") == "cat face" and emoji_to_words("❤️") == "red heart"
    assert emoji_to_words("a 🚗 at night") == "a automobile at night"
    assert emoji_to_words("猫") == "猫" and emoji_to_words("beach") == "beach"
    term = parse_query("🐱 + 2:❤️")
    assert [(t.value, t.weight, t.original) for t in term] == [("cat face", 1.0, "🐱"), ("red heart", 2.0, "❤️")]


def test_an_emoji_query_says_what_it_searched(indexed):
    _, db, _ = indexed
    cat, car = (run("search", emoji, "--db", db, "--json") for emoji in ("🐱", "🚗"))
    assert "searching '🐱' as 'cat face'" in cat.stderr
    assert [hit["score"] for hit in json.loads(cat.stdout)] != [hit["score"] for hit in json.loads(car.stdout)]


def test_words_the_vocabulary_does_not_know_are_said(tmp_path):
    """The bundled model's MiniLM reads unknown characters as one [UNK] token each."""
    from conftest import MINILM_CONFIG
    from retrieval.models.encoders import load_model
    from retrieval.query.text import unknown_note

    config = tmp_path / "minilm.json"
    config.write_text(json.dumps(MINILM_CONFIG))
    text = load_model(str(config), device="cpu").text
    assert text.unknown_share("a red car") == 0.0
    assert text.unknown_share("\U00013000\U00013001") == 1.0  # Egyptian hieroglyphs
    assert "unknown to this model's vocabulary" in unknown_note("\U00013000", 1.0)
    assert unknown_note("a red car", 0.0) is None


def test_an_empty_result_says_why(indexed, tmp_path):
    pics, db, _ = indexed
    os.chdir(pics.parent)
    result = run("search", "a thing", "--db", db, "--path", "elsewhere/*")
    assert result.exit_code == 0 and result.stdout == ""
    assert f"no item's path matches --path '{pics.parent / 'elsewhere/*'}'" in result.stderr
    relative = run("search", "a thing", "--db", db, "--path", "pics/p1*", "--json")  # relative to the current folder
    assert [os.path.basename(hit["path"]) for hit in json.loads(relative.stdout)] == ["p1.png"]
    both = run("search", "a thing", "--db", db, "--ext", "png,gif", "--json")
    assert {os.path.splitext(hit["path"])[1] for hit in json.loads(both.stdout)} == {".png"}
    jpeg = run("search", "a thing", "--db", db, "--ext", "jpg", "--json")
    assert [os.path.basename(hit["path"]) for hit in json.loads(jpeg.stdout)] == ["photo.jpeg"]
    none = run("search", "a thing", "--db", db, "--ext", "gif")
    assert "no item has the extension gif" in none.stderr
    crossed = run("search", "a thing", "--db", db, "--after", "2024-02-01", "--before", "2024-01-01")
    assert crossed.exit_code == 1 and "--after must be earlier than --before" in crossed.stderr


def test_an_empty_index_says_so(tmp_path, tiny_model_config):
    (tmp_path / "empty").mkdir()
    db = tmp_path / "db"
    assert run("index", tmp_path / "empty", "--db", db, "--model", tiny_model_config).exit_code == 0
    result = run("search", "a thing", "--db", db)
    assert result.exit_code == 0 and "the index is empty" in result.stderr


def test_a_missing_file_in_a_query_is_an_error_not_words(indexed):
    pics, db, _ = indexed
    result = run("search", "x.jpg + red", "--db", db)
    assert result.exit_code == 1 and "'x.jpg' looks like an image file, but there is no such file" in result.stderr
    found = run("search", f"{pics / 'p1.png'} + red", "--db", db, "--json")
    assert found.exit_code == 0 and json.loads(found.stdout)[0]["path"].endswith("p1.png")


def test_dates_filter_by_capture_time_where_it_is_known(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    pics.mkdir()
    image = Image.new("RGB", (64, 48), (200, 40, 40))
    exif = Image.Exif()
    exif.get_ifd(0x8769).update({0x9003: "2015:07:14 12:30:00"})
    image.save(pics / "old.jpg", exif=exif)  # copied today: its mtime is today
    write_image(pics / "new.png", 3)
    db = tmp_path / "db"
    assert run("index", pics, "--db", db, "--model", tiny_model_config).exit_code == 0
    old = run("search", "a thing", "--db", db, "--before", "2016-01-01", "--json")
    assert [os.path.basename(hit["path"]) for hit in json.loads(old.stdout)] == ["old.jpg"]
    recent = run("search", "a thing", "--db", db, "--after", time.strftime("%Y-01-01"), "--json")
    assert [os.path.basename(hit["path"]) for hit in json.loads(recent.stdout)] == ["new.png"]


# --- misleading -------------------------------------------------------------------------------------
def test_status_counts_the_whole_folder_and_follows_a_reindex(indexed, tmp_path):
    from conftest import TINY_CONFIG

    pics, db, _ = indexed
    status = json.loads(run("status", "--db", db, "--json").stdout)
    on_disk = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(db) for name in names)
    assert abs(status["size_bytes"] - on_disk) < 1e5  # (the WAL index may grow by a page meanwhile)
    assert status["size_bytes"] > os.path.getsize(db / "mmsearch.db") * 2  # exports, vectors, the WAL too
    assert status["image_precision"] and status["roots"][0]["path"] == str(pics)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**TINY_CONFIG, "seed": 4}))
    assert run("reindex", "--model", other, "--db", db).exit_code == 0
    status = json.loads(run("status", "--db", db, "--json").stdout)
    assert status["model"]["name"] == str(other) and "reindex" in status["model_reason"]
    assert status["last_run"]["command"] == "reindex" and status["last_run"]["embedded"] == 4


def test_an_emptied_database_is_refused_not_repaired_into_a_new_index(indexed):
    _, db, _ = indexed
    vectors = (db / "vectors.faiss").read_bytes()
    for name in ("mmsearch.db-wal", "mmsearch.db-shm"):
        if (db / name).exists():
            (db / name).unlink()
    (db / "mmsearch.db").write_bytes(b"")
    for command in (["repair"], ["status"], ["search", "a thing"]):
        result = run(*command, "--db", db)
        assert result.exit_code == 1 and "is empty (0 bytes)" in result.stderr and "move the folder" in result.stderr
    assert (db / "vectors.faiss").read_bytes() == vectors and (db / "mmsearch.db").stat().st_size == 0
    checked = json.loads(run("check", "--db", db, "--json").stdout)
    assert not checked["healthy"] and "0 bytes" in checked["problems"][0]["detail"]


def test_a_damaged_database_says_what_to_do(indexed):
    _, db, _ = indexed
    data = bytearray((db / "mmsearch.db").read_bytes())
    data[0:16] = b"this is garbage!"
    (db / "mmsearch.db").write_bytes(bytes(data))
    for name in ("mmsearch.db-wal", "mmsearch.db-shm"):
        if (db / name).exists():
            (db / name).unlink()
    for command in (["status"], ["repair"], ["check"]):
        result = run(*command, "--db", db)
        assert result.exit_code == 1 and "move the" in result.output and "Traceback" not in result.output, command


def test_a_missing_text_export_is_found_by_check_and_rebuilt_by_repair(indexed):
    import shutil

    _, db, _ = indexed
    shutil.rmtree(db / "text_encoder")
    checked = json.loads(run("check", "--db", db, "--json", "--no-model").stdout)
    assert any("text_encoder is missing" in note and "mmsearch repair" in note for note in checked["notes"])
    repaired = run("repair", "--db", db, "--json")
    assert repaired.exit_code == 0, repaired.output
    assert json.loads(repaired.stdout)["repaired"]["rebuilt"] == [str(db / "text_encoder")]
    checked = json.loads(run("check", "--db", db, "--json", "--no-model").stdout)
    assert checked["healthy"] and not any("text_encoder" in note for note in checked["notes"])


def test_the_run_summary_counts_the_one_time_set_up(indexed):
    _, _, summary = indexed
    assert summary["export_seconds"] > 0 and summary["prepare_seconds"] > 0
    assert summary["seconds"] >= summary["export_seconds"] + summary["prepare_seconds"]
    assert summary["image_precision"] in ("onnx-int8", "onnx")


def test_verbose_does_not_print_faiss_loader_misses(indexed):
    _, db, _ = indexed
    result = run("search", "a thing", "--db", db, "-v")
    assert result.exit_code == 0 and "Could not load library" not in result.output


# --- forgotten settings -----------------------------------------------------------------------------
def test_a_folders_settings_are_remembered_and_a_forgotten_folder_stays_forgotten(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    write_image(pics / "keep.png", 1)
    write_image(pics / "thumbs" / "small.png", 2)
    write_image(pics / ".hidden" / "secret.png", 3)
    write_image(pics / "old" / "gone.png", 4)
    db = tmp_path / "db"

    def names():
        hits = json.loads(run("search", "a thing", "--db", db, "--json", "--top", "50").stdout)
        return sorted(os.path.basename(hit["path"]) for hit in hits)

    first = run("index", pics, "--db", db, "--model", tiny_model_config, "--exclude", "*/thumbs/*", "--hidden")
    assert first.exit_code == 0, first.output
    assert names() == ["gone.png", "keep.png", "secret.png"]
    assert run("index", pics, "--db", db).exit_code == 0  # a plain run keeps the folder's settings
    assert names() == ["gone.png", "keep.png", "secret.png"]
    assert run("forget", pics / "old", "--db", db).exit_code == 0
    assert run("index", "--db", db).exit_code == 0  # no folder named: every known one, as it was set
    assert names() == ["keep.png", "secret.png"]
    status = json.loads(run("status", "--db", db, "--json").stdout)
    assert status["roots"] == [{"path": str(pics), "exclude": ["*/thumbs/*"], "hidden": True, "follow_outside": False,
                                "forgotten": [str(pics / "old")], "video_frames": None}]
    assert run("index", pics / "old", "--db", db).exit_code == 0  # asked for by name: back
    assert names() == ["gone.png", "keep.png", "secret.png"]
    assert run("index", pics, "--db", db, "--exclude", "", "--no-hidden").exit_code == 0  # settings changed
    assert names() == ["gone.png", "keep.png", "small.png"]


def test_the_config_file_gives_new_folders_their_settings(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    write_image(pics / "keep.png", 1)
    write_image(pics / "thumbs" / "small.png", 2)
    config = tmp_path / "config.toml"
    config.write_text('exclude = ["*/thumbs/*"]\n')
    db = tmp_path / "db"
    result = run("index", pics, "--db", db, "--model", tiny_model_config, env={"MMSEARCH_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    hits = json.loads(run("search", "a thing", "--db", db, "--json").stdout)
    assert [os.path.basename(hit["path"]) for hit in hits] == ["keep.png"]
    config.write_text('exclude = "*/thumbs/*"\n')
    bad = run("index", pics, "--db", db, env={"MMSEARCH_CONFIG": str(config)})
    assert bad.exit_code == 1 and "exclude must be a list" in bad.stderr


# --- help -------------------------------------------------------------------------------------------
def test_version_short_help_and_help_that_fits_80_columns():
    version = run("--version")
    assert version.exit_code == 0 and version.stdout.startswith("mmsearch ")
    assert run("-h").exit_code == 0 and run("search", "-h").exit_code == 0
    for command in ("index", "search", "finetune", "serve", "status"):
        text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"}, terminal_width=80).stdout
        assert "…" not in text and "<bool>" not in text and "<list[" not in text, command
        assert max(len(line) for line in text.splitlines()) <= 80, command


def test_a_link_to_a_parent_folder_stays_inside_unless_asked(tmp_path, tiny_model_config):
    outside = tmp_path / "outside"
    for seed in range(3):
        write_image(outside / f"o{seed}.png", seed)
    lib = outside / "lib"
    write_image(lib / "mine.png", 9)
    write_image(tmp_path / "elsewhere" / "far.png", 10)
    os.symlink("..", lib / "loop")  # lib/loop -> outside, the folder above the root
    os.symlink(tmp_path / "elsewhere" / "far.png", lib / "far.png")  # a file link to outside the root
    (lib / "inner").mkdir()
    os.symlink("../mine.png", lib / "inner" / "same.png")  # a link that stays inside is followed
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(lib), "--db", str(db), "--model", str(tiny_model_config), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["embedded"] == 2  # mine.png and inner/same.png; nothing from outside
    assert "leads outside" in result.stderr and str(lib / "loop") in result.stderr
    status = json.loads(runner.invoke(app, ["status", "--db", str(db), "--json"]).stdout)
    assert status["rows"] == 2
    result = runner.invoke(app, ["index", str(lib), "--db", str(db), "--follow-outside", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["embedded"] == 4  # the 3 pictures above and far.png; lib/ not walked twice
    again = runner.invoke(app, ["index", "--db", str(db), "--json"])  # remembered for the folder
    assert json.loads(again.stdout)["unchanged"] == 6

"""`mmsearch reindex --audio-model`: the sounds re-embedded with another audio model, the pictures untouched;
and a clear error where it makes no sense. Sounds and configs are test_audio's (the tiny random CLAP)."""
import json

import pytest
from test_audio import RATE, TINY_CLAP, run, tone, varied, write_wav

from conftest import write_image

pytest.importorskip("av")


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("clap") / "tiny-clap.json"
    path.write_text(json.dumps(TINY_CLAP))
    return path


@pytest.fixture()
def indexed(tmp_path, tiny_model_config):
    media = tmp_path / "media"
    media.mkdir()
    write_wav(media / "long.wav", varied(8, seed=4))
    write_wav(media / "beep.wav", tone(880, 1.0))
    write_image(media / "photo.png", 3)
    db = tmp_path / "db"
    result = run("index", media, "--db", db, "--model", tiny_model_config, "--audio-model", "bundled", "--json")
    assert result.exit_code == 0, result.output
    return media, db


def test_reindex_audio_model_switches_the_sounds_and_keeps_the_pictures(indexed, tmp_path, tiny_clap):
    media, db = indexed
    before = json.loads(run("status", "--db", db, "--json").stdout)
    assert before["vectors"] == 1 + 1 + 1  # a picture; 8 s and 1 s: one 10 s window each
    picture = json.loads(run("search", "a red square", "--db", db, "--json", "--modality", "image").stdout)

    result = run("reindex", "--audio-model", tiny_clap, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["embedded"], summary["failed"]) == (2, 0) and summary["previous_audio_model"] == "bundled"
    assert "re-embedded 2 sounds" in result.stderr
    after = json.loads(run("status", "--db", db, "--json").stdout)
    assert after["modalities"] == {"image": 1, "audio": 2}
    assert after["vectors"] == 1 + 7 + 1  # CLAP's 2 s windows every second
    assert after["model"] == before["model"]  # the pictures' model is untouched
    assert json.loads(run("search", "a red square", "--db", db, "--json", "--modality", "image").stdout) == picture

    excerpt = write_wav(tmp_path / "excerpt.wav", varied(8, seed=4)[3 * RATE:5 * RATE])  # CLAP's window at 3 s
    hits = json.loads(run("search", "--audio", excerpt, "--db", db, "--json").stdout)
    assert hits[0]["path"].endswith("long.wav") and hits[0]["time"] == 3.0 and hits[0]["score"] > 0.999
    again = json.loads(run("index", media, "--db", db, "--json").stdout)  # the index keeps its new audio model
    assert again["unchanged"] == 3 and again["embedded"] == 0
    check = json.loads(run("check", "--db", db, "--json").stdout)
    assert check["healthy"], check["problems"]


def test_reindex_audio_model_where_it_makes_no_sense_is_one_error(indexed, tmp_path, tiny_model_config, tiny_clap):
    media, db = indexed
    for args, words in [
        (("--audio-model", "none"), "mmsearch forget"),
        (("--audio-model", tiny_clap, "--model", tiny_model_config), "one reindex at a time"),
        (("--audio-model", "no-such-model"), "unknown audio model"),
    ]:
        result = run("reindex", *args, "--db", db)
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output, result.output

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    write_image(pictures / "a.png", 1)
    other = tmp_path / "db-pictures"
    assert run("index", pictures, "--db", other, "--model", tiny_model_config).exit_code == 0
    result = run("reindex", "--audio-model", tiny_clap, "--db", other)
    assert result.exit_code == 1 and "holds no sounds" in result.output and "Traceback" not in result.output

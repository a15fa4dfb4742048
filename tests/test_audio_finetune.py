"""`mmsearch eval` and `mmsearch finetune` on sound/caption pairs (an `audio` column): text->audio R@K,
and a tiny fine-tune of the bundled audio tower whose output folder is an audio model.

Sounds are synthesised (test_audio's helpers): a few concepts, several recordings each."""
import csv
import json

import numpy as np
import pytest
from test_audio import RATE, run, tone, varied, write_wav

from conftest import write_image

pytest.importorskip("av")

CONCEPTS = {
    "a low hum": lambda seed: tone(110 + 5 * seed, 3.0),
    "a high beep": lambda seed: tone(2000 + 50 * seed, 3.0),
    "white noise": lambda seed: (np.random.default_rng(seed).standard_normal(3 * RATE) * 0.2).astype(np.float32),
    "a busy mix of sounds": lambda seed: varied(3, seed=seed),
}


def write_pairs(folder, name, seeds, column="audio"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow([column, "caption"])
        for number, (caption, make) in enumerate(CONCEPTS.items()):
            for seed in seeds:
                sound = write_wav(folder / f"c{number}-s{seed}.wav", make(seed))
                writer.writerow([sound.name, caption])
    return path


def test_eval_on_sound_pairs_gives_text_to_audio_recall(tmp_path):
    pairs = write_pairs(tmp_path / "sounds", "pairs.csv", seeds=range(3))
    result = run("eval", pairs, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert (metrics["modality"], metrics["n"], metrics["sounds"], metrics["captions"]) == ("audio", 12, 12, 4)
    assert metrics["audio_model"] == "bundled"
    forward = metrics["text_to_audio"]
    assert 0 <= forward["r1"] <= forward["r5"] <= forward["r10"] <= 1 and 1 <= forward["mean_rank"] <= 12
    assert metrics["audio_to_text"]["r5"] == 1.0  # four captions: the right one is always in the top 5
    table = run("eval", pairs)
    assert table.exit_code == 0 and "text->audio" in table.stdout and "12 sounds" in table.stdout

    mixed = tmp_path / "sounds" / "mixed.csv"
    write_image(tmp_path / "sounds" / "photo.png", 1)
    mixed.write_text(pairs.read_text() + "photo.png,a photo\n")
    refused = run("eval", mixed)
    assert refused.exit_code == 1 and "mixes sounds" in refused.output and "Traceback" not in refused.output


def test_finetune_on_sound_pairs_writes_an_audio_model_that_eval_and_index_use(tmp_path, tiny_model_config):
    folder = tmp_path / "sounds"
    pairs = write_pairs(folder, "train.csv", seeds=range(3), column="sound")
    val = write_pairs(folder, "val.csv", seeds=range(10, 12), column="sound")
    out = tmp_path / "tuned"
    result = run("finetune", pairs, "--val", val, "--out", out, "--epochs", "2", "--batch-size", "8", "--lr", "1e-3",
                 "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["modality"] == "audio" and len(record["history"]) == 2 and record["eval_on"] == "validation pairs"
    assert all(np.isfinite(entry["loss"]) for entry in record["history"])
    score = lambda metrics: sum(metrics["text_to_audio"][k] for k in ("r1", "r5", "r10"))
    best = max(score(entry["val"]) for entry in record["history"])
    assert record["kept_base"] == (best <= score(record["before"]))
    assert (out / "audio.json").is_file() and (out / "audio.safetensors").is_file()
    card = json.loads((out / "audio.json").read_text())
    assert card["finetune"]["from"] == "bundled" and card["finetune"]["best_epoch"] == record["best_epoch"]

    measured = json.loads(run("eval", val, "--audio-model", out, "--json").stdout)
    assert measured["audio_model"] == str(out.resolve())
    assert measured["text_to_audio"] == record["after"]["text_to_audio"]  # what it reported is what it wrote

    media = tmp_path / "media"
    media.mkdir()
    write_wav(media / "hum.wav", tone(115, 4.0))
    db = tmp_path / "db"
    indexed = run("index", media, "--db", db, "--model", tiny_model_config, "--audio-model", out, "--json")
    assert indexed.exit_code == 0, indexed.output
    hits = json.loads(run("search", "a low hum", "--db", db, "--json", "--modality", "audio").stdout)
    assert [hit["path"] for hit in hits] == [str(media / "hum.wav")]
    again = run("finetune", pairs, "--val", val, "--out", out, "--epochs", "1")
    assert again.exit_code == 1 and "not empty" in again.output


def test_finetune_refuses_a_clap_model_and_pairs_without_enough_sounds(tmp_path):
    from test_audio import TINY_CLAP

    pairs = write_pairs(tmp_path / "sounds", "pairs.csv", seeds=range(2))
    clap = tmp_path / "clap.json"
    clap.write_text(json.dumps(TINY_CLAP))
    pytest.importorskip("transformers")
    result = run("finetune", pairs, "--out", tmp_path / "out", "--audio-model", clap)
    assert result.exit_code == 1 and "CLAP model cannot" in result.output and "Traceback" not in result.output

"""Sounds: decoded from many formats, cut into windows, indexed beside pictures, searched by words and by sound.

Every sound is made here: tones, chords, chirps and noise synthesised with numpy, written as WAV
with the standard library or encoded with PyAV (FLAC, MP3, Ogg Opus, M4A/AAC) at unusual rates
and channel counts. Searches that must find one file use an excerpt of it as the query (an exact
window: its vector is the indexed one), so they do not depend on what the bundled tower learned.
"""
from __future__ import annotations

import json
import os
import wave

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image

av = pytest.importorskip("av")
runner = CliRunner()
RATE = 16_000


def run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def tone(freq: float, seconds: float, rate: int = RATE, amplitude: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def varied(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    """A sound that changes every second (random tones, chirps and noise bursts): every window differs."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(int(seconds)):
        kind = rng.integers(3)
        if kind == 0:
            part = tone(float(rng.uniform(120, 3000)), 1.0, rate)
        elif kind == 1:
            t = np.arange(rate) / rate
            part = (0.3 * np.sin(2 * np.pi * (rng.uniform(200, 800) + rng.uniform(200, 2000) * t) * t)).astype(np.float32)
        else:
            part = (rng.standard_normal(rate) * rng.uniform(0.05, 0.3)).astype(np.float32)
        parts.append(part)
    return np.concatenate(parts)


def write_wav(path, samples: np.ndarray, rate: int = RATE, channels: int = 1):
    data = np.repeat(samples[:, None], channels, axis=1) if channels > 1 else samples[:, None]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def write_coded(path, samples: np.ndarray, rate: int, codec: str, layout: str = "mono"):
    """`samples` encoded with PyAV's `codec` into `path`'s container (its extension)."""
    out = av.open(str(path), "w")
    stream = out.add_stream(codec, rate=rate, layout=layout)
    channels = 2 if layout == "stereo" else 1
    planar = np.repeat(samples[None, :], channels, axis=0)
    for start in range(0, planar.shape[1], 1024):  # PyAV converts to the codec's format and frame size
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start:start + 1024]), format="fltp",
                                           layout=layout)
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def peak_hz(samples: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


# --- decoding --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, rate, codec, layout", [
    ("a.flac", 48_000, "flac", "stereo"),
    ("b.mp3", 44_100, "libmp3lame", "stereo"),
    ("c.opus", 48_000, "libopus", "mono"),
    ("d.m4a", 22_050, "aac", "stereo"),
    ("e.ogg", 11_025, "flac", "mono"),  # FLAC in Ogg, an unusual rate
])
def test_formats_rates_and_channels_decode_to_mono_at_the_towers_rate(tmp_path, name, rate, codec, layout):
    from indexer.media.audio import decode_samples

    path = write_coded(tmp_path / name, tone(660, 3.0, rate), rate, codec, layout)
    samples, info = decode_samples(str(path), RATE)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / RATE - 3.0) < 0.15, len(samples) / RATE
    assert abs(peak_hz(samples[RATE // 2: 5 * RATE // 2]) - 660) < 5  # resampled, not sped up or slowed
    assert info.source_rate == rate and info.channels == (2 if layout == "stereo" else 1)


def test_many_channels_and_a_low_rate_wav(tmp_path):
    from indexer.media.audio import decode_samples

    path = write_wav(tmp_path / "six.wav", tone(300, 2.0, 8_000), rate=8_000, channels=6)
    samples, info = decode_samples(str(path), RATE)
    assert info.channels == 6 and abs(len(samples) / RATE - 2.0) < 0.05
    assert abs(peak_hz(samples) - 300) < 3


def test_windows_cover_a_sound_and_a_long_one_is_thinned_evenly():
    from indexer.media.audio_reader import AudioWindowing, cut_windows

    windowing = AudioWindowing(RATE, 10.0, 5.0, max_windows=8)
    chunks = [np.zeros(RATE * 7, np.float32) for _ in range(6)]  # 42 s in 7 s chunks
    windows, duration = cut_windows(chunks, AudioWindowing(RATE, 10.0, 5.0), lambda window: len(window.samples))
    assert duration == 42.0
    assert [start for start, _ in windows] == [0, 5, 10, 15, 20, 25, 30, 35]  # and the 2 s tail from 35 s
    assert all(size == 10 * RATE for _, size in windows[:-1]) and windows[-1][1] == 7 * RATE
    short, _ = cut_windows([np.zeros(RATE // 2, np.float32)], windowing, lambda window: len(window.samples))
    assert short == [(0.0, RATE // 2)]  # shorter than a window: one window
    hour = (np.zeros(RATE * 60, np.float32) for _ in range(60))  # an hour, streamed a minute at a time
    long, duration = cut_windows(hour, windowing, lambda window: window.start_s)
    starts = [start for start, _ in long]
    assert duration == 3600.0 and len(starts) <= 9
    assert starts[0] == 0 and starts[-1] >= 3000 and len(set(np.diff(starts[:-1]))) == 1  # evenly over all of it


# --- indexing and search ---------------------------------------------------------------------------
@pytest.fixture()
def media(tmp_path):
    folder = tmp_path / "media"
    (folder / "sounds").mkdir(parents=True)
    write_wav(folder / "sounds" / "long.wav", varied(40, seed=1))
    write_wav(folder / "sounds" / "beep.wav", tone(880, 1.5))
    write_coded(folder / "sounds" / "hum.flac", tone(110, 6.0, 44_100), 44_100, "flac", "stereo")
    write_coded(folder / "sounds" / "song.mp3", varied(12, seed=2, rate=44_100), 44_100, "libmp3lame", "stereo")
    write_image(folder / "photo.png", 1)
    write_image(folder / "other.jpg", 2)
    return folder


def test_sounds_are_indexed_beside_pictures_and_found_by_words_and_by_sound(media, tmp_path, tiny_model_config):
    db = tmp_path / "db"
    result = run("index", media, "--db", db, "--model", tiny_model_config, "--audio-model", "bundled", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["embedded"], summary["failed"]) == (6, 0), summary
    status = json.loads(run("status", "--db", db, "--json").stdout)
    assert status["modalities"] == {"image": 2, "audio": 4}
    assert status["vectors"] == 2 + 7 + 1 + 1 + 2  # 40 s: 10 s windows every 5 s; 12 s: one and its tail
    text = run("status", "--db", db)
    assert "4 audio" in text.stdout and "2 image" in text.stdout

    both = json.loads(run("search", "a dog barking", "--db", db, "--json", "--top", "10").stdout)
    assert {hit["modality"] for hit in both} == {"image", "audio"} and len(both) == 6
    assert all(-1 <= hit["score"] <= 1 for hit in both)
    sounds = json.loads(run("search", "a dog barking", "--db", db, "--json", "--modality", "audio").stdout)
    assert {hit["modality"] for hit in sounds} == {"audio"} and len(sounds) == 4
    assert all("time" in hit for hit in sounds)
    pictures = json.loads(run("search", "a dog barking", "--db", db, "--json", "--modality", "image").stdout)
    assert {hit["modality"] for hit in pictures} == {"image"} and len(pictures) == 2
    queries = tmp_path / "queries.txt"
    queries.write_text("a dog barking\nmusic\n")
    batch = [json.loads(line) for line in run("search", "--queries", queries, "--db", db, "--json").stdout.splitlines()]
    assert [entry["query"] for entry in batch] == ["a dog barking", "music"]
    assert all({hit["modality"] for hit in entry["results"]} == {"image", "audio"} for entry in batch)
    assert [hit["path"] for hit in batch[0]["results"]] == [hit["path"] for hit in both]  # one query, one ranking

    excerpt = write_wav(tmp_path / "excerpt.wav", varied(40, seed=1)[20 * RATE:30 * RATE])  # long.wav's window at 20 s
    found = run("search", "--audio", excerpt, "--db", db, "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["path"].endswith("long.wav") and hits[0]["time"] == 20.0 and hits[0]["score"] > 0.999, hits[0]
    assert {hit["modality"] for hit in hits} == {"audio"}  # a sound ranks sounds
    assert len([hit for hit in hits if hit["path"].endswith("long.wav")]) == 1  # one hit per file
    line = run("search", "--audio", excerpt, "--db", db, "--top", "1").stdout
    assert "long.wav @ 00:20" in line
    same = json.loads(run("search", "--audio", media / "sounds" / "beep.wav", "--db", db, "--json").stdout)
    assert same[0]["path"].endswith("beep.wav") and same[0]["score"] > 0.999


def test_audio_model_none_leaves_sounds_out(media, tmp_path, tiny_model_config):
    db = tmp_path / "db"
    summary = json.loads(run("index", media, "--db", db, "--model", tiny_model_config, "--audio-model", "none",
                             "--json").stdout)
    assert (summary["embedded"], summary["failed"]) == (2, 0)
    assert json.loads(run("status", "--db", db, "--json").stdout)["modalities"] == {"image": 2}
    result = run("search", "--audio", media / "sounds" / "beep.wav", "--db", db)
    assert result.exit_code != 0 and "this index has none" in result.output and "Traceback" not in result.output
    (media / "sounds" / "new.wav").write_bytes((media / "sounds" / "beep.wav").read_bytes())
    again = json.loads(run("index", media, "--db", db, "--json").stdout)  # no --audio-model: the index remembers none
    assert (again["embedded"], again["failed"]) == (0, 0)
    assert json.loads(run("status", "--db", db, "--json").stdout)["modalities"] == {"image": 2}


def test_sounds_are_indexed_by_default_with_the_bundled_tower(media, tmp_path, tiny_model_config):
    db = tmp_path / "db"
    summary = json.loads(run("index", media, "--db", db, "--model", tiny_model_config, "--json").stdout)
    assert (summary["embedded"], summary["failed"]) == (6, 0)
    assert json.loads(run("status", "--db", db, "--json").stdout)["modalities"] == {"image": 2, "audio": 4}


def test_an_audio_index_is_incremental_and_forget_check_repair_reindex_work(media, tmp_path, tiny_model_config,
                                                                            tmp_path_factory):
    db = tmp_path / "db"
    assert run("index", media, "--db", db, "--model", tiny_model_config, "--audio-model", "bundled").exit_code == 0
    vectors = json.loads(run("status", "--db", db, "--json").stdout)["vectors"]
    os.rename(media / "sounds" / "long.wav", media / "sounds" / "renamed.wav")
    summary = json.loads(run("index", media, "--db", db, "--json").stdout)
    assert (summary["embedded"], summary["reused"], summary["removed"]) == (0, 1, 1)
    assert json.loads(run("status", "--db", db, "--json").stdout)["vectors"] == vectors
    excerpt = write_wav(tmp_path / "excerpt.wav", varied(40, seed=1)[10 * RATE:20 * RATE])
    hits = json.loads(run("search", "--audio", excerpt, "--db", db, "--json").stdout)
    assert hits[0]["path"].endswith("renamed.wav") and hits[0]["time"] == 10.0

    write_wav(media / "sounds" / "beep.wav", tone(440, 2.5))  # changed
    os.remove(media / "sounds" / "hum.flac")  # deleted
    summary = json.loads(run("index", media, "--db", db, "--json").stdout)
    assert (summary["embedded"], summary["removed"]) == (1, 1)
    hits = json.loads(run("search", "--audio", media / "sounds" / "beep.wav", "--db", db, "--json").stdout)
    assert hits[0]["path"].endswith("beep.wav") and hits[0]["score"] > 0.999
    check = json.loads(run("check", "--db", db, "--json").stdout)
    assert check["healthy"], check["problems"]

    assert run("forget", media / "sounds" / "song.mp3", "--db", db).exit_code == 0
    paths = [hit["path"] for hit in json.loads(run("search", "music", "--db", db, "--json", "--modality",
                                                   "audio").stdout)]
    assert not any(path.endswith("song.mp3") for path in paths) and len(paths) == 2

    audio_file = db / "vectors-audio.faiss"
    assert audio_file.exists()
    audio_file.write_bytes(audio_file.read_bytes()[:-64] + b"\0" * 64)  # damaged on disk
    check = json.loads(run("check", "--db", db, "--json", "--no-model").stdout)
    assert not check["healthy"] and any("vectors-audio.faiss" in problem["detail"] for problem in check["problems"])
    repaired = run("repair", "--db", db, "--json")
    assert repaired.exit_code == 0, repaired.output
    check = json.loads(run("check", "--db", db, "--json", "--no-model").stdout)
    assert check["healthy"], check["problems"]

    from test_reliability_support import write_model

    other = write_model(tmp_path_factory.mktemp("other-model"), "other.json", seed=5)
    result = run("reindex", "--model", other, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(run("search", "--audio", excerpt, "--db", db, "--json").stdout)  # sounds keep their space
    assert hits[0]["path"].endswith("renamed.wav") and hits[0]["time"] == 10.0
    both = json.loads(run("search", "a bell", "--db", db, "--json").stdout)
    assert {hit["modality"] for hit in both} == {"image", "audio"}


def test_bad_sounds_cost_one_line_each(tmp_path, tiny_model_config):
    media = tmp_path / "media"
    media.mkdir()
    whole = write_coded(tmp_path / "whole.mp3", varied(6, seed=3, rate=44_100), 44_100, "libmp3lame", "mono")
    (media / "truncated.mp3").write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])  # keeps its first half
    (media / "text.mp3").write_text("this is not a sound at all\n" * 40)
    (media / "empty.wav").write_bytes(b"")
    header = write_wav(tmp_path / "h.wav", np.zeros(0, np.float32)).read_bytes()
    (media / "header_only.wav").write_bytes(header)
    (media / "garbage.flac").write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    write_wav(media / "good.wav", tone(500, 1.0))
    result = run("index", media, "--db", tmp_path / "db", "--model", tiny_model_config, "--audio-model", "bundled", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    reasons = {os.path.basename(failure["path"]): failure["reason"] for failure in summary["failures"]}
    assert set(reasons) == {"text.mp3", "empty.wav", "header_only.wav", "garbage.flac"}, reasons
    assert summary["embedded"] == 2  # good.wav, and what decodes of truncated.mp3
    assert "Traceback" not in result.output
    for name in reasons:
        assert result.stderr.count(f"skipping {media / name}") == 1
    status = json.loads(run("status", "--db", tmp_path / "db", "--json").stdout)
    assert status["modalities"] == {"audio": 2}


# --- a CLAP model through transformers (random weights, no hub) ----------------------------------
TINY_CLAP = {
    "seed": 3, "projection_dim": 32,
    "text_config": {"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                    "intermediate_size": 64, "max_position_embeddings": 80, "projection_dim": 32},
    "audio_config": {"spec_size": 64, "window_size": 4, "num_mel_bins": 16, "patch_embeds_hidden_size": 16,
                     "depths": [1, 1], "num_attention_heads": [1, 2], "hidden_size": 32, "projection_hidden_size": 32,
                     "enable_fusion": False, "patch_stride": [4, 4], "patch_size": 4, "projection_dim": 32},
    "feature_extractor": {"feature_size": 16, "sampling_rate": 16000, "hop_length": 160, "max_length_s": 2,
                          "fft_window_size": 400, "frequency_min": 50, "frequency_max": 8000},
}


@pytest.fixture(scope="session")
def tiny_clap(tmp_path_factory):
    pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("clap") / "tiny-clap.json"
    path.write_text(json.dumps(TINY_CLAP))
    return path


def test_a_clap_model_indexes_sounds_in_its_own_space(tmp_path, tiny_model_config, tiny_clap):
    media = tmp_path / "media"
    media.mkdir()
    write_wav(media / "long.wav", varied(8, seed=4))
    write_wav(media / "beep.wav", tone(880, 1.0))
    write_image(media / "photo.png", 3)
    db = tmp_path / "db"
    result = run("index", media, "--db", db, "--model", tiny_model_config, "--audio-model", tiny_clap, "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(run("status", "--db", db, "--json").stdout)
    assert status["modalities"] == {"image": 1, "audio": 2}
    assert status["vectors"] == 1 + 7 + 1  # 2 s windows every second (the tower's own window) and a 1 s beep
    both = json.loads(run("search", "a dog barking", "--db", db, "--json").stdout)
    assert {hit["modality"] for hit in both} == {"image", "audio"}
    queries = tmp_path / "queries.txt"
    queries.write_text("a dog barking\n")
    batch = [json.loads(line) for line in run("search", "--queries", queries, "--db", db, "--json").stdout.splitlines()]
    assert [hit["path"] for hit in batch[0]["results"]] == [hit["path"] for hit in both]
    excerpt = write_wav(tmp_path / "excerpt.wav", varied(8, seed=4)[3 * RATE:5 * RATE])
    found = run("search", "--audio", excerpt, "--db", db, "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert hits[0]["path"].endswith("long.wav") and hits[0]["time"] == 3.0 and hits[0]["score"] > 0.999
    again = run("index", media, "--db", db, "--json")  # the index keeps its audio model
    assert again.exit_code == 0 and json.loads(again.stdout)["unchanged"] == 3
    other = run("index", media, "--db", db, "--audio-model", "bundled")
    assert other.exit_code != 0 and "Traceback" not in other.output


@pytest.mark.parametrize("builder", ["clap-config", "audio-tower"])
def test_a_seeded_audio_model_is_built_alone_whatever_other_threads_draw(builder, tiny_clap):
    """A random-start model drawn on one thread while another draws from torch's generator (an index
    run's image tower or text export beside its audio model) is the model built alone: the build waits
    for the other's `seeded` and no draw of the other reaches it (before, one run in two gave a CLAP
    config an index built with one set of weights and a search another)."""
    import threading

    import torch

    from retrieval.models.audio import load_audio_model
    from retrieval.models.audio_config import AudioTowerConfig
    from retrieval.models.audio_tower import build_audio_tower
    from retrieval.models.seeded import seeded

    def build():
        if builder == "clap-config":
            return load_audio_model(str(tiny_clap)).model
        return build_audio_tower(AudioTowerConfig(channels=(4, 8, 8), hidden=16, text_width=8, embed_dim=8), seed=3)

    alone = build().state_dict()
    built = []
    with seeded(123):
        other = threading.Thread(target=lambda: built.append(build()))
        other.start()
        for _ in range(200):  # this thread's draws, while the other wants the generator
            torch.rand(64)
        other.join(timeout=1.0)
        assert other.is_alive() and not built  # it waits for this build to end
    other.join(timeout=60)
    assert not other.is_alive()
    assert built[0].state_dict().keys() == alone.keys()
    assert all(torch.equal(value, alone[key]) for key, value in built[0].state_dict().items())


# --- kill -9 ---------------------------------------------------------------------------------------
def test_an_audio_index_killed_mid_run_loses_nothing_committed(tmp_path, tiny_model_config):
    from test_reliability_support import CliProcess, assert_database_consistent, committed_rows, count

    media = tmp_path / "media"
    media.mkdir()
    for number in range(60):
        write_wav(media / f"s{number:02d}.wav", varied(15, seed=100 + number))  # two windows each
    db = tmp_path / "db"
    args = ["index", media, "--db", db, "--model", tiny_model_config, "--audio-model", "bundled", "--batch-size", "4", "--json"]
    process = CliProcess(args, tmp_path / "killed")
    process.wait_until(lambda: count(db, "SELECT count(DISTINCT item_id) FROM vectors") >= 12, timeout_s=300,
                       what="12 sounds")  # start-up on a busy machine takes a minute
    assert process.kill(), "the run ended before it could be killed"
    assert_database_consistent(db)
    committed = committed_rows(db)
    assert 12 <= len({path for path in committed}) < 60
    final = CliProcess(args, tmp_path / "final")
    assert final.wait(timeout_s=600) == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["embedded"] == 60 - len(committed) and summary["unchanged"] == len(committed)
    rows = committed_rows(db)
    assert all(rows[path] == row for path, row in committed.items())
    check = json.loads(run("check", "--db", db, "--json", "--no-model").stdout)
    assert check["healthy"], check["problems"]


def test_a_short_sounds_vector_does_not_depend_on_its_batch_mates():
    from retrieval.models.audio import load_audio_model

    model = load_audio_model("bundled", device="cpu")
    short, full = model.features(varied(2, seed=5)), model.features(varied(10, seed=6))
    alone = model.embed_windows([short])[0]
    beside_a_full_window = model.embed_windows([full, short])[1]
    assert np.allclose(alone, beside_a_full_window, atol=1e-6)

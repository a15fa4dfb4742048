"""Render the bundled audio tower's training and held-out recordings (16 kHz mono WAV) and a manifest.

    python -m tools.audio.make_clips --work /tmp/audio-work [--per-concept 24] [--jobs 2]

Resumable: a clip already on disk is kept, and the manifest (clips.csv) is rewritten from what is
there. Held-out recordings are new recordings of trained concepts: other tunes (fluidsynth),
other phrases (espeak-ng), other seeds (synthesis), other files (recorded effects).
"""
from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import logging
import os
import random
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tools.audio.concepts import CONCEPTS, PHRASES, Concept
from tools.audio.midi import drums, melody, midi_bytes, shifted

log = logging.getLogger(__name__)

RATE = 16_000
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
HELD_OUT = "heldout"
TRAIN = "train"
GAP_S = 2.5  # silence between tunes in one render (release tails die out)


def write_wav(path: Path, samples: np.ndarray) -> None:
    samples = np.clip(samples, -1, 1)
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    os.replace(tmp, path)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as source:
        channels, rate = source.getnchannels(), source.getframerate()
        data = np.frombuffer(source.readframes(source.getnframes()), "<i2").astype(np.float32) / 32768
    return data.reshape(-1, channels).mean(axis=1), rate


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


# --- fluidsynth --------------------------------------------------------------------------------
def render_tunes(concept: Concept, split: str, count: int, folder: Path) -> None:
    """`count` tunes of one instrument or drum concept, rendered in one fluidsynth run, cut apart."""
    wanted = [folder / f"{split}-{n:03d}.wav" for n in range(count)]
    if all(path.exists() for path in wanted):
        return
    events, spans, at = [], [], 0.5
    for n in range(count):
        rng = random.Random(_seed(concept.name, split, n))
        seconds = rng.uniform(3, 9)
        if concept.kind == "instrument":
            program = rng.choice(concept.params["programs"])
            tune, length = melody(program, rng, seconds, concept.params["low"], concept.params["high"],
                                  concept.params["chords"])
        else:
            tune, length = drums(concept.params["notes"] or (36,), rng, seconds, concept.params["pattern"])
        events += shifted(tune, at)
        spans.append((at, at + length))
        at += length + GAP_S
    with tempfile.TemporaryDirectory() as tmp:
        midi, rendered = Path(tmp) / "tunes.mid", Path(tmp) / "tunes.wav"
        midi.write_bytes(midi_bytes(events))
        subprocess.run(["fluidsynth", "-ni", "-q", "-F", str(rendered), "-r", str(RATE), "-g", "0.7", SOUNDFONT, str(midi)],
                       check=True, capture_output=True)
        samples, rate = read_wav(rendered)
    assert rate == RATE
    for path, (start, end) in zip(wanted, spans):
        clip = samples[int(start * RATE):int(end * RATE)]
        peak = np.abs(clip).max() if clip.size else 0
        if peak > 1e-4:
            write_wav(path, clip * (0.9 / peak) * random.Random(_seed(path)).uniform(0.3, 1.0))


# --- espeak-ng ---------------------------------------------------------------------------------
def render_speech(concept: Concept, split: str, count: int, folder: Path) -> None:
    phrases = PHRASES[concept.params["language"]]
    cut = max(1, int(len(phrases) * 0.7))
    pool = phrases[:cut] if split == TRAIN else phrases[cut:]
    for n in range(count):
        path = folder / f"{split}-{n:03d}.wav"
        if path.exists():
            continue
        rng = random.Random(_seed(concept.name, split, n))
        text = rng.choice(pool)
        if rng.random() < 0.4:
            text = text + ", " + rng.choice(pool)
        voice = f"{concept.params['language']}+{rng.choice(concept.params['voices'])}"
        speed, pitch = rng.randrange(120, 200), rng.randrange(20, 80)
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "speech.wav"
            result = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), text],
                                    capture_output=True)
            if result.returncode != 0 or not raw.exists():
                log.warning("espeak-ng %s failed: %s", voice, result.stderr.decode()[:200])
                return
            converted = Path(tmp) / "speech16.wav"
            subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(converted)], check=True)
            samples, _ = read_wav(converted)
        write_wav(path, samples * rng.uniform(0.4, 1.0) / max(1e-3, np.abs(samples).max()))


# --- synthesis ---------------------------------------------------------------------------------
def _sox(args: list[str], seconds: float) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(out), "synth", f"{seconds:.2f}", *args],
                       check=True, capture_output=True)
        return read_wav(out)[0]


def _tone(freq: float, seconds: float, wave_kind: str = "sine") -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    phase = 2 * np.pi * freq * t
    return np.sign(np.sin(phase)) if wave_kind == "square" else np.sin(phase)


def _pattern(parts: list[tuple[float, np.ndarray | None]]) -> np.ndarray:
    """(seconds, samples or None for silence) pieces joined."""
    return np.concatenate([np.zeros(int(seconds * RATE)) if samples is None else samples[:int(seconds * RATE)]
                           for seconds, samples in parts])


def synthesise(recipe: str, rng: random.Random) -> np.ndarray:
    seconds = rng.uniform(3, 9)
    if recipe == "sine":
        out = _tone(rng.uniform(150, 2500), seconds)
    elif recipe == "beeps":
        freq, on, off = rng.uniform(700, 3500), rng.uniform(0.05, 0.25), rng.uniform(0.05, 0.6)
        out = _pattern([(on, _tone(freq, on)), (off, None)] * int(seconds / (on + off) + 1))
    elif recipe == "hum":
        base = rng.choice((50, 60))
        t = np.arange(int(seconds * RATE)) / RATE
        out = sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * base * k * t) for k in range(1, 8))
    elif recipe == "white":
        out = _sox([rng.choice(("whitenoise", "pinknoise"))], seconds)
    elif recipe == "brown":
        out = _sox(["brownnoise"], seconds)
    elif recipe == "siren":
        t = np.arange(int(seconds * RATE)) / RATE
        if rng.random() < 0.5:  # wail: slow sweep up and down
            freq = 900 + 500 * np.sin(2 * np.pi * rng.uniform(0.15, 0.5) * t)
        else:  # two-tone
            freq = np.where((t * rng.uniform(0.8, 2)) % 1 < 0.5, rng.uniform(600, 800), rng.uniform(900, 1200))
        out = np.sin(2 * np.pi * np.cumsum(freq) / RATE)
    elif recipe == "sweep":
        low = rng.uniform(50, 400)
        out = _sox(["sine", f"{low:.0f}-{rng.uniform(2000, 7000):.0f}"], seconds)
    elif recipe == "dial":
        out = _tone(350, seconds) + _tone(440, seconds) if rng.random() < 0.6 else _tone(425, seconds)
    elif recipe == "busy":
        tone = _tone(480, 0.5) + _tone(620, 0.5)
        out = _pattern([(0.5, tone), (0.5, None)] * int(seconds + 1))
    elif recipe == "morse":
        freq, unit = rng.uniform(500, 1000), rng.uniform(0.05, 0.1)
        parts = []
        while sum(part[0] for part in parts) < seconds:
            parts.append((unit * rng.choice((1, 3)), _tone(freq, unit * 3)))
            parts.append((unit * rng.choice((1, 1, 3, 7)), None))
        out = _pattern(parts)
    elif recipe == "tick":
        period = rng.uniform(0.4, 1.0)
        click = _sox(["whitenoise"], 0.02) * np.exp(-np.arange(int(0.02 * RATE)) / 40)
        out = _pattern([(0.02, click), (period - 0.02, None)] * int(seconds / period + 1))
    elif recipe == "buzzer":
        out = _tone(rng.uniform(80, 400), seconds, "square") * 0.5
    elif recipe == "silence":
        out = _sox(["brownnoise"], seconds) * rng.uniform(0.001, 0.01)
    elif recipe == "heartbeat":
        period = 60 / rng.uniform(55, 110)
        t = np.arange(int(0.12 * RATE)) / RATE
        thump = np.sin(2 * np.pi * rng.uniform(40, 70) * t) * np.exp(-t * 30)
        out = _pattern([(0.12, thump), (0.18, None), (0.12, thump * 0.7), (period - 0.42, None)] * int(seconds / period + 1))
    else:
        raise ValueError(recipe)
    out = np.asarray(out, dtype=np.float32)
    out = out / max(1e-6, np.abs(out).max()) * rng.uniform(0.2, 0.9)
    if recipe != "silence" and rng.random() < 0.5:
        out = out + np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(0.001, 0.02), out.shape)
    return out


def render_synth(concept: Concept, split: str, count: int, folder: Path) -> None:
    for n in range(count):
        path = folder / f"{split}-{n:03d}.wav"
        if not path.exists():
            write_wav(path, synthesise(concept.params["recipe"], random.Random(_seed(concept.name, split, n))))


# --- recorded files ----------------------------------------------------------------------------
def concept_files(concept: Concept) -> list[str]:
    return sorted({path for pattern in concept.params["patterns"] for path in glob.glob(pattern)})


def file_split(concept: Concept, files: list[str]) -> dict[str, str]:
    """Every fourth file (in a seeded order) is held out, once a concept has at least three."""
    order = sorted(files, key=lambda path: _seed(concept.name, path))
    return {path: HELD_OUT if len(files) >= 3 and index % 4 == 1 else TRAIN for index, path in enumerate(order)}


def convert_files(concept: Concept, folder: Path) -> None:
    for source, split in file_split(concept, concept_files(concept)).items():
        path = folder / f"{split}-{_seed(source) % 10**8:08d}.wav"
        if path.exists():
            continue
        tmp = path.with_suffix(".part.wav")
        subprocess.run(["sox", source, "-r", str(RATE), "-c", "1", "-b", "16", str(tmp)], check=True, capture_output=True)
        os.replace(tmp, path)
        (path.with_suffix(".source")).write_text(source)


def render_concept(concept: Concept, work: Path, per_concept: int) -> None:
    folder = work / "clips" / concept.name
    folder.mkdir(parents=True, exist_ok=True)
    held = max(2, per_concept // 4)
    if concept.kind in ("instrument", "drums"):
        render_tunes(concept, TRAIN, per_concept, folder)
        render_tunes(concept, HELD_OUT, held, folder)
    elif concept.kind == "speech":
        render_speech(concept, TRAIN, per_concept, folder)
        render_speech(concept, HELD_OUT, held, folder)
    elif concept.kind == "sox":
        render_synth(concept, TRAIN, per_concept, folder)
        render_synth(concept, HELD_OUT, held, folder)
    else:
        convert_files(concept, folder)


def write_manifest(work: Path) -> Path:
    rows = []
    for concept in CONCEPTS:
        for path in sorted((work / "clips" / concept.name).glob("*.wav")):
            if path.name.endswith(".part.wav"):
                continue
            with wave.open(str(path), "rb") as source:
                seconds = source.getnframes() / source.getframerate()
            split = HELD_OUT if path.name.startswith(HELD_OUT) else TRAIN
            source = path.with_suffix(".source")
            rows.append({"path": str(path.relative_to(work)), "concept": concept.name, "caption": concept.captions[0],
                         "split": split, "seconds": round(seconds, 3), "kind": concept.kind,
                         "source": source.read_text() if source.exists() else concept.kind})
    manifest = work / "clips.csv"
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, manifest)
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--per-concept", type=int, default=24, help="training recordings of each generated concept")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="concept names")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    concepts = [concept for concept in CONCEPTS if not args.only or concept.name in args.only]
    with ThreadPoolExecutor(args.jobs) as pool:
        for concept, future in [(c, pool.submit(render_concept, c, args.work, args.per_concept)) for c in concepts]:
            future.result()
            log.info("%s done", concept.name)
    manifest = write_manifest(args.work)
    log.info("manifest %s", manifest)


if __name__ == "__main__":
    main()

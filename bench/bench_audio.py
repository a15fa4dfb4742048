"""Audio figures (issue 15): indexing speed in times real time, and held-out text->audio recall.

    python bench/bench_audio.py speed   [--minutes 10] [--rounds 3] [--audio-model bundled|clap-random]
    python bench/bench_audio.py heldout --work W

`speed`: `--minutes` one-minute recordings made here (a new sound every second: tones, chirps,
noise), half 44.1 kHz stereo WAV and half 44.1 kHz stereo MP3, so decoding, down-mixing and
resampling are in the figure. They are indexed with `mmsearch index` (the library call, the
bundled image model, CPU) and the audio model asked for: the bundled tower, or LAION-CLAP's
architecture (transformers' ClapConfig defaults = laion/clap-htsat-unfused's shape: HTS-AT, 48 kHz,
10 s windows) with random weights, which costs what the real weights cost. A warm-up run first
pays the one-time set-up (imports, the image tower's export); each timed run starts from a copy of
the warm index (its one sound lies in another folder). Figures: audio seconds over the run's wall time (medians), and
the reader alone (decode + features, no model) beside it, and audio seconds per CPU second of
the run (all threads; a figure a busy machine does not lower).

`heldout`: the recordings the bundled tower never trained on (W/clips.csv, split "heldout", from
`python -m tools.audio.make_clips --work W`) are indexed with `mmsearch index` (windows and all)
and each concept's first caption is searched with `--modality audio`: R@1 and R@10, a hit being
any recording of that concept, with the chance level of R@10 beside it.
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402

CLAP_RANDOM = {"seed": 0}  # ClapConfig() and ClapFeatureExtractor() defaults: the shape of laion/clap-htsat-unfused


def minute_of_sound(seed: int, rate: int = 44_100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rate) / rate
    parts = []
    for _ in range(60):
        kind = rng.integers(3)
        if kind == 0:
            part = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        elif kind == 1:
            part = 0.3 * np.sin(2 * np.pi * (rng.uniform(200, 800) + rng.uniform(200, 3000) * t) * t)
        else:
            part = rng.standard_normal(rate) * rng.uniform(0.05, 0.3)
        parts.append(part)
    return np.concatenate(parts).astype(np.float32)


def write_sound(path: Path, samples: np.ndarray, rate: int = 44_100) -> Path:
    import av

    out = av.open(str(path), "w")
    stream = out.add_stream("pcm_s16le" if path.suffix == ".wav" else "libmp3lame", rate=rate, layout="stereo")
    planar = np.repeat(samples[None, :], 2, axis=0)
    for start in range(0, planar.shape[1], 1152):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start:start + 1152]), format="fltp",
                                           layout="stereo")
        frame.sample_rate, frame.pts = rate, start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def audio_model_name(choice: str, work: Path) -> str:
    if choice == "clap-random":
        path = work / "clap-random.json"
        path.write_text(json.dumps(CLAP_RANDOM))
        return str(path)
    return choice


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def index_once(folder: Path, db: Path, audio_model: str | None) -> tuple[float, dict, float]:
    """(wall seconds, the run's summary, CPU seconds) of one `mmsearch index` run."""
    from retrieval.indexing import IndexRequest, index_library

    started, cpu = time.perf_counter(), cpu_seconds()
    outcome = index_library(IndexRequest(db=db, roots=(str(folder),), model="bundled", device="cpu",
                                         audio_model=audio_model or "none"))
    return time.perf_counter() - started, outcome.as_dict(), cpu_seconds() - cpu


def read_once(paths: list[Path], audio_model: str) -> float:
    from retrieval.media import audio_media, open_audio_model

    reader, _ = audio_media(open_audio_model(audio_model))
    started = time.perf_counter()
    for path in paths:
        reader.read_path(str(path), lambda: False)
    return time.perf_counter() - started


def bench_speed(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="mms-bench-audio-"))
    out: dict = {"machine": benchlib.machine_line(), "date": benchlib.today(), "code": benchlib.code_version(),
                 "audio_model": args.audio_model, "seconds_of_audio": 60 * args.minutes,
                 "load_at_start": open("/proc/loadavg").read().split()[:3]}
    try:
        audio_model = audio_model_name(args.audio_model, work)
        sounds = work / "sounds"
        sounds.mkdir()
        paths = [write_sound(sounds / f"rec{number:02d}.{'wav' if number % 2 == 0 else 'mp3'}", minute_of_sound(number))
                 for number in range(args.minutes)]
        warm = work / "warm"
        warm.mkdir()
        write_sound(warm / "w.wav", minute_of_sound(99)[:44_100 * 5])
        index_once(warm, work / "db-warm", audio_model)  # imports, weights, the image tower's export: not timed
        index_s, read_s, cpu_s, summary = [], [], [], {}
        for _ in range(args.rounds):
            db = work / "db-run"
            shutil.rmtree(db, ignore_errors=True)
            shutil.copytree(work / "db-warm", db)
            seconds, summary, cpu = index_once(sounds, db, audio_model)
            index_s.append(seconds)
            cpu_s.append(cpu)
            read_s.append(read_once(paths, audio_model))
        total = 60.0 * args.minutes
        out.update({"index_x_realtime": round(total / statistics.median(index_s), 1),
                    "reader_only_x_realtime": round(total / statistics.median(read_s), 1),
                    # load-independent: audio seconds per CPU second of the run (all its threads)
                    "index_x_realtime_per_cpu_second": round(total / statistics.median(cpu_s), 1),
                    "index_s_median": round(statistics.median(index_s), 2),
                    "runs_index_s": [round(value, 2) for value in index_s],
                    "embedded": summary.get("embedded"), "failed": summary.get("failed"),
                    "load_at_end": open("/proc/loadavg").read().split()[:3]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def bench_heldout(args) -> dict:
    from retrieval.query.run import QueryRequest, make_filters, search_index
    from tools.audio.concepts import CONCEPTS

    captions = {concept.name: concept.captions[0] for concept in CONCEPTS}
    rows = [row for row in csv.DictReader(open(args.work / "clips.csv")) if row["split"] == "heldout"]
    work = Path(tempfile.mkdtemp(prefix="mms-bench-audio-heldout-"))
    try:
        folder = work / "heldout"
        for row in rows:
            target = folder / row["concept"] / Path(row["path"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(args.work / row["path"], target)
        _, summary, _ = index_once(folder, work / "db", "bundled")
        concepts = sorted({row["concept"] for row in rows})
        request = QueryRequest(db=work / "db", top=10, filters=make_filters(modalities=("audio",)))
        r1 = r10 = 0
        for concept in concepts:
            hits = search_index(request, captions[concept]).hits
            found = [Path(hit.path).parent.name == concept for hit in hits]
            r1 += bool(found[:1] and found[0])
            r10 += any(found[:10])
        counts = {concept: sum(row["concept"] == concept for row in rows) for concept in concepts}
        n = len(rows)
        chance = statistics.mean(1 - np.prod([(n - counts[c] - i) / (n - i) for i in range(10)]) for c in concepts)
        return {"machine": benchlib.machine_line(), "date": benchlib.today(), "code": benchlib.code_version(),
                "recordings": n, "queries": len(concepts), "embedded": summary["embedded"],
                "r1": round(r1 / len(concepts), 3), "r10": round(r10 / len(concepts), 3),
                "chance_r10": round(float(chance), 3)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("speed", "heldout"))
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--audio-model", default="bundled", help="bundled, or clap-random (CLAP's shape, random weights)")
    parser.add_argument("--work", type=Path, help="heldout: the folder of tools.audio.make_clips")
    args = parser.parse_args()
    result = bench_speed(args) if args.what == "speed" else bench_heldout(args)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

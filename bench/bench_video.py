"""Video figures (issue 16): indexing speed in times real time, and finding the right moment.

    python bench/bench_video.py speed   [--seconds 60] [--rounds 3] [--frames keyframes,dense] [--clips-dir DIR]
    python bench/bench_video.py moments [--clips 12] [--per-clip 8]

`speed`: 1080p H.264 clips made here with PyAV (libx264 veryfast, a shot every 4 s: moving
gradients, blocks and noise, so the encoder works as on camera footage), in two encodings: keyframes
every second (what phones write) and x264's defaults (keyframes up to 250 frames apart, placed at
scene cuts). Each is indexed with `mmsearch index` (the library call, the bundled offline model,
CPU, int8 image tower), timed from the start of the run to its end; figures are the video's
length over the run's wall time, medians of `--rounds`, and the decode-only time of the same
reader (no model) beside it.

`moments`: clips made of data/sample's pictures (emoji drawings) shown for 3 s each, with a
caption per picture, in two encodings: keyframes far from the cuts (one in each 24 s clip) and
x264's defaults (its scene-cut detection puts a keyframe at each new picture). Each caption is
searched as text with the bundled model over an index of the clips, per encoding and per
--video-frames mode (keyframes, dense), and over an index of the same pictures as stills: how often
the right clip comes first, how often its moment is within 1 s of the picture's start, and the
stills' R@1 beside it.
"""
from __future__ import annotations

import argparse
import csv
import json
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


def camera_like_clip(path: Path, seconds: int, keyint: int | None, size=(1920, 1080), fps=30) -> Path:
    import av

    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
    stream.options = {"preset": "veryfast", "crf": "23", **({"g": str(keyint), "keyint_min": str(keyint)} if keyint else {})}
    rng = np.random.default_rng(0)
    height, width = size[1], size[0]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for index in range(seconds * fps):
        shot = index // (4 * fps)
        phase = index / fps
        base = np.stack([(np.sin(xx / (200 + 37 * shot) + phase) + 1) * 90 + 40 * (shot % 3),
                         (np.cos(yy / (150 + 23 * shot) - phase) + 1) * 90,
                         (np.sin((xx + yy) / (300 + shot) + 2 * phase) + 1) * 60 + 30 * (shot % 5)], axis=-1)
        blocks = rng.integers(0, 40, (height // 60, width // 60, 3)).repeat(60, 0).repeat(60, 1)
        pixels = np.clip(base + blocks + rng.normal(0, 6, (height, width, 3)), 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def index_once(folder: Path, db: Path, frames: str | None = None) -> tuple[float, dict]:
    from indexer.pipeline.sync import IndexProgress  # noqa: F401 - imported before timing
    from retrieval.indexing import IndexRequest, index_library

    started = time.perf_counter()
    outcome = index_library(IndexRequest(db=db, roots=(str(folder),), model="bundled", device="cpu",
                                         video_frames=frames))
    return time.perf_counter() - started, outcome.as_dict()


def decode_once(path: Path, frames: str) -> tuple[float, int]:
    from indexer.media.video_reader import VideoReader, VideoReadOptions
    from retrieval.models.encoders import load_model

    reader = VideoReader(load_model("bundled", device="cpu").preprocess, VideoReadOptions(frames=frames))
    started = time.perf_counter()
    decoded = reader.read_path(str(path), lambda: False)
    return time.perf_counter() - started, len(decoded.segments)


def bench_speed(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="mms-bench-video-"))
    out: dict = {"machine": benchlib.machine_line(), "date": benchlib.today(), "code": benchlib.code_version(),
                 "seconds_of_video": args.seconds, "load_at_start": open("/proc/loadavg").read().split()[:3]}
    try:
        clips = {}
        for name, keyint in (("keyframe_every_1s", 30), ("x264_default_gop", None)):
            folder = work / name
            folder.mkdir()
            made = Path(args.clips_dir) / f"{name}-{args.seconds}s.mp4" if args.clips_dir else None
            if made is not None and not made.exists():
                made.parent.mkdir(parents=True, exist_ok=True)
                camera_like_clip(made.with_suffix(".part.mp4"), args.seconds, keyint).rename(made)
            clips[name] = folder / f"{name}.mp4"
            if made is not None:
                shutil.copy(made, clips[name])
            else:
                camera_like_clip(clips[name], args.seconds, keyint)
        warm = work / "warm"
        warm.mkdir()
        # a clip of its own: a copy of a timed one would be reused by content hash, not read, in the runs
        camera_like_clip(warm / "w.mp4", 1, 30)
        index_once(warm, work / "db-warm")  # the model's one-time export and imports, not timed below
        cases = [(f"{name}/{frames}", clip, frames) for name, clip in clips.items() for frames in args.frames.split(",")]
        runs: dict = {case: {"index_s": [], "decode_s": []} for case, _, _ in cases}
        for round_ in range(args.rounds):
            for case, clip, frames in (cases if round_ % 2 == 0 else reversed(cases)):
                db = work / f"db-{case.replace('/', '-')}-{round_}"
                shutil.copytree(work / "db-warm", db)  # the model's export is there: the steady state
                seconds, summary = index_once(clip.parent, db, frames)
                runs[case]["index_s"].append(seconds)
                runs[case]["summary"] = summary
                decode_s, moments = decode_once(clip, frames)
                runs[case]["decode_s"].append(decode_s)
                runs[case]["moments"] = moments
        for name, values in runs.items():
            index_s, decode_s = statistics.median(values["index_s"]), statistics.median(values["decode_s"])
            out[name] = {"index_x_realtime": round(args.seconds / index_s, 1),
                         "decode_only_x_realtime": round(args.seconds / decode_s, 1),
                         "index_s_median": round(index_s, 2), "moments": values["moments"],
                         "runs_index_s": [round(value, 2) for value in values["index_s"]],
                         "image_precision": values["summary"]["image_precision"],
                         "runs_decode_s": [round(value, 2) for value in values["decode_s"]]}
        out["load_at_end"] = open("/proc/loadavg").read().split()[:3]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


PICTURE_ENCODINGS = {
    "far": {"preset": "ultrafast", "g": "250", "sc_threshold": "0"},  # keyframes far from the cuts (24 s clip: one)
    "cuts": {"preset": "veryfast", "g": "250"},  # x264's defaults: its scene-cut detection puts keyframes at the cuts
}


def picture_clip(path: Path, pictures: list[Path], seconds_each: float = 3.0, fps: int = 10, size: int = 160,
                 encoding: str = "far") -> Path:
    import av
    from PIL import Image

    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=fps)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.options = dict(PICTURE_ENCODINGS[encoding])
    for picture in pictures:
        pixels = np.asarray(Image.open(picture).convert("RGB").resize((size, size)), np.uint8)
        for _ in range(int(seconds_each * fps)):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return path


def count_moments(folder: Path, frames: str) -> int:
    from indexer.media.preprocess import PreprocessConfig
    from indexer.media.video_reader import VideoReader, VideoReadOptions

    reader = VideoReader(PreprocessConfig(image_size=32), VideoReadOptions(frames=frames))
    return sum(len(reader.read_path(str(path), lambda: False).segments) for path in sorted(folder.iterdir()))


def bench_moments(args) -> dict:
    from retrieval.query.run import QueryRequest, search_index

    sample = ROOT / "data" / "sample"
    rows = list(csv.DictReader(open(sample / "captions.csv")))
    rng = np.random.default_rng(0)
    chosen = [rows[i] for i in rng.choice(len(rows), size=args.clips * args.per_clip, replace=False)]
    work = Path(tempfile.mkdtemp(prefix="mms-bench-moments-"))
    try:
        stills = work / "stills"
        stills.mkdir()
        truth = {}
        for encoding in PICTURE_ENCODINGS:
            (work / f"clips-{encoding}").mkdir()
        for number in range(args.clips):
            group = chosen[number * args.per_clip:(number + 1) * args.per_clip]
            for encoding in PICTURE_ENCODINGS:
                picture_clip(work / f"clips-{encoding}" / f"clip{number:02d}.mp4", [sample / row["image"] for row in group],
                             encoding=encoding)
            for position, row in enumerate(group):
                truth[row["image"]] = (f"clip{number:02d}.mp4", 3.0 * position)
                shutil.copy(sample / row["image"], stills / row["image"])
        index_once(stills, work / "db-stills")
        n = len(chosen)
        out = {"machine": benchlib.machine_line(), "date": benchlib.today(), "code": benchlib.code_version(),
               "clips": args.clips, "pictures_per_clip": args.per_clip, "queries": n}
        still_first = sum(Path(search_index(QueryRequest(db=work / "db-stills", top=1), row["caption"]).hits[0].path).name
                          == row["image"] for row in chosen)
        out["same_pictures_as_stills_r1"] = round(still_first / n, 3)
        for encoding in PICTURE_ENCODINGS:
            for frames in ("keyframes", "dense"):
                db = work / f"db-{encoding}-{frames}"
                index_once(work / f"clips-{encoding}", db, frames)
                clip_first = moment_ok = 0
                for row in chosen:
                    clip, start = truth[row["image"]]
                    hit = search_index(QueryRequest(db=db, top=1), row["caption"]).hits[0]
                    if Path(hit.path).name == clip:
                        clip_first += 1
                        moment_ok += any(abs(moment - start) <= 1.0 for moment, _ in hit.moments[:1])
                out[f"{encoding}/{frames}"] = {"right_clip_first": round(clip_first / n, 3),
                                               "right_clip_and_moment_within_1s": round(moment_ok / n, 3),
                                               "moments": count_moments(work / f"clips-{encoding}", frames)}
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("speed", "moments"))
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--per-clip", type=int, default=8)
    parser.add_argument("--clips-dir", help="speed: keep the generated clips here and reuse them (making them takes minutes)")
    parser.add_argument("--frames", default="keyframes,dense", help="speed: the --video-frames modes timed, comma-separated")
    args = parser.parse_args()
    result = bench_speed(args) if args.what == "speed" else bench_moments(args)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

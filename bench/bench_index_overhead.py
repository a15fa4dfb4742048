"""What `mmsearch index` costs besides the model: the CPU side of the GPU (deferred-JPEG) path.

1. `pipeline`: index_folders on N distinct 640x480 JPEG files with JPEGs deferred as on a CUDA
   machine, but the GPU embedder replaced by a stand-in that returns random unit vectors at once:
   reading, hashing, header parsing, rows, SQLite writes, the FAISS file. Files/s.
2. `write`: ItemStore.write_batch alone, 40 batches of 256 new rows with 512-d vectors. ms/row.
3. `header`: one JPEG header read on a decode thread, indexer.media.gpu_jpeg.jpeg_header (the marker
   reader of indexer.media.jpeg_markers, Pillow behind it) against pillow_jpeg_header; us per call, best
   of interleaved rounds, on a 640x480 JPEG without EXIF and on one with a phone's EXIF block.
4. `share`: the CPU assist for big JPEGs (`--assist-megapixels`) against a SIMULATED GPU: the
   stand-in embedder sleeps 1/--gpu-rate s per JPEG handed to it (nvJPEG's batch time, during
   which the GIL is free, as in a CUDA sync), while JPEGs the decode threads take themselves are
   really decoded (PIL draft) and embedded by a tiny CPU model. Runs the same folder with the
   assist off and on, interleaved; images/s and the share decoded on the CPU. It shows whether idle
   threads add their decode rate to the GPU's without slowing it; the GPU figure itself needs a GPU
   (bench/gpu_check.py).

    .venv/bin/python bench/bench_index_overhead.py pipeline --files 4000 --workers 2 [--exif]
    .venv/bin/python bench/bench_index_overhead.py write
    .venv/bin/python bench/bench_index_overhead.py header
    .venv/bin/python bench/bench_index_overhead.py share --files 300 --size 4000x3000 --gpu-rate 60 --rounds 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_CONFIG = {"embed_dim": 512,
                "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
                "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
                "seed": 0}


def with_camera_exif(jpeg: bytes, seed: int) -> bytes:
    """The same picture with the EXIF block a phone or camera writes: IFD0 (make, model, orientation,
    resolution, software, date) and the Exif sub-IFD (exposure, aperture, ISO, capture date and
    offset, focal length, lens, and so on): what a real photo's header parser has to read."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif.update({0x010F: "Phonemaker", 0x0110: f"Model {seed % 7}", 0x0112: 1, 0x011A: 72.0, 0x011B: 72.0,
                 0x0128: 2, 0x0131: "Camera 1.2.3", 0x0132: "2024:06:01 12:00:00", 0x0213: 1})
    sub = exif.get_ifd(0x8769)
    sub.update({0x829A: 0.008, 0x829D: 1.8, 0x8822: 2, 0x8827: 100 + seed, 0x9003: f"2024:06:01 12:{seed % 60:02d}:00",
                0x9004: "2024:06:01 12:00:00", 0x9010: "+02:00", 0x9011: "+02:00", 0x9201: 6.9, 0x9202: 1.7,
                0x9204: 0.0, 0x9207: 5, 0x9209: 16, 0x920A: 4.2, 0xA002: 640, 0xA003: 480, 0xA402: 0, 0xA403: 0,
                0xA405: 26, 0xA406: 0, 0xA434: "Main camera 4.2mm f/1.8"})
    image = Image.open(io.BytesIO(jpeg))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def deferred_media(model, embed_jpegs, assist_megapixels: float | None = 4.0):
    """The image media of a CUDA run (JPEG headers on the threads, pixels left for the GPU), with
    `embed_jpegs` standing in for the GPU."""
    from indexer.media.image_reader import ImageReader, ImageReadOptions, PixelEncoder
    from indexer.media.kinds import Media

    reader = ImageReader(model.preprocess, ImageReadOptions(defer_jpeg=True, assist_megapixels=assist_megapixels))
    encoder = PixelEncoder(model.info, lambda pixels: model.image.embed_pixels(pixels), embed_jpegs)
    return Media(readers=(reader,), encoders={"image": encoder})


def bench_pipeline(work: Path, files: int, workers: int, batch: int, exif: bool = False) -> dict:
    from gpu_check import make_jpegs, unique_copies

    from indexer.media.gpu_jpeg import JpegOutcome
    from indexer.pipeline import sync
    from indexer.pipeline.embed import PipelineConfig
    from indexer.store.library import Library
    from retrieval.models.encoders import load_model

    folder = work / "jpegs"
    bases = make_jpegs(16, (640, 480))
    if exif:
        bases = tuple(with_camera_exif(base, seed) for seed, base in enumerate(bases))
    unique_copies(bases, files, folder, "x")
    config_path = work / "small.json"
    config_path.write_text(json.dumps(SMALL_CONFIG))
    model = load_model(str(config_path), device="cpu")
    rng = np.random.default_rng(0)

    def stand_in(items):
        vectors = rng.standard_normal((len(items), 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return [JpegOutcome(vector) for vector in vectors]

    config = sync.IndexConfig(roots=(str(folder),), pipeline=PipelineConfig(batch_size=batch, workers=workers))
    started = time.perf_counter()
    with Library(work / "db") as library, library.lock():
        report = sync.index_folders(library, deferred_media(model, stand_in), config)
    wall = time.perf_counter() - started
    return {"files": report.embedded, "seconds": round(wall, 2), "files_per_s": round(report.embedded / wall, 1),
            "workers": workers, "batch": batch, "camera_exif": exif}


def bench_share(work: Path, files: int, workers: int, batch: int, size: tuple[int, int], gpu_rate: float,
                rounds: int, assist_mp: float, lookahead: int = 2) -> dict:
    from gpu_check import make_jpegs, unique_copies

    from indexer.media.gpu_jpeg import JpegOutcome
    from indexer.pipeline import sync
    from indexer.pipeline.embed import PipelineConfig
    from indexer.store.library import Library
    from retrieval.models.encoders import load_model

    folder = work / "jpegs"
    unique_copies(make_jpegs(8, size), files, folder, "s")
    config_path = work / "small.json"
    config_path.write_text(json.dumps(SMALL_CONFIG))
    model = load_model(str(config_path), device="cpu")
    model.image.embed_pixels(np.zeros((2, 3, 64, 64), np.float32))  # the tower loads on first use: not in the timing
    rng = np.random.default_rng(0)
    counts = {"gpu": 0}

    def simulated_gpu(items):
        time.sleep(len(items) / gpu_rate)
        counts["gpu"] += len(items)
        vectors = rng.standard_normal((len(items), 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return [JpegOutcome(vector) for vector in vectors]

    runs: dict[str, list] = {"off": [], "on": []}
    for round_ in range(rounds):
        for name, assist in (("off", None), ("on", assist_mp)) if round_ % 2 == 0 else (("on", assist_mp), ("off", None)):
            counts["gpu"] = 0
            config = sync.IndexConfig(roots=(str(folder),), pipeline=PipelineConfig(
                batch_size=batch, workers=workers, lookahead_batches=lookahead))
            db = work / f"db-{name}-{round_}"
            started = time.perf_counter()
            with Library(db) as library, library.lock():
                report = sync.index_folders(library, deferred_media(model, simulated_gpu, assist), config)
            wall = time.perf_counter() - started
            shutil.rmtree(db)
            runs[name].append({"images_per_s": round(report.embedded / wall, 1),
                               "cpu_share": round(1 - counts["gpu"] / max(1, report.embedded), 3)})
    median = {name: float(np.median([run["images_per_s"] for run in values])) for name, values in runs.items()}
    return {"files": files, "size": f"{size[0]}x{size[1]}", "simulated_gpu_images_per_s": gpu_rate, "workers": workers,
            "batch": batch, "lookahead_batches": lookahead, "assist_megapixels": assist_mp, "runs": runs,
            "median_images_per_s": median,
            "on_over_off": round(median["on"] / median["off"], 2)}


def bench_header(rounds: int = 30) -> dict:
    import timeit

    from gpu_check import make_jpegs

    from indexer.media.gpu_jpeg import jpeg_header, pillow_jpeg_header
    from indexer.media.image import DecodeOptions

    plain = make_jpegs(1, (640, 480))[0]
    samples = {"no_exif": plain, "camera_exif": with_camera_exif(plain, 3)}
    options = DecodeOptions()
    out = {}
    for name, data in samples.items():
        assert jpeg_header(data, options) == pillow_jpeg_header(data, options)
        best = {"pillow_us": float("inf"), "fast_us": float("inf")}
        for _ in range(rounds):
            for key, function, number in (("pillow_us", pillow_jpeg_header, 200), ("fast_us", jpeg_header, 2000)):
                seconds = timeit.timeit(lambda f=function, d=data: f(d, options), number=number) / number
                best[key] = min(best[key], seconds * 1e6)
        out[name] = {key: round(value, 1) for key, value in best.items()}
        out[name]["ratio"] = round(best["pillow_us"] / best["fast_us"], 1)
    return out


def bench_write(work: Path, batches: int = 40, rows: int = 256) -> dict:
    from indexer.store.library import Library
    from indexer.store.records import ModelInfo, NewItem, single_vector

    library = Library(work / "write")
    library.db.bind_model(ModelInfo("bench", "random", 512, "bench"))
    run_id = library.runs.start("index", [str(work)])
    rng = np.random.default_rng(0)
    prepared = []
    for b in range(batches):
        vectors = rng.standard_normal((rows, 512)).astype(np.float32)
        prepared.append([NewItem(path=f"{work}/{b}_{i}.jpg", size=1000 + i, mtime=1.0, content_hash=f"{b:06d}{i:06d}",
                                 width=640, height=480, format="JPEG", vectors=single_vector(vectors[i]),
                                 reuse_from=None, error=None,
                                 taken_at=None) for i in range(rows)])
    started = time.perf_counter()
    for batch in prepared:
        library.items.write_batch(batch, run_id)
    seconds = time.perf_counter() - started
    return {"rows": batches * rows, "seconds": round(seconds, 3), "ms_per_row": round(seconds / (batches * rows) * 1e3, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("pipeline", "write", "header", "share"))
    parser.add_argument("--files", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mms-index-overhead"))
    parser.add_argument("--exif", action="store_true", help="pipeline: JPEGs with a phone's EXIF block")
    parser.add_argument("--size", default="4000x3000", help="share: JPEG size, WxH")
    parser.add_argument("--gpu-rate", type=float, default=60.0, help="share: simulated GPU decode rate, images/s")
    parser.add_argument("--rounds", type=int, default=3, help="share: interleaved off/on rounds")
    parser.add_argument("--lookahead", type=int, default=2, help="share: PipelineConfig.lookahead_batches")
    parser.add_argument("--assist-megapixels", type=float, default=4.0, help="share: --assist-megapixels when on")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    if args.what == "pipeline":
        result = bench_pipeline(args.work, args.files, args.workers, args.batch, args.exif)
    elif args.what == "header":
        result = bench_header()
    elif args.what == "share":
        size = tuple(int(part) for part in args.size.lower().split("x"))
        result = bench_share(args.work, args.files, args.workers, args.batch, size, args.gpu_rate, args.rounds,
                             args.assist_megapixels, args.lookahead)
    else:
        result = bench_write(args.work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Indexing speed on generated 12 MP JPEGs: JPEG draft decode ON vs OFF (`--exact-decode`).

Measures, in one run:
1. end to end: `mmsearch index FOLDER --db FRESH --model ARCH.json [--exact-decode]`, A and B
   interleaved (A B A B ..., fresh --db each time); medians of wall-clock and of the run's own
   images/s (its `--json` summary: scan + decode + embed + SQLite + FAISS save, no process start);
2. decode only: `indexer.pipeline.embed.prepare_files` (read + hash + decode + preprocess, the pipeline's
   thread pool), draft vs exact, interleaved; plus one-thread ms per image;
3. model only: the image tower on batches of --batch-size random pixel arrays;
4. drift: per image, cosine between the embedding of the draft-decoded and the exact-decoded
   pixels, and the PSNR between the two model inputs (independent of the weights).

The model is open_clip's ViT-B-32 architecture with RANDOM weights (a `.json` config with a
"seed"): fine for speed; for drift, see the baseline it prints (random towers squeeze all images
into a narrow cone, so cosines run high even between different images).

    HF_HUB_OFFLINE=1 python bench/bench_index.py --n 20            # dry run
    HF_HUB_OFFLINE=1 python bench/bench_index.py --n 500 --rounds 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib
import numpy as np
from make_jpegs import make_jpegs, size_for

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_arch_config(folder: Path, arch: str, seed: int) -> Path:
    """open_clip's own config for `arch` plus a seed: the registry builds it with random weights."""
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise SystemExit(f"open_clip has no architecture {arch!r}")
    path = folder / f"{arch}-random.json"
    path.write_text(json.dumps({**cfg, "seed": seed}, indent=1))
    return path


def warm_page_cache(paths: list[str]) -> None:
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


# --- 1. end to end through the CLI --------------------------------------------------------------
def run_cli_index(folder: Path, db: Path, model_cfg: Path, exact: bool, extra: list[str]) -> dict:
    mmsearch = Path(sys.executable).parent / "mmsearch"
    command = [str(mmsearch), "index", str(folder), "--db", str(db), "--model", str(model_cfg), "--json", *extra]
    if exact:
        command.append("--exact-decode")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, **summary}


def bench_end_to_end(folder: Path, n: int, model_cfg: Path, rounds: int, work: Path, extra: list[str]) -> dict:
    runs: dict[str, list[dict]] = {"draft": [], "exact": []}
    for round_no in range(rounds):
        for label in ("draft", "exact"):
            db = work / f"db-{label}-{round_no}"
            shutil.rmtree(db, ignore_errors=True)
            with benchlib.ContentionMeter() as meter:
                result = run_cli_index(folder, db, model_cfg, exact=(label == "exact"), extra=extra)
            shutil.rmtree(db, ignore_errors=True)
            if result["embedded"] != n:
                raise SystemExit(f"{label}: embedded {result['embedded']} of {n} images: {result}")
            result["contention"] = str(meter.result)
            result["other_cores"] = meter.result.other_cores
            runs[label].append(result)
            print(f"  e2e round {round_no + 1} {label:5s}: wall {result['wall_s']:6.1f} s "
                  f"({n / result['wall_s']:5.2f} img/s), in-run {result['seconds']:6.1f} s "
                  f"({result['images_per_s']:5.2f} img/s); {meter.result}", flush=True)
    out = {}
    for label, items in runs.items():
        out[label] = {
            "wall_s_median": benchlib.median([r["wall_s"] for r in items]),
            "wall_images_per_s_median": benchlib.median([n / r["wall_s"] for r in items]),
            "run_images_per_s_median": benchlib.median([r["images_per_s"] for r in items]),
            "run_s_median": benchlib.median([r["seconds"] for r in items]),
            "other_cores_max": max(r["other_cores"] for r in items),
            "runs": items,
        }
    out["ratio_draft_over_exact_run"] = out["draft"]["run_images_per_s_median"] / out["exact"]["run_images_per_s_median"]
    out["ratio_draft_over_exact_wall"] = out["draft"]["wall_images_per_s_median"] / out["exact"]["wall_images_per_s_median"]
    return out


# --- 2. decode only ------------------------------------------------------------------------------
def found_files(folder: Path) -> list:
    from indexer.media.scan import walk

    return sorted(walk(folder), key=lambda found: found.path)


def reader_table(reader) -> dict:
    return {extension: reader for extension in reader.extensions}


def bench_decode(files: list, preprocess, rounds: int, single_n: int) -> dict:
    from indexer.media.image import DecodeOptions, decode_image
    from indexer.media.image_reader import ImageReader, ImageReadOptions
    from indexer.pipeline.embed import PipelineConfig, default_workers, prepare_files

    results: dict[str, dict] = {"draft": {"pool_images_per_s": []}, "exact": {"pool_images_per_s": []}}
    workers = default_workers(device_decodes=False)
    for _ in range(rounds):
        for label in ("draft", "exact"):
            reader = ImageReader(preprocess, ImageReadOptions(decode=DecodeOptions(draft=(label == "draft"))))
            started = time.perf_counter()
            count = sum(1 for item in prepare_files(files, {}, reader_table(reader), PipelineConfig())
                        if item.decoded is not None)
            seconds = time.perf_counter() - started
            if count != len(files):
                raise SystemExit(f"decode {label}: {count} of {len(files)} decoded")
            results[label]["pool_images_per_s"].append(count / seconds)
    # one thread, bytes already in memory: the per-image cost of decode + preprocess alone
    blobs = [open(found.path, "rb").read() for found in files[:single_n]]
    for label in ("draft", "exact"):
        options = DecodeOptions(draft=(label == "draft"))
        decode_image(blobs[0], preprocess, options)  # warm-up
        started = time.perf_counter()
        for blob in blobs:
            decode_image(blob, preprocess, options)
        results[label]["one_thread_ms_per_image"] = (time.perf_counter() - started) / len(blobs) * 1e3
    for label in results:
        results[label]["pool_images_per_s_median"] = benchlib.median(results[label]["pool_images_per_s"])
    results["pool_workers"] = workers
    results["ratio_draft_over_exact_pool"] = (results["draft"]["pool_images_per_s_median"]
                                             / results["exact"]["pool_images_per_s_median"])
    return results


def draft_size(path: str, preprocess) -> tuple[int, int]:
    from indexer.media.image import DecodeOptions, open_image

    image, _, _ = open_image(open(path, "rb").read(), DecodeOptions(draft=True), preprocess.image_size)
    return image.size


# --- 3. model only -------------------------------------------------------------------------------
def bench_model(model, batch_size: int, batches: int) -> dict:
    size = model.preprocess.image_size
    pixels = np.random.default_rng(0).standard_normal((batch_size, 3, size, size), dtype=np.float32)
    started = time.perf_counter()
    model.image  # noqa: B018 - builds the tower (random init), as the first batch of a run does
    build_s = time.perf_counter() - started
    model.image.embed_pixels(pixels)  # warm-up
    times = []
    for _ in range(batches):
        started = time.perf_counter()
        model.image.embed_pixels(pixels)
        times.append(time.perf_counter() - started)
    import torch

    return {"batch_size": batch_size, "batches": batches, "torch_threads": torch.get_num_threads(),
            "tower_build_s": build_s,
            "images_per_s_median": batch_size / benchlib.median(times),
            "ms_per_batch_median": benchlib.median(times) * 1e3}


# --- 4. drift ------------------------------------------------------------------------------------
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def bench_drift(model, files: list, count: int, batch_size: int) -> dict:
    from indexer.media.image import DecodeOptions, decode_image

    preprocess = model.preprocess
    mean = np.asarray(preprocess.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(preprocess.std, dtype=np.float32)[:, None, None]
    draft_pixels, exact_pixels = [], []
    for found in files[:count]:
        data = open(found.path, "rb").read()
        draft_pixels.append(decode_image(data, preprocess, DecodeOptions(draft=True)).pixels)
        exact_pixels.append(decode_image(data, preprocess, DecodeOptions(draft=False)).pixels)
    draft_pixels, exact_pixels = np.stack(draft_pixels), np.stack(exact_pixels)

    def embed(pixels):
        return np.concatenate([model.image.embed_pixels(pixels[i:i + batch_size])
                               for i in range(0, len(pixels), batch_size)])

    draft_vectors, exact_vectors = embed(draft_pixels), embed(exact_pixels)
    cosines = np.sum(draft_vectors * exact_vectors, axis=1)
    # baseline: how close two DIFFERENT images are under these weights (exact decode both)
    gram = exact_vectors @ exact_vectors.T
    off_diagonal = gram[~np.eye(len(gram), dtype=bool)]
    # rank check: is each draft vector's nearest exact vector its own image?
    own_rank_ok = float(np.mean(np.argmax(draft_vectors @ exact_vectors.T, axis=1) == np.arange(len(gram))))
    psnrs = [psnr(d * std + mean, e * std + mean) for d, e in zip(draft_pixels, exact_pixels)]
    return {
        "images": len(cosines),
        "cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min()),
        "cosine_p05": float(np.percentile(cosines, 5)),
        "share_below_0995": float(np.mean(cosines < 0.995)),
        "baseline_cosine_between_different_images_mean": float(off_diagonal.mean()) if len(off_diagonal) else None,
        "baseline_cosine_between_different_images_max": float(off_diagonal.max()) if len(off_diagonal) else None,
        "draft_nearest_is_own_exact": own_rank_ok,
        "input_psnr_db_mean": float(np.mean(psnrs)), "input_psnr_db_min": float(np.min(psnrs)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="images to index")
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "mms-core-bench",
                        help="where generated JPEGs are kept between runs")
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs for end to end and decode-only")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model-batches", type=int, default=5)
    parser.add_argument("--drift-n", type=int, default=50)
    parser.add_argument("--single-n", type=int, default=30, help="images for one-thread decode timing")
    parser.add_argument("--skip", action="append", default=[], choices=["e2e", "decode", "model", "drift"])
    parser.add_argument("--cli-arg", action="append", default=[], help="extra argument for `mmsearch index`")
    parser.add_argument("--json-out", type=Path, help="also write all figures here")
    args = parser.parse_args(argv)

    folder = args.data_dir / f"jpegs-{args.megapixels:g}mp-n{args.n}"
    width, height = size_for(args.megapixels)
    print(f"machine: {benchlib.machine_line()}; date {benchlib.today()}")
    print(f"code: {benchlib.code_version()}", flush=True)
    busy = benchlib.busy_processes()
    print(f"other busy processes at start: {busy or 'none'}")
    print(f"images: {folder} ({args.n} x {width}x{height} JPEG q90)", flush=True)
    generated = make_jpegs(folder, args.n, megapixels=args.megapixels, seed=args.seed)
    sizes = np.array([size for _, size, _ in generated]) / 1e6
    print(f"  file size MB mean {sizes.mean():.2f} (min {sizes.min():.2f}, max {sizes.max():.2f})")
    files = found_files(folder)
    warm_page_cache([found.path for found in files])

    from retrieval.models.encoders import load_model

    figures: dict = {"machine": benchlib.machine_line(), "date": benchlib.today(), "n": args.n,
                     "image_size": f"{width}x{height}", "file_mb_mean": float(sizes.mean()),
                     "busy_at_start": busy, "code": benchlib.code_version(), "arch": args.arch}
    with tempfile.TemporaryDirectory(prefix="mms-bench-index-") as tmp:
        work = Path(tmp)
        model_cfg = write_arch_config(work, args.arch, args.seed)
        model = load_model(str(model_cfg), device="cpu")
        figures["draft_decoded_size"] = "x".join(map(str, draft_size(files[0].path, model.preprocess)))
        print(f"model: {args.arch} random weights ({model_cfg}); input {model.preprocess.image_size}px; "
              f"draft decode of a {width}x{height} JPEG gives {figures['draft_decoded_size']}", flush=True)

        if "e2e" not in args.skip:
            print("end to end (mmsearch index, A=draft B=exact interleaved):", flush=True)
            figures["end_to_end"] = e2e = bench_end_to_end(folder, args.n, model_cfg, args.rounds, work, args.cli_arg)
            for label in ("draft", "exact"):
                print(f"  {label:5s} median: in-run {e2e[label]['run_images_per_s_median']:.2f} img/s, "
                      f"wall {e2e[label]['wall_images_per_s_median']:.2f} img/s ({e2e[label]['wall_s_median']:.1f} s)")
            print(f"  ratio draft/exact: in-run {e2e['ratio_draft_over_exact_run']:.2f}x, "
                  f"wall {e2e['ratio_draft_over_exact_wall']:.2f}x", flush=True)
        if "decode" not in args.skip:
            print("decode only (read + hash + decode + preprocess):", flush=True)
            with benchlib.ContentionMeter() as meter:
                figures["decode"] = dec = bench_decode(files, model.preprocess, args.rounds, min(args.single_n, len(files)))
            figures["decode"]["contention"] = str(meter.result)
            for label in ("draft", "exact"):
                print(f"  {label:5s}: pool ({dec['pool_workers']} threads) {dec[label]['pool_images_per_s_median']:.2f} img/s; "
                      f"one thread {dec[label]['one_thread_ms_per_image']:.0f} ms/image")
            print(f"  ratio draft/exact (pool): {dec['ratio_draft_over_exact_pool']:.2f}x; {meter.result}", flush=True)
        if "model" not in args.skip:
            with benchlib.ContentionMeter() as meter:
                figures["model"] = mod = bench_model(model, args.batch_size, args.model_batches)
            figures["model"]["contention"] = str(meter.result)
            print(f"model only: {mod['images_per_s_median']:.2f} img/s (batch {mod['batch_size']}, "
                  f"{mod['ms_per_batch_median']:.0f} ms/batch, {mod['torch_threads']} torch threads; tower build "
                  f"{mod['tower_build_s']:.1f} s, paid once per run); {meter.result}",
                  flush=True)
        if "drift" not in args.skip:
            figures["drift"] = drift = bench_drift(model, files, min(args.drift_n, len(files)), args.batch_size)
            print(f"drift draft vs exact over {drift['images']} images: cosine mean {drift['cosine_mean']:.5f}, "
                  f"min {drift['cosine_min']:.5f}, p05 {drift['cosine_p05']:.5f}, "
                  f"share < 0.995: {drift['share_below_0995']:.0%}")
            print(f"  baseline (random weights): cosine between DIFFERENT images mean "
                  f"{drift['baseline_cosine_between_different_images_mean']:.5f}, max "
                  f"{drift['baseline_cosine_between_different_images_max']:.5f}; draft vector's nearest exact "
                  f"vector is its own image for {drift['draft_nearest_is_own_exact']:.0%}")
            print(f"  model input PSNR draft vs exact: mean {drift['input_psnr_db_mean']:.1f} dB, "
                  f"min {drift['input_psnr_db_min']:.1f} dB", flush=True)
    figures["busy_at_end"] = benchlib.busy_processes()
    print(f"other busy processes at end: {figures['busy_at_end'] or 'none'}")
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
